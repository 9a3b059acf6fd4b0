"""Drive the serving stacks through Pulumi's Automation API: preview, up, destroy and outputs.

Stacks are named CLOUD-ENVIRONMENT (`aws-dev`) in the `mct-serving` project, whose directory (`infra/`)
holds Pulumi.yaml and each stack's config file; the program runs in this process. State goes to a local
file backend in the data directory (`DATA/pulumi`) unless PULUMI_BACKEND_URL names another. Pulumi's own
progress is handed line by line to `on_output` as it runs. Every prerequisite of every selected stack is
checked before the first one starts; with several stacks, one stack's failure does not stop the others.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pulumi import automation as auto

from infra.deployed import deployed_clouds, forget_deployment, record_deployment
from infra.errors import DeploymentFailed, PrerequisiteMissing, SpecError
from infra.prerequisites import check_credentials, check_passphrase, check_pulumi_cli, pulumi_cli_missing
from infra.program import serving_program
from infra.spec import (
    CLOUDS,
    PROJECT,
    PROJECT_DIR,
    load_stack_spec,
    read_settings_file,
    read_stack_config,
    stack_file,
)

__all__ = [
    "ACTIONS",
    "BACKEND_ENV",
    "Deployment",
    "StackReport",
    "StackTarget",
    "backend_url",
    "failure",
    "open_stack",
    "select_targets",
]

Action = Literal["preview", "up", "destroy", "outputs"]
ACTIONS: tuple[Action, ...] = ("preview", "up", "destroy", "outputs")
BACKEND_ENV = "PULUMI_BACKEND_URL"
# The provider plugin each cloud's program needs, and the Python package whose version it must match.
PLUGINS = {"aws": ("aws", "pulumi-aws"), "gcp": ("gcp", "pulumi-gcp"), "azure": ("azure-native", "pulumi-azure-native")}
_ENVIRONMENT = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
OnOutput = Callable[[str], None]


@dataclass(frozen=True)
class StackTarget:
    """One stack: a cloud in an environment."""

    cloud: str
    environment: str

    @property
    def name(self) -> str:
        return f"{self.cloud}-{self.environment}"


@dataclass
class StackReport:
    """What happened to one stack."""

    cloud: str
    stack: str
    ok: bool
    # False for `outputs` and `destroy` of a stack that was never deployed.
    deployed: bool = True
    outputs: dict[str, Any] = field(default_factory=dict)
    # Resource operations (create, update, delete, same, ...) and their counts.
    changes: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class StackHandle(Protocol):
    """The part of `pulumi.automation.Stack` the deployment uses."""

    def set_config(self, key: str, value: auto.ConfigValue, *, path: bool = False) -> None: ...
    def preview(
        self, *, color: str | None = None, on_output: OnOutput | None = None, on_error: OnOutput | None = None
    ) -> Any: ...
    def up(
        self, *, color: str | None = None, on_output: OnOutput | None = None, on_error: OnOutput | None = None
    ) -> Any: ...
    def destroy(
        self, *, color: str | None = None, on_output: OnOutput | None = None, on_error: OnOutput | None = None
    ) -> Any: ...
    def outputs(self) -> Any: ...


StackOpener = Callable[[StackTarget, str, Action, Path], StackHandle]


def select_targets(cloud: str, environment: str) -> list[StackTarget]:
    """The stacks of `cloud` (or `all`) in `environment`."""
    if cloud != "all" and cloud not in CLOUDS:
        raise SpecError(f"unknown cloud {cloud!r}: use {', '.join(CLOUDS)} or all")
    if not _ENVIRONMENT.fullmatch(environment) or environment.startswith(tuple(f"{name}-" for name in CLOUDS)):
        raise SpecError(
            f"--stack {environment!r} names the environment (dev, prod, ...): "
            "the stacks are CLOUD-ENVIRONMENT, e.g. aws-dev"
        )
    return [StackTarget(name, environment) for name in (CLOUDS if cloud == "all" else (cloud,))]


def backend_url(home: Path) -> str:
    """PULUMI_BACKEND_URL, else a file backend in the data directory (created when needed)."""
    if os.environ.get(BACKEND_ENV):
        return os.environ[BACKEND_ENV]
    directory = home / "pulumi"
    directory.mkdir(parents=True, exist_ok=True)
    return directory.resolve().as_uri()


def open_stack(target: StackTarget, backend: str, action: Action, project_dir: Path) -> StackHandle:
    """The stack of `target` in `backend`, created for a preview or an update, with its provider plugin."""
    options = auto.LocalWorkspaceOptions(work_dir=str(project_dir), env_vars={BACKEND_ENV: backend})
    if action in ("preview", "up"):
        stack = auto.create_or_select_stack(target.name, project_name=PROJECT, program=serving_program, opts=options)
    else:
        stack = auto.select_stack(target.name, project_name=PROJECT, program=serving_program, opts=options)
    if action != "outputs":
        # The plugin version the installed SDK was generated for, not whatever is newest.
        plugin, package = PLUGINS[target.cloud]
        stack.workspace.install_plugin(plugin, f"v{importlib.metadata.version(package)}")
    return stack


class Deployment:
    """One `mct infra` run over one or more stacks."""

    def __init__(
        self,
        home: Path,
        targets: Iterable[StackTarget],
        *,
        image: str | None = None,
        on_output: OnOutput | None = None,
        color: str = "never",
        opener: StackOpener | None = None,
        project_dir: Path | None = None,
    ) -> None:
        self.home = home
        self.project_dir = project_dir or PROJECT_DIR
        self.targets = list(targets)
        self.image = image
        self.color = color
        self._emit = on_output or (lambda line: None)
        self._open = opener or open_stack

    def check(self, action: Action) -> str:
        """Refuse early, with one line, what would fail later; returns the backend URL."""
        check_pulumi_cli()
        if action in ("up", "destroy"):
            deployed_clouds(self.home)  # a settings file they could not rewrite: refuse now, not after deploying
        backend = backend_url(self.home)
        for target in self.targets:
            path = stack_file(target.name, self.project_dir)
            if action == "outputs" and not path.is_file():
                check_passphrase(backend, target.name, {})
                continue
            config = read_stack_config(target.name, self.project_dir)
            declared = config.get(f"{PROJECT}:cloud")
            if declared != target.cloud:
                raise SpecError(f"{path} is for {PROJECT}:cloud {declared!r}, not {target.cloud}")
            if action in ("preview", "up"):
                overrides = {f"{PROJECT}:image": self.image} if self.image else None
                load_stack_spec(target.name, self.project_dir, overrides)  # the program would refuse it later
            check_passphrase(backend, target.name, read_settings_file(path))
            if action != "outputs":
                check_credentials(target.cloud, target.name, config)
        return backend

    def run(self, action: Action) -> list[StackReport]:
        """Check everything, then run `action` on each stack in turn."""
        backend = self.check(action)
        return [self._run_one(action, target, backend) for target in self.targets]

    def _run_one(self, action: Action, target: StackTarget, backend: str) -> StackReport:
        report = StackReport(target.cloud, target.name, ok=True)
        lines: list[str] = []

        def emit(line: str) -> None:
            lines.append(line)
            self._emit(line)

        emit(f"== pulumi {action}: stack {target.name} ==")
        streaming: dict[str, Any] = {"on_output": emit, "on_error": emit, "color": self.color}
        try:
            stack = self._open(target, backend, action, self.project_dir)
            if action == "preview":
                self._set_image(stack)
                report.changes = _counts(stack.preview(**streaming).change_summary)
            elif action == "up":
                self._set_image(stack)
                result = stack.up(**streaming)
                report.outputs = {name: output.value for name, output in result.outputs.items()}
                report.changes = _counts(result.summary.resource_changes)
                record_deployment(self.home, target.cloud, report.outputs["bucketUrl"], report.outputs["serviceUrl"])
            elif action == "destroy":
                report.changes = _counts(stack.destroy(**streaming).summary.resource_changes)
                forget_deployment(self.home, target.cloud)
            else:
                report.outputs = {name: output.value for name, output in stack.outputs().items()}
        except auto.StackNotFoundError:
            report.deployed = False
            if action == "destroy":
                forget_deployment(self.home, target.cloud)
        except FileNotFoundError as exc:
            if exc.filename == "pulumi":  # the Automation API runs `pulumi` from PATH
                raise pulumi_cli_missing() from None
            raise
        except auto.InvalidVersionError as exc:
            raise PrerequisiteMissing(f"the Pulumi CLI is too old for this SDK ({exc}): upgrade it") from None
        except auto.ConcurrentUpdateError:
            report.ok = False
            report.error = (
                f"another update of {target.name} is running; if it died, `pulumi cancel` it in {self.project_dir}"
            )
        except auto.CommandError:
            report.ok = False
            report.error = _first_error(lines) or "see Pulumi's output above"
        return report

    def _set_image(self, stack: StackHandle) -> None:
        """`--image` is kept in the stack's config file, as `pulumi config set` would."""
        if self.image:
            stack.set_config(f"{PROJECT}:image", auto.ConfigValue(self.image))


def failure(action: Action, reports: list[StackReport]) -> DeploymentFailed | None:
    """One error for the stacks that failed, or None."""
    failed = [report for report in reports if not report.ok]
    if not failed:
        return None
    details = "; ".join(f"{report.stack}: {report.error}" for report in failed)
    return DeploymentFailed(f"pulumi {action} failed for {details}")


def _counts(changes: Any) -> dict[str, int]:
    return {str(getattr(operation, "value", operation)): int(count) for operation, count in (changes or {}).items()}


def _first_error(lines: Iterable[str]) -> str | None:
    """Pulumi's first specific `error:` line (not its closing "update failed")."""
    for line in lines:
        text = _ANSI.sub("", line).strip()
        if text.startswith("error:") and not re.fullmatch(r"error: (update|preview|destroy) failed", text):
            return text.removeprefix("error:").strip()
    return None
