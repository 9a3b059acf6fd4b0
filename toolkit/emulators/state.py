"""What is running: endpoints, processes and data folders, kept as JSON in `<home>/emulators/state.json`."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.emulators.errors import EmulatorError
from toolkit.processes import answers, is_running, stop_processes

__all__ = ["EmulatorProcess", "EmulatorSet", "Endpoints", "read_state", "state_file", "write_state"]

# A health probe is one request to a local process: a second without an answer means it is stuck.
PROBE_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Endpoints:
    """How clients reach the emulators."""

    s3: str
    gcs: str
    azure_connection_string: str


@dataclass(frozen=True)
class EmulatorProcess:
    """One emulator process we started; `started` (its start time) guards against a reused PID."""

    cloud: str
    program: str
    pid: int
    started: int | None
    url: str
    probe_url: str
    data: str
    log: str

    def healthy(self) -> bool:
        """Our process is alive and answers HTTP."""
        return is_running(self.pid, self.started) and answers(self.probe_url, PROBE_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class EmulatorSet:
    """A running set of emulators: their endpoints and processes."""

    endpoints: Endpoints
    processes: tuple[EmulatorProcess, ...]

    def health(self) -> dict[str, bool]:
        """cloud -> whether its emulator is alive and answering."""
        return {process.cloud: process.healthy() for process in self.processes}

    def stop(self) -> None:
        """Stop exactly the processes this set started (SIGTERM, wait, then SIGKILL); others are left alone."""
        stop_processes([(process.pid, process.started) for process in self.processes])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> EmulatorSet:
        return cls(
            endpoints=Endpoints(**document["endpoints"]),
            processes=tuple(EmulatorProcess(**process) for process in document["processes"]),
        )


def state_file(home: Path) -> Path:
    """Where `mct emulators up` records what it started."""
    return home / "emulators" / "state.json"


def read_state(home: Path) -> EmulatorSet | None:
    """The set recorded by `mct emulators up`, or None if nothing is recorded."""
    path = state_file(home)
    try:
        return EmulatorSet.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise EmulatorError(
            f"cannot read {path} ({exc}): stop the emulators it names by hand, then delete it"
        ) from None


def write_state(home: Path, emulators: EmulatorSet) -> Path:
    """Record `emulators` atomically (a reader sees the old state or the new, never half of one)."""
    path = state_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(emulators.to_json(), indent=2) + "\n")
    os.replace(partial, path)
    return path
