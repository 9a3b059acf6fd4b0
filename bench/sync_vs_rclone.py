"""Throughput of `toolkit.storage.sync` (what `mct sync` runs) against Debian's rclone, on the local emulators.

One run writes a local tree (`--files` files of random bytes totalling `--total-mb` MB, sizes spread from 0.4
to 1.6 times the mean, in a few sub-folders), starts the three emulators (moto for S3, fake-gcs-server for
GCS, Azurite for Azure Blob) in a temporary directory, and for each cloud syncs the tree with both tools,
each into its own empty prefix of the bucket `bench`:

- cold: the prefix is empty, every object is uploaded;
- warm: the same unchanged tree again; nothing may be uploaded (only listing and comparing).

Ours runs in-process (as `mct sync` runs it, minus the CLI's start) with `--transfers` workers; rclone runs
as `rclone sync TREE remote:bench/PREFIX --transfers N --checkers N` with an rclone.conf written for the
emulators' ports, `AWS_CA_BUNDLE` and `RCLONE_*` removed from its environment, and otherwise its defaults
(its time includes starting its process). Each cold+warm pair runs `--repeat` times, the tool that goes
first alternating; after each pair the destination is compared with the tree (keys and sizes) and emptied,
so every repetition meets the same emulator state. The table shows medians, cold throughput, and ratios
rclone time / our time: above 1 means we are faster; `--json` adds every sample and the emulators' CPU time.
Where rclone is missing or cannot talk to an emulator, the row says why and only our figures are shown.
About 40 s on 2 cores for the defaults.

Run it with `make bench` (which installs rclone when it can), or
`.venv/bin/python bench/sync_vs_rclone.py [--files N] [--total-mb MB] [--transfers N] [--repeat N]
[--clouds s3,gcs,azure] [--json]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from toolkit.clouds import EMULATOR_CREDENTIALS
from toolkit.emulators import EmulatorError, Endpoints, start_emulators
from toolkit.storage import ObjectStore, open_store
from toolkit.storage.errors import StorageError
from toolkit.storage.registry import StoreOptions
from toolkit.storage.sync import sync

BUCKET = "bench"
CLOUDS = ("s3", "gcs", "azure")
SCHEMES = {"s3": "s3", "gcs": "gs", "azure": "az"}  # our URL scheme per emulator
REMOTES = {"s3": "s3", "gcs": "gcs", "azure": "az"}  # section names in the rclone.conf written here
FOLDERS = ("", "raw", "raw/2026-11", "features", "features/train", "features/test", "models/champion")
MB = 1_000_000
# Bounds one rclone call: a stuck emulator is reported rather than waited on forever.
RCLONE_TIMEOUT_SECONDS = 300.0
# A quick listing before the timed runs, so that a remote rclone cannot use fails fast and says why.
PREFLIGHT_FLAGS = ("--low-level-retries", "1", "--contimeout", "5s", "--timeout", "10s")
REASON_CHARS = 300
# "2026/11/25 14:05:44 ERROR : " in front of rclone's plain log lines
LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\s+(?:[A-Z]+\s*:\s*)?")
TABLE_WIDTH = 130
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Sample:
    """One timed sync of the tree by one tool."""

    seconds: float | None = None
    cpu_seconds: float | None = None  # CPU time of the syncing process: ours in-process, rclone's child
    copied: int | None = None  # objects uploaded (rclone: its "Copied" log lines)
    error: str | None = None
    emulator_cpu_seconds: float | None = None  # CPU time the emulator spent meanwhile (Linux /proc)


@dataclass
class Phase:
    """Cold or warm runs of one tool against one cloud, one sample per repetition."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        """The median wall time of the samples that succeeded."""
        return self._median("seconds")

    @property
    def cpu_seconds(self) -> float | None:
        return self._median("cpu_seconds")

    @property
    def emulator_cpu_seconds(self) -> float | None:
        return self._median("emulator_cpu_seconds")

    @property
    def error(self) -> str | None:
        return next((sample.error for sample in self.samples if sample.error), None)

    def _median(self, name: str) -> float | None:
        values = [getattr(sample, name) for sample in self.samples if sample.error is None]
        known = [value for value in values if value is not None]
        return statistics.median(known) if known else None


@dataclass
class Result:
    """Cold and warm runs of one tool against one cloud, and whether the destinations matched the tree."""

    cloud: str
    tool: str
    cold: Phase = field(default_factory=Phase)
    warm: Phase = field(default_factory=Phase)
    verified: bool | None = None
    problem: str | None = None  # why there are no figures (rclone missing, or cannot talk to the emulator)


# The local tree


def make_tree(root: Path, files: int, total_bytes: int, seed: int = 20261125) -> dict[str, int]:
    """Write `files` files of random bytes totalling `total_bytes` under `root`; key -> size."""
    rng = random.Random(seed)
    weights = [rng.uniform(0.4, 1.6) for _ in range(files)]  # sizes vary around the mean, none tiny
    scale = total_bytes / sum(weights)
    sizes = [int(weight * scale) for weight in weights]
    sizes[-1] += total_bytes - sum(sizes)
    tree: dict[str, int] = {}
    for index, size in enumerate(sizes):
        folder = FOLDERS[index % len(FOLDERS)]
        key = f"{folder}/part-{index:04d}.bin" if folder else f"part-{index:04d}.bin"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        tree[key] = size
    return tree


# Our sync


def destination(cloud: str, endpoints: Endpoints, prefix: str) -> ObjectStore:
    """Our store for `prefix` in the bucket of `cloud`'s emulator."""
    url = f"{SCHEMES[cloud]}://{BUCKET}/{prefix}"
    if cloud == "s3":
        return open_store(url, StoreOptions(endpoint=endpoints.s3, **EMULATOR_CREDENTIALS))
    if cloud == "gcs":
        return open_store(url, StoreOptions(endpoint=endpoints.gcs))
    return open_store(url, StoreOptions(connection_string=endpoints.azure_connection_string))


