"""`mct infra`: the checks before Pulumi runs, the Automation API driver, and what `up` records.

The Pulumi CLI is not installed here, so the driver's seam (`infra.automation.open_stack`) is replaced by
fake stacks that stream lines and return results as Pulumi's would; everything around it is real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pulumi import automation as auto
from typer.testing import CliRunner

import infra.automation
import infra.prerequisites
from infra.automation import Deployment, StackTarget, backend_url, select_targets
from infra.errors import PrerequisiteMissing, SpecError
from infra.prerequisites import check_credentials, uses_passphrase
from infra.spec import CLOUDS, PROJECT_DIR
from tests.infra_mocks import config_values
from toolkit.cli.app import app
from toolkit.config import data_config_file, load_settings

INSTALL_URL = "https://www.pulumi.com/docs/install/"
CLOUD_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "GOOGLE_CREDENTIALS",
    "GOOGLE_CLOUD_KEYFILE_JSON",
    "GCLOUD_KEYFILE_JSON",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "GOOGLE_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "CLOUDSDK_CORE_PROJECT",
    "ARM_CLIENT_ID",
    "ARM_CLIENT_SECRET",
    "ARM_TENANT_ID",
    "ARM_SUBSCRIPTION_ID",
    "ARM_USE_MSI",
    "PULUMI_BACKEND_URL",
    "PULUMI_CONFIG_PASSPHRASE",
    "PULUMI_CONFIG_PASSPHRASE_FILE",
    "MCT_CONFIG",
)


@dataclass
class InfraWorld:
    """A machine with no cloud credentials, no Pulumi CLI, a project of complete stacks, and a data directory."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    home: Path
    project: Path
    opened: list[tuple[str, str, str]] = field(default_factory=list)
    runner: CliRunner = field(default_factory=CliRunner)

    def mct(self, *args: str) -> Any:
        return self.runner.invoke(app, list(args), catch_exceptions=False)

    def install_pulumi_cli(self) -> None:
        """A `pulumi` on PATH that fails loudly if anything runs it: only the fake stacks may answer."""
        cli = self.root / "bin" / "pulumi"
        cli.write_text("#!/bin/sh\necho 'the tests must not run the Pulumi CLI' >&2\nexit 3\n")
        cli.chmod(0o755)

    def add_credentials(self, *clouds: str) -> None:
        for cloud in clouds:
            if cloud == "aws":
                self.monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
                self.monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
            elif cloud == "gcp":
                key = self.root / "key.json"
                key.write_text("{}")
                self.monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
                self.monkeypatch.setenv("GOOGLE_PROJECT", "acme-project")
            else:
                self.monkeypatch.setenv("ARM_CLIENT_ID", "client")
                self.monkeypatch.setenv("ARM_SUBSCRIPTION_ID", "subscription")

    def ready(self) -> None:
        """CLI, passphrase and credentials in place: the checks pass."""
        self.install_pulumi_cli()
        self.monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "correct horse")
        self.add_credentials(*CLOUDS)

    def use_stacks(self, factory: Callable[[StackTarget, str], FakeStack] | None = None) -> None:
        """Replace the Automation API's stacks with fakes made by `factory` (default: ones that succeed)."""
        make = factory or (lambda target, action: FakeStack(target))

        def opener(target: StackTarget, backend: str, action: str, project_dir: Path) -> FakeStack:
            assert project_dir == self.project
            self.opened.append((target.name, action, backend))
            return make(target, action)

        self.monkeypatch.setattr(infra.automation, "open_stack", opener)

    def write_stack(self, stack: str, values: dict[str, Any]) -> None:
        (self.project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": values}))


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InfraWorld]:
    for name in CLOUD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "data"
    monkeypatch.setenv("MCT_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe an instance metadata service
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azure"))
    monkeypatch.setattr(infra.prerequisites, "GCE_PRODUCT_FILE", tmp_path / "not-a-google-vm")
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", project)
    monkeypatch.setattr(infra.automation, "PROJECT_DIR", project)
    world = InfraWorld(tmp_path, monkeypatch, home, project)
    for cloud in CLOUDS:
        world.write_stack(f"{cloud}-dev", config_values(cloud))
    yield world


class FakeStack:
    """A stack as the Automation API hands it over: streams Pulumi-like lines, returns Pulumi-like results."""

    def __init__(self, target: StackTarget, fail_with: list[str] | None = None) -> None:
        self.target = target
        self.fail_with = fail_with
        self.config: dict[str, str] = {}

    def set_config(self, key: str, value: auto.ConfigValue, *, path: bool = False) -> None:
        self.config[key] = value.value

    def _stream(self, options: dict[str, Any], verb: str) -> None:
        options["on_output"](f"{verb} (fake {self.target.name}):")
        if self.fail_with:
            for line in self.fail_with:
                options["on_output"](line)
            raise auto.CommandError(auto.CommandResult("\n".join(self.fail_with), "", 255))
        options["on_output"](f"  + mct:serving:Stack {self.target.name} created")

    def preview(self, **options: Any) -> Any:
        self._stream(options, "Previewing update")
        return SimpleNamespace(change_summary={"create": 30})

    def up(self, **options: Any) -> Any:
        self._stream(options, "Updating")
        return SimpleNamespace(
            outputs={name: auto.OutputValue(value, False) for name, value in self.outputs_of().items()},
            summary=SimpleNamespace(resource_changes={"create": 30}),
        )

    def destroy(self, **options: Any) -> Any:
        self._stream(options, "Destroying")
        return SimpleNamespace(summary=SimpleNamespace(resource_changes={"delete": 30}))

    def outputs(self) -> dict[str, auto.OutputValue]:
        return {name: auto.OutputValue(value, False) for name, value in self.outputs_of().items()}

    def outputs_of(self) -> dict[str, str]:
        cloud = self.target.cloud
        scheme = {"aws": "s3", "gcp": "gs", "azure": "az"}[cloud]
        return {
            "cloud": cloud,
            "serviceUrl": f"https://{cloud}.models.example.com",
            "serviceHostname": f"{cloud}-host.example.net",
            "bucketUrl": f"{scheme}://acme-models",
            "bucketEndpoint": "https://mctserving0123456789.blob.core.windows.net/acme-models"
            if cloud == "azure"
            else f"https://{cloud}.storage.example.com/acme-models",
        }


def _one_error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["preview"], ["up"], ["destroy", "--yes"], ["outputs"]])
def test_without_the_pulumi_cli_each_command_says_what_to_install(world: InfraWorld, command: list[str]) -> None:
    result = world.mct("infra", *command, "--cloud", "all")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: the Pulumi CLI is not installed (mct infra runs it): install it ({INSTALL_URL}) "
        "and make sure `pulumi` is on PATH"
    ]
    assert result.stdout == ""


