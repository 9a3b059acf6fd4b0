"""The three Pulumi programs under mocks: the resources each creates, parity between them, and policy.

No Pulumi CLI, provider plugin or cloud: `tests/infra_mocks.py` records what each program registers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pulumi
import pytest

from infra.aws import AwsServingStack
from infra.errors import SpecError
from infra.policy import policy_violations
from infra.program import build_stack, serving_program
from infra.shape import ResourceRecord, serving_shape
from infra.spec import CLOUDS, StackSpec
from tests.infra_mocks import CERTIFICATE_ARN, MockedRun, config_values, example_spec, run_program

# One spec, varied away from every default, so that a value the programs ignore shows.
SERVING = {
    "image": "docker.io/acme/mct-serving@sha256:" + "ab" * 32,
    "cpu": 2,
    "memory": "4Gi",
    "minInstances": 2,
    "maxInstances": 7,
    "concurrency": 40,
    "port": 9000,
    "environment": {"MCT_SERVING__MODEL": "churn", "MCT_SERVING__POLL_SECONDS": "10"},
    "modelBucket": "acme-churn-models",
    "modelPrefix": "serving/prod",
    "tags": {"team": "ml", "cost-centre": "cc-42"},
}


@pytest.fixture(scope="module")
def deployed() -> dict[str, tuple[StackSpec, MockedRun]]:
    """Each cloud's stack built from the same serving values."""
    runs = {}
    for cloud in CLOUDS:
        spec = example_spec(cloud, **SERVING)
        runs[cloud] = (spec, run_program(lambda spec=spec: build_stack(spec), stack=f"{cloud}-prod"))
    return runs


def _container_env(items: list[dict[str, Any]]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in items}


