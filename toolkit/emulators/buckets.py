"""Create buckets in the emulators with each cloud's own SDK; a bucket that already exists is fine."""

from __future__ import annotations

from collections.abc import Callable

from toolkit.emulators.errors import EmulatorError
from toolkit.emulators.state import Endpoints

__all__ = ["BUCKET_CREATORS"]

# Dummy credentials: the emulators accept any, and real clouds would reject these.
MESSAGE_CHARS = 200
S3_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


def _create_s3(endpoints: Endpoints, buckets: list[str]) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=endpoints.s3, **S3_CREDENTIALS)
    for bucket in buckets:
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except (BotoCoreError, ClientError, ValueError) as exc:
            raise _refused("s3", bucket, exc) from None


def _create_gcs(endpoints: Endpoints, buckets: list[str]) -> None:
    from google.api_core.exceptions import Conflict, GoogleAPIError
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    # Options passed explicitly rather than through STORAGE_EMULATOR_HOST, which would leak into this process.
    client = storage.Client(
        project="mct", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoints.gcs}
    )
    for bucket in buckets:
        try:
            client.create_bucket(bucket)
        except Conflict:
            pass
        except (GoogleAPIError, OSError, ValueError) as exc:
            raise _refused("gcs", bucket, exc) from None


def _create_azure(endpoints: Endpoints, buckets: list[str]) -> None:
    from azure.core.exceptions import AzureError, ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(endpoints.azure_connection_string)
    for container in buckets:
        try:
            client.create_container(container)
        except ResourceExistsError:
            pass
        except (AzureError, ValueError) as exc:
            raise _refused("azure", container, exc) from None


def _refused(cloud: str, bucket: str, exc: Exception) -> EmulatorError:
    # SDK messages span lines and can carry a whole response body: one line, cut short.
    reason = " ".join(str(exc).split())[:MESSAGE_CHARS] or type(exc).__name__
    return EmulatorError(f"the {cloud} emulator cannot create bucket {bucket!r}: {reason} (is the name valid?)")


#: cloud -> function(endpoints, bucket names) creating the missing ones.
BUCKET_CREATORS: dict[str, Callable[[Endpoints, list[str]], None]] = {
    "s3": _create_s3,
    "gcs": _create_gcs,
    "azure": _create_azure,
}