def test_without_the_pulumi_cli_a_real_mct_process_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name not in CLOUD_VARIABLES}
    env.update(MCT_HOME=str(tmp_path), PATH=str(Path(sys.executable).parent))
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "infra", "up", "--cloud", "aws"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: the Pulumi CLI is not installed (mct infra runs it): install it ({INSTALL_URL}) "
        "and make sure `pulumi` is on PATH"
    ]


def test_the_local_state_needs_a_passphrase_and_a_pulumi_service_does_not(world: InfraWorld) -> None:
    world.install_pulumi_cli()
    world.add_credentials("azure")
    world.use_stacks()
    result = world.mct("infra", "preview", "--cloud", "azure")
    assert result.exit_code == 2
    assert "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE)" in _one_error_line(result)
    assert (world.home / "pulumi").resolve().as_uri() in result.stderr
    assert world.opened == []
    world.monkeypatch.setenv("PULUMI_BACKEND_URL", "https://api.pulumi.com")
    assert world.mct("infra", "preview", "--cloud", "azure").exit_code == 0
    assert world.opened == [("azure-dev", "preview", "https://api.pulumi.com")]


def test_a_stack_with_its_own_secrets_provider_needs_no_passphrase() -> None:
    assert uses_passphrase("file:///state", {})
    assert uses_passphrase("s3://bucket/state", {"secretsprovider": "passphrase"})
    assert not uses_passphrase("file:///state", {"secretsprovider": "awskms://alias/pulumi"})
    assert not uses_passphrase("https://api.pulumi.com", {})


