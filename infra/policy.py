"""Policy over a stack's resources: what must hold on every cloud, checked on the registered inputs.

- no public bucket or container; objects encrypted at rest (where the cloud lets it be turned off at all);
- clients reach the service over HTTPS only;
- the serving identity may read the models and nothing else;
- every resource that takes tags (labels on GCP) carries the required ones.

`policy_violations` returns one line per breach, so a test (or a review of `pulumi stack export`) reads
them all at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from infra.shape import ResourceRecord

__all__ = ["policy_violations"]

# Provider resources that take no tags (AWS, Azure) or labels (GCP).
UNTAGGED = {
    "aws": {
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketVersioning:BucketVersioning",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:ec2/routeTableAssociation:RouteTableAssociation",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:appautoscaling/policy:Policy",
    },
    "gcp": {
        "gcp:projects/service:Service",
        "gcp:serviceaccount/account:Account",
        "gcp:storage/bucketIAMMember:BucketIAMMember",
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
    },
    "azure": {
        "azure-native:storage:BlobServiceProperties",
        "azure-native:storage:BlobContainer",
        "azure-native:authorization:RoleAssignment",
    },
}
TAG_INPUT = {"aws": "tags", "gcp": "labels", "azure": "tags"}
PROVIDER_PREFIX = {"aws": "aws:", "gcp": "gcp:", "azure": "azure-native:"}
S3_READ_ACTIONS = {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"}
ECS_EXECUTION_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
GCS_READ_ROLES = {"roles/storage.objectViewer"}
BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}

Resources = dict[str, list[Mapping[str, Any]]]


def policy_violations(cloud: str, records: Iterable[ResourceRecord], required_tags: Mapping[str, str]) -> list[str]:
    """Every breach of the policy by `cloud`'s resources; empty when the stack complies."""
    records = list(records)
    resources: Resources = {}
    for record in records:
        resources.setdefault(record.type, []).append(record.inputs)
    checks = {"aws": _aws, "gcp": _gcp, "azure": _azure}
    return checks[cloud](resources) + _tags(cloud, records, required_tags)


def _aws(resources: Resources) -> list[str]:
    problems = []
    blocks = resources.get("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", [])
    flags = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    if len(blocks) != len(resources.get("aws:s3/bucket:Bucket", [])) or not all(
        all(block.get(flag) is True for flag in flags) for block in blocks
    ):
        problems.append("an S3 bucket does not block every kind of public access")
    for policy in resources.get("aws:s3/bucketPolicy:BucketPolicy", []):
        for statement in json.loads(policy["policy"])["Statement"]:
            if statement["Effect"] == "Allow" and statement.get("Principal") in ("*", {"AWS": "*"}):
                problems.append("an S3 bucket policy allows anyone")
    algorithms = [
        rule.get("applyServerSideEncryptionByDefault", {}).get("sseAlgorithm")
        for configuration in resources.get(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", []
        )
        for rule in configuration.get("rules", [])
    ]
    if not algorithms or not all(algorithm in ("AES256", "aws:kms", "aws:kms:dsse") for algorithm in algorithms):
        problems.append("the S3 bucket has no default encryption")
    for listener in resources.get("aws:lb/listener:Listener", []):
        actions = listener.get("defaultActions", [])
        redirects_to_https = all(
            action.get("type") == "redirect" and action.get("redirect", {}).get("protocol") == "HTTPS"
            for action in actions
        )
        if listener.get("protocol") == "HTTPS":
            if not listener.get("certificateArn") or not listener.get("sslPolicy"):
                problems.append("an HTTPS listener has no certificate or TLS policy")
        elif not (actions and redirects_to_https):
            problems.append(f"the listener on port {listener.get('port')} serves plain {listener.get('protocol')}")
    for role_policy in resources.get("aws:iam/rolePolicy:RolePolicy", []):
        for statement in json.loads(role_policy["policy"])["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if statement["Effect"] == "Allow" and not set(actions) <= S3_READ_ACTIONS:
                problems.append(f"a role may do more than read the models: {', '.join(actions)}")
    for attachment in resources.get("aws:iam/rolePolicyAttachment:RolePolicyAttachment", []):
        if attachment.get("policyArn") != ECS_EXECUTION_POLICY:
            problems.append(f"a role has the managed policy {attachment.get('policyArn')}")
    return problems


def _gcp(resources: Resources) -> list[str]:
    problems = []
    for bucket in resources.get("gcp:storage/bucket:Bucket", []):
        if bucket.get("publicAccessPrevention") != "enforced" or bucket.get("uniformBucketLevelAccess") is not True:
            problems.append(f"the bucket {bucket.get('name')} does not enforce public access prevention and IAM only")
    # Cloud Storage always encrypts at rest (Google-managed or customer keys): nothing to check.
    for member in resources.get("gcp:storage/bucketIAMMember:BucketIAMMember", []):
        if member.get("member") in PUBLIC_MEMBERS:
            problems.append("the bucket is readable by anyone")
        elif member.get("role") not in GCS_READ_ROLES:
            problems.append(f"{member.get('member')} has {member.get('role')} on the bucket, more than read")
    # Cloud Run serves HTTPS only; the ingress setting says who may reach it.
    for service in resources.get("gcp:cloudrunv2/service:Service", []):
        if service.get("ingress") not in ("INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY"):
            problems.append(f"the Cloud Run service has ingress {service.get('ingress')!r}")
    return problems


def _azure(resources: Resources) -> list[str]:
    problems = []
    for account in resources.get("azure-native:storage:StorageAccount", []):
        if account.get("allowBlobPublicAccess") is not False:
            problems.append("the storage account allows public blobs")
        if account.get("enableHttpsTrafficOnly") is not True or account.get("minimumTlsVersion") != "TLS1_2":
            problems.append("the storage account accepts plain HTTP or TLS before 1.2")
        blob = account.get("encryption", {}).get("services", {}).get("blob", {})
        if blob.get("enabled") is not True:
            problems.append("the storage account does not encrypt blobs")
    for container in resources.get("azure-native:storage:BlobContainer", []):
        if container.get("publicAccess", "None") != "None":
            problems.append(f"the container {container.get('containerName')} is public")
    for app in resources.get("azure-native:app:ContainerApp", []):
        ingress = app.get("configuration", {}).get("ingress", {})
        if ingress.get("allowInsecure") is not False:
            problems.append("the container app accepts plain HTTP")
    for assignment in resources.get("azure-native:authorization:RoleAssignment", []):
        if not str(assignment.get("roleDefinitionId", "")).endswith(f"/roleDefinitions/{BLOB_DATA_READER}"):
            problems.append(f"a role assignment grants {assignment.get('roleDefinitionId')}, more than blob read")
    return problems


def _tags(cloud: str, records: list[ResourceRecord], required: Mapping[str, str]) -> list[str]:
    problems = []
    for record in records:
        if not record.type.startswith(PROVIDER_PREFIX[cloud]) or record.type in UNTAGGED[cloud]:
            continue
        tags = record.inputs.get(TAG_INPUT[cloud]) or {}
        missing = sorted(key for key, value in required.items() if tags.get(key) != value)
        if missing:
            problems.append(f"{record.type} {record.name} lacks the tags {', '.join(missing)}")
    return problems
