"""mct: take a logistic-regression model from data to a fail-safe, multi-cloud prediction service."""

__version__ = "0.1.0"
