"""Our router's two engines (`mct route`, built-in and HAProxy) against nginx as the same proxy, in one run.

On free 127.0.0.1 ports it starts one backend (nginx with one worker returning a fixed JSON: fast, so
that the proxies' own cost shows; the same backend behind every proxy) and three proxies in front of it:

- builtin: `python -m toolkit.cli.route --backend aws=URL`, the default engine with its defaults (one
  process on uvloop, peak-EWMA, health checks every second, retries);
- haproxy: the same command with `--engine haproxy`: it supervises HAProxy in master-worker mode, whose
  worker runs one thread per CPU it may run on (HAProxy's default; `mct route` has no setting for it);
- nginx: a reverse proxy with a keep-alive upstream to the backend, with `--nginx-workers` worker
  processes (default: as many as the CPUs, i.e. HAProxy's threads, so that those two compare like for like).

All three keep their connections to the backend alive; the "backend conns" column shows it (connections
the backend accepted while a target was measured: wrk's own for direct, the proxy's pool otherwise, plus
the engines' health checks, one a second from HAProxy). wrk (one thread) POSTs a small JSON body to each
target (direct to the backend, then through each proxy):

- at 1 connection: p50 and p99 latency; "added" is the proxy's figure minus the direct one;
- at 16 connections (`--connections`): requests per second, and the proxy's CPU time per request
  (all its processes: supervisor, master and workers), which other work on the machine moves less.

Each measurement is repeated (`--repeat`, targets interleaved) and the median kept, since other work on
a 2-core machine moves single runs by tens of percent; the load average before and after is printed. On
2 cores the client, the backend and the proxy share the CPUs, so a proxy's second thread or worker only
gets what wrk and the backend leave. Goals: the built-in engine adds under 0.5 ms at p50 and reaches at
least 0.2x nginx's throughput; the HAProxy engine is within 10% of nginx's throughput. Every process is
stopped by its PID at the end, also on error. About two minutes with the defaults.

Needs nginx, wrk and haproxy (Debian: `apt-get install -y nginx wrk haproxy`; without nginx or wrk it
says so and exits 0, without haproxy it measures the others). Run it with `make bench`, or
`.venv/bin/python bench/router_vs_nginx.py [--seconds S] [--repeat N] [--connections C] [--nginx-workers W]
[--json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from toolkit.processes import free_ports, is_running, spawn, stop_processes

PROXIES = ("builtin", "haproxy", "nginx")
BODY = '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}]}'
ANSWER = '{"model_name": "m", "outputs": [{"name": "probabilities", "shape": [1, 2], "data": [0.1, 0.9]}]}'
PATH = "/v2/models/m/infer"
STATUS_PATH = "/nginx_status"
ADDED_P50_GOAL_MS = 0.5
BUILTIN_THROUGHPUT_GOAL_RATIO = 0.2
HAPROXY_THROUGHPUT_GOAL_RATIO = 0.9
START_TIMEOUT_SECONDS = 30.0
PROC = Path("/proc")
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
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
worker_processes {workers};
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
    location = {status} {{ stub_status; }}
    location / {{ default_type application/json; return 200 '{answer}'; }}
  }}"""
# keepalive_requests in the upstream too: its default (1000) would reconnect to the backend every 1000
# requests, which neither engine does.
PROXY_SERVER = """upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; keepalive_requests 1000000; }}
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
    """One target's runs; the medians of the repeats."""

    url: str
    pid: int | None = None  # the proxy's top process (None: direct)
    latency_runs: list[Run] = field(default_factory=list)
    throughput_runs: list[Run] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the proxy's CPU time during the throughput runs
    backend_connections: int = 0

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
    def cpu_us_per_request(self) -> float | None:
        if self.pid is None:
            return None
        return self.cpu_seconds * 1e6 / sum(run.requests for run in self.throughput_runs)

    @property
    def failures(self) -> int:
        return sum(run.errors + run.non_2xx for run in (*self.latency_runs, *self.throughput_runs))


def main() -> None:
    cpus = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3, help="length of each wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is kept")
    parser.add_argument("--connections", type=int, default=16, help="connections of the throughput runs")
    parser.add_argument(
        "--nginx-workers", type=int, default=cpus, help=f"nginx proxy's worker processes (HAProxy's threads: {cpus})"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    missing = [tool for tool in ("nginx", "wrk") if not _which(tool)]
    if missing:
        # Skipped, not failed, so that `make bench` goes on with the other benchmarks.
        reason = f"skipped: this benchmark needs {' and '.join(missing)} (Debian: apt-get install -y nginx wrk)"
        print(json.dumps({"skipped": reason}) if args.json else reason)
        return
    # The haproxy engine looks for haproxy on PATH.
    proxies = PROXIES if shutil.which("haproxy") else tuple(name for name in PROXIES if name != "haproxy")
    load_before = _load_average()
    with tempfile.TemporaryDirectory(prefix="mct-bench-router-") as scratch:
        targets, setup = measure(
            Path(scratch), proxies, args.seconds, args.repeat, args.connections, args.nginx_workers
        )
    setup |= {"cpus": cpus, "load_average_before": load_before, "load_average_after": _load_average()}
    if "haproxy" not in proxies:
        setup["haproxy"] = "not measured: haproxy is not on PATH (Debian: apt-get install -y haproxy)"
    report = summarize(targets, args.connections, setup)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)