def run_ours(source: ObjectStore, target: ObjectStore, transfers: int) -> Sample:
    cpu = time.process_time()
    started = time.perf_counter()
    summary = sync(source, target, transfers=transfers)
    seconds = time.perf_counter() - started
    error = None
    if summary.failed:
        key, message = next(iter(summary.failed.items()))
        error = f"{len(summary.failed)} objects failed, e.g. {key}: {message}"
    return Sample(seconds, time.process_time() - cpu, len(summary.copied), error)


# rclone


def rclone_config(endpoints: Endpoints) -> str:
    """An rclone.conf with one remote per emulator, in the form known to work with rclone 1.60."""
    azure = dict(part.split("=", 1) for part in endpoints.azure_connection_string.split(";") if "=" in part)
    return "\n".join(
        [
            f"[{REMOTES['s3']}]",
            "type = s3",
            "provider = Other",
            f"access_key_id = {EMULATOR_CREDENTIALS['access_key_id']}",
            f"secret_access_key = {EMULATOR_CREDENTIALS['secret_access_key']}",
            f"endpoint = {endpoints.s3}",
            f"region = {EMULATOR_CREDENTIALS['region']}",
            "",
            f"[{REMOTES['gcs']}]",
            "type = google cloud storage",
            "anonymous = true",
            "project_number = test",
            f"endpoint = {endpoints.gcs}/storage/v1/",
            "",
            f"[{REMOTES['azure']}]",
            "type = azureblob",
            "use_emulator = true",
            f"account = {azure['AccountName']}",
            f"key = {azure['AccountKey']}",  # Azurite's published development key
            f"endpoint = {azure['BlobEndpoint'].rstrip('/')}",
            "",
        ]
    )


def rclone_environment() -> dict[str, str]:
    """Our environment without `AWS_CA_BUNDLE` (rclone's S3 backend fails on plain http with it) and `RCLONE_*`."""
    return {
        name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE" and not name.startswith("RCLONE_")
    }


def rclone_version(binary: str) -> str:
    completed = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30, check=False)
    return completed.stdout.splitlines()[0].strip() if completed.stdout else "unknown"


