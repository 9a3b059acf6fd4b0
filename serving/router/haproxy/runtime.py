"""HAProxy's runtime API over its stats socket: read the servers' state, drain and undrain them."""

from __future__ import annotations

import csv
import socket
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError

__all__ = ["RuntimeApi", "RuntimeApiError", "ServerStat"]

# One command and its answer over a local socket: milliseconds, unless HAProxy is stuck.
TIMEOUT_SECONDS = 2.0


class RuntimeApiError(ToolkitError):
    """HAProxy's runtime API did not answer, or refused a command."""

    exit_code = 1


@dataclass(frozen=True)
class ServerStat:
    """One server's line of `show stat`, the fields the router's status needs."""

    backend: str
    name: str
    status: str  # UP, DOWN, DRAIN, MAINT, "UP 1/2" (going down), "DOWN 1/2" (coming back), "no check"
    weight: int
    backup: bool
    current_sessions: int
    check_status: str
    check_description: str
    downs: int  # times it went down
    response_ms: int  # average over the last 1024 answers
    errors: int  # failed connections plus failed answers
    admin_drain: bool


class RuntimeApi:
    """Commands to the HAProxy whose stats socket is `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def command(self, line: str) -> str:
        """Send one command, return the whole answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(TIMEOUT_SECONDS)
                sock.connect(str(self.path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise RuntimeApiError(f"HAProxy's runtime API at {self.path} did not answer: {exc}") from None
        return b"".join(chunks).decode(errors="replace")

    def servers(self, backend: str) -> list[ServerStat]:
        """The servers of `backend`, in configuration order."""
        text = self.command("show stat")
        rows = csv.DictReader(text.removeprefix("# ").splitlines())
        return [
            _server(row) for row in rows if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")
        ]

    def set_state(self, backend: str, server: str, state: str) -> None:
        """`ready`, `drain` or `maint` for one server."""
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:
            raise RuntimeApiError(f"HAProxy refused to set {backend}/{server} to {state}: {answer}")

    def servers_state(self) -> str:
        """`show servers state`: what a reload should carry over (drained servers, health)."""
        return self.command("show servers state")


def _server(row: dict[str, str]) -> ServerStat:
    def number(field: str) -> int:
        value = row.get(field) or "0"
        return int(value) if value.isdigit() else 0

    return ServerStat(
        backend=row["pxname"],
        name=row["svname"],
        status=row.get("status", ""),
        weight=number("weight"),
        backup=row.get("bck") == "1",
        current_sessions=number("scur"),
        check_status=row.get("check_status", ""),
        check_description=row.get("check_desc", ""),
        downs=number("chkdown"),
        response_ms=number("rtime"),
        errors=number("econ") + number("eresp"),
        admin_drain="DRAIN" in row.get("status", ""),
    )
