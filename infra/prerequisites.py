"""What Pulumi needs before it runs: its SDK, its CLI, the passphrase of the state, the cloud's credentials.

Every check reads the environment and well-known files only, never the network, and fails with one
`PrerequisiteMissing` line that says what to install or set. They run for every selected stack before the
first one starts, so that `--cloud all` does not stop half-way for a missing credential.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from infra.errors import PrerequisiteMissing

__all__ = [
    "PULUMI_INSTALL_URL",
    "check_credentials",
    "check_passphrase",
    "check_pulumi_cli",
    "check_pulumi_sdk",
    "pulumi_cli_missing",
    "uses_passphrase",
]

PULUMI_INSTALL_URL = "https://www.pulumi.com/docs/install/"
PASSPHRASE_VARIABLES = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")
# Where the Pulumi GCP provider (like Terraform's) finds credentials and the project, besides gcloud's files.
GCP_CREDENTIAL_VARIABLES = (
    "GOOGLE_CREDENTIALS",
    "GOOGLE_CLOUD_KEYFILE_JSON",
    "GCLOUD_KEYFILE_JSON",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)
GCP_PROJECT_VARIABLES = ("GOOGLE_PROJECT", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")
# A Google Compute Engine VM (or Cloud Build, GKE) says so in its DMI data: its metadata server has credentials.
GCE_PRODUCT_FILE = Path("/sys/class/dmi/id/product_name")


def check_pulumi_sdk() -> None:
    """Pulumi's Python SDK and the providers come with the `infra` extra."""
    try:
        import pulumi.automation  # noqa: F401
    except ImportError:
        raise PrerequisiteMissing("mct infra needs Pulumi's SDK and providers: pip install 'mct[infra]'") from None


def check_pulumi_cli() -> str:
    """The path of the `pulumi` executable, which the Automation API runs."""
    path = shutil.which("pulumi")
    if path is None:
        raise pulumi_cli_missing()
    return path


def pulumi_cli_missing() -> PrerequisiteMissing:
    """The error for a `pulumi` that cannot be run."""
    return PrerequisiteMissing(
        f"the Pulumi CLI is not installed (mct infra runs it): install it ({PULUMI_INSTALL_URL}) "
        "and make sure `pulumi` is on PATH"
    )


def uses_passphrase(backend_url: str, stack_settings: Mapping[str, Any]) -> bool:
    """True when the stack's secrets are sealed with a passphrase: a self-managed backend, no other provider."""
    if backend_url.startswith(("https://", "http://")):  # Pulumi Cloud (or a self-hosted service) keeps the keys
        return False
    provider = str(stack_settings.get("secretsprovider") or "passphrase")
    return provider.startswith("passphrase")


def check_passphrase(backend_url: str, stack: str, stack_settings: Mapping[str, Any]) -> None:
    """A state in a file (or bucket) backend is encrypted with a passphrase that Pulumi reads from the environment."""
    if uses_passphrase(backend_url, stack_settings) and not any(name in os.environ for name in PASSPHRASE_VARIABLES):
        raise PrerequisiteMissing(
            f"stack {stack} keeps its state in {backend_url}, sealed with a passphrase: set PULUMI_CONFIG_PASSPHRASE "
            "(or PULUMI_CONFIG_PASSPHRASE_FILE) and keep it, every later run needs the same one"
        )


def check_credentials(cloud: str, stack: str, config: Mapping[str, Any]) -> None:
    """The cloud's provider can find credentials (and, for GCP and Azure, the project or subscription)."""
    checks: dict[str, Callable[[Mapping[str, Any]], str | None]] = {
        "aws": _aws_problem,
        "gcp": _gcp_problem,
        "azure": _azure_problem,
    }
    problem = checks[cloud](config)
    if problem:
        raise PrerequisiteMissing(f"stack {stack}: {problem}")


def _aws_problem(config: Mapping[str, Any]) -> str | None:
    if config.get("aws:accessKey"):
        return None
    import botocore.exceptions
    import botocore.session

    profile = config.get("aws:profile")
    try:
        # botocore's chain is the provider's: variables, profiles and SSO, web identity, ECS and EC2 roles.
        credentials = botocore.session.Session(profile=profile).get_credentials()
    except botocore.exceptions.ProfileNotFound:
        return f"the AWS profile {profile!r} (aws:profile) is not in ~/.aws/config: check its name or `aws configure`"
    except botocore.exceptions.BotoCoreError as exc:
        return f"cannot read the AWS credentials: {exc}"
    if credentials is None:
        return (
            "no AWS credentials: run `aws configure` (or `aws sso login`), or set AWS_PROFILE, "
            "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return None


def _gcp_problem(config: Mapping[str, Any]) -> str | None:
    gcloud = Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
    has_credentials = (
        any(os.environ.get(name) for name in GCP_CREDENTIAL_VARIABLES)
        or config.get("gcp:credentials")
        or config.get("gcp:accessToken")
        or (gcloud / "application_default_credentials.json").is_file()
        or _on_google_compute()
    )
    if not has_credentials:
        return (
            "no Google Cloud credentials: run `gcloud auth application-default login`, "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service account key file"
        )
    if not (config.get("gcp:project") or any(os.environ.get(name) for name in GCP_PROJECT_VARIABLES)):
        return "no Google Cloud project: set gcp:project in the stack's file, or GOOGLE_PROJECT"
    return None


def _azure_problem(config: Mapping[str, Any]) -> str | None:
    service_principal = os.environ.get("ARM_CLIENT_ID") or config.get("azure-native:clientId")
    managed_identity = str(os.environ.get("ARM_USE_MSI") or config.get("azure-native:useMsi") or "").lower() == "true"
    profile = _azure_cli_profile()
    if not (service_principal or managed_identity or profile.get("subscriptions")):
        return (
            "no Azure credentials: run `az login`, or set ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID "
            "and ARM_SUBSCRIPTION_ID for a service principal"
        )
    default_subscription = any(item.get("isDefault") for item in profile.get("subscriptions", []))
    if not (os.environ.get("ARM_SUBSCRIPTION_ID") or config.get("azure-native:subscriptionId") or default_subscription):
        return "no Azure subscription: set ARM_SUBSCRIPTION_ID, or azure-native:subscriptionId in the stack's file"
    return None


def _azure_cli_profile() -> dict[str, Any]:
    """What `az login` recorded: the subscriptions and the default one (an empty mapping if nothing)."""
    directory = Path(os.environ.get("AZURE_CONFIG_DIR") or Path.home() / ".azure")
    try:
        # The Azure CLI writes this file with a byte-order mark.
        profile = json.loads((directory / "azureProfile.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}
    return profile if isinstance(profile, dict) else {}


def _on_google_compute() -> bool:
    try:
        return GCE_PRODUCT_FILE.read_text().strip().startswith("Google")
    except OSError:
        return False
