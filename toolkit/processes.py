"""Child processes we start ourselves: free ports, spawn with a log, probe, and stop exactly those PIDs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from pathlib import Path

__all__ = ["answers", "free_ports", "is_running", "spawn", "start_time", "stop_processes"]

# Azurite needs about 1.5 s to close its database on SIGTERM; a process still up after this is stuck.
STOP_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05
PROC = Path("/proc")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that are free on 127.0.0.1 now (all held open together, then released)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def spawn(command: Sequence[str], log: Path) -> tuple[int, int | None]:
    """Start `command` in its own session, stdout and stderr into `log`; its PID and start time."""
    with log.open("wb") as stream:
        process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process.pid, start_time(process.pid)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (0 where there is no /proc); None once it has exited.

    A PID alone can be reused by an unrelated process after ours has exited; PID and start time cannot.
    """
    if not PROC.is_dir():  # not Linux: the PID alone has to identify the process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[19])


def is_running(pid: int, started: int | None) -> bool:
    """Whether the process we started as (`pid`, `started`) is still alive."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child, so it does not linger as a zombie
    return started is not None and start_time(pid) == started


def stop_processes(processes: Sequence[tuple[int, int | None]], timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM each (pid, start time) that is still ours, wait for all, then SIGKILL those left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [(pid, started) for pid, started in processes if is_running(pid, started)]
        for pid, _ in alive:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            alive = [(pid, started) for pid, started in alive if is_running(pid, started)]
        processes = alive


def answers(url: str, timeout: float) -> bool:
    """Whether an HTTP server answers `url` at all (any status code counts)."""
    # Loopback emulators are never behind a proxy, whatever the environment says.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
