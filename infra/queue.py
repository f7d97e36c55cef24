"""The Cloud Tasks queue: rate limits, retry policy and logging from the stack's settings."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.settings import PipelineSettings, format_duration


def create_queue(name: str, settings: PipelineSettings, opts: pulumi.ResourceOptions) -> gcp.cloudtasks.Queue:
    """An auto-named queue: a deleted queue's name stays blocked for 7 days, so a fixed name would block
    re-creating the stack; Pulumi's random suffix avoids that."""
    return gcp.cloudtasks.Queue(
        f"{name}-queue",
        project=settings.project,
        location=settings.region,
        rate_limits=gcp.cloudtasks.QueueRateLimitsArgs(
            max_dispatches_per_second=settings.max_dispatches_per_second,
            max_concurrent_dispatches=settings.max_concurrent_dispatches,
        ),
        retry_config=gcp.cloudtasks.QueueRetryConfigArgs(
            max_attempts=settings.max_attempts,
            min_backoff=format_duration(settings.min_backoff_seconds),
            max_backoff=format_duration(settings.max_backoff_seconds),
            max_doublings=settings.max_doublings,
            max_retry_duration=format_duration(settings.max_retry_duration_seconds),
        ),
        stackdriver_logging_config=gcp.cloudtasks.QueueStackdriverLoggingConfigArgs(
            sampling_ratio=settings.logging_sampling_ratio,
        ),
        opts=opts,
    )


def queue_path(settings: PipelineSettings, queue: gcp.cloudtasks.Queue) -> pulumi.Output[str]:
    """projects/P/locations/L/queues/Q, the form every Cloud Tasks API call takes."""
    return pulumi.Output.concat("projects/", settings.project, "/locations/", settings.region, "/queues/",
                                queue.name)
