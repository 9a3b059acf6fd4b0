"""Start, reuse and stop the three emulators; `mct emulators` and the test fixture both come here."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from toolkit.emulators.buckets import BUCKET_CREATORS
from toolkit.emulators.catalog import EMULATORS, azure_connection_string, local_url
from toolkit.emulators.errors import EmulatorError
from toolkit.emulators.state import EmulatorProcess, EmulatorSet, Endpoints, read_state, state_file, write_state
from toolkit.processes import POLL_SECONDS, answers, free_ports, is_running, spawn, stop_processes

__all__ = ["ensure_emulators", "restart_emulator", "start_emulators", "stop_emulator", "stop_emulators"]

# Idle, all three answer within about 0.6 s; a loaded 2-core CI machine running tests can be many times slower.
STARTUP_TIMEOUT_SECONDS = 30.0
# While starting, a refused connection comes back at once; an accepted one that hangs is not ready yet.
READY_PROBE_SECONDS = 0.5


def start_emulators(directory: Path, buckets: dict[str, list[str]]) -> EmulatorSet:
    """Start the three emulators on free ports, data under `directory/{s3,gcs,azure}`, and create `buckets`.

    `buckets` maps `s3`, `gcs`, `azure` to bucket names. Raises `EmulatorError` (after stopping whatever
    it started) if an emulator is missing, exits, or does not answer in time.
    """
    unknown = sorted(set(buckets) - set(BUCKET_CREATORS))
    if unknown:
        raise EmulatorError(f"no emulator for {', '.join(unknown)}: bucket keys are {', '.join(BUCKET_CREATORS)}")
    plans = []
    for emulator, port in zip(EMULATORS, free_ports(len(EMULATORS)), strict=True):
        data = (directory / emulator.cloud).resolve()
        plans.append((emulator, port, data, emulator.command(port, data)))  # nothing starts if one is missing
    processes: list[EmulatorProcess] = []
    try:
        for emulator, port, data, command in plans:
            data.mkdir(parents=True, exist_ok=True)
            log = data / f"{emulator.program}.log"
            pid, started = spawn(command, log)
            url = local_url(port)
            processes.append(
                EmulatorProcess(
                    cloud=emulator.cloud,
                    program=emulator.program,
                    pid=pid,
                    started=started,
                    url=url,
                    probe_url=url + emulator.probe_path,
                    data=str(data),
                    log=str(log),
                )
            )
        _wait_until_answering(processes)
        urls = {process.cloud: process.url for process in processes}
        emulators = EmulatorSet(
            Endpoints(s3=urls["s3"], gcs=urls["gcs"], azure_connection_string=azure_connection_string(urls["azure"])),
            tuple(processes),
        )
        _create_buckets(emulators, buckets)
    except BaseException:
        stop_processes([(process.pid, process.started) for process in processes])
        raise
    return emulators


def ensure_emulators(home: Path, buckets: dict[str, list[str]]) -> EmulatorSet:
    """The set recorded under `home` if every emulator in it is healthy; otherwise a new one, recorded."""
    with _lock(home):
        running = read_state(home)
        if running is not None and all(running.health().values()):
            _create_buckets(running, buckets)
            return running
        if running is not None:
            running.stop()  # the healthy rest would hold the data folders
        emulators = start_emulators(state_file(home).parent, buckets)
        write_state(home, emulators)
        return emulators


def stop_emulators(home: Path) -> EmulatorSet | None:
    """Stop the set recorded under `home` and forget it; None if none was recorded."""
    with _lock(home):
        running = read_state(home)
        if running is not None:
            running.stop()
            state_file(home).unlink()
        return running


def stop_emulator(home: Path, cloud: str) -> EmulatorProcess:
    """Stop the recorded emulator of `cloud` (s3, gcs or azure) and keep its record, for `restart_emulator`."""
    with _lock(home):
        process = _recorded(home, cloud)[1]
        stop_processes([(process.pid, process.started)])
        return process


def restart_emulator(home: Path, cloud: str, buckets: dict[str, list[str]]) -> EmulatorProcess:
    """Start the recorded emulator of `cloud` again on its port and data folder; record the new process.

    Its `buckets` are created if missing (an emulator that keeps no data comes back empty).
    """
    with _lock(home):
        running, process = _recorded(home, cloud)
        stop_processes([(process.pid, process.started)])
        emulator = next(emulator for emulator in EMULATORS if emulator.cloud == cloud)
        port = int(process.url.rsplit(":", 1)[1])
        pid, started = spawn(emulator.command(port, Path(process.data)), Path(process.log))
        restarted = replace(process, pid=pid, started=started)
        try:
            _wait_until_answering([restarted])
            emulators = replace(
                running, processes=tuple(restarted if item.cloud == cloud else item for item in running.processes)
            )
            _create_buckets(emulators, {cloud: buckets.get(cloud, [])})
        except BaseException:
            stop_processes([(pid, started)])
            raise
        write_state(home, emulators)
        return restarted


def _recorded(home: Path, cloud: str) -> tuple[EmulatorSet, EmulatorProcess]:
    running = read_state(home)
    process = next((item for item in running.processes if item.cloud == cloud), None) if running else None
    if running is None or process is None:
        raise EmulatorError(f"no {cloud} emulator is recorded: start the emulators with `mct emulators up`")
    return running, process


def _wait_until_answering(processes: list[EmulatorProcess]) -> None:
    """Wait for all processes together; each must stay alive (a dead one's port may be someone else's)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    waiting = list(processes)
    while True:
        for process in list(waiting):
            _check_alive(process)
            if answers(process.probe_url, READY_PROBE_SECONDS):
                waiting.remove(process)
        if not waiting:
            break
        if time.monotonic() > deadline:
            late = waiting[0]
            raise EmulatorError(
                f"the {late.cloud} emulator ({late.program}) did not answer on {late.url} within "
                f"{STARTUP_TIMEOUT_SECONDS:.0f} s: see {late.log}"
            )
        time.sleep(POLL_SECONDS)
    for process in processes:
        _check_alive(process)


def _check_alive(process: EmulatorProcess) -> None:
    if not is_running(process.pid, process.started):
        lines = Path(process.log).read_text(errors="replace").strip().splitlines()
        last = f": {lines[-1].strip()}" if lines else ""
        raise EmulatorError(
            f"the {process.cloud} emulator ({process.program}) exited while starting{last} (log: {process.log})"
        )


def _create_buckets(emulators: EmulatorSet, buckets: dict[str, list[str]]) -> None:
    for cloud, names in buckets.items():
        if names:
            BUCKET_CREATORS[cloud](emulators.endpoints, names)


@contextmanager
def _lock(home: Path) -> Iterator[None]:
    """One `up` or `down` at a time per data directory, across processes."""
    path = state_file(home).with_name(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
