"""The router's cost (`mct route`, built-in engine) against nginx as the same proxy, in one run.

On free 127.0.0.1 ports it starts a backend (nginx with one worker, returning a fixed JSON: fast, so
that the proxies' own cost shows), our router in front of it (`python -m toolkit.cli.route --backend
bench=URL`, its defaults: peak-EWMA, health checks every second, retries) and nginx as a reverse proxy
with a keep-alive upstream to the same backend (one worker, as the router is one process). wrk then
POSTs a small JSON body to each of the three (direct, router, nginx):

- at 1 connection: p50 and p99 latency; "added" is the proxy's figure minus the direct one;
- at 16 connections (`--connections`): requests per second.

Each measurement is repeated (`--repeat`, targets interleaved) and the median kept, since other work on
a 2-core machine moves single runs by tens of percent. The goals: added p50 under 0.5 ms, and at least
0.2x nginx's throughput. Every process is stopped by its PID at the end. About a minute with the defaults.

Needs nginx and wrk (Debian: `apt-get install -y nginx wrk`; without them it says so and exits 0). Run
it with `make bench`, or
`.venv/bin/python bench/router_vs_nginx.py [--seconds S] [--repeat N] [--connections C] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from toolkit.processes import free_ports

TARGETS = ("direct", "router", "nginx")
BODY = '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}]}'
ANSWER = '{"model_name": "m", "outputs": [{"name": "probabilities", "shape": [1, 2], "data": [0.1, 0.9]}]}'
PATH = "/v2/models/m/infer"
ADDED_P50_GOAL_MS = 0.5
THROUGHPUT_GOAL_RATIO = 0.2
START_TIMEOUT_SECONDS = 30.0
# wrk reports its figures through this Lua hook, as one JSON line (latencies in microseconds).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %%d, "seconds": %%f, "errors": %%d, "non_2xx": %%d, '
    .. '"p50_us": %%f, "p99_us": %%f}\\n', summary.requests, summary.duration / 1e6,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
"""
NGINX_COMMON = """
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  {server}
}}
"""
BACKEND_SERVER = """server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{ default_type application/json; return 200 '{answer}'; }}
  }}"""
PROXY_SERVER = """upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}"""


@dataclass
class Run:
    """One wrk run."""

    requests: int
    seconds: float
    errors: int
    non_2xx: int
    p50_us: float
    p99_us: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


@dataclass
class Target:
    """The medians of the repeated runs against one target."""

    url: str
    latency_runs: list[Run] = field(default_factory=list)
    throughput_runs: list[Run] = field(default_factory=list)

    @property
    def p50_ms(self) -> float:
        return statistics.median(run.p50_us for run in self.latency_runs) / 1000

    @property
    def p99_ms(self) -> float:
        return statistics.median(run.p99_us for run in self.latency_runs) / 1000

    @property
    def per_second(self) -> float:
        return statistics.median(run.per_second for run in self.throughput_runs)

    @property
    def failures(self) -> int:
        return sum(run.errors + run.non_2xx for run in (*self.latency_runs, *self.throughput_runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="length of each wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is kept")
    parser.add_argument("--connections", type=int, default=16, help="connections of the throughput runs")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    missing = [tool for tool in ("nginx", "wrk") if not _which(tool)]
    if missing:
        # Skipped, not failed, so that `make bench` goes on with the other benchmarks.
        reason = f"skipped: this benchmark needs {' and '.join(missing)} (Debian: apt-get install -y nginx wrk)"
        print(json.dumps({"skipped": reason}) if args.json else reason)
        return
    with tempfile.TemporaryDirectory(prefix="mct-bench-router-") as scratch:
        targets = measure(Path(scratch), args.seconds, args.repeat, args.connections)
    report = summarize(targets, args.connections)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)


