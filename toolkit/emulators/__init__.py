"""Local emulators of the three clouds' object stores: moto (S3), fake-gcs-server (GCS), Azurite (Azure Blob).

`start_emulators` starts a set on free ports; `ensure_emulators` reuses the set that `mct emulators up`
recorded under the data directory while it is healthy; `stop_emulator` and `restart_emulator` take one down
and bring it back on its port (storage-outage drills). Only processes recorded as ours are ever stopped.
"""

from toolkit.emulators.catalog import EMULATORS
from toolkit.emulators.errors import EmulatorError
from toolkit.emulators.lifecycle import (
    ensure_emulators,
    restart_emulator,
    start_emulators,
    stop_emulator,
    stop_emulators,
)
from toolkit.emulators.state import EmulatorProcess, EmulatorSet, Endpoints, read_state, state_file

__all__ = [
    "EMULATORS",
    "EmulatorError",
    "EmulatorProcess",
    "EmulatorSet",
    "Endpoints",
    "ensure_emulators",
    "read_state",
    "restart_emulator",
    "start_emulators",
    "state_file",
    "stop_emulator",
    "stop_emulators",
]
