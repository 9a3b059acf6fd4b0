"""The stack spec: one typed description of the serving stack, checked against what all three clouds accept.

A stack's values live in Pulumi's own config files, where `pulumi` users look for them: one file per cloud
and environment (`infra/Pulumi.aws-dev.yaml`), keys in the `mct-serving` namespace (`mct-serving:image`,
`mct-serving:maxInstances`, ...) plus the provider's own region key (`aws:region`, `gcp:region`,
`azure-native:location`). `load_stack_spec` reads the files, so that `mct infra` can refuse a bad stack
before Pulumi starts; `spec_from_pulumi_config` reads the same keys inside a running Pulumi program. Both
go through `spec_from_config`, so they accept and refuse exactly the same values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infra.errors import SpecError

__all__ = [
    "CLOUDS",
    "PROJECT",
    "PROJECT_DIR",
    "REGION_KEYS",
    "StackSpec",
    "load_stack_spec",
    "read_settings_file",
    "read_stack_config",
    "spec_from_config",
    "spec_from_pulumi_config",
    "stack_file",
]

# The Pulumi project: its name is also the namespace of the spec's config keys.
PROJECT = "mct-serving"
PROJECT_DIR = Path(__file__).resolve().parent
CLOUDS = ("aws", "gcp", "azure")
# Each provider reads its region from its own key; the spec reads the same one, so they cannot disagree.
REGION_KEYS = {"aws": "aws:region", "gcp": "gcp:region", "azure": "azure-native:location"}
REGION_FORMATS = {
    "aws": (re.compile(r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}"), "us-east-1"),
    "gcp": (re.compile(r"[a-z]+-[a-z]+\d{1,2}"), "europe-west1"),
    "azure": (re.compile(r"[a-z]+[a-z0-9]*"), "westeurope"),
}
# vCPU and memory sizes that Fargate, Cloud Run and Container Apps (Consumption profile) all accept: Container
# Apps fixes memory at 2 GiB per vCPU, and Cloud Run needs concurrency 1 below one vCPU, so fractions are out.
CPU_CHOICES = (1.0, 2.0, 4.0)
MIB_PER_VCPU = 2048
# A guard against typos, below every platform's limit per service; raise it deliberately.
MAX_INSTANCES_LIMIT = 100
# Variables the stack sets itself (the store, the port) or that a platform reserves (Cloud Run's K_*).
RESERVED_ENVIRONMENT = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "AZURE_CLIENT_ID"})
RESERVED_ENVIRONMENT_PREFIX = "MCT_CLOUDS__"
# Tags every resource gets; the spec's own tags add to them.
STANDARD_TAG_KEYS = ("app", "managed-by")

_NAME = re.compile(r"[a-z](?:[a-z0-9]|-(?!-)){1,18}[a-z0-9]")
_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_IMAGE = re.compile(
    r"(?P<repository>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+)"
    r"(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_ENV_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")
# GCP label rules, the strictest of the three clouds' tag rules.
_TAG_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_TAG_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)(Mi|Gi)")
_CERTIFICATE_ARN = re.compile(r"arn:aws[a-z-]*:acm:([a-z0-9-]+):\d{12}:certificate/[0-9a-f-]{36}")
_DOMAIN = re.compile(r"(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_STRUCTURED = ("environment", "tags")
_HINTS = {
    "image": "pass --image REGISTRY/mct-serving:TAG (built by `make image`) or set it in the stack's file",
    "modelBucket": "name the bucket the models go to, e.g. acme-mct-models",
    "certificateArn": "the ALB's HTTPS listener needs an ACM certificate of your domain in the stack's region",
    "domain": "the DNS name the certificate covers; point it at the load balancer (output serviceHostname)",
}


class StackSpec(BaseModel):
    """The serving stack on one cloud: a model bucket and an autoscaled HTTPS service running the image."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True
    )

    cloud: Literal["aws", "gcp", "azure"]
    region: str
    # Prefix of the resources' names; the Container Apps app takes it as is (at most 32 characters).
    name: str = "mct-serving"
    # The serving image (`make image`), the same build on every cloud: pinned by tag or digest, never `latest`.
    image: str
    cpu: float = 1.0
    memory: str = "2Gi"
    # At least one instance: ECS cannot scale from zero on requests, and a cold cloud fails over slowly.
    min_instances: int = Field(1, ge=1)
    max_instances: int = Field(3, ge=1, le=MAX_INSTANCES_LIMIT)
    # Requests in flight per instance: a hard limit on Cloud Run, the scaling target on Container Apps.
    concurrency: int = Field(80, ge=1, le=1000)
    # Ports below 1024 need root, and the image runs as an ordinary user.
    port: int = Field(8080, ge=1024, le=65535)
    # Readiness (a model is loaded): where load balancers look before sending traffic.
    health_path: str = "/v2/health/ready"
    # Liveness (the process answers): what restarts a stuck instance, and the start-up check.
    liveness_path: str = "/v2/health/live"
    environment: dict[str, str] = Field(default_factory=dict)
    model_bucket: str
    # Where in the bucket the toolkit's `models/` tree lives ("" for the bucket's root).
    model_prefix: str = ""
    # True: reachable from the internet (the router calls it); False: inside the cloud's network only.
    public: bool = True
    tags: dict[str, str] = Field(default_factory=dict)
    # AWS only: the load balancer's HTTPS listener serves this ACM certificate for this domain.
    certificate_arn: str | None = None
    domain: str | None = None

    @field_validator("region")
    @classmethod
    def _region(cls, value: str, info: ValidationInfo) -> str:
        cloud = info.data.get("cloud")
        if cloud in REGION_FORMATS:
            pattern, example = REGION_FORMATS[cloud]
            if not pattern.fullmatch(value):
                raise ValueError(f"{value!r} is not a region name of {cloud} (like {example})")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} must be 3-20 lowercase letters, digits and single hyphens, starting with a letter"
            )
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        match = _IMAGE.fullmatch(value)
        if not match:
            raise ValueError(f"{value!r} is not an image reference like registry.example.com/mct-serving:0.1.0")
        if not match["digest"] and match["tag"] in (None, "latest"):
            raise ValueError(f"{value!r} names no fixed build: give a version tag or a digest so every cloud runs it")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: float) -> float:
        if value not in CPU_CHOICES:
            choices = ", ".join(f"{choice:g}" for choice in CPU_CHOICES)
            raise ValueError(f"{value:g} vCPU is not a size all three clouds accept: use {choices}")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY.fullmatch(value):
            raise ValueError(f"{value!r} is not a memory size like 2Gi or 2048Mi")
        return value

    @field_validator("health_path", "liveness_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(character.isspace() for character in value):
            raise ValueError(f"{value!r} must be an absolute URL path such as /v2/health/ready")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a variable name (upper-case letters, digits, underscores)")
            if key in RESERVED_ENVIRONMENT or key.startswith(RESERVED_ENVIRONMENT_PREFIX):
                raise ValueError(f"{key} is set by the stack itself (the store, the port or the identity)")
        return value

    @field_validator("model_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _BUCKET.fullmatch(value) or value.startswith(("goog", "sthree-")) or "google" in value:
            raise ValueError(
                f"{value!r} is not a bucket name all three clouds accept: 3-63 lowercase letters, digits and single "
                "hyphens, no dots, not starting with goog or containing google"
            )
        return value

    @field_validator("model_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and (not _PREFIX.fullmatch(value) or ".." in value.split("/")):
            raise ValueError(f"{value!r} must be path segments like serving/prod, without leading or trailing '/'")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if key in STANDARD_TAG_KEYS:
                raise ValueError(f"the tag {key!r} is set by the stack itself")
            if not _TAG_KEY.fullmatch(key) or not _TAG_VALUE.fullmatch(tag):
                raise ValueError(
                    f"tag {key}={tag!r} breaks GCP's label rules (lowercase letters, digits, '_' and '-', at most 63)"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StackSpec:
        if self.max_instances < self.min_instances:
            raise ValueError(f"maxInstances {self.max_instances} is below minInstances {self.min_instances}")
        expected = int(self.cpu * MIB_PER_VCPU)
        if self.memory_mib != expected:
            raise ValueError(
                f"memory {self.memory} with {self.cpu:g} vCPU: Container Apps needs 2Gi per vCPU, "
                f"so use memory {expected // 1024}Gi"
            )
        if self.health_path == self.liveness_path:
            raise ValueError(
                "healthPath and livenessPath must differ: readiness and liveness answer different questions"
            )
        self._check_https()
        return self

    def _check_https(self) -> None:
        if self.cloud != "aws":
            if self.certificate_arn or self.domain:
                raise ValueError(f"certificateArn and domain are for aws stacks; {self.cloud} serves HTTPS on its own")
            return
        for key, value in (("certificateArn", self.certificate_arn), ("domain", self.domain)):
            if not value:
                raise ValueError(f"aws stacks need {key}: {_HINTS[key]}")
        arn = _CERTIFICATE_ARN.fullmatch(self.certificate_arn or "")
        if not arn:
            raise ValueError(f"certificateArn {self.certificate_arn!r} is not an ACM certificate ARN")
        if arn[1] != self.region:
            raise ValueError(
                f"the certificate is in {arn[1]}, the stack in {self.region}: the ALB needs one of its region"
            )
        if not _DOMAIN.fullmatch(self.domain or ""):
            raise ValueError(f"domain {self.domain!r} is not a DNS name like models.example.com")

    @property
    def memory_mib(self) -> int:
        match = _MEMORY.fullmatch(self.memory)
        assert match is not None  # validated
        amount = float(match[1]) * (1024 if match[2] == "Gi" else 1)
        return int(amount)

    @property
    def all_tags(self) -> dict[str, str]:
        """The standard tags, then the spec's own: what every taggable resource carries."""
        return {"app": self.name, "managed-by": "mct", **self.tags}


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    """The file of a stack's configuration, as Pulumi names it."""
    return project_dir / f"Pulumi.{stack}.yaml"


def read_stack_config(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, Any]:
    """A stack's configuration as Pulumi sees it: the project's defaults in Pulumi.yaml, then the stack's file.

    Keys come back qualified (`mct-serving:cpu`); values as YAML gives them.
    """
    path = stack_file(stack, project_dir)
    if not path.is_file():
        raise SpecError(f"no configuration for stack {stack}: create {path} (start from a -dev file beside it)")
    values: dict[str, Any] = {}
    for key, item in (read_settings_file(project_dir / "Pulumi.yaml").get("config") or {}).items():
        # Project-level config is `key: value` or `key: {type, description, default | value}`.
        value = item.get("value", item.get("default")) if isinstance(item, dict) and "type" in item else item
        if value is not None:
            values[_qualified(key)] = value
    for key, value in (read_settings_file(path).get("config") or {}).items():
        values[_qualified(key)] = value
    return values


def load_stack_spec(
    stack: str, project_dir: Path = PROJECT_DIR, overrides: Mapping[str, Any] | None = None
) -> StackSpec:
    """The spec of `stack` from its config files, with `overrides` (qualified keys) on top."""
    values = {**read_stack_config(stack, project_dir), **(overrides or {})}
    return spec_from_config(values, stack, stack_file(stack, project_dir).name)


def spec_from_pulumi_config() -> StackSpec:
    """The spec of the stack a Pulumi program runs for, from the engine's configuration."""
    import pulumi

    project = pulumi.Config(PROJECT)
    values: dict[str, Any] = {}
    for name, field in StackSpec.model_fields.items():
        key = field.alias or name
        value = project.get(key)
        if value is not None and name != "region":
            values[f"{PROJECT}:{key}"] = value
    region_key = REGION_KEYS.get(str(values.get(f"{PROJECT}:cloud")))
    if region_key:
        namespace, key = region_key.split(":")
        values[region_key] = pulumi.Config(namespace).get(key)
    return spec_from_config(values, pulumi.get_stack(), f"Pulumi.{pulumi.get_stack()}.yaml")


def spec_from_config(values: Mapping[str, Any], stack: str, source: str) -> StackSpec:
    """Validate qualified config values (`mct-serving:*` and the cloud's region key) into a spec.

    Every problem becomes one `SpecError` naming the stack, the key and what to do.
    """
    raw: dict[str, Any] = {}
    for key, value in values.items():
        namespace, _, name = key.partition(":")
        if namespace != PROJECT or value is None:
            continue
        if isinstance(value, dict) and "secure" in value:
            raise SpecError(f"stack {stack}: {key} is encrypted, and the serving spec holds no secrets")
        if name == "region":
            raise SpecError(
                f"stack {stack}: set the region with the provider's key ({', '.join(REGION_KEYS.values())})"
            )
        raw[name] = value
    cloud = raw.get("cloud")
    region_key = REGION_KEYS.get(cloud) if isinstance(cloud, str) else None
    if region_key and values.get(region_key) is not None:
        raw["region"] = values[region_key]
    for name in _STRUCTURED:
        if isinstance(raw.get(name), str):  # the engine passes objects as JSON text
            try:
                raw[name] = json.loads(raw[name])
            except json.JSONDecodeError:
                raise SpecError(f"stack {stack}: {PROJECT}:{name} must be a mapping of names to values") from None
    try:
        return StackSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_describe(exc, stack, source, region_key)) from None


def _describe(exc: ValidationError, stack: str, source: str, region_key: str | None) -> str:
    error = exc.errors()[0]
    location = error["loc"]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not location:
        return f"stack {stack}: {message}"
    field = str(location[0])
    key = (region_key or "the provider's region key") if field == "region" else f"{PROJECT}:{field}"
    if error["type"] == "missing":
        hint = _HINTS.get(field, f"set it in {source}")
        return f"stack {stack}: {key} is not set: {hint}"
    if error["type"] == "extra_forbidden":
        return f"stack {stack}: {key} is not a setting of the serving stack (see the README's list)"
    return f"stack {stack}: {key}: {message}"


def _qualified(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def read_settings_file(path: Path) -> dict[str, Any]:
    """A Pulumi settings file (Pulumi.yaml or a stack's file) as a mapping."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read {path}: {' '.join(str(exc).split())}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise SpecError(f"{path} is not a Pulumi settings file (a mapping at the top)")
    return document