def rclone_startup_seconds(binary: str, config: Path) -> float:
    """Median wall time of a call that does no I/O: what process start adds to every rclone figure."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            [binary, "--config", str(config), "listremotes"],
            capture_output=True,
            env=rclone_environment(),
            timeout=30,
            check=False,
        )
        times.append(time.perf_counter() - started)
    return sorted(times)[1]


def rclone_reason(stderr: str, returncode: int | None) -> str:
    """The most telling line of rclone's log: the last error, else the last line."""
    lines = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                line = json.loads(line).get("msg", line)
        line = LOG_PREFIX.sub("", line)
        if line:
            lines.append(line)
    errors = [line for line in lines if re.search(r"error|failed|critical", line, re.IGNORECASE)]
    reason = (errors or lines or [f"exit status {returncode}"])[-1]
    return " ".join(reason.split())[:REASON_CHARS]


def rclone_preflight(binary: str, config: Path, remote: str) -> str | None:
    """None if rclone can list `remote:bench`; else why not."""
    command = [binary, "--config", str(config), "lsf", f"{remote}:{BUCKET}", "--max-depth", "1", *PREFLIGHT_FLAGS]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=rclone_environment(), timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return "rclone lsf did not answer within 60 s"
    if completed.returncode == 0:
        return None
    return f"rclone cannot use this emulator: {rclone_reason(completed.stderr, completed.returncode)}"


def rclone_command(binary: str, config: Path, source: Path, remote: str, prefix: str, transfers: int) -> list[str]:
    return [
        binary,
        "--config",
        str(config),
        "sync",
        str(source),
        f"{remote}:{BUCKET}/{prefix}",
        *("--transfers", str(transfers), "--checkers", str(transfers)),
        # Logging only (one JSON line per object copied, no periodic stats): lets us count what was uploaded.
        *("-v", "--use-json-log", "--stats", "0"),
    ]


def run_rclone(command: list[str]) -> Sample:
    cpu = children_cpu_seconds()
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=rclone_environment(),
            timeout=RCLONE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Sample(error=f"rclone sync did not finish within {RCLONE_TIMEOUT_SECONDS:.0f} s")
    seconds = time.perf_counter() - started
    copied = sum(1 for line in completed.stderr.splitlines() if '"msg":"Copied' in line)
    error = rclone_reason(completed.stderr, completed.returncode) if completed.returncode != 0 else None
    return Sample(seconds, children_cpu_seconds() - cpu, copied, error)


