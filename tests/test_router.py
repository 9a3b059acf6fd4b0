"""The router as real processes on 127.0.0.1: stand-in model servers (`tests/router_backends.py`) behind
`python -m toolkit.cli.route` (and `mct route` once), under a steady stream of client requests while
backends are killed, frozen, failing, drained or brought back. At the end, one test routes to three real
`mct serve` processes (`tests.server_fixtures`).

The routers run with fast health checks (every 0.2 s) and a 0.5 s per-try timeout, from a config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.router.haproxy.engine import haproxy_version
from serving.router.http_client import (
    BadResponse,
    ConnectFailed,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from serving.router.http_server import HttpServer, Request, Response
from serving.router.listener import open_listener
from tests.server_fixtures import PublishedClouds, serving_clouds  # noqa: F401  (the module fixture)
from toolkit.processes import free_ports

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "router-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PER_TRY_TIMEOUT_SECONDS = 0.5
ROUTER_SETTINGS = f"""
[router]
health_interval_seconds = 0.2
health_timeout_seconds = 0.2
per_try_timeout_seconds = {PER_TRY_TIMEOUT_SECONDS}
eject_base_seconds = 1.0
eject_max_seconds = 4.0
"""
# Processes start in well under a second alone; the other test worker shares the two cores.
START_TIMEOUT_SECONDS = 30.0
BODY = {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}}


def _wait(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{what} did not start in {START_TIMEOUT_SECONDS:.0f} s:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes] | None) -> int | None:
    """SIGCONT and SIGTERM our process by its PID, SIGKILL if it lingers; its exit code."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


@dataclass
class Backend:
    """A stand-in model server we run, kill, freeze and restart."""

    name: str
    port: int
    logs: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = self.logs / f"backend-{self.name}.log"
        with log.open("ab") as stream:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "tests" / "router_backends.py"),
                    "--port",
                    str(self.port),
                    "--name",
                    self.name,
                ],
                stdin=subprocess.DEVNULL,
                stdout=stream,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        assert self.process is not None
        log = self.logs / f"backend-{self.name}.log"
        _wait(lambda: httpx.get(self.url + "/control").status_code == 200, f"backend {self.name}", self.process, log)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        if signum == signal.SIGKILL:
            self.process.wait(10)

    def control(self, **mode: Any) -> dict[str, Any]:
        return httpx.post(self.url + "/control", json=mode).json()

    def predictions(self) -> int:
        return int(httpx.get(self.url + "/control").json()["predictions"])


