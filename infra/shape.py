"""The serving shape: what a deployed stack actually runs, read back from its resources' inputs.

The shape is derived from the registered resources (type and inputs, Pulumi's camelCase keys, as in the
mocks of the tests or in `pulumi stack export`), never from the spec: so comparing the shapes of the three
clouds checks that the three programs really map one spec to the same service. Platform wiring that
differs by design is normalised: the cloud's name in the store variable, the PORT that Cloud Run sets
itself, and the variable that picks Azure's managed identity.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ResourceRecord", "ServingShape", "serving_shape"]

# Resource types the shape is read from, by cloud.
AWS_TASK = "aws:ecs/taskDefinition:TaskDefinition"
AWS_SCALING = "aws:appautoscaling/target:Target"
AWS_TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
AWS_LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
GCP_SERVICE = "gcp:cloudrunv2/service:Service"
GCP_INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
AZURE_APP = "azure-native:app:ContainerApp"
# Set by the platform or the identity wiring, not by the spec: left out of the shape's environment.
PLATFORM_VARIABLES = {
    "aws": frozenset(),
    "gcp": frozenset(),
    "azure": frozenset({"AZURE_CLIENT_ID", "AZURE_STORAGE_ACCOUNT_URL"}),
}
# Cloud Run sets PORT to the container port itself.
PLATFORM_SET_VARIABLES = {"aws": frozenset(), "gcp": frozenset({"PORT"}), "azure": frozenset()}
_STORE_VARIABLE = re.compile(r"MCT_CLOUDS__([A-Z0-9_]+?)__URL")
_LIVENESS_URL = re.compile(r"http://127\.0\.0\.1:\d+(/[^'\"\s]*)")
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(Mi|Gi)?")


@dataclass(frozen=True)
class ResourceRecord:
    """One registered resource: its type token, logical name and inputs."""

    type: str
    name: str
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class ServingShape:
    """The serving service in cloud-neutral terms; equal for two clouds when they serve alike."""

    image: str
    args: tuple[str, ...]
    cpu: float
    memory_mib: int
    min_instances: int
    max_instances: int
    port: int
    health_path: str
    liveness_path: str
    environment_keys: tuple[str, ...]
    model_location: tuple[str, str]
    public: bool


def serving_shape(cloud: str, records: Iterable[ResourceRecord]) -> ServingShape:
    """The shape of `cloud`'s serving stack from its resources."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_type.setdefault(record.type, []).append(record.inputs)
    readers = {"aws": _aws, "gcp": _gcp, "azure": _azure}
    if cloud not in readers:
        raise ValueError(f"unknown cloud {cloud!r}")
    return readers[cloud](by_type)


def _aws(resources: dict[str, list[Mapping[str, Any]]]) -> ServingShape:
    task = _one(resources, AWS_TASK)
    definitions = task["containerDefinitions"]
    container = (json.loads(definitions) if isinstance(definitions, str) else definitions)[0]
    scaling = _one(resources, AWS_SCALING)
    health = _one(resources, AWS_TARGET_GROUP)["healthCheck"]
    liveness = _LIVENESS_URL.search(" ".join(container["healthCheck"]["command"]))
    environment = {item["name"]: item["value"] for item in container["environment"]}
    return _shape(
        "aws",
        image=container["image"],
        args=container["command"],
        cpu=int(task["cpu"]) / 1024,
        memory_mib=int(task["memory"]),
        min_instances=scaling["minCapacity"],
        max_instances=scaling["maxCapacity"],
        port=container["portMappings"][0]["containerPort"],
        health_path=health["path"],
        liveness_path=liveness[1] if liveness else "",
        environment=environment,
        public=not _one(resources, AWS_LOAD_BALANCER).get("internal", False),
    )


def _gcp(resources: dict[str, list[Mapping[str, Any]]]) -> ServingShape:
    service = _one(resources, GCP_SERVICE)
    template = service["template"]
    container = template["containers"][0]
    limits = container["resources"]["limits"]
    port = container["ports"]["containerPort"]
    environment = {item["name"]: item["value"] for item in container.get("envs", [])}
    environment.update(dict.fromkeys(PLATFORM_SET_VARIABLES["gcp"], str(port)))
    invokers = {member["member"] for member in resources.get(GCP_INVOKER, []) if member["role"] == "roles/run.invoker"}
    return _shape(
        "gcp",
        image=container["image"],
        args=container.get("args", []),
        cpu=float(limits["cpu"]),
        memory_mib=_mebibytes(limits["memory"]),
        min_instances=template["scaling"]["minInstanceCount"],
        max_instances=template["scaling"]["maxInstanceCount"],
        port=port,
        health_path=container["readinessProbe"]["httpGet"]["path"],
        liveness_path=container["livenessProbe"]["httpGet"]["path"],
        environment=environment,
        public=service.get("ingress") == "INGRESS_TRAFFIC_ALL" and "allUsers" in invokers,
    )


def _azure(resources: dict[str, list[Mapping[str, Any]]]) -> ServingShape:
    app = _one(resources, AZURE_APP)
    container = app["template"]["containers"][0]
    scale = app["template"]["scale"]
    ingress = app["configuration"]["ingress"]
    probes = {probe["type"]: probe["httpGet"]["path"] for probe in container.get("probes", [])}
    return _shape(
        "azure",
        image=container["image"],
        args=container.get("args", []),
        cpu=float(container["resources"]["cpu"]),
        memory_mib=_mebibytes(container["resources"]["memory"]),
        min_instances=scale["minReplicas"],
        max_instances=scale["maxReplicas"],
        port=ingress["targetPort"],
        health_path=probes.get("Readiness", ""),
        liveness_path=probes.get("Liveness", ""),
        environment={item["name"]: item.get("value", "") for item in container.get("env", [])},
        public=bool(ingress.get("external")),
    )


def _shape(cloud: str, *, args: Iterable[str], environment: Mapping[str, str], **fields: Any) -> ServingShape:
    """Normalise the cloud-specific parts: the cloud's own name, platform variables, the store's URL."""
    keys: list[str] = []
    location = ("", "")
    for key, value in environment.items():
        if key in PLATFORM_VARIABLES[cloud]:
            continue
        store = _STORE_VARIABLE.fullmatch(key)
        if store and store[1] == cloud.upper():
            parts = urlsplit(value)
            location = (parts.netloc, parts.path.strip("/"))
            key = "MCT_CLOUDS__<CLOUD>__URL"
        keys.append(key)
    # Numbers come back from Pulumi's wire format as floats.
    for name in ("min_instances", "max_instances", "port", "memory_mib"):
        fields[name] = int(fields[name])
    return ServingShape(
        args=tuple("<CLOUD>" if arg == cloud else arg for arg in args),
        environment_keys=tuple(sorted(keys)),
        model_location=location,
        **fields,
    )


def _one(resources: dict[str, list[Mapping[str, Any]]], token: str) -> Mapping[str, Any]:
    found = resources.get(token, [])
    if len(found) != 1:
        raise ValueError(f"expected one {token}, found {len(found)}")
    return found[0]


def _mebibytes(quantity: str) -> int:
    match = _QUANTITY.fullmatch(str(quantity))
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity")
    return int(float(match[1]) * (1024 if match[2] == "Gi" else 1))