def measure(scratch: Path, seconds: int, repeat: int, connections: int) -> dict[str, Target]:
    backend_port, router_port, nginx_port = free_ports(3)
    script = scratch / "post.lua"
    script.write_text(WRK_SCRIPT % BODY)
    backend_conf = BACKEND_SERVER.format(port=backend_port, answer=ANSWER)
    proxy_conf = PROXY_SERVER.format(port=nginx_port, backend=backend_port)
    targets = {
        "direct": Target(f"http://127.0.0.1:{backend_port}{PATH}"),
        "router": Target(f"http://127.0.0.1:{router_port}{PATH}"),
        "nginx": Target(f"http://127.0.0.1:{nginx_port}{PATH}"),
    }
    router_command = [
        sys.executable,
        "-m",
        "toolkit.cli.route",
        "--port",
        str(router_port),
        "--backend",
        f"bench=http://127.0.0.1:{backend_port}",
    ]
    with (
        _process(_nginx(scratch / "backend", backend_conf), scratch / "backend.log"),
        _process(_nginx(scratch / "proxy", proxy_conf), scratch / "proxy.log"),
        _process(router_command, scratch / "router.log"),
    ):
        for target in targets.values():
            _wait_ready(target.url)
            _wrk(script, target.url, 1, 1)  # warm up: connections, pools, caches
        for _ in range(repeat):
            for target in targets.values():
                target.latency_runs.append(_wrk(script, target.url, 1, seconds))
                target.throughput_runs.append(_wrk(script, target.url, connections, seconds))
    return targets


def summarize(targets: dict[str, Target], connections: int) -> dict[str, object]:
    direct = targets["direct"]
    figures = {
        name: {
            "p50_ms": round(target.p50_ms, 4),
            "p99_ms": round(target.p99_ms, 4),
            "added_p50_ms": None if name == "direct" else round(target.p50_ms - direct.p50_ms, 4),
            "added_p99_ms": None if name == "direct" else round(target.p99_ms - direct.p99_ms, 4),
            f"requests_per_second_at_{connections}": round(target.per_second),
            "failed_requests": target.failures,
            "runs": [asdict(run) for run in (*target.latency_runs, *target.throughput_runs)],
        }
        for name, target in targets.items()
    }
    router, nginx = targets["router"], targets["nginx"]
    added = router.p50_ms - direct.p50_ms
    ratio = router.per_second / nginx.per_second
    return {
        "connections": connections,
        "targets": figures,
        "ratios": {
            "router_over_nginx_throughput": round(ratio, 3),
            "router_over_nginx_added_p50": round(added / max(nginx.p50_ms - direct.p50_ms, 1e-6), 2),
        },
        "goals": {
            f"added_p50_under_{ADDED_P50_GOAL_MS}_ms": added < ADDED_P50_GOAL_MS,
            f"throughput_at_least_{THROUGHPUT_GOAL_RATIO}x_nginx": ratio >= THROUGHPUT_GOAL_RATIO,
        },
    }


def show(report: dict[str, object]) -> None:
    console = Console(highlight=False)
    connections = report["connections"]
    table = Table(
        "target",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        f"req/s at {connections}",
        "failed",
        title="POST through the router and through nginx (1 connection for latency)",
    )
    targets = report["targets"]
    assert isinstance(targets, dict)
    for name, figures in targets.items():
        table.add_row(
            name,
            f"{figures['p50_ms']:.3f}",
            f"{figures['p99_ms']:.3f}",
            "-" if figures["added_p50_ms"] is None else f"{figures['added_p50_ms']:.3f}",
            "-" if figures["added_p99_ms"] is None else f"{figures['added_p99_ms']:.3f}",
            f"{figures[f'requests_per_second_at_{connections}']:,}",
            str(figures["failed_requests"]),
        )
    console.print(table)
    ratios, goals = report["ratios"], report["goals"]
    assert isinstance(ratios, dict) and isinstance(goals, dict)
    console.print(
        f"router / nginx: throughput {ratios['router_over_nginx_throughput']:.2f}x, "
        f"added p50 {ratios['router_over_nginx_added_p50']:.1f}x"
    )
    for goal, met in goals.items():
        console.print(f"goal {goal.replace('_', ' ')}: {'[green]met[/]' if met else '[red]missed[/]'}")


def _nginx(prefix: Path, server: str) -> list[str]:
    prefix.mkdir()
    config = prefix / "nginx.conf"
    config.write_text(NGINX_COMMON.format(prefix=prefix, server=server))
    return [_which("nginx") or "nginx", "-c", str(config), "-p", str(prefix), "-e", str(prefix / "error.log")]


@contextmanager
def _process(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` for the duration of the block; stopped by its PID afterwards."""
    with log.open("wb") as stream:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=stream, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, content=BODY).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} did not answer 200 within {START_TIMEOUT_SECONDS:.0f} s")


def _wrk(script: Path, url: str, connections: int, seconds: int) -> Run:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK "))
    return Run(**json.loads(line[4:]))


def _which(tool: str) -> str | None:
    # Debian puts nginx in /usr/sbin, which is not on every user's PATH.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin")


if __name__ == "__main__":
    main()
