"""What the three clouds' components share: the constructor, the outputs, and the container's contract.

Each cloud's component maps the same `StackSpec` to that cloud's idiomatic resources; the container it runs
is described once here: the serving image's arguments, its environment (the store it serves from, the port)
and the tags every resource carries.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, fields
from typing import ClassVar

import pulumi

from infra.errors import SpecError
from infra.spec import StackSpec

__all__ = [
    "CONTAINER_NAME",
    "LIVENESS",
    "OUTPUT_FIELDS",
    "READINESS",
    "STARTUP",
    "STORE_SCHEMES",
    "ProbeTiming",
    "ServingOutputs",
    "ServingStack",
    "bucket_url",
    "container_args",
    "container_environment",
    "store_variable",
]

# The one container of every task, revision and app.
CONTAINER_NAME = "server"
# How `mct` names each cloud's object stores (toolkit/storage/registry.py).
STORE_SCHEMES = {"aws": "s3", "gcp": "gs", "azure": "az"}


@dataclass(frozen=True)
class ProbeTiming:
    """How often an HTTP probe runs, how long it may take, and how many failures in a row count."""

    period_seconds: int
    timeout_seconds: int
    failure_threshold: int


# Start-up (liveness path): up to 60 s for the image to start; the server answers within seconds.
STARTUP = ProbeTiming(period_seconds=2, timeout_seconds=1, failure_threshold=30)
# Readiness (health path): out of rotation after two failed checks, 10 s without a loaded model.
READINESS = ProbeTiming(period_seconds=5, timeout_seconds=2, failure_threshold=2)
# Liveness: restart after 45 s without an answer; a busy server still answers within 5 s.
LIVENESS = ProbeTiming(period_seconds=15, timeout_seconds=5, failure_threshold=3)


@dataclass(frozen=True)
class ServingOutputs:
    """What every cloud's stack exports, under the same names."""

    # The HTTPS URL clients and the router use.
    service_url: pulumi.Input[str]
    # The platform's own host name: the ALB (point the domain's DNS at it), run.app, or the Container Apps FQDN.
    service_hostname: pulumi.Input[str]
    # The bucket as `mct` names it (s3://, gs://, az://), where `mct publish` puts the models.
    bucket_url: pulumi.Input[str]
    # The bucket's HTTPS endpoint; on Azure it names the storage account.
    bucket_endpoint: pulumi.Input[str]


OUTPUT_FIELDS = tuple(output.name for output in fields(ServingOutputs))


class ServingStack(pulumi.ComponentResource, metaclass=abc.ABCMeta):
    """The serving stack on one cloud: a private model bucket and an autoscaled HTTPS service that serves it.

    Subclasses set `CLOUD` and implement `_build`; each has this constructor and these outputs.
    """

    CLOUD: ClassVar[str]

    service_url: pulumi.Output[str]
    service_hostname: pulumi.Output[str]
    bucket_url: pulumi.Output[str]
    bucket_endpoint: pulumi.Output[str]

    def __init__(self, name: str, spec: StackSpec, opts: pulumi.ResourceOptions | None = None) -> None:
        if spec.cloud != self.CLOUD:
            raise SpecError(f"{type(self).__name__} builds {self.CLOUD} stacks, and this spec is for {spec.cloud}")
        super().__init__(f"mct:serving:{type(self).__name__}", name, None, opts)
        outputs = self._build(name, spec)
        for output in OUTPUT_FIELDS:
            setattr(self, output, pulumi.Output.from_input(getattr(outputs, output)))
        self.register_outputs({output: getattr(self, output) for output in OUTPUT_FIELDS})

    @abc.abstractmethod
    def _build(self, name: str, spec: StackSpec) -> ServingOutputs:
        """Create the cloud's resources as children of this component; their outputs."""

    def _child(
        self, depends_on: list[pulumi.Resource] | None = None, ignore_changes: list[str] | None = None
    ) -> pulumi.ResourceOptions:
        """Options of a resource of this component (it is their parent)."""
        return pulumi.ResourceOptions(parent=self, depends_on=depends_on, ignore_changes=ignore_changes)


def bucket_url(spec: StackSpec) -> str:
    """The model store as `mct` names it: scheme, bucket (or container) and prefix."""
    url = f"{STORE_SCHEMES[spec.cloud]}://{spec.model_bucket}"
    return f"{url}/{spec.model_prefix}" if spec.model_prefix else url


def store_variable(cloud: str) -> str:
    """The variable that points the server's configured cloud at the stack's bucket (toolkit/config.py)."""
    return f"MCT_CLOUDS__{cloud.upper()}__URL"


def container_args(spec: StackSpec) -> list[str]:
    """The arguments after the image's entrypoint (`mct serve --host 0.0.0.0 --port $PORT`)."""
    return ["--cloud", spec.cloud]


def container_environment(spec: StackSpec, *, platform_sets_port: bool = False) -> dict[str, str]:
    """The server's environment: the spec's variables, the store it serves, and the port to listen on.

    `platform_sets_port`: the platform sets PORT to the container port itself (Cloud Run, which also
    refuses a PORT of ours).
    """
    environment = {**spec.environment, store_variable(spec.cloud): bucket_url(spec)}
    if not platform_sets_port:
        environment["PORT"] = str(spec.port)
    return dict(sorted(environment.items()))
