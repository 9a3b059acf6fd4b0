"""Pulumi mocks for the infrastructure tests: record every resource, answer provider functions, fake outputs.

`run_program(build)` builds a cloud's stack under the mocks (no Pulumi CLI, no provider plugin, no cloud)
and returns what was registered: each resource's type, name and inputs (Pulumi's camelCase keys, as in a
state file) and the component's resolved outputs. Tests assert on those plain values, so an assertion can
never pass silently inside an `apply`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra.component import OUTPUT_FIELDS, ServingStack
from infra.shape import ResourceRecord
from infra.spec import StackSpec, spec_from_config

__all__ = [
    "ACCOUNT",
    "CERTIFICATE_ARN",
    "MockedRun",
    "RecordingMocks",
    "config_values",
    "example_spec",
    "run_program",
]

ACCOUNT = "123456789012"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
CERTIFICATE_ARN = f"arn:aws:acm:eu-west-1:{ACCOUNT}:certificate/12345678-1234-1234-1234-123456789012"
# A complete stack configuration per cloud, as Pulumi's config keys: the region key is the provider's own.
_CONFIG = {
    "aws": {
        "aws:region": "eu-west-1",
        "mct-serving:certificateArn": CERTIFICATE_ARN,
        "mct-serving:domain": "models.example.com",
    },
    "gcp": {"gcp:region": "europe-west1"},
    "azure": {"azure-native:location": "westeurope"},
}


def config_values(cloud: str, **changes: Any) -> dict[str, Any]:
    """A valid stack configuration for `cloud`; `changes` set (or, with None, remove) `mct-serving:` keys."""
    values: dict[str, Any] = {
        "mct-serving:cloud": cloud,
        "mct-serving:image": "docker.io/acme/mct-serving:0.1.0",
        "mct-serving:modelBucket": "acme-models",
        **_CONFIG[cloud],
    }
    for key, value in changes.items():
        values[f"mct-serving:{key}"] = value
    return {key: value for key, value in values.items() if value is not None}


def example_spec(cloud: str, **changes: Any) -> StackSpec:
    """The spec of `config_values(cloud, **changes)`."""
    return spec_from_config(config_values(cloud, **changes), f"{cloud}-dev", "test")


class RecordingMocks(pulumi.runtime.Mocks):
    """Records each registered resource; returns its inputs plus the outputs the programs read."""

    def __init__(self) -> None:
        self.records: list[ResourceRecord] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.records.append(ResourceRecord(args.typ, args.name, dict(args.inputs)))
        computed = _computed(args.typ, args.name, args.inputs)
        resource_id = computed.pop("id", f"{args.name}-id")
        return resource_id, {**args.inputs, **computed}

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        answers: dict[str, dict[str, Any]] = {
            "aws:index/getAvailabilityZones:getAvailabilityZones": {
                "names": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
            },
            "azure-native:authorization:getClientConfig": {
                "subscriptionId": SUBSCRIPTION,
                "tenantId": "00000000-0000-0000-0000-000000000002",
                "clientId": "00000000-0000-0000-0000-000000000003",
                "objectId": "00000000-0000-0000-0000-000000000004",
            },
            "azure-native:operationalinsights:getSharedKeys": {"primarySharedKey": "key", "secondarySharedKey": "key"},
        }
        return answers.get(args.token, {})


def _computed(token: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The provider-computed outputs the programs use (and the id, when it matters), by resource type."""
    outputs: dict[str, Callable[[], dict[str, Any]]] = {
        "aws:s3/bucket:Bucket": lambda: {
            "arn": f"arn:aws:s3:::{inputs['bucket']}",
            "bucketRegionalDomainName": f"{inputs['bucket']}.s3.eu-west-1.amazonaws.com",
        },
        "aws:iam/role:Role": lambda: {"arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "name": name},
        "aws:ecs/cluster:Cluster": lambda: {"arn": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/{name}", "name": name},
        "aws:ecs/service:Service": lambda: {"name": name},
        "aws:ecs/taskDefinition:TaskDefinition": lambda: {"arn": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/{name}"},
        "aws:lb/loadBalancer:LoadBalancer": lambda: {
            "arn": f"arn:aws:elasticloadbalancing:eu-west-1:{ACCOUNT}:loadbalancer/app/{name}/1",
            "dnsName": f"{name}-1234.eu-west-1.elb.amazonaws.com",
        },
        "aws:lb/targetGroup:TargetGroup": lambda: {
            "arn": f"arn:aws:elasticloadbalancing:eu-west-1:{ACCOUNT}:tg/{name}"
        },
        "aws:cloudwatch/logGroup:LogGroup": lambda: {"name": f"{name}-0a1b2c3"},
        "gcp:serviceaccount/account:Account": lambda: {
            "email": f"{inputs['accountId']}@project.iam.gserviceaccount.com",
            "member": f"serviceAccount:{inputs['accountId']}@project.iam.gserviceaccount.com",
        },
        "gcp:cloudrunv2/service:Service": lambda: {"uri": f"https://{inputs['name']}-abc123-ew.a.run.app"},
        "azure-native:resources:ResourceGroup": lambda: {"name": f"{name}-0a1b2c3"},
        "azure-native:storage:StorageAccount": lambda: {
            "name": inputs["accountName"],
            "primaryEndpoints": {"blob": f"https://{inputs['accountName']}.blob.core.windows.net/"},
        },
        "azure-native:storage:BlobContainer": lambda: {
            "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/"
            f"{inputs['accountName']}/blobServices/default/containers/{inputs['containerName']}"
        },
        "azure-native:managedidentity:UserAssignedIdentity": lambda: {
            "principalId": "00000000-0000-0000-0000-00000000000a",
            "clientId": "00000000-0000-0000-0000-00000000000b",
        },
        "azure-native:operationalinsights:Workspace": lambda: {"name": name, "customerId": "workspace-customer-id"},
        "azure-native:app:ContainerApp": lambda: {
            "configuration": {
                **inputs["configuration"],
                "ingress": {
                    **inputs["configuration"]["ingress"],
                    "fqdn": f"{inputs['containerAppName']}.happy-sky-123.westeurope.azurecontainerapps.io",
                },
            },
            # The identities go in as a list of ids and come back as a map of id -> details.
            "identity": {
                "type": inputs["identity"]["type"],
                "userAssignedIdentities": {key: {} for key in inputs["identity"]["userAssignedIdentities"]},
            },
        },
    }
    return outputs[token]() if token in outputs else {}


@dataclass
class MockedRun:
    """What one program run registered, and the component's outputs."""

    records: list[ResourceRecord]
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, token: str) -> list[ResourceRecord]:
        return [record for record in self.records if record.type == token]

    def one(self, token: str) -> dict[str, Any]:
        """The inputs of the only resource of `token`."""
        found = self.of_type(token)
        assert len(found) == 1, f"expected one {token}, found {len(found)}"
        return dict(found[0].inputs)


# Pulumi's runtime creates its futures on the current event loop and keeps some across programs, while a
# test that calls `asyncio.run` (in the same worker) leaves no current loop behind: every Pulumi program
# of this process runs on this one loop, made current again before each.
PULUMI_LOOP = asyncio.new_event_loop()


def set_up_mocks(mocks: pulumi.runtime.Mocks, stack: str) -> None:
    """Fresh mocks for a program of `stack`, on the process's Pulumi event loop."""
    asyncio.set_event_loop(PULUMI_LOOP)
    pulumi.runtime.set_mocks(mocks, project="mct-serving", stack=stack, preview=False)


def run_program(build: Callable[[], Any], stack: str = "dev") -> MockedRun:
    """Run `build` under fresh mocks and collect what it registered.

    `build` returns a ServingStack (its four outputs are collected) or an Output of a mapping (collected as is).
    """
    mocks = RecordingMocks()
    set_up_mocks(mocks, stack)
    run = MockedRun(mocks.records)

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        built = build()
        if isinstance(built, ServingStack):
            component = built
            built = pulumi.Output.all(**{name: getattr(component, name) for name in OUTPUT_FIELDS})
        return pulumi.Output.from_input(built).apply(run.outputs.update)

    program()
    return run
