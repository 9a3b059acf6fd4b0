"""GCP: a Cloud Storage bucket for the models, and a Cloud Run (v2) service that serves them.

The bucket has uniform access (IAM only, no object ACLs), public access prevention enforced and versioning;
Google encrypts it at rest. The service runs as a service account of its own that may only view the
bucket's objects. Cloud Run serves HTTPS on its own; the start-up probe waits for the process, the readiness
probe for a loaded model, the liveness probe restarts a stuck instance. Deletion protection is off so that
`mct infra destroy` (and drills) can remove the service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pulumi
import pulumi_gcp as gcp

from infra.component import (
    CONTAINER_NAME,
    LIVENESS,
    READINESS,
    STARTUP,
    ProbeTiming,
    ServingOutputs,
    ServingStack,
    bucket_url,
    container_args,
    container_environment,
)
from infra.spec import StackSpec

__all__ = ["GcpServingStack"]

run = gcp.cloudrunv2

ProbeArgs = TypeVar("ProbeArgs")


class GcpServingStack(ServingStack):
    """The serving stack on GCP."""

    CLOUD = "gcp"

    def _build(self, name: str, spec: StackSpec) -> ServingOutputs:
        labels = spec.all_tags
        run_api = gcp.projects.Service(
            f"{name}-run-api",
            service="run.googleapis.com",
            # Other services of the project may use Cloud Run: destroying this stack must not turn it off.
            disable_on_destroy=False,
            opts=self._child(),
        )
        bucket = gcp.storage.Bucket(
            f"{name}-models",
            name=spec.model_bucket,
            location=spec.region.upper(),
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            versioning={"enabled": True},
            force_destroy=True,  # `destroy` removes the models with it; `mct publish` puts them back
            labels=labels,
            opts=self._child(),
        )
        account = gcp.serviceaccount.Account(
            f"{name}-server",
            account_id=f"{spec.name}-server",
            display_name="mct model server: reads the models bucket",
            opts=self._child(),
        )
        reader = gcp.storage.BucketIAMMember(
            f"{name}-read-models",
            bucket=bucket.name,
            role="roles/storage.objectViewer",
            member=account.member,
            opts=self._child(),
        )
        port = spec.port
        server = run.ServiceTemplateContainerArgs(
            name=CONTAINER_NAME,
            image=spec.image,
            args=container_args(spec),
            ports=run.ServiceTemplateContainerPortsArgs(container_port=port),
            envs=[
                run.ServiceTemplateContainerEnvArgs(name=key, value=value)
                for key, value in container_environment(spec, platform_sets_port=True).items()
            ],
            resources=run.ServiceTemplateContainerResourcesArgs(
                limits={"cpu": f"{spec.cpu:g}", "memory": f"{spec.memory_mib}Mi"},
                # CPU stays allocated between requests: the server polls the store for new versions in the
                # background, which a throttled CPU would stall.
                cpu_idle=False,
                startup_cpu_boost=True,
            ),
            startup_probe=_probe(
                run.ServiceTemplateContainerStartupProbeArgs,
                run.ServiceTemplateContainerStartupProbeHttpGetArgs,
                spec.liveness_path,
                port,
                STARTUP,
            ),
            readiness_probe=_probe(
                run.ServiceTemplateContainerReadinessProbeArgs,
                run.ServiceTemplateContainerReadinessProbeHttpGetArgs,
                spec.health_path,
                port,
                READINESS,
            ),
            liveness_probe=_probe(
                run.ServiceTemplateContainerLivenessProbeArgs,
                run.ServiceTemplateContainerLivenessProbeHttpGetArgs,
                spec.liveness_path,
                port,
                LIVENESS,
            ),
        )
        service = run.Service(
            f"{name}-service",
            name=spec.name,
            location=spec.region,
            deletion_protection=False,
            ingress="INGRESS_TRAFFIC_ALL" if spec.public else "INGRESS_TRAFFIC_INTERNAL_ONLY",
            labels=labels,
            template=run.ServiceTemplateArgs(
                service_account=account.email,
                scaling=run.ServiceTemplateScalingArgs(
                    min_instance_count=spec.min_instances, max_instance_count=spec.max_instances
                ),
                max_instance_request_concurrency=spec.concurrency,
                containers=[server],
            ),
            opts=self._child(depends_on=[run_api, reader]),
        )
        if spec.public:
            # Cloud Run checks the caller's IAM identity; the router and clients call it without one.
            run.ServiceIamMember(
                f"{name}-public",
                name=service.name,
                location=service.location,
                role="roles/run.invoker",
                member="allUsers",
                opts=self._child(),
            )
        return ServingOutputs(
            service_url=service.uri,
            service_hostname=service.uri.apply(lambda uri: uri.removeprefix("https://")),
            bucket_url=bucket_url(spec),
            bucket_endpoint=pulumi.Output.concat("https://storage.googleapis.com/", bucket.name),
        )


def _probe(
    probe: Callable[..., ProbeArgs], http_get: Callable[..., Any], path: str, port: int, timing: ProbeTiming
) -> ProbeArgs:
    """An HTTP probe of Cloud Run (its start-up, readiness and liveness probes have classes of their own)."""
    return probe(
        http_get=http_get(path=path, port=port),
        period_seconds=timing.period_seconds,
        timeout_seconds=timing.timeout_seconds,
        failure_threshold=timing.failure_threshold,
    )