@pytest.mark.parametrize(
    ("cloud", "advice"),
    [
        ("aws", "no AWS credentials: run `aws configure` (or `aws sso login`), or set AWS_PROFILE"),
        ("gcp", "no Google Cloud credentials: run `gcloud auth application-default login`"),
        ("azure", "no Azure credentials: run `az login`, or set ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID"),
    ],
)
def test_missing_cloud_credentials_say_what_to_run_or_set(world: InfraWorld, cloud: str, advice: str) -> None:
    world.install_pulumi_cli()
    world.monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "")
    world.use_stacks()
    result = world.mct("infra", "up", "--cloud", cloud)
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert line.startswith(f"error: stack {cloud}-dev: {advice}"), line
    assert world.opened == []


def test_every_stack_is_checked_before_the_first_one_runs(world: InfraWorld) -> None:
    world.ready()
    world.monkeypatch.delenv("ARM_CLIENT_ID")
    world.use_stacks()
    result = world.mct("infra", "up", "--cloud", "all")
    assert result.exit_code == 2 and "stack azure-dev: no Azure credentials" in _one_error_line(result)
    assert world.opened == []  # aws and gcp did not start either


def test_credentials_are_found_where_each_cloud_keeps_them(world: InfraWorld) -> None:
    aws_config = world.root / "aws-config"
    aws_config.write_text("[profile deploy]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = secret\n")
    world.monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    check_credentials("aws", "aws-dev", {"aws:profile": "deploy"})
    with pytest.raises(PrerequisiteMissing, match=r"the AWS profile 'other' \(aws:profile\) is not in ~/\.aws/config"):
        check_credentials("aws", "aws-dev", {"aws:profile": "other"})

    gcloud = world.root / "gcloud"
    gcloud.mkdir()
    (gcloud / "application_default_credentials.json").write_text("{}")
    with pytest.raises(PrerequisiteMissing, match="no Google Cloud project: set gcp:project"):
        check_credentials("gcp", "gcp-dev", {})
    check_credentials("gcp", "gcp-dev", {"gcp:project": "acme"})

    azure = world.root / "azure"
    azure.mkdir()
    profile = {"subscriptions": [{"id": "sub", "isDefault": False}]}
    (azure / "azureProfile.json").write_text(json.dumps(profile), encoding="utf-8-sig")  # as `az login` writes it
    with pytest.raises(PrerequisiteMissing, match="no Azure subscription: set ARM_SUBSCRIPTION_ID"):
        check_credentials("azure", "azure-dev", {})
    profile["subscriptions"][0]["isDefault"] = True
    (azure / "azureProfile.json").write_text(json.dumps(profile), encoding="utf-8-sig")
    check_credentials("azure", "azure-dev", {})


def test_a_bad_spec_is_refused_before_pulumi_runs(world: InfraWorld) -> None:
    world.ready()
    world.use_stacks()
    world.write_stack("gcp-dev", config_values("gcp", image=None))
    result = world.mct("infra", "preview", "--cloud", "gcp")
    assert result.exit_code == 2
    assert _one_error_line(result).startswith("error: stack gcp-dev: mct-serving:image is not set: pass --image")
    assert world.mct("infra", "preview", "--cloud", "gcp", "--image", "docker.io/acme/mct-serving:0.2.0").exit_code == 0
    world.write_stack("gcp-dev", config_values("aws"))
    result = world.mct("infra", "destroy", "--cloud", "gcp", "--yes")
    assert result.exit_code == 2 and "Pulumi.gcp-dev.yaml is for mct-serving:cloud 'aws', not gcp" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cloud", "oracle"], "unknown cloud 'oracle': use aws, gcp, azure or all"),
        (["--cloud", "aws", "--stack", "aws-dev"], "--stack 'aws-dev' names the environment (dev, prod, ...)"),
        (["--cloud", "aws", "--stack", "Prod"], "--stack 'Prod' names the environment"),
        (["--cloud", "aws", "--stack", "staging"], "no configuration for stack aws-staging: create"),
    ],
)
def test_stack_selection_errors(world: InfraWorld, args: list[str], message: str) -> None:
    world.ready()
    result = world.mct("infra", "preview", *args)
    assert result.exit_code == 2 and message in _one_error_line(result)


