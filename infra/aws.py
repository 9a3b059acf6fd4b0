"""AWS: an S3 bucket for the models, and ECS Fargate tasks behind an HTTPS Application Load Balancer.

App Runner is closed to new customers, so the service is ECS Fargate in a VPC of its own (two public
subnets, no NAT gateway: tasks get public addresses for the registry and S3, and only the load balancer
may reach them). The ALB serves the spec's ACM certificate on 443 and redirects 80 there; its target group
checks the readiness path. The task role reads the model prefix and nothing else; Application Auto Scaling
keeps the service between min and max on CPU; logs go to CloudWatch.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.component import (
    CONTAINER_NAME,
    ServingOutputs,
    ServingStack,
    bucket_url,
    container_args,
    container_environment,
)
from infra.spec import StackSpec

__all__ = ["AwsServingStack", "model_read_policy"]

VPC_CIDR = "10.80.0.0/16"
# An ALB needs subnets in at least two availability zones.
SUBNET_CIDRS = ("10.80.0.0/24", "10.80.1.0/24")
# AWS's recommended policy for HTTPS listeners: TLS 1.3, and TLS 1.2 with forward secrecy.
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
LOG_RETENTION_DAYS = 30
# Scale out before the CPU saturates: a prediction is CPU-bound and its latency grows quickly past this.
TARGET_CPU_PERCENT = 60.0
# Time for a new task to pull the image, start and load the model before failed checks count.
HEALTH_CHECK_GRACE_SECONDS = 60
ASSUME_ECS_TASKS = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
)


class AwsServingStack(ServingStack):
    """The serving stack on AWS."""

    CLOUD = "aws"

    def _build(self, name: str, spec: StackSpec) -> ServingOutputs:
        tags = spec.all_tags
        bucket = self._bucket(name, spec, tags)
        vpc, subnets = self._network(name, tags)
        client_cidr = "0.0.0.0/0" if spec.public else VPC_CIDR
        lb_security = aws.ec2.SecurityGroup(
            f"{name}-lb",
            vpc_id=vpc.id,
            description="HTTPS (and a redirect from HTTP) to the load balancer",
            ingress=[
                {"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": [client_cidr]},
                {"protocol": "tcp", "from_port": 80, "to_port": 80, "cidr_blocks": [client_cidr]},
            ],
            egress=[{"protocol": "tcp", "from_port": spec.port, "to_port": spec.port, "cidr_blocks": [VPC_CIDR]}],
            tags=tags,
            opts=self._child(),
        )
        task_security = aws.ec2.SecurityGroup(
            f"{name}-tasks",
            vpc_id=vpc.id,
            description="the model servers: reached by the load balancer only",
            ingress=[
                {"protocol": "tcp", "from_port": spec.port, "to_port": spec.port, "security_groups": [lb_security.id]}
            ],
            # The image registry, S3 and CloudWatch Logs, over the internet gateway.
            egress=[{"protocol": "-1", "from_port": 0, "to_port": 0, "cidr_blocks": ["0.0.0.0/0"]}],
            tags=tags,
            opts=self._child(),
        )
        load_balancer = aws.lb.LoadBalancer(
            f"{name}-lb",
            load_balancer_type="application",
            internal=not spec.public,
            security_groups=[lb_security.id],
            subnets=[subnet.id for subnet in subnets],
            drop_invalid_header_fields=True,
            tags=tags,
            opts=self._child(),
        )
        target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            port=spec.port,
            protocol="HTTP",
            target_type="ip",
            vpc_id=vpc.id,
            # Requests in flight take milliseconds; 30 s drains a task without slowing deployments.
            deregistration_delay=30,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                path=spec.health_path,
                port="traffic-port",
                protocol="HTTP",
                matcher="200",
                # Every 10 s; two passes to take traffic, three failures to lose it.
                interval=10,
                timeout=5,
                healthy_threshold=2,
                unhealthy_threshold=3,
            ),
            tags=tags,
            opts=self._child(),
        )
        https = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=load_balancer.arn,
            port=443,
            protocol="HTTPS",
            ssl_policy=TLS_POLICY,
            certificate_arn=spec.certificate_arn,
            default_actions=[{"type": "forward", "target_group_arn": target_group.arn}],
            tags=tags,
            opts=self._child(),
        )
        aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=load_balancer.arn,
            port=80,
            protocol="HTTP",
            default_actions=[
                {"type": "redirect", "redirect": {"port": "443", "protocol": "HTTPS", "status_code": "HTTP_301"}}
            ],
            tags=tags,
            opts=self._child(),
        )
        cluster = aws.ecs.Cluster(f"{name}-cluster", tags=tags, opts=self._child())
        task = self._task_definition(name, spec, bucket, tags)
        service = aws.ecs.Service(
            f"{name}-service",
            cluster=cluster.arn,
            task_definition=task.arn,
            desired_count=spec.min_instances,
            launch_type="FARGATE",
            network_configuration={
                "subnets": [subnet.id for subnet in subnets],
                "security_groups": [task_security.id],
                "assign_public_ip": True,
            },
            load_balancers=[
                {"target_group_arn": target_group.arn, "container_name": CONTAINER_NAME, "container_port": spec.port}
            ],
            health_check_grace_period_seconds=HEALTH_CHECK_GRACE_SECONDS,
            # A new task definition that never gets healthy is rolled back instead of replacing the good one.
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            propagate_tags="SERVICE",
            tags=tags,
            # Auto Scaling owns the task count once the service exists.
            opts=self._child(depends_on=[https], ignore_changes=["desiredCount"]),
        )
        scaling = aws.appautoscaling.Target(
            f"{name}-scaling",
            min_capacity=spec.min_instances,
            max_capacity=spec.max_instances,
            resource_id=pulumi.Output.concat("service/", cluster.name, "/", service.name),
            scalable_dimension="ecs:service:DesiredCount",
            service_namespace="ecs",
            tags=tags,
            opts=self._child(),
        )
        aws.appautoscaling.Policy(
            f"{name}-cpu",
            policy_type="TargetTrackingScaling",
            resource_id=scaling.resource_id,
            scalable_dimension=scaling.scalable_dimension,
            service_namespace=scaling.service_namespace,
            target_tracking_scaling_policy_configuration={
                "predefined_metric_specification": {"predefined_metric_type": "ECSServiceAverageCPUUtilization"},
                "target_value": TARGET_CPU_PERCENT,
                "scale_out_cooldown": 30,
                "scale_in_cooldown": 120,
            },
            opts=self._child(),
        )
        return ServingOutputs(
            service_url=f"https://{spec.domain}",
            service_hostname=load_balancer.dns_name,
            bucket_url=bucket_url(spec),
            bucket_endpoint=pulumi.Output.concat("https://", bucket.bucket_regional_domain_name),
        )

    def _bucket(self, name: str, spec: StackSpec, tags: dict[str, str]) -> aws.s3.Bucket:
        """The model bucket: private, versioned, encrypted, TLS only; `destroy` empties it (models republish)."""
        bucket = aws.s3.Bucket(
            f"{name}-models", bucket=spec.model_bucket, force_destroy=True, tags=tags, opts=self._child()
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-models-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},  # no ACLs: the bucket policy and IAM decide
            opts=self._child(),
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-models-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=self._child(),
        )
        aws.s3.BucketVersioning(
            f"{name}-models-versioning",
            bucket=bucket.id,
            versioning_configuration={"status": "Enabled"},
            opts=self._child(),
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-models-encryption",
            bucket=bucket.id,
            rules=[
                {"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}, "bucket_key_enabled": True}
            ],
            opts=self._child(),
        )
        aws.s3.BucketPolicy(
            f"{name}-models-tls-only",
            bucket=bucket.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(_tls_only_policy(arn))),
            opts=self._child(depends_on=[public_access]),
        )
        return bucket

    def _network(self, name: str, tags: dict[str, str]) -> tuple[aws.ec2.Vpc, list[aws.ec2.Subnet]]:
        """A VPC of the stack's own with public subnets in two zones."""
        zones = aws.get_availability_zones_output(state="available")
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=VPC_CIDR,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags,
            opts=self._child(),
        )
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags=tags, opts=self._child())
        routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": gateway.id}],
            tags=tags,
            opts=self._child(),
        )
        subnets = []
        for index, cidr in enumerate(SUBNET_CIDRS):
            subnet = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=zones.names[index],
                tags=tags,
                opts=self._child(),
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}-routes", subnet_id=subnet.id, route_table_id=routes.id, opts=self._child()
            )
            subnets.append(subnet)
        return vpc, subnets

    def _task_definition(
        self, name: str, spec: StackSpec, bucket: aws.s3.Bucket, tags: dict[str, str]
    ) -> aws.ecs.TaskDefinition:
        """The server's task: the image, the spec's size, a role that reads the models, logs and a liveness check."""
        execution_role = aws.iam.Role(
            f"{name}-execution",
            assume_role_policy=ASSUME_ECS_TASKS,
            description="ECS pulls the serving image and writes its logs",
            tags=tags,
            opts=self._child(),
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-execution-policy",
            role=execution_role.name,
            policy_arn=aws.iam.ManagedPolicy.AMAZON_ECS_TASK_EXECUTION_ROLE_POLICY,
            opts=self._child(),
        )
        task_role = aws.iam.Role(
            f"{name}-server",
            assume_role_policy=ASSUME_ECS_TASKS,
            description="the model server: reads the model prefix, nothing else",
            tags=tags,
            opts=self._child(),
        )
        aws.iam.RolePolicy(
            f"{name}-read-models",
            role=task_role.id,
            policy=bucket.arn.apply(lambda arn: json.dumps(model_read_policy(arn, spec.model_prefix))),
            opts=self._child(),
        )
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs", retention_in_days=LOG_RETENTION_DAYS, tags=tags, opts=self._child()
        )
        liveness = f"http://127.0.0.1:{spec.port}{spec.liveness_path}"
        container: dict[str, Any] = {
            "name": CONTAINER_NAME,
            "image": spec.image,
            "essential": True,
            "command": container_args(spec),
            "portMappings": [{"containerPort": spec.port, "protocol": "tcp"}],
            "environment": [{"name": key, "value": value} for key, value in container_environment(spec).items()],
            # ECS ignores the image's HEALTHCHECK; this one restarts a task whose server stops answering.
            "healthCheck": {
                "command": [
                    "CMD",
                    "python",
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('{liveness}', timeout=4)",
                ],
                "interval": 15,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 30,
            },
            "readonlyRootFilesystem": True,
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": logs.name, "awslogs-region": spec.region, "awslogs-stream-prefix": name},
            },
        }
        return aws.ecs.TaskDefinition(
            f"{name}-task",
            family=name,
            cpu=str(int(spec.cpu * 1024)),
            memory=str(spec.memory_mib),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform={"operating_system_family": "LINUX", "cpu_architecture": "X86_64"},
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            container_definitions=pulumi.Output.json_dumps([container]),
            tags=tags,
            opts=self._child(),
        )


def model_read_policy(bucket_arn: str, prefix: str) -> dict[str, Any]:
    """IAM policy: read objects under the model prefix and list only there (so a missing key is a 404)."""
    objects = f"{bucket_arn}/{prefix}/*" if prefix else f"{bucket_arn}/*"
    listing: dict[str, Any] = {
        "Sid": "ListModels",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": bucket_arn,
    }
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject", "Resource": objects}, listing],
    }


def _tls_only_policy(bucket_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyPlainHttp",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