def measure(
    scratch: Path, proxies: tuple[str, ...], seconds: int, repeat: int, connections: int, nginx_workers: int
) -> tuple[dict[str, Target], dict[str, object]]:
    """Start the backend and the proxies, run wrk against each target; every process stopped by its PID."""
    backend_port, *proxy_ports = free_ports(1 + len(PROXIES))
    ports = dict(zip(PROXIES, proxy_ports, strict=True))
    script = scratch / "post.lua"
    script.write_text(WRK_SCRIPT % BODY)
    backend = f"http://127.0.0.1:{backend_port}"
    route = [sys.executable, "-m", "toolkit.cli.route", "--backend", f"aws={backend}", "--port"]
    backend_server = BACKEND_SERVER.format(port=backend_port, status=STATUS_PATH, answer=ANSWER)
    proxy_server = PROXY_SERVER.format(port=ports["nginx"], backend=backend_port)
    # What answers each target: "direct" is the backend itself.
    commands = {
        "direct": _nginx(scratch / "backend", 1, backend_server),
        "builtin": [*route, str(ports["builtin"])],
        "haproxy": [*route, str(ports["haproxy"]), "--engine", "haproxy"],
        "nginx": _nginx(scratch / "proxy", nginx_workers, proxy_server),
    }
    targets = {"direct": Target(backend + PATH)} | {
        name: Target(f"http://127.0.0.1:{ports[name]}{PATH}") for name in proxies
    }
    started: list[tuple[int, int | None]] = []
    try:
        for name, target in targets.items():
            log = scratch / f"{name}.log"
            pid, start = spawn(commands[name], log)
            started.append((pid, start))
            _wait_ready(target.url, pid, start, log)
            _wrk(script, target.url, 1, 1)  # warm up: connections, pools, caches
            if name != "direct":
                target.pid = pid
        for _ in range(repeat):
            for target in targets.values():
                accepted = _backend_accepts(backend)
                target.latency_runs.append(_wrk(script, target.url, 1, seconds))
                cpu = _cpu_seconds(target.pid)
                target.throughput_runs.append(_wrk(script, target.url, connections, seconds))
                target.cpu_seconds += _cpu_seconds(target.pid) - cpu
                # Less one: the connection of this status request itself.
                target.backend_connections += _backend_accepts(backend) - accepted - 1
        setup: dict[str, object] = {"builtin_processes": 1, "nginx_proxy_workers": nginx_workers}
        if "haproxy" in targets:
            setup["haproxy_threads"] = _haproxy_threads(targets["haproxy"].pid)
    finally:
        stop_processes(started)
    return targets, setup


def summarize(targets: dict[str, Target], connections: int, setup: dict[str, object]) -> dict[str, object]:
    direct, nginx = targets["direct"], targets["nginx"]
    figures = {
        name: {
            "p50_ms": round(target.p50_ms, 4),
            "p99_ms": round(target.p99_ms, 4),
            "added_p50_ms": None if name == "direct" else round(target.p50_ms - direct.p50_ms, 4),
            "added_p99_ms": None if name == "direct" else round(target.p99_ms - direct.p99_ms, 4),
            f"requests_per_second_at_{connections}": round(target.per_second),
            "cpu_us_per_request": None if target.cpu_us_per_request is None else round(target.cpu_us_per_request, 1),
            "backend_connections": target.backend_connections,
            "failed_requests": target.failures,
            "runs": [asdict(run) for run in (*target.latency_runs, *target.throughput_runs)],
        }
        for name, target in targets.items()
    }
    throughput = {name: target.per_second for name, target in targets.items()}
    ratios = {"builtin_over_nginx_throughput": round(throughput["builtin"] / throughput["nginx"], 3)}
    builtin_added = targets["builtin"].p50_ms - direct.p50_ms
    goals = {
        f"builtin_added_p50_under_{ADDED_P50_GOAL_MS}_ms": builtin_added < ADDED_P50_GOAL_MS,
        f"builtin_throughput_at_least_{BUILTIN_THROUGHPUT_GOAL_RATIO}x_nginx": (
            ratios["builtin_over_nginx_throughput"] >= BUILTIN_THROUGHPUT_GOAL_RATIO
        ),
    }
    if "haproxy" in targets:
        ratios["haproxy_over_nginx_throughput"] = round(throughput["haproxy"] / throughput["nginx"], 3)
        ratios["haproxy_over_builtin_throughput"] = round(throughput["haproxy"] / throughput["builtin"], 3)
        goals[f"haproxy_throughput_at_least_{HAPROXY_THROUGHPUT_GOAL_RATIO}x_nginx"] = (
            ratios["haproxy_over_nginx_throughput"] >= HAPROXY_THROUGHPUT_GOAL_RATIO
        )
    nginx_added = max(nginx.p50_ms - direct.p50_ms, 1e-6)
    ratios["builtin_over_nginx_added_p50"] = round(builtin_added / nginx_added, 2)
    return {"connections": connections, "setup": setup, "targets": figures, "ratios": ratios, "goals": goals}


