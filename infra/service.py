"""The Cloud Run v2 service that Cloud Tasks calls: private, running as its own account, deployed by digest."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.settings import PipelineSettings, format_duration
from tasklane.core import environment as handler_env

CONTAINER_PORT = 8080


def default_task_audience(settings: PipelineSettings, project_number: pulumi.Input[str]) -> pulumi.Output[str]:
    """The service's deterministic run.app URL, known before the service exists.

    Cloud Run gives every service `https://SERVICE-PROJECT_NUMBER.REGION.run.app` when the name is short
    enough (ours is at most 22 characters), so the handler can be told its audience without a cycle.
    """
    return pulumi.Output.concat("https://", settings.service_name, "-", project_number, ".", settings.region,
                                ".run.app")


def create_service(
    name: str,
    settings: PipelineSettings,
    *,
    image_ref: pulumi.Input[str],
    runtime_account_email: pulumi.Input[str],
    invoker_account_email: pulumi.Input[str],
    task_audience: pulumi.Input[str],
    queue_path: pulumi.Input[str],
    firestore_database: pulumi.Input[str],
    push_account_email: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> gcp.cloudrunv2.Service:
    environment = {
        handler_env.QUEUE_PATH: queue_path,
        handler_env.INVOKER_SERVICE_ACCOUNT: invoker_account_email,
        handler_env.TASK_AUDIENCE: task_audience,
        handler_env.MAX_ATTEMPTS: str(settings.max_attempts),
        handler_env.TASK_DISPATCH_DEADLINE: format_duration(settings.task_dispatch_deadline_seconds),
        handler_env.TOKEN_CHECK: settings.token_check,
        handler_env.FIRESTORE_DATABASE: firestore_database,
        handler_env.PUSH_SERVICE_ACCOUNT: push_account_email,
        handler_env.TRACE_EXPORTER: "cloud-trace",
    }
    return gcp.cloudrunv2.Service(
        f"{name}-service",
        name=settings.service_name,
        project=settings.project,
        location=settings.region,
        description=f"Tasklane task handler ({settings.name}); invoked by Cloud Tasks only.",
        ingress=settings.ingress_enum,
        # Private: every request needs an ID token from a principal holding run.invoker.
        invoker_iam_disabled=False,
        # default_uri_disabled stays unset (a beta field): Cloud Tasks reaches an internal-ingress
        # service only through its run.app URL, so that URL must stay on.
        # Listing the audience makes Cloud Run accept it whatever URL form it has.
        custom_audiences=[task_audience],
        deletion_protection=settings.deletion_protection,
        # Set explicitly: left unset, the API's value shows as a diff on every preview.
        scaling=gcp.cloudrunv2.ServiceScalingArgs(min_instance_count=settings.min_instances),
        template=gcp.cloudrunv2.ServiceTemplateArgs(
            service_account=runtime_account_email,
            timeout=format_duration(settings.request_timeout_seconds),
            max_instance_request_concurrency=settings.container_concurrency,
            scaling=gcp.cloudrunv2.ServiceTemplateScalingArgs(
                min_instance_count=settings.min_instances,
                max_instance_count=settings.max_instances,
            ),
            containers=[gcp.cloudrunv2.ServiceTemplateContainerArgs(
                image=image_ref,
                ports=gcp.cloudrunv2.ServiceTemplateContainerPortsArgs(container_port=CONTAINER_PORT, name="http1"),
                resources=gcp.cloudrunv2.ServiceTemplateContainerResourcesArgs(
                    limits={"cpu": settings.cpu, "memory": settings.memory},
                    # Throttled outside requests (request-based billing) unless the stack says otherwise.
                    cpu_idle=not settings.cpu_always_allocated,
                    startup_cpu_boost=True,
                ),
                envs=[gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(name=key, value=value)
                      for key, value in environment.items()],
            )],
        ),
        opts=opts,
    )
