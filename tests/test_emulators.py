"""The three emulators as real processes: `mct emulators up|status|down` and the library beneath it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from typer.testing import CliRunner

from toolkit.cli.app import app
from toolkit.emulators import (
    EmulatorError,
    EmulatorProcess,
    EmulatorSet,
    Endpoints,
    lifecycle,
    read_state,
    start_emulators,
    state_file,
    stop_emulators,
)
from toolkit.emulators.buckets import BUCKET_CREATORS
from toolkit.processes import is_running, spawn, start_time

# The default configuration's emulated clouds and their buckets.
CONFIGURED_BUCKETS = {"s3": "mct-aws", "gcs": "mct-gcp", "azure": "mct-azure"}


def bucket_exists(endpoints: Endpoints, cloud: str, name: str) -> bool:
    """Ask the emulator itself, through the cloud's own SDK."""
    if cloud == "s3":
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoints.s3,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        return name in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    if cloud == "gcs":
        gcs = storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoints.gcs}
        )
        return gcs.lookup_bucket(name) is not None
    azure = BlobServiceClient.from_connection_string(endpoints.azure_connection_string)
    return azure.get_container_client(name).exists()


def mct(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m toolkit ...` in a folder without mct.toml, with `home` as the data directory."""
    env = {key: value for key, value in os.environ.items() if key != "MCT_CONFIG"} | {"MCT_HOME": str(home)}
    command = [sys.executable, "-m", "toolkit", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=home.parent, timeout=120)


def wait_until_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while start_time(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def test_up_reuses_status_sees_a_dead_emulator_and_down_stops_exactly_ours(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        first = mct(home, "emulators", "up", "--json")
        assert first.returncode == 0, first.stderr
        document = json.loads(first.stdout)
        pids = {row["cloud"]: row["pid"] for row in document["emulators"]}
        assert set(pids) == set(CONFIGURED_BUCKETS)
        assert all(row["healthy"] for row in document["emulators"])
        assert document["state_file"] == str(state_file(home))
        running = read_state(home)
        assert running is not None
        for cloud, bucket in CONFIGURED_BUCKETS.items():
            assert bucket_exists(running.endpoints, cloud, bucket), cloud

        second = mct(home, "emulators", "up", "--json")
        assert second.returncode == 0, second.stderr
        assert {row["cloud"]: row["pid"] for row in json.loads(second.stdout)["emulators"]} == pids

        os.kill(pids["gcs"], signal.SIGKILL)
        wait_until_gone(pids["gcs"])
        status = mct(home, "emulators", "status", "--json")
        assert status.returncode == 1, status.stderr
        health = {row["cloud"]: row["healthy"] for row in json.loads(status.stdout)["emulators"]}
        assert health == {"s3": True, "gcs": False, "azure": True}

        bystander = subprocess.Popen(["sleep", "60"])
        down = mct(home, "emulators", "down")
        assert down.returncode == 0, down.stderr
        assert all(str(pid) in down.stdout for pid in pids.values())
        assert not any(is_running(p.pid, p.started) for p in running.processes)
        assert bystander.poll() is None
        bystander.kill()
        bystander.wait()
        assert not state_file(home).exists()
    finally:
        stop_emulators(home)


def test_status_and_down_with_nothing_recorded(tmp_path: Path) -> None:
    env = {"MCT_HOME": str(tmp_path / "home")}
    status = CliRunner().invoke(app, ["emulators", "status"], env=env)
    assert status.exit_code == 0, status.output
    assert "no emulators recorded" in status.stdout
    down = CliRunner().invoke(app, ["emulators", "down"], env=env)
    assert down.exit_code == 0, down.output
    assert "nothing to stop" in down.stdout


def test_fixture_set_is_healthy_and_has_the_test_bucket(emulators: EmulatorSet) -> None:
    assert emulators.health() == {"s3": True, "gcs": True, "azure": True}
    for cloud in ("s3", "gcs", "azure"):
        assert bucket_exists(emulators.endpoints, cloud, "mct-test"), cloud
    assert emulators.endpoints.azure_connection_string.endswith("/devstoreaccount1;")
    assert EmulatorSet.from_json(json.loads(json.dumps(emulators.to_json()))) == emulators


@pytest.mark.parametrize("cloud", ["s3", "gcs", "azure"])
def test_an_invalid_bucket_name_is_one_clear_error(emulators: EmulatorSet, cloud: str) -> None:
    BUCKET_CREATORS[cloud](emulators.endpoints, ["mct-test"])  # already there: fine
    with pytest.raises(EmulatorError, match=rf"the {cloud} emulator cannot create bucket 'x': .*is the name valid"):
        BUCKET_CREATORS[cloud](emulators.endpoints, ["x"])


def test_stop_spares_a_process_that_only_shares_the_pid(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        started = start_time(other.pid)
        assert started is not None
        reused = EmulatorProcess("s3", "moto", other.pid, started + 1, "", "", str(tmp_path), "")
        EmulatorSet(Endpoints("", "", ""), (reused,)).stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_wrong_azurite_override_says_so_and_starts_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MCT_AZURITE", str(tmp_path / "missing" / "azurite-blob"))
    with pytest.raises(EmulatorError, match=r"MCT_AZURITE=.* is not an executable"):
        start_emulators(tmp_path / "data", {})
    assert not (tmp_path / "data").exists()


def test_an_emulator_that_exits_is_named_with_its_log_and_the_others_are_stopped(tmp_path: Path, monkeypatch) -> None:
    broken = tmp_path / "azurite-blob"
    broken.write_text("#!/bin/sh\necho 'cannot open the database' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("MCT_AZURITE", str(broken))
    spawned: list[tuple[int, int | None]] = []

    def recording_spawn(command: list[str], log: Path) -> tuple[int, int | None]:
        spawned.append(spawn(command, log))
        return spawned[-1]

    monkeypatch.setattr(lifecycle, "spawn", recording_spawn)
    log = re.escape(str(tmp_path / "data" / "azure" / "azurite.log"))
    with pytest.raises(EmulatorError, match=rf"azure emulator \(azurite\) exited while starting: cannot open .*{log}"):
        start_emulators(tmp_path / "data", {"s3": ["mct-test"]})
    assert len(spawned) == 3
    assert not any(is_running(pid, started) for pid, started in spawned)
