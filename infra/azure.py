"""Azure (azure-native v3): a storage account and private blob container, and a Container Apps app.

Everything lives in a resource group of the stack's own. The storage account refuses public blobs and
plain HTTP, requires TLS 1.2 and keeps blob versions. The app runs in a Container Apps environment
(Consumption profile, logs to Log Analytics) with a user-assigned identity that holds Storage Blob Data
Reader on the container only; its external ingress is HTTPS only; startup, readiness and liveness probes
and an HTTP concurrency rule scale it between min and max replicas.
"""

from __future__ import annotations

import hashlib
import re

import pulumi
from pulumi_azure_native import app, authorization, managedidentity, operationalinsights, resources, storage

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

__all__ = ["BLOB_DATA_READER_ROLE", "AzureServingStack", "storage_account_name"]

# The built-in role "Storage Blob Data Reader": read and list blobs, nothing else.
BLOB_DATA_READER_ROLE = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
# The serverless workload profile every Container Apps environment offers.
CONSUMPTION_PROFILE = "Consumption"
LOG_RETENTION_DAYS = 30


class AzureServingStack(ServingStack):
    """The serving stack on Azure."""

    CLOUD = "azure"

    def _build(self, name: str, spec: StackSpec) -> ServingOutputs:
        tags = spec.all_tags
        group = resources.ResourceGroup(f"{name}-rg", location=spec.region, tags=tags, opts=self._child())
        account = storage.StorageAccount(
            f"{name}-storage",
            account_name=storage_account_name(spec, pulumi.get_stack()),
            resource_group_name=group.name,
            location=spec.region,
            kind=storage.Kind.STORAGE_V2,
            sku={"name": storage.SkuName.STANDARD_LRS},
            allow_blob_public_access=False,
            enable_https_traffic_only=True,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            # `mct publish` signs in with the connection string or `az login` (toolkit/storage/azure.py).
            allow_shared_key_access=True,
            encryption={
                "key_source": storage.KeySource.MICROSOFT_STORAGE,
                "services": {"blob": {"enabled": True, "key_type": storage.KeyType.ACCOUNT}},
            },
            tags=tags,
            opts=self._child(),
        )
        storage.BlobServiceProperties(
            f"{name}-blob-service",
            account_name=account.name,
            resource_group_name=group.name,
            blob_services_name="default",
            is_versioning_enabled=True,
            opts=self._child(),
        )
        blob_container = storage.BlobContainer(
            f"{name}-models",
            account_name=account.name,
            resource_group_name=group.name,
            container_name=spec.model_bucket,
            public_access=storage.PublicAccess.NONE,
            opts=self._child(),
        )
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-server", resource_group_name=group.name, location=spec.region, tags=tags, opts=self._child()
        )
        subscription = authorization.get_client_config_output().subscription_id
        reader = authorization.RoleAssignment(
            f"{name}-read-models",
            principal_id=identity.principal_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=pulumi.Output.concat(
                "/subscriptions/",
                subscription,
                "/providers/Microsoft.Authorization/roleDefinitions/",
                BLOB_DATA_READER_ROLE,
            ),
            scope=blob_container.id,
            opts=self._child(),
        )
        workspace = operationalinsights.Workspace(
            f"{name}-logs",
            resource_group_name=group.name,
            location=spec.region,
            sku={"name": operationalinsights.WorkspaceSkuNameEnum.PER_GB2018},
            retention_in_days=LOG_RETENTION_DAYS,
            tags=tags,
            opts=self._child(),
        )
        keys = operationalinsights.get_shared_keys_output(resource_group_name=group.name, workspace_name=workspace.name)
        environment = app.ManagedEnvironment(
            f"{name}-env",
            resource_group_name=group.name,
            location=spec.region,
            app_logs_configuration={
                "destination": "log-analytics",
                "log_analytics_configuration": {
                    "customer_id": workspace.customer_id,
                    "shared_key": keys.primary_shared_key,
                },
            },
            workload_profiles=[{"name": CONSUMPTION_PROFILE, "workload_profile_type": CONSUMPTION_PROFILE}],
            tags=tags,
            opts=self._child(),
        )
        port = spec.port
        environment_variables = [
            app.EnvironmentVarArgs(name=key, value=value) for key, value in container_environment(spec).items()
        ]
        # The store signs in with DefaultAzureCredential, which picks the user-assigned identity by its client
        # id, at the account's blob endpoint (no connection string, no key in the app).
        environment_variables.append(app.EnvironmentVarArgs(name="AZURE_CLIENT_ID", value=identity.client_id))
        environment_variables.append(
            app.EnvironmentVarArgs(name="AZURE_STORAGE_ACCOUNT_URL", value=account.primary_endpoints.blob)
        )
        server = app.ContainerArgs(
            name=CONTAINER_NAME,
            image=spec.image,
            args=container_args(spec),
            env=environment_variables,
            resources=app.ContainerResourcesArgs(cpu=spec.cpu, memory=f"{spec.memory_mib / 1024:g}Gi"),
            probes=[
                _probe(app.Type.STARTUP, spec.liveness_path, port, STARTUP),
                _probe(app.Type.READINESS, spec.health_path, port, READINESS),
                _probe(app.Type.LIVENESS, spec.liveness_path, port, LIVENESS),
            ],
        )
        scale = app.ScaleArgs(
            min_replicas=spec.min_instances,
            max_replicas=spec.max_instances,
            rules=[
                app.ScaleRuleArgs(
                    name="concurrent-requests",
                    http=app.HttpScaleRuleArgs(metadata={"concurrentRequests": str(spec.concurrency)}),
                )
            ],
        )
        configuration = app.ConfigurationArgs(
            active_revisions_mode=app.ActiveRevisionsMode.SINGLE,
            ingress=app.IngressArgs(
                external=spec.public,
                target_port=port,
                transport=app.IngressTransportMethod.HTTP,
                allow_insecure=False,
            ),
        )
        container_app = app.ContainerApp(
            f"{name}-app",
            container_app_name=spec.name,
            resource_group_name=group.name,
            location=spec.region,
            managed_environment_id=environment.id,
            workload_profile_name=CONSUMPTION_PROFILE,
            identity=app.ManagedServiceIdentityArgs(
                type=app.ManagedServiceIdentityType.USER_ASSIGNED, user_assigned_identities=[identity.id]
            ),
            configuration=configuration,
            template=app.TemplateArgs(containers=[server], scale=scale),
            tags=tags,
            # The identity can read the models before the first replica starts.
            opts=self._child(depends_on=[reader]),
        )
        fqdn = container_app.configuration.apply(
            lambda configuration: configuration.ingress.fqdn if configuration and configuration.ingress else ""
        )
        return ServingOutputs(
            service_url=pulumi.Output.concat("https://", fqdn),
            service_hostname=fqdn,
            bucket_url=bucket_url(spec),
            bucket_endpoint=pulumi.Output.concat(account.primary_endpoints.blob, spec.model_bucket),
        )


def storage_account_name(spec: StackSpec, stack: str) -> str:
    """A storage account name (3-24 lowercase letters and digits, unique in Azure) stable for the stack."""
    stem = re.sub(r"[^a-z0-9]", "", spec.name)[:14]
    digest = hashlib.sha256(f"{stack}/{spec.model_bucket}/{spec.region}".encode()).hexdigest()[:10]
    return stem + digest


def _probe(kind: app.Type, path: str, port: int, timing: ProbeTiming) -> app.ContainerAppProbeArgs:
    """An HTTP probe of the container on `path`."""
    return app.ContainerAppProbeArgs(
        type=kind,
        http_get=app.ContainerAppProbeHttpGetArgs(path=path, port=port),
        period_seconds=timing.period_seconds,
        timeout_seconds=timing.timeout_seconds,
        failure_threshold=timing.failure_threshold,
    )