def children_cpu_seconds() -> float:
    """User + system time of the child processes waited for so far (the emulators are not, until stopped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# Measuring


def matches(store: ObjectStore, tree: dict[str, int]) -> bool:
    """The destination holds exactly the tree's keys with the tree's sizes."""
    try:
        return {info.key: info.size for info in store.list()} == tree
    except StorageError:
        return False


def measure(files: int, total_mb: float, transfers: int, repeat: int, clouds: Sequence[str]) -> dict[str, Any]:
    """Write the tree, start the emulators, time both tools cold then warm per cloud, `repeat` times."""
    total_bytes = int(total_mb * MB)
    figures: dict[str, Any] = {
        "files": files,
        "total_mb": total_bytes / MB,
        "transfers": transfers,
        "repeat": repeat,
        "clouds": list(clouds),
        "rclone": None,
        "rclone_problem": None,
    }
    binary = shutil.which("rclone")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mct-bench-sync-") as scratch:
        work = Path(scratch)
        tree_dir = work / "tree"
        tree = make_tree(tree_dir, files, total_bytes)
        emulators = start_emulators(work / "emulators", {"s3": [BUCKET], "gcs": [BUCKET], "azure": [BUCKET]})
        try:
            config = work / "rclone.conf"
            config.write_text(rclone_config(emulators.endpoints))
            if binary is None:
                figures["rclone_problem"] = (
                    "rclone is not installed: apt-get install rclone (Debian/Ubuntu), or see https://rclone.org/install/"
                )
            else:
                figures["rclone"] = {
                    "version": rclone_version(binary),
                    "flags": f"--transfers {transfers} --checkers {transfers}",
                    "logging_flags": "-v --use-json-log --stats 0",
                    "startup_seconds": rclone_startup_seconds(binary, config),
                }
            pids = {process.cloud: process.pid for process in emulators.processes}
            source = open_store(str(tree_dir))
            bench = Bench(emulators.endpoints, source, tree, tree_dir, transfers, binary, config, pids)
            for cloud in clouds:
                results.extend(bench.cloud(cloud, repeat))
        finally:
            emulators.stop()
    figures["results"] = [result_json(result, figures) for result in results]
    figures["ratios"] = ratios(results)
    return figures


@dataclass
class Bench:
    """What every measurement needs: the emulators, the tree, and how to run each tool."""

    endpoints: Endpoints
    source: ObjectStore
    tree: dict[str, int]
    tree_dir: Path
    transfers: int
    rclone: str | None
    config: Path
    emulator_pids: dict[str, int]

    def cloud(self, cloud: str, repeat: int) -> list[Result]:
        """Both tools, cold then warm, each into a fresh prefix per repetition; who goes first alternates."""
        ours, theirs = Result(cloud, "mct"), Result(cloud, "rclone")
        if self.rclone is not None:
            theirs.problem = rclone_preflight(self.rclone, self.config, REMOTES[cloud])
        for repetition in range(repeat):
            pairs = [(self.ours, ours), (self.theirs, theirs)]
            for run, result in pairs if repetition % 2 == 0 else reversed(pairs):
                run(cloud, repetition, result)
        return [ours, theirs]

    def ours(self, cloud: str, repetition: int, result: Result) -> None:
        target = destination(cloud, self.endpoints, f"mct-{repetition}")
        for phase in (result.cold, result.warm):
            phase.samples.append(self.observed(cloud, lambda: run_ours(self.source, target, self.transfers)))
        self.check_and_clear(result, target)

    def theirs(self, cloud: str, repetition: int, result: Result) -> None:
        if self.rclone is None or result.problem is not None or result.cold.error or result.warm.error:
            return  # nothing to run, or it already failed: say so once rather than wait again
        prefix = f"rclone-{repetition}"
        command = rclone_command(self.rclone, self.config, self.tree_dir, REMOTES[cloud], prefix, self.transfers)
        for phase in (result.cold, result.warm):
            phase.samples.append(self.observed(cloud, lambda: run_rclone(command)))
        self.check_and_clear(result, destination(cloud, self.endpoints, prefix))

    def observed(self, cloud: str, run: Callable[[], Sample]) -> Sample:
        """`run`, with the CPU time its emulator spent meanwhile: the other half of a 2-core machine's load."""
        before = process_cpu_seconds(self.emulator_pids[cloud])
        sample = run()
        after = process_cpu_seconds(self.emulator_pids[cloud])
        if before is not None and after is not None:
            sample.emulator_cpu_seconds = after - before
        return sample

    def check_and_clear(self, result: Result, target: ObjectStore) -> None:
        """Compare the destination with the tree, then empty it: every repetition meets the same emulator state."""
        result.verified = matches(target, self.tree) and result.verified is not False
        with contextlib.suppress(StorageError), ThreadPoolExecutor(max_workers=self.transfers) as pool:
            list(pool.map(target.delete, [info.key for info in target.list()]))  # leftovers change no figure


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# Reporting


def ratios(results: list[Result]) -> dict[str, dict[str, float | None]]:
    """Per cloud: rclone time / our time, cold and warm, from the medians (above 1: we are faster)."""
    by_cloud: dict[str, dict[str, Result]] = {}
    for result in results:
        by_cloud.setdefault(result.cloud, {})[result.tool] = result
    figures: dict[str, dict[str, float | None]] = {}
    for cloud, tools in by_cloud.items():
        figures[cloud] = {}
        for phase in ("cold", "warm"):
            ours, theirs = (getattr(tools[tool], phase).seconds for tool in ("mct", "rclone"))
            figures[cloud][phase] = theirs / ours if ours and theirs else None
    return figures


def result_json(result: Result, figures: dict[str, Any]) -> dict[str, Any]:
    """One row of the JSON document: medians, throughput, and every sample."""

    def phase_json(phase: Phase, throughput: bool) -> dict[str, Any]:
        seconds = phase.seconds
        return {
            "seconds": seconds,
            "mb_per_s": figures["total_mb"] / seconds if seconds and throughput else None,
            "cpu_seconds": phase.cpu_seconds,
            "emulator_cpu_seconds": phase.emulator_cpu_seconds,
            "error": phase.error,
            "samples": [asdict(sample) for sample in phase.samples],
        }

    problem = result.problem
    if result.tool == "rclone" and figures["rclone_problem"]:
        problem = figures["rclone_problem"]
    return {
        "cloud": result.cloud,
        "tool": result.tool,
        "cold": phase_json(result.cold, throughput=True),
        "warm": phase_json(result.warm, throughput=False),
        "verified": result.verified,
        "problem": problem,
    }


