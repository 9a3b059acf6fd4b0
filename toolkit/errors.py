"""The toolkit's exceptions: one tree, each message a single line that says what to do.

    ToolkitError
    ├── ConfigError            invalid settings or command-line options
    ├── DataError              a dataset that cannot be used (missing file, bad target, ...)
    ├── ExportError            the ONNX export does not reproduce scikit-learn's predictions
    └── RegistryError          the MLflow registry cannot do what was asked
        ├── ModelNotFound      no such registered model, version or alias
        └── PromotionRefused   the quality gate said no

The command line prints the message on one line and exits with `exit_code`: 2 for input the
user must correct, 1 for a well-formed request whose answer is "no" or that failed on its merits.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "ExportError",
    "ModelNotFound",
    "PromotionRefused",
    "RegistryError",
    "ToolkitError",
]


class ToolkitError(Exception):
    """Base class of every error the toolkit raises on purpose."""

    exit_code = 2


class ConfigError(ToolkitError, ValueError):
    """Settings or options that are invalid or contradict each other."""


class DataError(ToolkitError, ValueError):
    """A dataset that is missing, empty or unusable for classification."""


class ExportError(ToolkitError):
    """The ONNX export failed or disagrees with the scikit-learn pipeline."""

    exit_code = 1


class RegistryError(ToolkitError):
    """A registry operation that cannot be carried out."""


class ModelNotFound(RegistryError, LookupError):
    """The registered model, version or alias does not exist."""


class PromotionRefused(RegistryError):
    """The candidate did not pass the promotion gate."""

    exit_code = 1
