"""The stack spec: what all three clouds accept, read from Pulumi's config files and from the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

from infra.errors import SpecError
from infra.spec import (
    CLOUDS,
    PROJECT_DIR,
    REGION_KEYS,
    StackSpec,
    load_stack_spec,
    read_stack_config,
    spec_from_config,
    spec_from_pulumi_config,
)
from tests.infra_mocks import CERTIFICATE_ARN, RecordingMocks, config_values, set_up_mocks

IMAGE = "docker.io/acme/mct-serving:0.1.0"


def test_a_complete_config_becomes_a_typed_spec_with_the_defaults() -> None:
    spec = spec_from_config(config_values("gcp", maxInstances="5", tags='{"team": "ml"}'), "gcp-dev", "file")
    assert spec == StackSpec(
        cloud="gcp",
        region="europe-west1",
        image=IMAGE,
        model_bucket="acme-models",
        max_instances=5,
        tags={"team": "ml"},
    )
    assert (spec.cpu, spec.memory_mib, spec.min_instances, spec.port) == (1.0, 2048, 1, 8080)
    assert (spec.health_path, spec.liveness_path) == ("/v2/health/ready", "/v2/health/live")
    assert spec.all_tags == {"app": "mct-serving", "managed-by": "mct", "team": "ml"}


@pytest.mark.parametrize(
    ("cloud", "changes", "message"),
    [
        ("aws", {"mct-serving:image": None}, "mct-serving:image is not set: pass --image"),
        ("aws", {"mct-serving:image": "acme/mct-serving"}, "names no fixed build"),
        ("aws", {"mct-serving:image": "acme/mct-serving:latest"}, "names no fixed build"),
        ("aws", {"mct-serving:image": "Not An Image"}, "is not an image reference"),
        (
            "gcp",
            {"mct-serving:maxInstances": 1, "mct-serving:minInstances": 2},
            "maxInstances 1 is below minInstances 2",
        ),
        (
            "gcp",
            {"mct-serving:minInstances": 0},
            "mct-serving:minInstances: Input should be greater than or equal to 1",
        ),
        ("gcp", {"mct-serving:maxInstances": 1000}, "mct-serving:maxInstances: Input should be less than or equal"),
        (
            "aws",
            {"aws:region": "europe-west1"},
            "aws:region: 'europe-west1' is not a region name of aws (like us-east-1)",
        ),
        ("gcp", {"gcp:region": "us-east-1"}, "gcp:region: 'us-east-1' is not a region name of gcp"),
        ("azure", {"azure-native:location": "West Europe"}, "azure-native:location: 'West Europe' is not a region"),
        ("azure", {"azure-native:location": None}, "azure-native:location is not set"),
        ("gcp", {"mct-serving:region": "europe-west1"}, "set the region with the provider's key"),
        ("gcp", {"mct-serving:cpu": 0.5}, "0.5 vCPU is not a size all three clouds accept: use 1, 2, 4"),
        ("gcp", {"mct-serving:memory": "1Gi"}, "Container Apps needs 2Gi per vCPU, so use memory 2Gi"),
        ("gcp", {"mct-serving:cpu": 2, "mct-serving:memory": "4096Mi"}, None),
        ("gcp", {"mct-serving:memory": "lots"}, "is not a memory size"),
        ("gcp", {"mct-serving:port": 80}, "mct-serving:port: Input should be greater than or equal to 1024"),
        ("gcp", {"mct-serving:healthPath": "v2/health/ready"}, "must be an absolute URL path"),
        ("gcp", {"mct-serving:livenessPath": "/v2/health/ready"}, "healthPath and livenessPath must differ"),
        ("gcp", {"mct-serving:modelBucket": "Acme_Models"}, "is not a bucket name all three clouds accept"),
        ("gcp", {"mct-serving:modelBucket": "google-models"}, "is not a bucket name all three clouds accept"),
        ("gcp", {"mct-serving:modelPrefix": "/models/"}, "must be path segments"),
        ("gcp", {"mct-serving:name": "MCT"}, "must be 3-20 lowercase letters"),
        ("gcp", {"mct-serving:environment": {"PORT": "80"}}, "PORT is set by the stack itself"),
        ("gcp", {"mct-serving:environment": {"MCT_CLOUDS__AWS__URL": "s3://x"}}, "is set by the stack itself"),
        ("gcp", {"mct-serving:environment": {"lower": "x"}}, "is not a variable name"),
        ("gcp", {"mct-serving:environment": "[not json"}, "must be a mapping of names to values"),
        ("gcp", {"mct-serving:tags": {"Team": "ML"}}, "breaks GCP's label rules"),
        ("gcp", {"mct-serving:tags": {"app": "other"}}, "the tag 'app' is set by the stack itself"),
        ("gcp", {"mct-serving:colour": "blue"}, "mct-serving:colour is not a setting of the serving stack"),
        ("gcp", {"mct-serving:image": {"secure": "v1:abc"}}, "mct-serving:image is encrypted"),
        ("gcp", {"mct-serving:domain": "models.example.com"}, "certificateArn and domain are for aws stacks"),
        ("aws", {"mct-serving:certificateArn": None}, "aws stacks need certificateArn"),
        ("aws", {"mct-serving:domain": None}, "aws stacks need domain"),
        ("aws", {"mct-serving:certificateArn": "arn:aws:iam::1:role/x"}, "is not an ACM certificate ARN"),
        (
            "aws",
            {"mct-serving:certificateArn": CERTIFICATE_ARN.replace("eu-west-1", "us-east-1")},
            "the certificate is in us-east-1, the stack in eu-west-1",
        ),
        ("aws", {"mct-serving:domain": "not a domain"}, "is not a DNS name"),
        ("gcp", {"mct-serving:cloud": None}, "mct-serving:cloud is not set"),
        ("gcp", {"mct-serving:cloud": "oracle"}, "mct-serving:cloud: Input should be 'aws', 'gcp' or 'azure'"),
    ],
)
def test_each_problem_is_one_line_naming_the_stack_and_the_key(
    cloud: str, changes: dict[str, Any], message: str | None
) -> None:
    values = {**config_values(cloud), **changes}
    if message is None:
        assert spec_from_config(values, f"{cloud}-dev", "Pulumi.x.yaml").cpu == 2.0
        return
    with pytest.raises(SpecError) as caught:
        spec_from_config(values, f"{cloud}-dev", "Pulumi.x.yaml")
    text = str(caught.value)
    assert text.startswith(f"stack {cloud}-dev: ") and message in text, text
    assert "\n" not in text


def test_the_shipped_stack_files_name_their_cloud_and_need_only_the_users_own_values() -> None:
    """Every Pulumi.CLOUD-ENV.yaml is for CLOUD and becomes a valid spec once the image, bucket (and cert) are set."""
    files = sorted(PROJECT_DIR.glob("Pulumi.*-*.yaml"))
    assert {path.name for path in files} >= {
        f"Pulumi.{cloud}-{env}.yaml" for cloud in CLOUDS for env in ("dev", "prod")
    }
    for path in files:
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        cloud = stack.split("-")[0]
        assert read_stack_config(stack)["mct-serving:cloud"] == cloud
        mine = {key: value for key, value in config_values(cloud).items() if key.startswith("mct-serving:")}
        spec = load_stack_spec(stack, overrides=mine)
        assert spec.cloud == cloud and spec.region == read_stack_config(stack)[REGION_KEYS[cloud]]
        assert spec.max_instances >= spec.min_instances >= (2 if stack.endswith("prod") else 1)


def test_project_defaults_in_pulumi_yaml_apply_below_the_stack_file(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "mct-serving",
                "runtime": "python",
                "config": {"maxInstances": {"type": "integer", "default": 7}, "mct-serving:concurrency": 40},
            }
        )
    )
    values = config_values("azure", maxInstances=None)
    (tmp_path / "Pulumi.azure-test.yaml").write_text(yaml.safe_dump({"config": values}))
    spec = load_stack_spec("azure-test", tmp_path)
    assert (spec.max_instances, spec.concurrency) == (7, 40)
    (tmp_path / "Pulumi.azure-test.yaml").write_text(
        yaml.safe_dump({"config": {**values, "mct-serving:maxInstances": 4}})
    )
    assert load_stack_spec("azure-test", tmp_path).max_instances == 4
    with pytest.raises(SpecError, match=r"no configuration for stack azure-prod: create .*Pulumi\.azure-prod\.yaml"):
        load_stack_spec("azure-prod", tmp_path)
    (tmp_path / "Pulumi.azure-test.yaml").write_text("config: [unclosed\n")
    with pytest.raises(SpecError, match=r"cannot read .*Pulumi\.azure-test\.yaml"):
        load_stack_spec("azure-test", tmp_path)


def test_inside_a_pulumi_program_the_spec_comes_from_the_engines_config() -> None:
    """The engine hands every value over as text, objects as JSON: the same spec comes out."""
    set_up_mocks(RecordingMocks(), "azure-dev")
    values = config_values("azure", minInstances="2", maxInstances="4", environment='{"MCT_SERVING__MODEL": "churn"}')
    pulumi.runtime.set_all_config({key: str(value) for key, value in values.items()})
    try:
        spec = spec_from_pulumi_config()
    finally:
        pulumi.runtime.set_all_config({})
    assert (spec.cloud, spec.region, spec.min_instances, spec.max_instances) == ("azure", "westeurope", 2, 4)
    assert spec.environment == {"MCT_SERVING__MODEL": "churn"}
    assert spec == spec_from_config(values, "azure-dev", "file")
