"""A serving stack on this machine: one model server per cloud and the router, as child processes.

`mct demo` and `mct drill` use it: every process listens on 127.0.0.1 at a free port, logs into the
data directory, and is stopped by the PID recorded when it was started.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.processes import free_ports, is_running, spawn, stop_processes

__all__ = ["LocalStack", "StackError", "routed_prediction"]

# A server loads and verifies its bundle, the router starts its health checks: seconds on a busy machine.
START_TIMEOUT_SECONDS = 60.0
PROBE_SECONDS = 0.2
# The router's own ready path answers once it listens; backends are judged by its health checks.
SERVER_READY_PATH = "/v2/health/ready"


class StackError(ToolkitError):
    """A server or the router did not start."""

    exit_code = 1


@dataclass
class LocalStack:
    """Servers for `clouds` and a router in front of them; use as a context manager.

    `model` is the model the servers serve (default: serving.model), `drill_mode` starts them with
    `--drill-mode`, `admin_token` turns on the router's admin API, and `router_args` are extra `mct route`
    flags; `engine` picks the router's engine. `kill`, `restart` and `signal` act on one cloud's server,
    `hand_over_router` (or, for HAProxy, `reload_router`) and `kill_router` on the router, for failover
    drills. `started` lists every process ever started.
    """

    clouds: list[str]
    logs: Path
    poll_seconds: float | None = None
    model: str | None = None
    drill_mode: bool = False
    admin_token: str | None = None
    engine: str = "builtin"
    router_args: list[str] = field(default_factory=list)
    servers: dict[str, str] = field(default_factory=dict)
    router_url: str = ""
    started: list[tuple[int, int | None]] = field(default_factory=list)
    _processes: list[tuple[str, int, int | None]] = field(default_factory=list)
    _runs: Counter[str] = field(default_factory=Counter)

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every server, wait until each is ready, then start the router in front of them."""
        self.logs.mkdir(parents=True, exist_ok=True)
        *server_ports, router_port = free_ports(len(self.clouds) + 1)
        for cloud, port in zip(self.clouds, server_ports, strict=True):
            self.servers[cloud] = f"http://127.0.0.1:{port}"
            self._spawn_server(cloud)
        for cloud, url in self.servers.items():
            self._wait(f"server-{cloud}", url + SERVER_READY_PATH)
        self.router_url = f"http://127.0.0.1:{router_port}"
        self._spawn_router()
        self._wait("router", self.router_url + SERVER_READY_PATH)

    def stop(self) -> None:
        """Stop exactly the processes this stack started (a paused one is resumed so that it can exit)."""
        for name in [name for name, _, _ in self._processes]:
            self.signal(name, signal.SIGCONT)
        stop_processes([(pid, started) for _, pid, started in self._processes])
        self._processes.clear()

    def pids(self) -> dict[str, tuple[int, int | None]]:
        """Each process this stack runs now, by name (`server-CLOUD`, `router`): its PID and start time."""
        return {name: (pid, started) for name, pid, started in self._processes}

    def signal(self, name: str, signum: int) -> None:
        """Send `signum` to our process `name` (`server-CLOUD` or `router`) if it is still the one we started."""
        pid, started = self.pids()[name]
        if is_running(pid, started):
            os.kill(pid, signum)

    def kill(self, cloud: str) -> None:
        """SIGKILL the server of `cloud` and wait until it is gone."""
        name = f"server-{cloud}"
        pid, started = self.pids()[name]
        self.signal(name, signal.SIGKILL)
        stop_processes([(pid, started)])

    def restart(self, cloud: str, wait: bool = True) -> None:
        """Start the server of `cloud` again on its port (after `kill`); wait until it is ready unless told not to."""
        name = f"server-{cloud}"
        stop_processes([self._forget(name)])
        self._spawn_server(cloud)
        if wait:
            self._wait(name, self.servers[cloud] + SERVER_READY_PATH)

    def hand_over_router(self) -> None:
        """Upgrade the router gracefully: a new one takes over the port (SO_REUSEPORT), then the old one drains.

        Needs `--reuse-port` in `router_args` and an `admin_token` (the new process is known by the PID
        that `/router/status` reports once new connections reach it).
        """
        if "--reuse-port" not in self.router_args or self.admin_token is None:
            raise StackError("a router hand-over needs --reuse-port in router_args and an admin token")
        old = self._forget("router")
        self._spawn_router()
        try:
            self._wait("router", self.router_url + "/router/status", pid=self.pids()["router"][0])
        except BaseException:  # the old router keeps the port; the new one goes
            stop_processes([self._forget("router")])
            self._processes.append(("router", *old))
            raise
        stop_processes([old])  # SIGTERM: the old router stops listening, drains and exits

    def reload_router(self) -> None:
        """Reload the router in place (SIGHUP): HAProxy's master starts new workers on the same listeners."""
        if self.admin_token is None:
            raise StackError("a router reload is watched through the admin API: give the stack an admin token")
        before = self._router_status().get("reloads", 0)
        self.signal("router", signal.SIGHUP)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self._router_status().get("reloads", 0) == before:
            if time.monotonic() > deadline:
                raise StackError(f"the router did not reload within {START_TIMEOUT_SECONDS:.0f} s; see {self.logs}")
            time.sleep(PROBE_SECONDS)

    def _router_status(self) -> dict[str, Any]:
        _, document = _get(self.router_url + "/router/status", {"Authorization": f"Bearer {self.admin_token}"})
        return document if isinstance(document, dict) else {}

    def kill_router(self) -> None:
        """SIGKILL the router, then start a new one on its port and wait until it answers (a hard restart)."""
        old = self._forget("router")
        if is_running(*old):
            os.kill(old[0], signal.SIGKILL)
        stop_processes([old])
        self._spawn_router()
        self._wait("router", self.router_url + SERVER_READY_PATH)

    def _forget(self, name: str) -> tuple[int, int | None]:
        """Stop tracking our process `name` (it stays in `started`); its PID and start time."""
        pid, started = self.pids()[name]
        self._processes = [process for process in self._processes if process[0] != name]
        return pid, started

    def _spawn_router(self) -> None:
        port = self.router_url.rsplit(":", 1)[1]
        backends = [argument for cloud, url in self.servers.items() for argument in ("--backend", f"{cloud}={url}")]
        token = ["--admin-token", self.admin_token] if self.admin_token else []
        flags = [*backends, *token, "--engine", self.engine, *self.router_args]
        self._spawn("router", ["route", "--host", "127.0.0.1", "--port", port, *flags])

    def _spawn_server(self, cloud: str) -> None:
        port = self.servers[cloud].rsplit(":", 1)[1]
        command = ["serve", "--cloud", cloud, "--host", "127.0.0.1", "--port", port]
        if self.model is not None:
            command += ["--model", self.model]
        if self.poll_seconds is not None:
            command += ["--poll-seconds", str(self.poll_seconds)]
        if self.drill_mode:
            command.append("--drill-mode")
        self._spawn(f"server-{cloud}", command)

    def _spawn(self, name: str, arguments: list[str]) -> None:
        self._runs[name] += 1
        runs = self._runs[name]
        log = self.logs / (f"{name}.log" if runs == 1 else f"{name}.{runs}.log")  # a restart keeps the old log
        pid, started = spawn([sys.executable, "-m", "toolkit", *arguments], log)
        self._processes.append((name, pid, started))
        self.started.append((pid, started))

    def _wait(self, name: str, url: str, pid: int | None = None) -> None:
        """Wait until `url` answers 200 (from process `pid` if given, by the `pid` of its JSON answer)."""
        _, ours, started = next(process for process in self._processes if process[0] == name)
        headers = {"Authorization": f"Bearer {self.admin_token}"} if pid is not None else {}
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if not is_running(ours, started):
                raise StackError(f"{name} exited while starting; see its log in {self.logs}")
            status, document = _get(url, headers)
            if status == 200 and (pid is None or (isinstance(document, dict) and document.get("pid") == pid)):
                return
            time.sleep(PROBE_SECONDS)
        raise StackError(f"{name} was not ready after {START_TIMEOUT_SECONDS:.0f} s; see its log in {self.logs}")


def routed_prediction(router_url: str, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """POST one record to the router's MLflow endpoint; the JSON answer and the headers (lower-case names)."""
    body = json.dumps({"dataframe_records": [record]}).encode()
    request = urllib.request.Request(
        router_url + "/invocations", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    with opener.open(request, timeout=10) as response:
        return json.loads(response.read()), {name.lower(): value for name, value in response.headers.items()}


def _get(url: str, headers: dict[str, str]) -> tuple[int | None, Any]:
    """The status and JSON body (None if not JSON) of GET `url`; (None, None) without an answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=1) as response:
            body = response.read()
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return error.code, None
    except OSError:
        return None, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None
