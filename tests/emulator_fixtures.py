"""Pytest plugin: the three cloud emulators, started once per test worker through `start_emulators`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from toolkit.emulators import EmulatorSet, start_emulators

TEST_BUCKET = "mct-test"


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorSet]:
    """moto, fake-gcs-server and Azurite on free ports, each with the bucket `mct-test`; stopped at the end."""
    running = start_emulators(
        tmp_path_factory.mktemp("emulators"), {"s3": [TEST_BUCKET], "gcs": [TEST_BUCKET], "azure": [TEST_BUCKET]}
    )
    yield running
    running.stop()
