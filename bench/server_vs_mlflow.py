"""Our model server (`mct serve`) against `mlflow models serve --env-manager local`: same model, machine, client.

Setup, in a temporary data directory: the three emulators; breast_cancer trained once, registered as
version 1 and promoted; the bundle published to aws. Then `mct serve --cloud aws` and
`mlflow models serve -m models:/NAME/1` start side by side, and both must answer the same
`dataframe_split` body with the same probabilities (within 1e-5) before anything is timed.

Load comes from wrk (C, event-driven, Debian package `wrk`), one thread, POSTing a fixed JSON body:
- `--connections` concurrent connections (16) for `--seconds` (5): throughput, p50 and p99;
- one connection: latency without queueing, p50 and p99.
Each for a single-row and a 100-row body. The client is not the bottleneck: wrk drives far more
requests per second than either server answers here (try it on `/v2/health/live`), though on a small
machine it shares the cores with the server it measures, as every client here does. wrk's percentiles
are per request as sent (no correction for coordinated omission).

Goal: at least 10x mlflow's throughput, and at most a tenth of its p99 under load.

Run it with `make bench`, or `.venv/bin/python bench/server_vs_mlflow.py [--seconds S] [--connections N] [--json]`.
"""

from __future__ import annotations

import os

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ["MPLBACKEND"] = "Agg"
# Self-contained: MLflow on SQLite in the temporary data directory, whatever the shell points at.
os.environ.pop("MLFLOW_TRACKING_URI", None)

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from toolkit.clouds import cloud_stores, emulator_buckets
from toolkit.config import load_settings
from toolkit.data import load_dataset
from toolkit.emulators import ensure_emulators, stop_emulators
from toolkit.processes import free_ports
from toolkit.publishing.export import export_bundle
from toolkit.publishing.publish import publish_bundle
from toolkit.tracking.promotion import promote
from toolkit.tracking.runs import log_training
from toolkit.tracking.store import open_store
from toolkit.training.options import build_options
from toolkit.training.trainer import train

MODEL = "bench-serving"
BATCH_ROWS = (1, 100)
# mlflow models serve needs 10-14 s to start on an idle 2-core machine.
START_TIMEOUT_SECONDS = 120.0
GOAL_THROUGHPUT_RATIO = 10.0
GOAL_P99_RATIO = 10.0
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local file = io.open(os.getenv("MCT_BENCH_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
"""
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _latency_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * UNITS_MS[unit]


def run_wrk(url: str, body: Path, script: Path, connections: int, seconds: int) -> dict[str, float]:
    """Requests per second, p50 and p99 in ms, and the count of non-2xx answers and socket errors."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, "MCT_BENCH_BODY": str(body)}
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": _latency_ms(percentiles["50"]),
        "p99_ms": _latency_ms(percentiles["99"]),
        "errors": float(errors),
    }


@contextmanager
def process_group(command: Sequence[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a new group of its own (mlflow runs uvicorn as a child), stopped with its group's id."""
    with log.open("wb") as stream:
        process = subprocess.Popen(
            list(command),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(15)


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, started: float) -> float:
    """Seconds from `started` until `url` answers 200; exits with the log if the process dies or never answers."""
    while time.monotonic() - started < START_TIMEOUT_SECONDS:
        if process.poll() is not None:
            sys.exit(f"{url} exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} did not answer in {START_TIMEOUT_SECONDS:.0f} s:\n{log.read_text()[-3000:]}")


def publish_model(home: Path) -> None:
    """breast_cancer trained once, registered, promoted and published to aws, all under `home`."""
    settings = load_settings(home=home)
    ensure_emulators(home, emulator_buckets(settings))
    tracking = open_store(settings)
    log_training(tracking, train(load_dataset("breast_cancer"), build_options(n_jobs=1)), MODEL)
    promote(tracking, MODEL, "1", settings.promotion)
    bundle = export_bundle(tracking, MODEL, "1", home / "bundle")
    [result] = publish_bundle(bundle, cloud_stores(settings, ["aws"]))
    if not result.ok:
        sys.exit(f"publishing failed: {result.error}")


def write_bodies(directory: Path) -> dict[int, Path]:
    """`dataframe_split` bodies of 1 and 100 rows, as a client of `mlflow models serve` sends them."""
    features = load_dataset("breast_cancer").X
    bodies = {}
    for rows in BATCH_ROWS:
        frame = features.head(rows)
        path = directory / f"body-{rows}.json"
        path.write_text(
            json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}})
        )
        bodies[rows] = path
    return bodies


def check_same_predictions(ours: str, theirs: str, body: Path) -> float:
    """Both servers' probabilities for the same body; the largest difference (must be within 1e-5)."""
    answers = [
        httpx.post(url, content=body.read_bytes(), headers={"content-type": "application/json"}, timeout=30).json()
        for url in (ours, theirs)
    ]
    difference = float(np.max(np.abs(np.asarray(answers[0]["predictions"]) - np.asarray(answers[1]["predictions"]))))
    if not difference <= 1e-5:
        sys.exit(f"the servers disagree: probabilities differ by {difference:.2e}")
    return difference