def test_up_records_the_clouds_for_publish_and_route_and_destroy_takes_them_out(world: InfraWorld) -> None:
    world.ready()
    stacks: dict[str, FakeStack] = {}

    def factory(target: StackTarget, action: str) -> FakeStack:
        stacks[target.name] = FakeStack(target)
        return stacks[target.name]

    world.use_stacks(factory)
    result = world.mct("infra", "up", "--cloud", "all", "--image", "docker.io/acme/mct-serving:0.2.0", "--json")
    assert result.exit_code == 0, result.stderr
    # Pulumi's progress streams to stderr; stdout is one JSON document.
    assert "== pulumi up: stack aws-dev ==" in result.stderr and "Updating (fake gcp-dev):" in result.stderr
    document = json.loads(result.stdout)
    assert [(stack["stack"], stack["ok"], stack["changes"]) for stack in document["stacks"]] == [
        ("aws-dev", True, {"create": 30}),
        ("gcp-dev", True, {"create": 30}),
        ("azure-dev", True, {"create": 30}),
    ]
    backend = (world.home / "pulumi").resolve().as_uri()
    assert world.opened == [(f"{cloud}-dev", "up", backend) for cloud in CLOUDS]
    assert all(stack.config == {"mct-serving:image": "docker.io/acme/mct-serving:0.2.0"} for stack in stacks.values())
    assert document["config_file"] == str(data_config_file(world.home))

    clouds = load_settings().clouds
    assert {name: (cloud.url, cloud.emulator, cloud.serving_urls) for name, cloud in clouds.items()} == {
        "aws": ("s3://acme-models", False, ["https://aws.models.example.com"]),
        "gcp": ("gs://acme-models", False, ["https://gcp.models.example.com"]),
        "azure": ("az://acme-models", False, ["https://azure.models.example.com"]),
    }
    # The user's own settings still win over what `up` recorded.
    (world.root / "mct.toml").write_text('[clouds.aws]\nurl = "s3://my-own-bucket"\n')
    assert load_settings().clouds["aws"].url == "s3://my-own-bucket"
    assert load_settings().clouds["aws"].serving_urls == ["https://aws.models.example.com"]
    (world.root / "mct.toml").unlink()

    listed = world.mct("infra", "outputs", "--cloud", "all", "--json")
    assert listed.exit_code == 0
    assert {stack["stack"]: stack["outputs"]["serviceUrl"] for stack in json.loads(listed.stdout)["stacks"]} == {
        f"{cloud}-dev": f"https://{cloud}.models.example.com" for cloud in CLOUDS
    }

    assert world.mct("infra", "destroy", "--cloud", "aws", "--yes").exit_code == 0
    assert sorted(load_settings().clouds) == ["azure", "gcp"]
    assert world.mct("infra", "destroy", "--cloud", "all", "--yes").exit_code == 0
    assert not data_config_file(world.home).exists()
    assert load_settings().clouds["aws"].emulator is True  # back to the embedded emulated clouds


def test_up_tells_what_each_cloud_still_needs(world: InfraWorld) -> None:
    world.ready()
    world.use_stacks()
    result = world.mct("infra", "up", "--cloud", "all")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "aws: point aws.models.example.com at aws-host.example.net" in text
    assert "AZURE_STORAGE_CONNECTION_STRING of the storage account mctserving0123456789" in text
    assert f"recorded in {data_config_file(world.home)}" in text


def test_one_clouds_failure_does_not_stop_the_others(world: InfraWorld) -> None:
    world.ready()
    failing = [
        "  gcp:cloudrunv2:Service (mct-serving-service):",
        "    \x1b[31merror:\x1b[0m creating Service: googleapi: Error 429: Quota exceeded",
        "    error: update failed",
    ]
    world.use_stacks(lambda target, action: FakeStack(target, failing if target.cloud == "gcp" else None))
    result = world.mct("infra", "up", "--cloud", "all")
    assert result.exit_code == 1
    assert _one_error_line(result) == (
        "error: pulumi up failed for gcp-dev: creating Service: googleapi: Error 429: Quota exceeded"
    )
    assert sorted(load_settings().clouds) == ["aws", "azure"]


