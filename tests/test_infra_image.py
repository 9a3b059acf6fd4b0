"""The serving image, as far as it can be checked without a Docker engine.

The Dockerfile's ENTRYPOINT runs here as a process, with the arguments and environment that the three
clouds give the container (infra/component.py) and with imports limited to the packages the image installs
(infra/image/requirements.txt): it must serve a published model and pass its own HEALTHCHECK.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from infra.component import container_args, container_environment, store_variable
from tests.infra_mocks import example_spec
from tests.server_fixtures import ServerProcess, register_versions, wait_ready
from toolkit.config import load_settings
from toolkit.processes import free_ports
from toolkit.publishing.export import export_bundle
from toolkit.publishing.publish import publish_bundle
from toolkit.storage import open_store
from toolkit.tracking.store import open_store as open_tracking

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
REQUIREMENTS = ROOT / "infra" / "image" / "requirements.txt"
# The project's own packages the image installs (`pip install --no-deps .` of what it copies).
PROJECT_PACKAGES = {"toolkit", "serving"}
# What a fresh Python 3.11 virtual environment holds besides the requirements.
VENV_PACKAGES = {"pip", "setuptools", "pkg_resources", "_distutils_hack"}


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (keyword, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _requirements() -> list[Requirement]:
    lines = REQUIREMENTS.read_text().splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_image_is_two_slim_stages_running_as_a_user_with_a_health_check() -> None:
    instructions = _instructions()
    assert [arguments for keyword, arguments in instructions if keyword == "FROM"] == [
        "python:3.11-slim AS build",
        "python:3.11-slim",
    ]
    final = dict(_final_stage())
    assert final["USER"].split(":")[0] not in ("root", "0")
    assert final["EXPOSE"] == str(example_spec("aws").port)
    assert "PORT=8080" in final["ENV"].split()
    health = final["HEALTHCHECK"]
    assert "CMD python -c" in health and "/v2/health/live" in health
    entrypoint = json.loads(final["ENTRYPOINT"])
    assert entrypoint[:2] == ["/bin/sh", "-c"] and entrypoint[2].startswith("exec mct serve --host 0.0.0.0")
    # Only what the build copies reaches the build context; tests, the venv and local state stay out.
    copied = [
        part
        for keyword, arguments in instructions
        if keyword == "COPY" and "--from" not in arguments
        for part in arguments.split()[:-1]
    ]
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert {path.rstrip("/").removeprefix("./") for path in copied} <= allowed
    assert not allowed & {"tests", ".venv", ".mct", "node_modules", "bench", "mct.toml"}
    assert (ROOT / "Makefile").read_text().count("docker build --platform linux/amd64") == 1


def test_the_image_requirements_keep_the_projects_lower_bounds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        _normalise(Requirement(line).name): Requirement(line)
        for line in [
            *project["dependencies"],
            *(line for extra in project["optional-dependencies"].values() for line in extra),
        ]
    }
    for requirement in _requirements():
        assert _normalise(requirement.name) in declared, f"{requirement.name} is not a dependency of the project"
        assert requirement.specifier == declared[_normalise(requirement.name)].specifier, requirement.name
    names = {_normalise(requirement.name) for requirement in _requirements()}
    assert not names & {"mlflow", "skl2onnx", "onnx", "imbalanced-learn", "moto", "matplotlib", "pulumi"}


def _installed_closure() -> set[str]:
    """The distributions `pip install -r requirements.txt` brings in, as installed here."""
    pending = list(_requirements())
    found: set[str] = set()
    while pending:
        requirement = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = _normalise(requirement.name)
        if name in found:
            continue
        found.add(name)
        pending.extend(Requirement(line) for line in importlib.metadata.distribution(name).requires or [])
    return found


def _image_only_imports(directory: Path) -> Path:
    """A sitecustomize.py that refuses to import any top-level module the image would not have."""
    closure = _installed_closure()
    allowed = {
        module
        for module, distributions in importlib.metadata.packages_distributions().items()
        if any(_normalise(distribution) in closure for distribution in distributions)
    }
    allowed |= PROJECT_PACKAGES | VENV_PACKAGES
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(
        f"""import importlib.abc
import sys

ALLOWED = {sorted(allowed)!r}


class ImageOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top in sys.stdlib_module_names or top.startswith("_") or top == "sitecustomize":
            return None
        raise ModuleNotFoundError(f"No module named {{name!r}} (the serving image does not install it)", name=name)


sys.meta_path.insert(0, ImageOnly())
"""
    )
    return directory


@pytest.fixture(scope="module")
def published_store(tmp_path_factory: pytest.TempPathFactory, data_home: Path) -> tuple[str, str]:
    """A model's champion published to a local store: (store URL, model name)."""
    model = "image-check"
    settings = load_settings()
    tracking = open_tracking(settings)
    register_versions(tracking, settings, model, count=1)
    scratch = tmp_path_factory.mktemp("image-store")
    bundle = export_bundle(tracking, model, "1", scratch / "bundle")
    (scratch / "store").mkdir()
    url = (scratch / "store").as_uri()
    (result,) = publish_bundle(bundle, {"aws": open_store(url)})
    assert result.ok, result.error
    return url, model


def test_the_entrypoint_serves_a_published_model_with_only_the_images_packages(
    tmp_path: Path, published_store: tuple[str, str]
) -> None:
    """`mct serve` starts from the ENTRYPOINT as each cloud launches it, loads the model, passes the HEALTHCHECK."""
    url, model = published_store
    spec = example_spec("aws", environment={"MCT_SERVING__MODEL": model})
    port = free_ports(1)[0]
    environment = container_environment(spec)
    environment.update({store_variable("aws"): url, "PORT": str(port)})
    final = _final_stage()
    env = {
        **os.environ,
        **environment,
        "MCT_HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(_image_only_imports(tmp_path / "image-only")),
        # The image's /opt/venv/bin is first on its PATH: here, this environment's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "ORT_DISABLE_TELEMETRY": "1",
    }
    entrypoint = json.loads(dict(final)["ENTRYPOINT"])
    log = tmp_path / "server.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [*entrypoint, *container_args(spec)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess("aws", f"http://127.0.0.1:{port}", process, log)
    try:
        wait_ready(server, spec.health_path)
        assert httpx.get(server.url + spec.liveness_path, timeout=5).status_code == 200
        answer = httpx.get(f"{server.url}/v2/models/{model}", timeout=5)
        assert answer.status_code == 200, answer.text
        health = dict(final)["HEALTHCHECK"].split("CMD", 1)[1].strip()
        checked = subprocess.run(shlex.split(health), env=env, capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        assert "the serving image does not install it" not in server.log_text()
    finally:
        server.stop()
