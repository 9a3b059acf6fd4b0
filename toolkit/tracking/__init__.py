"""MLflow tracking and registry: log training runs, list and promote registered versions."""
