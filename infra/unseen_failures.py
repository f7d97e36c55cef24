"""No task vanishes unseen: tasks Cloud Tasks gives up without the handler answering their final attempt.

A 403 at Cloud Run's front end, a 429, a timeout or a crashed container never reach the handler, so it
cannot dead-letter them. The queue logs every task operation (`loggingSamplingRatio`, 1.0 by default); a
Log Router sink sends each final failed attempt to a Pub/Sub topic, whose authenticated push subscription
calls the handler's `/task-operations` route, which records a `gave_up_unseen` dead letter.

The log record's shape (README, "Tasks given up unseen"): Google publishes no schema for
`type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog`. Entries seen in the wild carry
`attemptResponseLog.{status, retryTime, dispatchCount, responseCount, maxAttempts, targetAddress}`, with
`status` a gRPC code name and `retryTime` present when Cloud Tasks will try again; a failed attempt without
`retryTime` is therefore taken as the last one.
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.settings import PipelineSettings

TASK_OPERATIONS_LOG = "cloudtasks.googleapis.com%2Ftask_operations_log"
TASK_OPERATIONS_ROUTE = "/task-operations"
PUBLISHER = "roles/pubsub.publisher"
RUN_INVOKER = "roles/run.invoker"


def final_failure_query(project: str, queue_id: str) -> str:
    """The Logging query for this queue's failed attempts after which Cloud Tasks will not try again
    (emulator/task_operations_log.py `is_final_failure` is the same rule, for the local pipeline)."""
    return (f'logName="projects/{project}/logs/{TASK_OPERATIONS_LOG}" AND resource.type="cloud_tasks_queue" '
            f'AND resource.labels.queue_id="{queue_id}" '
            'AND jsonPayload.attemptResponseLog:* AND jsonPayload.attemptResponseLog.status!="OK" '
            "AND NOT jsonPayload.attemptResponseLog.retryTime:*")


def route_final_failures(name: str, settings: PipelineSettings, *, queue: gcp.cloudtasks.Queue,
                         service: gcp.cloudrunv2.Service, push_account: gcp.serviceaccount.Account,
                         task_audience: pulumi.Input[str], opts: pulumi.ResourceOptions) -> gcp.pubsub.Topic:
    topic = gcp.pubsub.Topic(
        f"{name}-final-failures",
        project=settings.project,
        message_retention_duration="604800s",  # a week to recover if the handler is down
        opts=opts,
    )
    sink = gcp.logging.ProjectSink(
        f"{name}-final-failures",
        project=settings.project,
        destination=pulumi.Output.concat("pubsub.googleapis.com/", topic.id),
        filter=queue.name.apply(lambda queue_id: final_failure_query(settings.project, queue_id)),
        unique_writer_identity=True,
        description="Tasklane: this queue's final failed attempts, to the handler's /task-operations route.",
        opts=opts,
    )
    gcp.pubsub.TopicIAMMember(
        f"{name}-final-failures-sink-publishes",
        project=settings.project,
        topic=topic.name,
        role=PUBLISHER,
        member=sink.writer_identity,
        opts=opts,
    )
    gcp.cloudrunv2.ServiceIamMember(
        f"{name}-push-run-invoker",
        project=settings.project,
        location=settings.region,
        name=service.name,
        role=RUN_INVOKER,
        member=push_account.member,
        opts=opts,
    )
    gcp.pubsub.Subscription(
        f"{name}-final-failures-push",
        project=settings.project,
        topic=topic.name,
        ack_deadline_seconds=60,
        message_retention_duration="604800s",
        expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),  # never expires when idle
        retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(minimum_backoff="10s", maximum_backoff="600s"),
        push_config=gcp.pubsub.SubscriptionPushConfigArgs(
            push_endpoint=pulumi.Output.concat(service.uri, TASK_OPERATIONS_ROUTE),
            oidc_token=gcp.pubsub.SubscriptionPushConfigOidcTokenArgs(
                service_account_email=push_account.email, audience=task_audience),
        ),
        opts=opts,
    )
    return topic