def show(report: dict[str, object]) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:  # rich would wrap the table at 80 columns
        console.width = 140
    connections, setup = report["connections"], report["setup"]
    assert isinstance(setup, dict)
    table = Table(
        "target",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added p99 ms",
        f"req/s at {connections}",
        "proxy CPU µs/req",
        "backend conns",
        "failed",
        title="POST direct, through both router engines and through nginx (1 connection for latency)",
    )
    targets = report["targets"]
    assert isinstance(targets, dict)
    for name, figures in targets.items():
        table.add_row(
            name,
            f"{figures['p50_ms']:.3f}",
            f"{figures['p99_ms']:.3f}",
            _optional(figures["added_p50_ms"], ".3f"),
            _optional(figures["added_p99_ms"], ".3f"),
            f"{figures[f'requests_per_second_at_{connections}']:,}",
            _optional(figures["cpu_us_per_request"], ".1f"),
            str(figures["backend_connections"]),
            str(figures["failed_requests"]),
        )
    console.print(table)
    haproxy = setup.get("haproxy_threads", setup.get("haproxy"))
    console.print(
        f"{setup['cpus']} CPUs; builtin: {setup['builtin_processes']} process; HAProxy worker threads: {haproxy}; "
        f"nginx proxy workers: {setup['nginx_proxy_workers']}; backend: nginx, 1 worker; "
        f"load average before {setup['load_average_before']}, after {setup['load_average_after']}"
    )
    ratios, goals = report["ratios"], report["goals"]
    assert isinstance(ratios, dict) and isinstance(goals, dict)
    for ratio, value in ratios.items():
        console.print(f"{ratio.replace('_over_', ' / ').replace('_', ' ')}: {value:.2f}x")
    for goal, met in goals.items():
        console.print(f"goal {goal.replace('_', ' ')}: {'[green]met[/]' if met else '[red]missed[/]'}")


def _optional(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _nginx(prefix: Path, workers: int, server: str) -> list[str]:
    prefix.mkdir()
    config = prefix / "nginx.conf"
    config.write_text(NGINX_COMMON.format(prefix=prefix, workers=workers, server=server))
    return [_which("nginx") or "nginx", "-c", str(config), "-p", str(prefix), "-e", str(prefix / "error.log")]


def _wait_ready(url: str, pid: int, started: int | None, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not is_running(pid, started):
            sys.exit(f"the server behind {url} exited while starting; its log, {log}:\n{log.read_text()[-2000:]}")
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


def _backend_accepts(backend: str) -> int:
    """Connections the backend has accepted so far (nginx's stub_status)."""
    lines = httpx.get(backend + STATUS_PATH).text.splitlines()
    return int(lines[2].split()[0])  # "server accepts handled requests", then the three counts


def _stats() -> dict[int, list[str]]:
    """Every process's /proc/PID/stat fields from the state on (after the command name), by PID."""
    stats = {}
    for path in PROC.glob("[0-9]*/stat"):
        try:
            text = path.read_text()
        except OSError:  # exited meanwhile
            continue
        stats[int(path.parent.name)] = text[text.rindex(")") + 2 :].split()
    return stats


def _tree(pid: int, stats: dict[int, list[str]]) -> list[int]:
    """`pid` and its descendants."""
    tree = [pid]
    for parent in tree:
        tree.extend(child for child, fields in stats.items() if int(fields[1]) == parent)
    return tree


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of the process `pid` and its descendants so far (0 for None)."""
    if pid is None:
        return 0.0
    stats = _stats()
    ticks = sum(int(stats[member][11]) + int(stats[member][12]) for member in _tree(pid, stats))
    return ticks / CLOCK_TICKS_PER_SECOND


def _haproxy_threads(pid: int | None) -> int:
    """Threads of the busiest HAProxy process under `mct route` (pid): the worker's."""
    assert pid is not None
    stats = _stats()
    comms = {member: (PROC / str(member) / "comm").read_text().strip() for member in _tree(pid, stats)}
    return max(int(stats[member][17]) for member, comm in comms.items() if comm == "haproxy")


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _which(tool: str) -> str | None:
    # Debian puts nginx in /usr/sbin, which is not on every user's PATH.
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/local/sbin")


if __name__ == "__main__":
    main()
