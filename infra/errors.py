"""The errors of `mct infra`, in the toolkit's error tree (one line each, saying what to do).

ToolkitError
└── InfraError
    ├── SpecError              a stack's configuration is missing or invalid (exit 2)
    ├── PrerequisiteMissing    no Pulumi CLI, no passphrase, no cloud credentials (exit 2)
    └── DeploymentFailed       Pulumi ran and the operation failed (exit 1)
"""

from __future__ import annotations

from toolkit.errors import ConfigError, ToolkitError

__all__ = ["DeploymentFailed", "InfraError", "PrerequisiteMissing", "SpecError"]


class InfraError(ToolkitError):
    """Base class of the errors of the infrastructure programs and their driver."""


class SpecError(InfraError, ConfigError):
    """A stack spec that is missing a value or contradicts what one of the clouds accepts."""


class PrerequisiteMissing(InfraError):
    """Something to install or set before Pulumi can run."""


class DeploymentFailed(InfraError):
    """A Pulumi operation that ran and failed; its output above says why."""

    exit_code = 1
