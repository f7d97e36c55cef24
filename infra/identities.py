"""The pipeline's identities: who the service runs as, who tasks are signed as, and the Cloud Tasks agent."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.settings import PipelineSettings

# What the handler itself needs at run time: writing its logs, metrics and trace spans. Nothing else.
RUNTIME_PROJECT_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/cloudtrace.agent")
# A service agent created on request gets no roles; this one carries iam.serviceAccounts.getOpenIdToken,
# without which Cloud Tasks cannot mint the tasks' OIDC tokens. (IAM docs, "Create and grant roles to
# service agents"; Cloud Tasks roles reference.)
CLOUD_TASKS_AGENT_PROJECT_ROLES = ("roles/cloudtasks.serviceAgent",)
# Granted to the runtime account on the pipeline's Firestore database only (an IAM condition; infra/firestore.py).
RUNTIME_DATABASE_ROLES = ("roles/datastore.user",)
# Every role the program grants at project level: the deployer's IAM-admin grant is conditioned on exactly
# these (bootstrap/grantable-roles.txt, kept equal by a test).
PROJECT_LEVEL_ROLES = RUNTIME_PROJECT_ROLES + CLOUD_TASKS_AGENT_PROJECT_ROLES + RUNTIME_DATABASE_ROLES


@dataclass(frozen=True)
class Identities:
    runtime: gcp.serviceaccount.Account
    """The Cloud Run service's own account (never the default compute account, which holds Editor)."""
    invoker: gcp.serviceaccount.Account
    """Named only inside task OIDC tokens; holds run.invoker on this one service and nothing at project level."""
    cloud_tasks_agent: gcp.projects.ServiceIdentity
    """service-PROJECT_NUMBER@gcp-sa-cloudtasks.iam.gserviceaccount.com, created if it does not exist yet."""
    push: gcp.serviceaccount.Account
    """Pub/Sub pushes task-operation records as this account; holds run.invoker on the service and nothing else."""


def create_identities(name: str, settings: PipelineSettings, opts: pulumi.ResourceOptions) -> Identities:
    runtime = gcp.serviceaccount.Account(
        f"{name}-runtime",
        project=settings.project,
        account_id=settings.runtime_account_id,
        display_name=f"Tasklane handler runtime ({settings.name})",
        description="Identity of the Cloud Run task handler: writes logs and metrics only.",
        opts=opts,
    )
    _grant_on_project(f"{name}-runtime", settings, runtime.member, RUNTIME_PROJECT_ROLES, opts)
    invoker = gcp.serviceaccount.Account(
        f"{name}-invoker",
        project=settings.project,
        account_id=settings.invoker_account_id,
        display_name=f"Tasklane task invoker ({settings.name})",
        description="Signs Cloud Tasks OIDC tokens for the task handler; may invoke that one service only.",
        opts=opts,
    )
    cloud_tasks_agent = gcp.projects.ServiceIdentity(
        f"{name}-cloudtasks-agent",
        project=settings.project,
        service="cloudtasks.googleapis.com",
        opts=opts,
    )
    _grant_on_project(f"{name}-cloudtasks-agent", settings, cloud_tasks_agent.member,
                      CLOUD_TASKS_AGENT_PROJECT_ROLES, opts)
    push = gcp.serviceaccount.Account(
        f"{name}-push",
        project=settings.project,
        account_id=settings.push_account_id,
        display_name=f"Tasklane task-operation push ({settings.name})",
        description="Signs Pub/Sub pushes of final failed attempts to the handler; may invoke that one service only.",
        opts=opts,
    )
    return Identities(runtime=runtime, invoker=invoker, cloud_tasks_agent=cloud_tasks_agent, push=push)


def _grant_on_project(prefix: str, settings: PipelineSettings, member: pulumi.Input[str], roles: tuple[str, ...],
                      opts: pulumi.ResourceOptions) -> None:
    for role in roles:
        gcp.projects.IAMMember(
            f"{prefix}-{role.split('/')[1].replace('.', '-')}",
            project=settings.project,
            role=role,
            member=member,
            opts=opts,
        )