def notes(result: dict[str, Any], files: int) -> str:
    """What a reader must know before trusting the row's figures."""
    said = []
    if result["problem"]:
        said.append(result["problem"])
    for phase in ("cold", "warm"):
        if result[phase]["error"]:
            said.append(f"{phase}: {result[phase]['error']}")
    cold = [sample["copied"] for sample in result["cold"]["samples"] if sample["copied"] is not None]
    warm = [sample["copied"] for sample in result["warm"]["samples"] if sample["copied"]]
    if any(copied != files for copied in cold):
        said.append(f"cold uploaded {min(cold)}/{files}")
    if warm:
        said.append(f"warm uploaded {max(warm)} objects again")
    if result["verified"] is False:
        said.append("destination does not match the tree")
    return "; ".join(said) or "ok"


def print_table(figures: dict[str, Any]) -> None:
    def number(value: float | None, style: str = "{:.2f}") -> str:
        return style.format(value) if value is not None else "-"

    def ratio_cell(value: float | None) -> str:
        if value is None:
            return "-"
        return f"[green]{value:.2f}x[/]" if value >= 1 else f"[red]{value:.2f}x[/]"

    table = Table(
        title=f"sync of {figures['files']} files, {figures['total_mb']:.0f} MB, {figures['transfers']} transfers, "
        f"median of {figures['repeat']}: ours vs rclone on the emulators",
        caption_justify="left",
    )
    columns = ("cloud", "tool", "cold s", "cold MB/s", "warm s", "ratio cold", "ratio warm", "CPU s cold/warm", "notes")
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("cloud", "tool", "notes") else "right", no_wrap=column != "notes"
        )
    for result in figures["results"]:
        ratios = figures["ratios"].get(result["cloud"], {}) if result["tool"] == "mct" else {}
        table.add_row(
            result["cloud"],
            result["tool"],
            number(result["cold"]["seconds"]),
            number(result["cold"]["mb_per_s"], "{:.0f}"),
            number(result["warm"]["seconds"]),
            ratio_cell(ratios.get("cold")),
            ratio_cell(ratios.get("warm")),
            f"{number(result['cold']['cpu_seconds'])}/{number(result['warm']['cpu_seconds'])}",
            notes(result, figures["files"]),
        )
    rclone = figures["rclone"]
    table.caption = (
        "ratio = rclone s / our s (above 1: we are faster); MB = 10^6 bytes; CPU s = the syncing process's own\n"
        + (
            f"{rclone['version']} with {rclone['flags']}, defaults otherwise; its times include process start, "
            f"about {rclone['startup_seconds'] * 1000:.0f} ms"
            if rclone
            else figures["rclone_problem"]
        )
    )
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=TABLE_WIDTH)  # piped or captured: wider than Rich's 80, so the rows stay whole
    console.print(table)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse flags, measure, print a table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=200, help="files in the local tree")
    parser.add_argument("--total-mb", type=float, default=200.0, help="total size of the tree, MB (10^6 bytes)")
    parser.add_argument("--transfers", type=int, default=8, help="parallel transfers, for both tools")
    parser.add_argument("--repeat", type=int, default=3, help="cold+warm pairs per tool and cloud; medians shown")
    parser.add_argument("--clouds", default=",".join(CLOUDS), help="comma-separated subset of s3,gcs,azure")
    parser.add_argument("--json", action="store_true", help="print a JSON document instead of a table")
    args = parser.parse_args(argv)
    clouds = [cloud.strip() for cloud in args.clouds.split(",") if cloud.strip()]
    if (
        args.files < 1
        or args.total_mb <= 0
        or args.transfers < 1
        or args.repeat < 1
        or not set(clouds) <= set(CLOUDS)
        or not clouds
    ):
        parser.error(
            "--files, --total-mb, --transfers and --repeat must be positive; --clouds a subset of s3,gcs,azure"
        )
    try:
        figures = measure(args.files, args.total_mb, args.transfers, args.repeat, clouds)
    except EmulatorError as exc:
        raise SystemExit(f"cannot start the emulators: {exc}") from None
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)


if __name__ == "__main__":
    main()