def measure(seconds: int, connections: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        sys.exit("this benchmark drives load with wrk: install it (apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="mct-bench-serving-"))
    try:
        publish_model(home)
        bodies = write_bodies(home)
        script = home / "post.lua"
        script.write_text(WRK_SCRIPT)
        ours_port, mlflow_port = free_ports(2)
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "MCT_HOME": str(home), "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
        env.pop("MCT_SERVING__TOKEN", None)
        ours_command = [sys.executable, "-m", "toolkit", "serve", "--cloud", "aws", "--model", MODEL]
        ours_command += ["--host", "127.0.0.1", "--port", str(ours_port), "--log-level", "warning"]
        mlflow_command = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/1"]
        mlflow_command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(mlflow_port)]
        urls = {"mct": f"http://127.0.0.1:{ours_port}", "mlflow": f"http://127.0.0.1:{mlflow_port}"}
        spawned = time.monotonic()
        with (
            process_group(ours_command, home / "mct-serve.log", env) as ours,
            process_group(mlflow_command, home / "mlflow-serve.log", env) as mlflow,
        ):
            figures: dict[str, Any] = {
                "client": f"wrk, 1 thread, {connections} connections and 1 connection, {seconds:g} s per case",
                "cores": os.cpu_count(),
                "start_seconds": {
                    "mct": wait_for(urls["mct"] + "/v2/health/ready", ours, home / "mct-serve.log", spawned),
                    "mlflow": wait_for(urls["mlflow"] + "/ping", mlflow, home / "mlflow-serve.log", spawned),
                },
                "max_abs_proba_diff": check_same_predictions(
                    urls["mct"] + "/invocations", urls["mlflow"] + "/invocations", bodies[100]
                ),
                "cases": [],
            }
            for rows, body in bodies.items():
                for clients in (connections, 1):
                    case: dict[str, Any] = {"rows": rows, "connections": clients}
                    for server, url in urls.items():
                        case[server] = run_wrk(url + "/invocations", body, script, clients, seconds)
                    case["throughput_ratio"] = (
                        case["mct"]["requests_per_second"] / case["mlflow"]["requests_per_second"]
                    )
                    case["p99_ratio"] = case["mlflow"]["p99_ms"] / case["mct"]["p99_ms"]
                    figures["cases"].append(case)
        loaded = [case for case in figures["cases"] if case["connections"] == connections]
        figures["goal_met"] = all(
            case["throughput_ratio"] >= GOAL_THROUGHPUT_RATIO and case["p99_ratio"] >= GOAL_P99_RATIO for case in loaded
        )
        return figures
    finally:
        stop_emulators(home)
        shutil.rmtree(home, ignore_errors=True)


def render(figures: dict[str, Any]) -> None:
    console = Console()
    table = Table(
        "rows", "conns", "metric", "mct serve", "mlflow serve", "ratio", title="mct serve vs mlflow models serve"
    )
    for case in figures["cases"]:
        ours, theirs = case["mct"], case["mlflow"]
        label = (str(case["rows"]), str(case["connections"]))
        table.add_row(
            *label,
            "req/s",
            f"{ours['requests_per_second']:.0f}",
            f"{theirs['requests_per_second']:.0f}",
            f"{case['throughput_ratio']:.1f}x",
        )
        table.add_row(
            "",
            "",
            "p50 ms",
            f"{ours['p50_ms']:.2f}",
            f"{theirs['p50_ms']:.2f}",
            f"{theirs['p50_ms'] / ours['p50_ms']:.1f}x",
        )
        table.add_row(
            "",
            "",
            "p99 ms",
            f"{ours['p99_ms']:.2f}",
            f"{theirs['p99_ms']:.2f}",
            f"{case['p99_ratio']:.1f}x",
            end_section=True,
        )
        if ours["errors"] or theirs["errors"]:
            console.print(f"[red]errors[/]: mct {ours['errors']:.0f}, mlflow {theirs['errors']:.0f} ({label[0]} rows)")
    console.print(table)
    starts = figures["start_seconds"]
    console.print(
        f"client: {figures['client']}; {figures['cores']} cores; start-up: mct {starts['mct']:.1f} s, "
        f"mlflow {starts['mlflow']:.1f} s; same predictions within {figures['max_abs_proba_diff']:.1e}"
    )
    verdict = "[green]met[/]" if figures["goal_met"] else "[red]not met[/]"
    console.print(
        f"goal (>= {GOAL_THROUGHPUT_RATIO:g}x throughput, <= 1/{GOAL_P99_RATIO:g} p99, under load): {verdict}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run, whole seconds")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections of the loaded runs")
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    args = parser.parse_args(argv)
    figures = measure(args.seconds, args.connections)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        render(figures)


if __name__ == "__main__":
    main()
