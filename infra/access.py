"""Who may do what: the least-privilege grants that let tasks flow from producers to the service.

- the invoker account may invoke this one service (and holds nothing at project level);
- the Cloud Tasks service agent may mint tokens as the invoker account;
- each configured producer may enqueue into this queue and name the invoker account in a task.
"""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_gcp as gcp

from infra.identities import Identities
from infra.settings import PipelineSettings

RUN_INVOKER = "roles/run.invoker"
SERVICE_ACCOUNT_USER = "roles/iam.serviceAccountUser"
ENQUEUER = "roles/cloudtasks.enqueuer"


def _member_suffix(member: str) -> str:
    # Stable per member, so reordering the producer list replaces nothing.
    return hashlib.sha256(member.encode()).hexdigest()[:8]


def grant_access(
    name: str,
    settings: PipelineSettings,
    *,
    identities: Identities,
    service: gcp.cloudrunv2.Service,
    queue: gcp.cloudtasks.Queue,
    opts: pulumi.ResourceOptions,
) -> None:
    gcp.cloudrunv2.ServiceIamMember(
        f"{name}-invoker-run-invoker",
        project=settings.project,
        location=settings.region,
        name=service.name,
        role=RUN_INVOKER,
        member=identities.invoker.member,
        opts=opts,
    )
    gcp.serviceaccount.IAMMember(
        f"{name}-cloudtasks-agent-acts-as-invoker",
        service_account_id=identities.invoker.name,
        role=SERVICE_ACCOUNT_USER,
        member=identities.cloud_tasks_agent.member,
        opts=opts,
    )
    for member in settings.producer_members:
        suffix = _member_suffix(member)
        gcp.cloudtasks.QueueIamMember(
            f"{name}-producer-{suffix}-enqueuer",
            project=settings.project,
            location=settings.region,
            name=queue.name,
            role=ENQUEUER,
            member=member,
            opts=opts,
        )
        gcp.serviceaccount.IAMMember(
            f"{name}-producer-{suffix}-acts-as-invoker",
            service_account_id=identities.invoker.name,
            role=SERVICE_ACCOUNT_USER,
            member=member,
            opts=opts,
        )