@dataclass
class Router:
    """A router process we started, and how to talk to it."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, Any]:
        response = httpx.get(self.url + "/router/status", headers=AUTH)
        assert response.status_code == 200, response.text
        return response.json()

    def backend(self, name: str) -> dict[str, Any]:
        return next(backend for backend in self.status()["backends"] if backend["name"] == name)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Reply:
    """One client request of a stream: when it was sent, what came back, how long it took."""

    sent_at: float
    status: int  # 0: no HTTP answer at all
    seconds: float
    routed_to: str | None
    error: str = ""


@dataclass
class Stream:
    replies: list[Reply] = field(default_factory=list)

    def failed(self) -> list[Reply]:
        return [reply for reply in self.replies if reply.status != 200]

    def routed(self, after: float = 0.0, before: float = float("inf")) -> set[str | None]:
        return {reply.routed_to for reply in self.replies if after <= reply.sent_at < before}


async def _stream(url: str, seconds: float, concurrency: int = 4) -> Stream:
    """Send predictions continuously from `concurrency` clients for `seconds`."""
    stream = Stream()
    start = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:

        async def worker() -> None:
            while (sent := time.monotonic()) - start < seconds:
                try:
                    response = await client.post("/invocations", json=BODY)
                except httpx.HTTPError as exc:
                    stream.replies.append(Reply(sent - start, 0, time.monotonic() - sent, None, repr(exc)))
                    continue
                reply = Reply(sent - start, response.status_code, time.monotonic() - sent, None)
                reply.routed_to = response.headers.get("x-routed-to")
                if response.status_code != 200:
                    reply.error = response.text
                stream.replies.append(reply)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stream


def stream_while(url: str, seconds: float, *events: tuple[float, Callable[[], Any]]) -> Stream:
    """A stream of `seconds`, running each `(at_seconds, action)` at its time (in a thread, so that a slow
    action such as a restart does not hold up the clients)."""

    async def run() -> Stream:
        async def at(delay: float, action: Callable[[], Any]) -> None:
            await asyncio.sleep(delay)
            await asyncio.to_thread(action)

        results = await asyncio.gather(_stream(url, seconds), *(at(delay, action) for delay, action in events))
        return results[0]

    return asyncio.run(run())


def _assert_no_failure(stream: Stream, router: Router, cut_answers_at: Sequence[float] = ()) -> None:
    """No failed request, except (HAProxy) at most one closed connection per event at `cut_answers_at`.

    HAProxy streams answers: a server killed after sending part of one leaves nothing to retry, and the
    client sees the connection close (the built-in engine buffers answers whole and retries those). And
    HAProxy 2.6 closes idle keep-alive connections when it reloads: a request sent on one at that instant
    is lost (2.7's `idle-close-on-response`, rendered when available, waits for the next answer instead).
    """
    failed = stream.failed()
    cut = [
        reply
        for reply in failed
        if reply.status == 0
        and ("disconnected" in reply.error or "ReadError" in reply.error)
        and any(-0.05 < reply.sent_at - at < 0.3 for at in cut_answers_at)
    ]
    if len(cut) <= len(cut_answers_at):
        failed = [reply for reply in failed if reply not in cut]
    assert not failed, f"{len(failed)} of {len(stream.replies)} failed, e.g. {failed[:3]}\n{router.log_text()}"
    assert len(stream.replies) > 20, "the stream hardly ran"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("router")
    (directory / "router.toml").write_text(ROUTER_SETTINGS)
    return directory


@pytest.fixture(scope="module")
def backends(workdir: Path) -> Iterator[dict[str, Backend]]:
    """aws, gcp and azure stand-ins for the whole module."""
    ports = free_ports(3)
    started = {name: Backend(name, port, workdir) for name, port in zip(("aws", "gcp", "azure"), ports, strict=True)}
    try:
        for backend in started.values():
            backend.start()
        for backend in started.values():
            backend.wait_ready()
        yield started
    finally:
        for backend in started.values():
            _stop(backend.process)


@pytest.fixture
def clouds(backends: dict[str, Backend]) -> dict[str, Backend]:
    """The three stand-ins, each running, not frozen and in its default mode, whatever the last test did."""
    for backend in backends.values():
        assert backend.process is not None
        if backend.process.poll() is not None:
            backend.start()
            backend.wait_ready()
        backend.signal(signal.SIGCONT)
        backend.control()
    return backends


HAPROXY_MISSING = shutil.which("haproxy") is None
HAPROXY_CLOSES_IDLE_AFTER_ANSWER = not HAPROXY_MISSING and haproxy_version() >= (2, 7)
# Where each engine's metrics show a backend's health, answers and retries.
METRIC_NAMES = {
    "builtin": {
        "healthy": "mct_router_backend_healthy",
        "answers": 'mct_router_backend_tries_total{{backend="{backend}",outcome="2xx"}}',
        "retries": 'mct_router_retries_total{{backend="{backend}"}}',
    },
    "haproxy": {
        "healthy": 'haproxy_server_status{proxy="clouds",server="aws",state="UP"} 1',
        "answers": 'haproxy_server_http_responses_total{{proxy="clouds",server="{backend}",code="2xx"}}',
        "retries": 'haproxy_server_retry_warnings_total{{proxy="clouds",server="{backend}"}}',
    },
}
ENGINES = [
    "builtin",
    pytest.param(
        "haproxy",
        marks=pytest.mark.skipif(HAPROXY_MISSING, reason="HAProxy is not installed (`make setup` installs it as root)"),
    ),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """Each routing engine in turn: the conformance tests hold for both."""
    return str(request.param)


@pytest.fixture
def start_router(workdir: Path) -> Iterator[Callable[..., Router]]:
    """Start `python -m toolkit.cli.route` with the test settings, the token and `args`; stopped afterwards."""
    routers: list[Router] = []

    def start(
        *args: str,
        command: Sequence[str] = (sys.executable, "-m", "toolkit.cli.route"),
        port: int | None = None,
        engine: str = "builtin",
    ) -> Router:
        """A router on a free port, or on `port` (then ready once its own PID answers the status)."""
        shared = port is not None
        port = port or free_ports(1)[0]
        args = (*args, "--engine", engine)
        log = workdir / f"router-{port}-{len(routers)}.log"
        env = {**os.environ, "MCT_CONFIG": str(workdir / "router.toml"), "MCT_ROUTER__ADMIN_TOKEN": TOKEN}
        with log.open("wb") as stream:
            process = subprocess.Popen(
                [*command, "--port", str(port), *args],
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=stream,
                stderr=subprocess.STDOUT,
            )
        router = Router(process, port, log)
        routers.append(router)

        def ready() -> bool:
            # A fresh connection each time: a kept-alive one may belong to another router on a shared port.
            response = httpx.get(router.url + "/router/status", headers={**AUTH, "Connection": "close"})
            return response.status_code == 200 and (not shared or response.json()["pid"] == process.pid)

        _wait(ready, "router", process, log)
        return router

    yield start
    for router in routers:
        _stop(router.process)


def _backend_flags(clouds: dict[str, Backend], *names: str) -> list[str]:
    return [flag for name in names or tuple(clouds) for flag in ("--backend", f"{name}={clouds[name].url}")]


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll until `condition` holds; the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > seconds:
            pytest.fail(f"{what}: not within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - start


# Pass-through


def test_bodies_and_headers_pass_through_and_the_backend_is_named(
    clouds: dict[str, Backend], start_router: Callable[..., Router]
) -> None:
    router = start_router(*_backend_flags(clouds))
    for path in ("/invocations", "/v2/models/m/infer?verbose=1"):
        response = httpx.post(
            router.url + path,
            json=BODY,
            headers={"X-Request-Id": "abc-123", "Keep-Alive": "timeout=5", "X-Forwarded-For": "10.0.0.1"},
        )
        assert response.status_code == 200, response.text
        echoed = response.json()
        assert response.headers["x-routed-to"] == echoed["backend"] == response.headers["x-backend-name"]
        assert echoed["path"] == path
        assert echoed["body_bytes"] == len(json.dumps(BODY, separators=(",", ":")))
        received = echoed["headers"]
        assert received["x-request-id"] == "abc-123"
        assert received["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
        assert received["host"] == f"127.0.0.1:{clouds[echoed['backend']].port}"
        assert "keep-alive" not in received
    parts = [b'{"a":', b" 1}"]
    chunked = httpx.post(router.url + "/invocations", content=iter(parts))  # Transfer-Encoding: chunked
    assert chunked.status_code == 200 and chunked.json()["body_bytes"] == len(b"".join(parts))
    assert "transfer-encoding" not in chunked.json()["headers"]


def test_a_client_error_is_returned_as_is_and_not_retried(
    clouds: dict[str, Backend], start_router: Callable[..., Router]
) -> None:
    router = start_router(*_backend_flags(clouds))
    before = sum(backend.predictions() for backend in clouds.values())
    for status in (404, 422):
        response = httpx.post(router.url + "/invocations", json=BODY, headers={"X-Test-Status": str(status)})
        assert response.status_code == status
        assert response.json()["backend"] == response.headers["x-routed-to"]
    assert sum(backend.predictions() for backend in clouds.values()) == before + 2


# The HTTP stack, in process: what a stand-in backend does not exercise


@contextlib.asynccontextmanager
async def http_server(max_body_bytes: int = 1024) -> AsyncIterator[int]:
    """Our HTTP server on a free port, echoing `METHOD TARGET BODY` (`/slow` answers after 50 ms)."""

    async def echo(request: Request) -> Response:
        if request.target == b"/slow":
            await asyncio.sleep(0.05)
        return Response(
            200, b"content-type: text/plain\r\n", b"%s %s %s" % (request.method, request.target, request.body)
        )

    server = HttpServer(echo, max_body_bytes)
    port = await server.start("127.0.0.1", 0)
    try:
        yield port
    finally:
        await server.stop(0.1)


async def exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send `parts` on one connection (pausing between them), then read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for part in parts:
        writer.write(part)
        await asyncio.sleep(pause)
    received = await asyncio.wait_for(reader.read(-1), 5.0)
    writer.close()
    return received


def test_the_server_answers_pipelined_requests_in_order() -> None:
    async def run() -> bytes:
        async with http_server() as port:
            slow = b"POST /slow HTTP/1.1\r\nHost: r\r\nContent-Length: 1\r\n\r\na"
            fast = b"GET /fast HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"
            return await exchange(port, slow + fast)

    received = asyncio.run(run())
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert received.index(b"POST /slow a") < received.index(b"GET /fast ")
    assert received.endswith(b"GET /fast ") and b"connection: close" in received


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 5000\r\n\r\n", 413),
        (b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n" + b"x" * 2048 + b"\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: r\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n", 431),
        (b"NONSENSE\r\n\r\n", 400),
    ],
    ids=["declared-too-large", "chunked-too-large", "headers-too-large", "garbage"],
)
def test_the_server_refuses_what_it_cannot_take_and_closes(request_bytes: bytes, status: int) -> None:
    async def run() -> bytes:
        async with http_server(max_body_bytes=1024) as port:
            return await exchange(port, request_bytes)

    received = asyncio.run(run())
    assert received.startswith(b"HTTP/1.1 %d " % status), received[:200]
    assert b"connection: close" in received and b'"error"' in received


def test_the_server_keeps_an_http_1_0_connection_only_when_asked() -> None:
    async def run() -> bytes:
        async with http_server() as port:
            return await exchange(
                port, b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b"GET /b HTTP/1.0\r\n\r\n"
            )

    first, second = asyncio.run(run()).split(b"GET /a ")
    assert b"connection: keep-alive" in first and b"connection: close" in second


def test_the_server_ignores_an_upgrade_answers_the_request_and_closes() -> None:
    async def run() -> bytes:
        async with http_server() as port:
            return await exchange(port, b"GET /x HTTP/1.1\r\nHost: r\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")

    received = asyncio.run(run())
    assert received.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in received


def test_the_server_answers_expect_100_continue_before_the_body() -> None:
    async def run() -> bytes:
        async with http_server() as port:
            head = (
                b"POST /x HTTP/1.1\r\nHost: r\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
            )
            return await exchange(port, head, b"hi", pause=0.05)

    received = asyncio.run(run())
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
    assert received.endswith(b"POST /x hi")


@contextlib.asynccontextmanager
async def scripted_upstream(*answers: bytes | None) -> AsyncIterator[tuple[UpstreamPool, list[int]]]:
    """A backend that answers the n-th request it reads with `answers[n]` (None: close without answering;
    an answer ending in b"<close>" is sent, then the connection closed). Yields a pool to it and the
    number of connections it accepted."""
    accepted = [0]
    served = iter(answers)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                answer = next(served)
                if answer is None:
                    break
                writer.write(answer.removesuffix(b"<close>"))
                await writer.drain()
                if answer.endswith(b"<close>"):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool = UpstreamPool("127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        yield pool, accepted
    finally:
        pool.close()
        server.close()


OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _get(pool: UpstreamPool, method: bytes = b"POST", timeout: float = 2.0) -> UpstreamResponse:
    return await pool.request(method, b"/invocations", b"content-type: application/json\r\n", b"{}", timeout)


def test_the_client_reads_chunked_and_interim_answers_and_reuses_the_connection() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + OK_ANSWER

    async def run() -> tuple[list[bytes], int]:
        async with scripted_upstream(chunked, interim) as (pool, accepted):
            bodies = [(await _get(pool)).body, (await _get(pool)).body]
            return bodies, accepted[0]

    assert asyncio.run(run()) == ([b"hello world", b"ok"], 1)


def test_the_client_honours_connection_close_and_bodies_that_end_with_the_connection() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    until_eof = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it<close>"

    async def run() -> tuple[list[bytes], int]:
        async with scripted_upstream(closing, until_eof, OK_ANSWER) as (pool, accepted):
            bodies = [(await _get(pool)).body for _ in range(3)]
            return bodies, accepted[0]

    assert asyncio.run(run()) == ([b"ok", b"all of it", b"ok"], 3)


def test_the_client_retries_a_kept_alive_connection_the_backend_dropped_on_a_new_one() -> None:
    async def run() -> tuple[list[int], int]:
        async with scripted_upstream(OK_ANSWER, None, OK_ANSWER) as (pool, accepted):
            statuses = [(await _get(pool)).status, (await _get(pool)).status]
            return statuses, accepted[0]

    assert asyncio.run(run()) == ([200, 200], 2)


def test_the_client_answers_head_without_waiting_for_a_body() -> None:
    async def run() -> UpstreamResponse:
        async with scripted_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n") as (pool, _):
            return await _get(pool, b"HEAD", timeout=1.0)

    response = asyncio.run(run())
    assert (response.status, response.body, dict(response.headers)[b"content-length"]) == (200, b"", b"10")


def test_the_client_fails_a_try_on_timeout_refusal_and_garbage() -> None:
    async def run() -> list[UpstreamError]:
        errors: list[UpstreamError] = []
        async with scripted_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", b"NOT HTTP\r\n\r\n") as (
            pool,
            _,
        ):
            for _ in range(2):
                with pytest.raises(UpstreamError) as caught:
                    await _get(pool, timeout=0.2)
                errors.append(caught.value)
        with pytest.raises(UpstreamError) as caught:
            await _get(UpstreamPool("127.0.0.1", free_ports(1)[0]))
        errors.append(caught.value)
        return errors

    timeout, garbage, refused = asyncio.run(run())
    assert isinstance(timeout, UpstreamTimeout) and timeout.sent
    assert isinstance(garbage, BadResponse) and garbage.sent
    assert isinstance(refused, ConnectFailed) and not refused.sent and "cannot connect" in str(refused)


# Admin API


def test_the_admin_api_needs_the_token(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    router = start_router(*_backend_flags(clouds), engine=engine)
    for method, path in (("GET", "/router/status"), ("POST", "/router/backends/aws/drain"), ("GET", "/metrics")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = httpx.request(method, router.url + path, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert "Bearer" in response.json()["error"]
    assert not router.backend("aws")["drained"]
    metrics = httpx.get(router.url + "/metrics", headers=AUTH)
    assert metrics.status_code == 200 and METRIC_NAMES[engine]["healthy"] in metrics.text


def test_drain_and_undrain_move_traffic_off_and_back(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    router = start_router(*_backend_flags(clouds), "--policy", "round_robin", engine=engine)
    drained = httpx.post(router.url + "/router/backends/aws/drain", headers=AUTH)
    assert drained.status_code == 200 and drained.json() == {"drained": ["aws"]}
    assert router.backend("aws")["state"] == "drained"
    stream = stream_while(router.url, 0.6)
    _assert_no_failure(stream, router)
    assert stream.routed() == {"gcp", "azure"}
    assert httpx.post(router.url + "/router/backends/aws/undrain", headers=AUTH).status_code == 200
    assert "aws" in stream_while(router.url, 0.5).routed()
    unknown = httpx.post(router.url + "/router/backends/nowhere/drain", headers=AUTH)
    assert unknown.status_code == 404 and "aws" in unknown.json()["known"]
    metrics = httpx.get(router.url + "/metrics", headers=AUTH).text
    assert METRIC_NAMES[engine]["answers"].format(backend="gcp") in metrics


# Failures under a steady stream


def test_a_killed_backend_fails_no_request_and_returns_when_restarted(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    router = start_router(*_backend_flags(clouds), "--policy", "round_robin", engine=engine)
    aws = clouds["aws"]
    restarted_at: list[float] = []
    states: list[str] = []
    start = time.monotonic()

    def restart() -> None:
        aws.start()
        aws.wait_ready()
        restarted_at.append(time.monotonic() - start)

    stream = stream_while(
        router.url,
        3.5,
        (0.3, lambda: aws.signal(signal.SIGKILL)),
        (0.9, lambda: states.append(router.backend("aws")["state"])),
        (1.0, restart),
    )
    _assert_no_failure(stream, router, cut_answers_at=[0.3] if engine == "haproxy" else [])
    assert states == ["ejected"] or states == ["unhealthy"], states
    back = [reply.sent_at for reply in stream.replies if reply.routed_to == "aws" and reply.sent_at > 0.9]
    assert back, f"aws (restarted {restarted_at[0]:.1f} s in) got no traffic back within {3.5 - restarted_at[0]:.1f} s"
    assert back[0] - restarted_at[0] < 2.0


def test_a_frozen_backend_fails_no_request_and_costs_at_most_one_try_timeout(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    router = start_router(*_backend_flags(clouds), "--policy", "round_robin", engine=engine)
    gcp = clouds["gcp"]
    stream = stream_while(
        router.url, 2.3, (0.3, lambda: gcp.signal(signal.SIGSTOP)), (2.0, lambda: gcp.signal(signal.SIGCONT))
    )
    _assert_no_failure(stream, router)
    slowest = max(reply.seconds for reply in stream.replies)
    assert slowest < PER_TRY_TIMEOUT_SECONDS + 0.4, f"a request took {slowest:.2f} s"
    late_and_slow = [reply for reply in stream.replies if reply.sent_at > 1.2 and reply.seconds > 0.4]
    assert not late_and_slow, "the frozen backend kept getting traffic"
    assert router.backend("gcp")["ejections"] >= 1


def test_a_backend_answering_500_is_ejected_and_fails_no_request(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    router = start_router(*_backend_flags(clouds), "--policy", "round_robin", engine=engine)
    clouds["azure"].control(status=500)
    stream = stream_while(router.url, 1.0)
    _assert_no_failure(stream, router)
    assert "azure" not in stream.routed()
    azure = router.backend("azure")
    if engine == "builtin":
        assert azure["ejections"] >= 1 and azure["last_error"] == "answered 500"
        assert azure["healthy"], "readiness still passes: only the passive checks see the 500s"
    # HAProxy 2.6 does not count an answer it retries towards `observe layer7`: azure is never marked down,
    # and each of its 500s costs one retry on another server.
    metrics = httpx.get(router.url + "/metrics", headers=AUTH).text
    assert METRIC_NAMES[engine]["retries"].format(backend="azure") in metrics


def test_when_no_backend_answers_the_client_gets_a_503_that_says_where_to_look(
    start_router: Callable[..., Router], engine: str
) -> None:
    closed = free_ports(2)
    router = start_router(
        "--backend",
        f"aws=http://127.0.0.1:{closed[0]}",
        "--backend",
        f"gcp=http://127.0.0.1:{closed[1]}",
        engine=engine,
    )
    started = time.monotonic()
    response = httpx.post(router.url + "/invocations", json=BODY)
    assert time.monotonic() - started < 1.0
    assert response.status_code == 503
    document = response.json()
    assert "GET /router/status" in document["hint"]
    if engine == "builtin":  # HAProxy's answer is a fixed page: it cannot list the tries
        assert document["error"].startswith("no healthy backend answered")
        assert {attempt["backend"] for attempt in document["tried"]} == {"aws", "gcp"}
        assert "cannot connect" in document["tried"][0]["error"]


def test_a_500_from_every_backend_reaches_the_client_after_trying_each(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    router = start_router(*_backend_flags(clouds), engine=engine)
    for backend in clouds.values():
        backend.control(status=503)
    before = sum(backend.predictions() for backend in clouds.values())
    response = httpx.post(router.url + "/invocations", json=BODY)
    assert response.status_code == 503 and response.headers["x-routed-to"] == response.json()["backend"]
    # The built-in engine tries each backend once; HAProxy's redispatch avoids only the server just tried,
    # so it gets two tries per other server (1 + 4 with three backends).
    assert sum(backend.predictions() for backend in clouds.values()) == before + (3 if engine == "builtin" else 5)


def test_two_clouds_down_the_third_carries_everything(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    router = start_router(*_backend_flags(clouds), "--policy", "round_robin", engine=engine)
    stream = stream_while(
        router.url,
        2.5,
        (0.3, lambda: clouds["aws"].signal(signal.SIGKILL)),
        (0.3, lambda: clouds["gcp"].signal(signal.SIGKILL)),
    )
    _assert_no_failure(stream, router, cut_answers_at=[0.3, 0.3] if engine == "haproxy" else [])
    assert stream.routed(after=1.5) == {"azure"}


def test_priority_tiers_fail_over_and_back(clouds: dict[str, Backend], start_router: Callable[..., Router]) -> None:
    router = start_router(*_backend_flags(clouds), "--tier", "gcp=1", "--tier", "azure=1")
    assert stream_while(router.url, 0.3).routed() == {"aws"}
    aws = clouds["aws"]
    stream = stream_while(router.url, 1.5, (0.2, lambda: aws.control(status=503, ready=False)))
    _assert_no_failure(stream, router)
    assert stream.routed(after=0.8) <= {"gcp", "azure"}
    aws.control()
    took = _wait_for(lambda: stream_while(router.url, 0.2).routed() == {"aws"}, 5.0, "tier 0 takes the traffic back")
    assert took < 3.0


def test_hedging_answers_from_another_backend_while_one_is_slow(
    clouds: dict[str, Backend], start_router: Callable[..., Router]
) -> None:
    router = start_router(*_backend_flags(clouds), "--policy", "round_robin", "--hedge-after", "0.05")
    clouds["aws"].control(delay_seconds=0.45)
    stream = stream_while(router.url, 1.0)
    _assert_no_failure(stream, router)
    assert max(reply.seconds for reply in stream.replies) < 0.3
    assert "aws" not in stream.routed()


# Graceful upgrade: a new router takes over the port


def test_a_new_listener_in_a_reuseport_group_takes_every_new_connection() -> None:
    old = open_listener("127.0.0.1", 0, reuse_port=True)
    port = old.getsockname()[1]
    new = open_listener("127.0.0.1", port, reuse_port=True)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
    try:
        time.sleep(0.1)
        assert (_accept_all(old), _accept_all(new)) == (0, 40), "the old socket must only empty its queue"
        old.close()
        newest = open_listener("127.0.0.1", port, reuse_port=True)
        clients += [socket.create_connection(("127.0.0.1", port)) for _ in range(40)]
        time.sleep(0.1)
        assert (_accept_all(new), _accept_all(newest)) == (0, 40), "steering must follow the next hand-over"
        newest.close()
    finally:
        new.close()
        for client in clients:
            client.close()


def _accept_all(listener: socket.socket) -> int:
    accepted = 0
    while True:
        try:
            connection, _ = listener.accept()
        except BlockingIOError:
            return accepted
        connection.close()
        accepted += 1


def test_a_router_hands_over_its_port_under_load_without_failing_a_request(
    clouds: dict[str, Backend], start_router: Callable[..., Router]
) -> None:
    old = start_router(*_backend_flags(clouds), "--reuse-port")
    new: list[Router] = []

    def hand_over() -> None:
        new.append(start_router(*_backend_flags(clouds), "--reuse-port", port=old.port))
        assert _stop(old.process) == 0, old.log_text()  # SIGTERM: it stops listening and drains

    stream = stream_while(old.url, 2.5, (0.5, hand_over))
    _assert_no_failure(stream, old)
    assert "draining" in old.log_text()
    fresh = {httpx.get(old.url + "/router/status", headers={**AUTH, "Connection": "close"}).json()["pid"]}
    assert fresh == {new[0].process.pid}


def test_a_second_router_on_a_taken_port_says_so_in_one_line(
    clouds: dict[str, Backend], start_router: Callable[..., Router]
) -> None:
    router = start_router(*_backend_flags(clouds))
    command = [sys.executable, "-m", "toolkit.cli.route", "--port", str(router.port), *_backend_flags(clouds)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{router.port}: Address already in use "
        "(another router? a hand-over needs --reuse-port on both)"
    ]


# Operating either engine: mct router, the metrics port; the HAProxy engine's own promises


def _mct(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "mct"), *args], capture_output=True, text=True, timeout=60)


def test_mct_router_shows_drains_and_undrains_a_backend_of_either_engine(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    router = start_router(*_backend_flags(clouds), engine=engine)
    where = ("--url", router.url, "--token", TOKEN)
    status = _mct("router", "status", *where, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["engine"] == engine
    drained = _mct("router", "drain", "gcp", *where)
    assert (drained.returncode, drained.stdout.strip()) == (0, "drained gcp")
    assert router.backend("gcp")["state"] == "drained"
    table = _mct("router", "status", *where)
    assert "gcp" in table.stdout and "drained" in table.stdout and f"engine {engine}" in table.stdout
    assert _mct("router", "undrain", "gcp", *where).returncode == 0
    assert router.backend("gcp")["state"] == "healthy"
    unknown = _mct("router", "drain", "mars", *where)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "no backend or cloud called 'mars'" in unknown.stderr and "aws" in unknown.stderr
    wrong = _mct("router", "status", "--url", router.url, "--token", "wrong")
    assert wrong.returncode == 2 and "answered 401" in wrong.stderr
    nobody = _mct("router", "status", "--url", f"http://127.0.0.1:{free_ports(1)[0]}", "--token", TOKEN)
    assert nobody.returncode == 1 and "no router answers" in nobody.stderr


def test_the_metrics_port_serves_prometheus_without_the_token(
    clouds: dict[str, Backend], start_router: Callable[..., Router], engine: str
) -> None:
    metrics_port = free_ports(1)[0]
    router = start_router(*_backend_flags(clouds), "--metrics-port", str(metrics_port), engine=engine)
    assert httpx.post(router.url + "/invocations", json=BODY).status_code == 200
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert scraped.status_code == 200 and METRIC_NAMES[engine]["healthy"] in scraped.text
    assert httpx.get(router.url + "/metrics").status_code == 401, "the router's own port still wants the token"


@pytest.mark.skipif(HAPROXY_MISSING, reason="HAProxy is not installed (`make setup` installs it as root)")
def test_the_rendered_haproxy_config_for_three_clouds_passes_haproxy_check(tmp_path: Path) -> None:
    printed = _mct(
        "route",
        "--engine",
        "haproxy",
        "--print-config",
        "--backend",
        "aws=http://10.0.0.1:8080",
        "--backend",
        "gcp=https://serving-abc.a.run.app",
        "--backend",
        "azure=https://serving.example.azurecontainerapps.io",
        "--tier",
        "azure=1",
        "--weight",
        "aws=2",
        "--policy",
        "weighted",
        "--admin-token",
        "secret",
        "--metrics-port",
        "9100",
    )
    assert printed.returncode == 0, printed.stderr
    config = tmp_path / "haproxy.cfg"
    config.write_text(printed.stdout)
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = printed.stdout
    assert "    server aws 10.0.0.1:8080 weight 256 check" in text
    assert "    server gcp serving-abc.a.run.app:443 weight 128 check ssl verify required" in text
    assert "backup" in text.split("server azure", 1)[1].splitlines()[0]
    for directive in (
        "option httpchk",
        "http-check send meth GET uri /v2/health/ready",
        "observe layer7",
        "retry-on conn-failure",
        "option redispatch 1",
        "balance roundrobin",
        "prometheus-exporter",
        "bind 127.0.0.1:9100",
        "expose-fd listeners",
        "master-worker",
    ):
        assert directive in text, directive


@pytest.mark.skipif(HAPROXY_MISSING, reason="HAProxy is not installed (`make setup` installs it as root)")
def test_a_haproxy_reload_under_load_fails_no_request_and_keeps_a_drained_backend(
    clouds: dict[str, Backend], start_router: Callable[..., Router]
) -> None:
    router = start_router(*_backend_flags(clouds), "--policy", "round_robin", engine="haproxy")
    assert httpx.post(router.url + "/router/backends/aws/drain", headers=AUTH).status_code == 200
    master = router.status()["haproxy_pid"]
    stream = stream_while(router.url, 2.0, (0.5, lambda: router.process.send_signal(signal.SIGHUP)))
    _assert_no_failure(stream, router, cut_answers_at=[] if HAPROXY_CLOSES_IDLE_AFTER_ANSWER else [0.5])
    status = router.status()
    assert status["reloads"] == 1 and status["haproxy_pid"] == master
    assert router.backend("aws")["state"] == "drained", "the reload carried the drained state over"
    assert "aws" not in stream.routed()
    assert _stop(router.process) == 0, router.log_text()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ((), "the haproxy engine needs the haproxy program, which is not on PATH"),
        (("--hedge-after", "0.1"), "the haproxy engine has no hedging"),
    ],
)
def test_the_haproxy_engine_refuses_what_it_cannot_do_in_one_line(
    flags: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "toolkit.cli.route", "--engine", "haproxy", "--backend", "aws=http://127.0.0.1:9"]
    environment = {**os.environ, "PATH": str(tmp_path)}  # no haproxy on this PATH
    result = subprocess.run([*command, *flags], capture_output=True, text=True, env=environment, timeout=30)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert message in line
    if not flags:
        assert "apt-get install haproxy" in line


# Configuration: command line, reload


def test_sighup_reloads_the_configuration_and_keeps_the_flags(
    clouds: dict[str, Backend], start_router: Callable[..., Router], workdir: Path
) -> None:
    config = workdir / "router.toml"

    def configure(router_lines: str, *names: str) -> None:
        sections = [f'[clouds.{name}]\nurl = "s3://{name}"\nserving_urls = ["{clouds[name].url}"]' for name in names]
        config.write_text("\n".join([ROUTER_SETTINGS + router_lines, *sections]) + "\n")

    configure('policy = "least_outstanding"', "aws", "gcp")
    try:
        router = start_router("--policy", "round_robin", command=(str(Path(sys.executable).parent / "mct"), "route"))
        assert [backend["name"] for backend in router.status()["backends"]] == ["aws", "gcp"]
        httpx.post(router.url + "/router/backends/aws/drain", headers=AUTH)
        configure('policy = "least_outstanding"', "aws", "azure")
        router.process.send_signal(signal.SIGHUP)
        _wait_for(lambda: "azure" in {b["name"] for b in router.status()["backends"]}, 5.0, "reload")
        status = router.status()
        assert status["policy"] == "round_robin", "the flag still overrides the file"
        assert [(b["name"], b["drained"]) for b in status["backends"]] == [("aws", True), ("azure", False)]
        assert stream_while(router.url, 0.3).routed() == {"azure"}
        configure("unhealthy_threshold = 0", "gcp")
        router.process.send_signal(signal.SIGHUP)
        _wait_for(lambda: "not reloaded" in router.log_text(), 5.0, "a refused reload logged")
        assert "router.unhealthy_threshold" in router.log_text()
        assert [b["name"] for b in router.status()["backends"]] == ["aws", "azure"]
        assert _stop(router.process) == 0, router.log_text()
    finally:
        config.write_text(ROUTER_SETTINGS)


def test_route_shows_its_configuration_and_refuses_bad_flags(mct) -> None:
    shown = mct(
        "route",
        "--show-config",
        "--backend",
        "aws=http://127.0.0.1:9001",
        "--backend",
        "aws=http://127.0.0.1:9002",
        "--backend",
        "gcp=https://gcp.example/api/",
        "--tier",
        "gcp=1",
        "--weight",
        "aws=3",
        "--admin-token",
        "x",
    )
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert [(b["name"], b["port"], b["tier"], b["weight"]) for b in document["backends"]] == [
        ("aws-1", 9001, 0, 3.0),
        ("aws-2", 9002, 0, 3.0),
        ("gcp", 443, 1, 1.0),
    ]
    assert document["backends"][2]["base_path"] == "/api"
    assert document["admin_token"] == "set" and document["policy"] == "peak_ewma"
    for args, message in (
        (["--backend", "aws"], "not NAME=URL"),
        (["--backend", "aws=ftp://x"], "must be http://"),
        (["--policy", "fastest"], "choose one of least_outstanding, peak_ewma (default)"),
        (["--tier", "mars=1"], "router.tiers names mars"),
        (["--weight", "aws=heavy"], "--weight 'aws=heavy' is not NAME=FLOAT"),
        (["--per-try-timeout", "0"], "router.per_try_timeout_seconds"),
        (["--hedge-after", "5"], "must be shorter than router.per_try_timeout_seconds"),
    ):
        result = mct("route", "--show-config", *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


# With the real model servers


def test_routes_to_three_real_model_servers_and_survives_losing_one(
    serving_clouds: PublishedClouds,  # noqa: F811
    start_router: Callable[..., Router],
) -> None:
    servers = serving_clouds.servers
    flags = [flag for cloud, server in servers.items() for flag in ("--backend", f"{cloud}={server.url}")]
    router = start_router(*flags, "--policy", "round_robin")
    card = json.loads((serving_clouds.bundles["1"].directory / "model_card.json").read_text())
    columns = [feature["name"] for feature in card["features"]]
    body = {"dataframe_split": {"columns": columns, "data": [[1.0] * len(columns)]}}
    answers = [httpx.post(router.url + "/invocations", json=body) for _ in range(6)]
    assert all(answer.status_code == 200 for answer in answers), answers[0].text
    assert {answer.headers["x-routed-to"] for answer in answers} == {"aws", "gcp", "azure"}
    assert all(answer.headers["x-routed-to"] == answer.headers["x-served-by"] for answer in answers)
    assert len({json.dumps(answer.json()["predictions"]) for answer in answers}) == 1
    azure = servers["azure"].process
    azure.kill()
    azure.wait(10)
    after = [httpx.post(router.url + "/invocations", json=body) for _ in range(6)]
    assert all(answer.status_code == 200 for answer in after), after[0].text
    assert {answer.headers["x-routed-to"] for answer in after} == {"aws", "gcp"}