def test_aws_program_is_a_private_bucket_and_fargate_behind_an_https_alb(deployed: Any) -> None:
    _, run = deployed["aws"]
    bucket = run.one("aws:s3/bucket:Bucket")
    assert bucket["bucket"] == "acme-churn-models" and bucket["forceDestroy"] is True
    assert run.one("aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"] == {"status": "Enabled"}
    task = run.one("aws:ecs/taskDefinition:TaskDefinition")
    assert (task["cpu"], task["memory"], task["requiresCompatibilities"]) == ("2048", "4096", ["FARGATE"])
    (container,) = json.loads(task["containerDefinitions"])
    assert container["image"] == SERVING["image"] and container["command"] == ["--cloud", "aws"]
    assert container["portMappings"] == [{"containerPort": 9000, "protocol": "tcp"}]
    assert _container_env(container["environment"]) == {
        "MCT_CLOUDS__AWS__URL": "s3://acme-churn-models/serving/prod",
        "MCT_SERVING__MODEL": "churn",
        "MCT_SERVING__POLL_SECONDS": "10",
        "PORT": "9000",
    }
    assert "http://127.0.0.1:9000/v2/health/live" in " ".join(container["healthCheck"]["command"])
    assert container["logConfiguration"]["options"]["awslogs-group"] == "mct-serving-logs-0a1b2c3"
    target_group = run.one("aws:lb/targetGroup:TargetGroup")
    assert (target_group["port"], target_group["targetType"]) == (9000, "ip")
    assert target_group["healthCheck"]["path"] == "/v2/health/ready"
    listeners = {listener["port"]: listener for listener in (r.inputs for r in run.of_type("aws:lb/listener:Listener"))}
    assert listeners[443]["certificateArn"] == CERTIFICATE_ARN and listeners[443]["protocol"] == "HTTPS"
    assert listeners[80]["defaultActions"][0]["redirect"] == {
        "port": "443",
        "protocol": "HTTPS",
        "statusCode": "HTTP_301",
    }
    service = run.one("aws:ecs/service:Service")
    assert service["desiredCount"] == 2 and service["launchType"] == "FARGATE"
    assert service["loadBalancers"][0]["containerPort"] == 9000
    scaling = run.one("aws:appautoscaling/target:Target")
    assert (scaling["minCapacity"], scaling["maxCapacity"]) == (2, 7)
    assert scaling["resourceId"] == "service/mct-serving-cluster/mct-serving-service"
    policy = run.one("aws:appautoscaling/policy:Policy")["targetTrackingScalingPolicyConfiguration"]
    assert policy["predefinedMetricSpecification"]["predefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert run.one("aws:cloudwatch/logGroup:LogGroup")["retentionInDays"] == 30
    assert len(run.of_type("aws:ec2/subnet:Subnet")) == 2
    assert run.outputs == {
        "service_url": "https://models.example.com",
        "service_hostname": "mct-serving-lb-1234.eu-west-1.elb.amazonaws.com",
        "bucket_url": "s3://acme-churn-models/serving/prod",
        "bucket_endpoint": "https://acme-churn-models.s3.eu-west-1.amazonaws.com",
    }


def test_the_aws_task_role_reads_only_the_model_prefix(deployed: Any) -> None:
    _, run = deployed["aws"]
    statements = {
        statement["Sid"]: statement
        for record in run.of_type("aws:iam/rolePolicy:RolePolicy")
        for statement in json.loads(record.inputs["policy"])["Statement"]
    }
    assert statements["ReadModels"] == {
        "Sid": "ReadModels",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::acme-churn-models/serving/prod/*",
    }
    assert statements["ListModels"]["Condition"] == {"StringLike": {"s3:prefix": ["serving/prod/*"]}}
    task = run.one("aws:ecs/taskDefinition:TaskDefinition")
    assert task["taskRoleArn"].endswith("role/mct-serving-server")
    assert task["executionRoleArn"].endswith("role/mct-serving-execution")


def test_gcp_program_is_a_private_bucket_and_a_cloud_run_service(deployed: Any) -> None:
    spec, run = deployed["gcp"]
    bucket = run.one("gcp:storage/bucket:Bucket")
    assert (bucket["name"], bucket["location"], bucket["versioning"]) == (
        "acme-churn-models",
        "EUROPE-WEST1",
        {"enabled": True},
    )
    assert bucket["labels"] == spec.all_tags
    account = run.one("gcp:serviceaccount/account:Account")
    assert account["accountId"] == "mct-serving-server"
    reader = run.one("gcp:storage/bucketIAMMember:BucketIAMMember")
    assert reader["role"] == "roles/storage.objectViewer"
    assert reader["member"] == "serviceAccount:mct-serving-server@project.iam.gserviceaccount.com"
    service = run.one("gcp:cloudrunv2/service:Service")
    assert (service["name"], service["location"], service["deletionProtection"]) == (
        "mct-serving",
        "europe-west1",
        False,
    )
    template = service["template"]
    assert template["serviceAccount"] == "mct-serving-server@project.iam.gserviceaccount.com"
    assert template["scaling"] == {"minInstanceCount": 2, "maxInstanceCount": 7}
    assert template["maxInstanceRequestConcurrency"] == 40
    (container,) = template["containers"]
    assert container["image"] == SERVING["image"] and container["args"] == ["--cloud", "gcp"]
    assert container["ports"]["containerPort"] == 9000
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4096Mi"}
    assert container["resources"]["cpuIdle"] is False
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 9000}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 9000}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 9000}
    # Cloud Run sets PORT itself and refuses a container that sets it.
    assert "PORT" not in _container_env(container["envs"])
    assert _container_env(container["envs"])["MCT_CLOUDS__GCP__URL"] == "gs://acme-churn-models/serving/prod"
    invoker = run.one("gcp:cloudrunv2/serviceIamMember:ServiceIamMember")
    assert (invoker["role"], invoker["member"]) == ("roles/run.invoker", "allUsers")
    assert run.outputs["service_url"] == "https://mct-serving-abc123-ew.a.run.app"
    assert run.outputs["bucket_url"] == "gs://acme-churn-models/serving/prod"


def test_azure_program_is_a_private_container_and_a_container_app(deployed: Any) -> None:
    _, run = deployed["azure"]
    account = run.one("azure-native:storage:StorageAccount")
    assert account["location"] == "westeurope" and len(account["accountName"]) <= 24
    assert run.one("azure-native:storage:BlobServiceProperties")["isVersioningEnabled"] is True
    container_inputs = run.one("azure-native:storage:BlobContainer")
    assert (container_inputs["containerName"], container_inputs["publicAccess"]) == ("acme-churn-models", "None")
    assignment = run.one("azure-native:authorization:RoleAssignment")
    assert assignment["principalId"] == "00000000-0000-0000-0000-00000000000a"
    assert assignment["scope"].endswith("/containers/acme-churn-models")
    app = run.one("azure-native:app:ContainerApp")
    assert app["containerAppName"] == "mct-serving" and app["workloadProfileName"] == "Consumption"
    assert app["identity"]["type"] == "UserAssigned"
    ingress = app["configuration"]["ingress"]
    assert (ingress["external"], ingress["targetPort"], ingress["allowInsecure"]) == (True, 9000, False)
    (server,) = app["template"]["containers"]
    assert server["image"] == SERVING["image"] and server["args"] == ["--cloud", "azure"]
    assert server["resources"] == {"cpu": 2, "memory": "4Gi"}
    assert {probe["type"]: probe["httpGet"]["path"] for probe in server["probes"]} == {
        "Startup": "/v2/health/live",
        "Readiness": "/v2/health/ready",
        "Liveness": "/v2/health/live",
    }
    environment = _container_env(server["env"])
    assert environment["AZURE_CLIENT_ID"] == "00000000-0000-0000-0000-00000000000b"
    assert environment["AZURE_STORAGE_ACCOUNT_URL"].endswith(".blob.core.windows.net/"), "the identity's account"
    assert environment["MCT_CLOUDS__AZURE__URL"] == "az://acme-churn-models/serving/prod"
    scale = app["template"]["scale"]
    assert (scale["minReplicas"], scale["maxReplicas"]) == (2, 7)
    assert scale["rules"][0]["http"]["metadata"] == {"concurrentRequests": "40"}
    environment_inputs = run.one("azure-native:app:ManagedEnvironment")
    assert (
        environment_inputs["appLogsConfiguration"]["logAnalyticsConfiguration"]["customerId"] == "workspace-customer-id"
    )
    assert run.outputs["service_url"] == "https://mct-serving.happy-sky-123.westeurope.azurecontainerapps.io"
    assert run.outputs["bucket_endpoint"] == f"https://{account['accountName']}.blob.core.windows.net/acme-churn-models"


def test_the_three_clouds_serve_the_same_shape(deployed: Any) -> None:
    """Image, size, scaling, port, health paths, variables and model location, read back from the resources."""
    shapes = {cloud: serving_shape(cloud, run.records) for cloud, (_, run) in deployed.items()}
    assert shapes["aws"] == shapes["gcp"] == shapes["azure"]
    shape = shapes["aws"]
    assert (shape.image, shape.cpu, shape.memory_mib) == (SERVING["image"], 2.0, 4096)
    assert (shape.min_instances, shape.max_instances, shape.port) == (2, 7, 9000)
    assert (shape.health_path, shape.liveness_path) == ("/v2/health/ready", "/v2/health/live")
    assert shape.environment_keys == (
        "MCT_CLOUDS__<CLOUD>__URL",
        "MCT_SERVING__MODEL",
        "MCT_SERVING__POLL_SECONDS",
        "PORT",
    )
    assert shape.model_location == ("acme-churn-models", "serving/prod")
    assert shape.args == ("--cloud", "<CLOUD>") and shape.public is True


def test_the_parity_check_sees_a_cloud_that_drifts(deployed: Any) -> None:
    """A program that got one value wrong no longer has the others' shape."""
    _, run = deployed["gcp"]

    def drifted(change: Callable[[dict[str, Any]], None]) -> list[ResourceRecord]:
        records = []
        for record in run.records:
            inputs = json.loads(json.dumps(record.inputs))
            if record.type == "gcp:cloudrunv2/service:Service":
                change(inputs["template"])
            records.append(replace(record, inputs=inputs))
        return records

    reference = serving_shape("aws", deployed["aws"][1].records)
    changes: list[Callable[[dict[str, Any]], None]] = [
        lambda template: template["scaling"].update(maxInstanceCount=8),
        lambda template: template["containers"][0]["resources"]["limits"].update(memory="2Gi"),
        lambda template: template["containers"][0]["readinessProbe"]["httpGet"].update(path="/ping"),
        lambda template: template["containers"][0]["envs"].pop(),
    ]
    for change in changes:
        assert serving_shape("gcp", drifted(change)) != reference


def test_every_cloud_meets_the_policy(deployed: Any) -> None:
    for cloud, (spec, run) in deployed.items():
        assert policy_violations(cloud, run.records, spec.all_tags) == [], cloud


@pytest.mark.parametrize(
    ("cloud", "token", "change", "violation"),
    [
        (
            "aws",
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            {"blockPublicPolicy": False},
            "public access",
        ),
        (
            "aws",
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            {"rules": []},
            "no default encryption",
        ),
        ("aws", "aws:lb/listener:Listener", {"defaultActions": [{"type": "forward"}]}, "serves plain HTTP"),
        (
            "aws",
            "aws:iam/rolePolicy:RolePolicy",
            {"policy": json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3:*"}]})},
            "more than read",
        ),
        ("aws", "aws:ecs/cluster:Cluster", {"tags": {"app": "mct-serving"}}, "lacks the tags"),
        ("gcp", "gcp:storage/bucket:Bucket", {"publicAccessPrevention": "inherited"}, "public access prevention"),
        ("gcp", "gcp:storage/bucketIAMMember:BucketIAMMember", {"role": "roles/storage.objectAdmin"}, "more than read"),
        ("gcp", "gcp:storage/bucketIAMMember:BucketIAMMember", {"member": "allUsers"}, "readable by anyone"),
        ("gcp", "gcp:cloudrunv2/service:Service", {"labels": {}}, "lacks the tags"),
        ("azure", "azure-native:storage:StorageAccount", {"allowBlobPublicAccess": True}, "allows public blobs"),
        ("azure", "azure-native:storage:StorageAccount", {"encryption": {}}, "does not encrypt"),
        ("azure", "azure-native:storage:BlobContainer", {"publicAccess": "Blob"}, "is public"),
        (
            "azure",
            "azure-native:app:ContainerApp",
            {"configuration": {"ingress": {"allowInsecure": True}}},
            "plain HTTP",
        ),
        (
            "azure",
            "azure-native:authorization:RoleAssignment",
            {"roleDefinitionId": "/roles/owner"},
            "more than blob read",
        ),
        ("azure", "azure-native:resources:ResourceGroup", {"tags": {}}, "lacks the tags"),
    ],
)
def test_the_policy_catches_each_kind_of_breach(
    deployed: Any, cloud: str, token: str, change: dict[str, Any], violation: str
) -> None:
    spec, run = deployed[cloud]
    changed = False
    records = []
    for record in run.records:
        if record.type == token and not changed:
            record = replace(record, inputs={**record.inputs, **change})
            changed = True
        records.append(record)
    assert changed, token
    problems = policy_violations(cloud, records, spec.all_tags)
    assert len(problems) == 1 and violation in problems[0], problems


def test_the_program_reads_its_stack_config_and_exports_the_outputs() -> None:
    """`serving_program` is what `pulumi up` and `mct infra` run: config in, one cloud's resources out."""
    values = config_values("gcp", minInstances="3", maxInstances="6")

    def program() -> pulumi.Output[Any]:
        serving_program()
        return pulumi.Output.all(**pulumi.runtime.get_root_resource().outputs)  # type: ignore[union-attr]

    pulumi.runtime.set_all_config({key: str(value) for key, value in values.items()})
    try:
        run = run_program(program, stack="gcp-dev")
    finally:
        pulumi.runtime.set_all_config({})
    template = run.one("gcp:cloudrunv2/service:Service")["template"]
    assert template["scaling"] == {"minInstanceCount": 3, "maxInstanceCount": 6}
    assert not run.of_type("aws:s3/bucket:Bucket") and not run.of_type("azure-native:app:ContainerApp")
    assert run.outputs == {
        "cloud": "gcp",
        "serviceUrl": "https://mct-serving-abc123-ew.a.run.app",
        "serviceHostname": "mct-serving-abc123-ew.a.run.app",
        "bucketUrl": "gs://acme-models",
        "bucketEndpoint": "https://storage.googleapis.com/acme-models",
    }


def test_a_component_refuses_another_clouds_spec() -> None:
    with pytest.raises(SpecError, match="AwsServingStack builds aws stacks, and this spec is for gcp"):
        run_program(lambda: AwsServingStack("mct", example_spec("gcp")))


def test_an_internal_stack_has_no_public_endpoint() -> None:
    shapes = {}
    for cloud in CLOUDS:
        spec = example_spec(cloud, public=False)
        run = run_program(lambda spec=spec: build_stack(spec), stack=f"{cloud}-dev")
        shapes[cloud] = serving_shape(cloud, run.records)
        assert policy_violations(cloud, run.records, spec.all_tags) == []
    assert not any(shape.public for shape in shapes.values())
    assert shapes["aws"] == shapes["gcp"] == shapes["azure"]