def test_destroy_without_yes_outside_a_terminal_is_refused(world: InfraWorld) -> None:
    world.ready()
    world.use_stacks()
    result = world.mct("infra", "destroy", "--cloud", "aws")
    assert result.exit_code == 2
    assert (
        _one_error_line(result)
        == "error: destroy deletes the stacks' resources and their models: pass --yes to confirm"
    )
    assert world.opened == []


def test_outputs_and_destroy_of_a_stack_never_deployed(world: InfraWorld) -> None:
    world.ready()

    def missing(target: StackTarget, action: str) -> FakeStack:
        raise auto.StackNotFoundError(auto.CommandResult("", f"no stack named '{target.name}' found", 255))

    world.use_stacks(missing)
    result = world.mct("infra", "outputs", "--cloud", "aws", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["stacks"][0] | {"outputs": None} == {
        "cloud": "aws",
        "stack": "aws-dev",
        "ok": True,
        "deployed": False,
        "outputs": None,
        "changes": {},
        "error": None,
    }
    assert world.mct("infra", "destroy", "--cloud", "aws", "--yes").exit_code == 0


def test_a_concurrent_update_is_reported_with_what_to_do(world: InfraWorld) -> None:
    world.ready()

    class Busy(FakeStack):
        def up(self, **options: Any) -> Any:
            raise auto.ConcurrentUpdateError(auto.CommandResult("", "conflict: Another update is in progress", 255))

    deployment = Deployment(
        world.home, select_targets("aws", "dev"), opener=lambda target, *_: Busy(target), project_dir=world.project
    )
    reports = deployment.run("up")
    assert not reports[0].ok and "`pulumi cancel` it in" in str(reports[0].error)


def test_the_state_goes_to_the_data_directory_unless_a_backend_is_named(world: InfraWorld) -> None:
    url = backend_url(world.home)
    assert url == (world.home / "pulumi").resolve().as_uri() and (world.home / "pulumi").is_dir()
    world.monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://acme-pulumi-state")
    assert backend_url(world.home) == "s3://acme-pulumi-state"


def test_the_recorded_clouds_never_overwrite_the_users_own_file(world: InfraWorld) -> None:
    world.ready()
    world.use_stacks()
    (world.root / "mct.toml").write_text('experiment = "mine"\n')
    world.monkeypatch.setenv("MCT_HOME", str(world.root))
    result = world.mct("infra", "up", "--cloud", "aws")
    assert result.exit_code == 2 and "mct infra would overwrite it; set MCT_HOME" in _one_error_line(result)
    assert (world.root / "mct.toml").read_text() == 'experiment = "mine"\n'
    world.monkeypatch.setenv("MCT_HOME", str(world.home))
    world.home.mkdir(parents=True, exist_ok=True)
    data_config_file(world.home).write_text('experiment = "hand-written"\n')
    result = world.mct("infra", "up", "--cloud", "aws")
    assert result.exit_code == 2 and "holds only [clouds]: move experiment to ./mct.toml" in _one_error_line(result)
    assert world.opened == []


def test_select_targets_names_stacks_cloud_environment() -> None:
    assert [target.name for target in select_targets("all", "prod")] == ["aws-prod", "gcp-prod", "azure-prod"]
    assert select_targets("gcp", "qa-2") == [StackTarget("gcp", "qa-2")]
    with pytest.raises(SpecError):
        select_targets("gcp", "gcp-qa")


def test_mct_help_stays_free_of_pulumi() -> None:
    """Pulumi's SDK and providers load only inside `mct infra` commands."""
    code = "import sys, toolkit.cli.app; print(sorted(m for m in sys.modules if m.startswith(('pulumi', 'infra'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_the_automation_apis_own_missing_cli_error_is_translated(world: InfraWorld) -> None:
    """Past the early check (say, `pulumi` vanished meanwhile), the real Automation API's error gets the same line."""
    world.ready()
    (world.root / "bin" / "pulumi").unlink()
    world.monkeypatch.setattr(infra.automation, "check_pulumi_cli", lambda: "/usr/local/bin/pulumi")
    result = world.mct("infra", "preview", "--cloud", "azure")
    assert result.exit_code == 2
    assert _one_error_line(result) == (
        f"error: the Pulumi CLI is not installed (mct infra runs it): install it ({INSTALL_URL}) "
        "and make sure `pulumi` is on PATH"
    )
