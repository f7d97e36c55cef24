"""Seeing the pipeline in production: log-based metrics, one dashboard, and alert policies per stack.

Metric types used (README, "Operations" lists which view and alert uses each; checked against Google's
published metric list, cloud.google.com/monitoring/api/metrics_gcp):
- Cloud Tasks, resource `cloud_tasks_queue` (label `queue_id`): `queue/depth`, `queue/task_attempt_count`
  (label `response_code`), `queue/task_attempt_delays`.
- Cloud Run, resource `cloud_run_revision` (label `service_name`): `request_count` (label
  `response_code_class`), `request_latencies`, `container/instance_count`, `container/cpu/utilizations`,
  `container/memory/utilizations`.
- Ours, log-based: dead letters by kind and reason (every kind, `gave_up_unseen` included), and handler
  errors by class, from the handler's own structured entries.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.settings import PipelineSettings
from tasklane.core.dead_letter import DEAD_LETTER_FIELD

TASKS_METRICS = "cloudtasks.googleapis.com/queue"
RUN_METRICS = "run.googleapis.com"
METRIC_TYPES = (
    f"{TASKS_METRICS}/depth", f"{TASKS_METRICS}/task_attempt_count", f"{TASKS_METRICS}/task_attempt_delays",
    f"{RUN_METRICS}/request_count", f"{RUN_METRICS}/request_latencies", f"{RUN_METRICS}/container/instance_count",
    f"{RUN_METRICS}/container/cpu/utilizations", f"{RUN_METRICS}/container/memory/utilizations",
)
"""Every Google metric type the dashboard and alerts read (tests check each filter names one of these or ours)."""


def dead_letter_metric_name(settings: PipelineSettings) -> str:
    return f"{settings.name}/dead_letters"


def handler_error_metric_name(settings: PipelineSettings) -> str:
    return f"{settings.name}/handler_errors"


def _handler_entries(settings: PipelineSettings) -> str:
    return f'resource.type="cloud_run_revision" AND resource.labels.service_name="{settings.service_name}"'


def dead_letter_filter(settings: PipelineSettings) -> str:
    """The first entry of each dead letter (only it names the kind; large bodies continue in more entries)."""
    return f"{_handler_entries(settings)} AND jsonPayload.{DEAD_LETTER_FIELD}.kind:*"


def handler_error_filter(settings: PipelineSettings) -> str:
    return f"{_handler_entries(settings)} AND severity>=ERROR AND jsonPayload.error_class:*"


def create_log_metrics(name: str, settings: PipelineSettings, opts: pulumi.ResourceOptions,
                       ) -> tuple[gcp.logging.Metric, gcp.logging.Metric]:
    dead_letters = gcp.logging.Metric(
        f"{name}-dead-letters",
        project=settings.project,
        name=dead_letter_metric_name(settings),
        description="Tasklane dead letters, by kind (rejected, final_attempt_failed, gave_up_unseen) and reason.",
        filter=dead_letter_filter(settings),
        metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
            metric_kind="DELTA", value_type="INT64", unit="1",
            labels=[gcp.logging.MetricMetricDescriptorLabelArgs(key="kind", value_type="STRING",
                                                                description="Why the task was dead-lettered."),
                    gcp.logging.MetricMetricDescriptorLabelArgs(key="reason", value_type="STRING",
                                                                description="The reason's first words.")]),
        label_extractors={
            "kind": f"EXTRACT(jsonPayload.{DEAD_LETTER_FIELD}.kind)",
            # Reasons carry task details; their head (up to the first colon) keeps the label's values few.
            "reason": f'REGEXP_EXTRACT(jsonPayload.{DEAD_LETTER_FIELD}.reason, "^([^:(]{{1,60}})")',
        },
        opts=opts,
    )
    errors = gcp.logging.Metric(
        f"{name}-handler-errors",
        project=settings.project,
        name=handler_error_metric_name(settings),
        description="Exceptions the Tasklane handler logged, by class.",
        filter=handler_error_filter(settings),
        metric_descriptor=gcp.logging.MetricMetricDescriptorArgs(
            metric_kind="DELTA", value_type="INT64", unit="1",
            labels=[gcp.logging.MetricMetricDescriptorLabelArgs(key="error_class", value_type="STRING",
                                                                description="The exception's class.")]),
        label_extractors={"error_class": "EXTRACT(jsonPayload.error_class)"},
        opts=opts,
    )
    return dead_letters, errors


# -- The dashboard -------------------------------------------------------------------------------------

def _series(filter_: str, aligner: str, reducer: str | None = None, group_by: tuple[str, ...] = (),
            period: str = "60s") -> dict[str, Any]:
    aggregation: dict[str, Any] = {"alignmentPeriod": period, "perSeriesAligner": aligner}
    if reducer:
        aggregation["crossSeriesReducer"] = reducer
        aggregation["groupByFields"] = list(group_by)
    return {"timeSeriesFilter": {"filter": filter_, "aggregation": aggregation}}


def _chart(title: str, *series: dict[str, Any], plot: str = "LINE", label: str = "",
           threshold: float | None = None) -> dict[str, Any]:
    chart: dict[str, Any] = {"dataSets": [{"timeSeriesQuery": query, "plotType": plot, "legendTemplate": label}
                                          for query in series],
                             "yAxis": {"scale": "LINEAR"}}
    if threshold is not None:
        chart["thresholds"] = [{"value": threshold, "label": "queue limit"}]
    return {"title": title, "xyChart": chart}


def dashboard_json(settings: PipelineSettings, queue_id: str) -> str:
    """The Dashboard API's JSON (mosaicLayout), 48 columns wide, three rows of four widgets."""
    queue = f'resource.type="cloud_tasks_queue" AND resource.labels.queue_id="{queue_id}"'
    run = f'resource.type="cloud_run_revision" AND resource.labels.service_name="{settings.service_name}"'
    user = "logging.googleapis.com/user"
    widgets = [
        # The queue.
        _chart("Queue depth (tasks waiting)", _series(f'metric.type="{TASKS_METRICS}/depth" AND {queue}',
                                                      "ALIGN_MEAN", "REDUCE_SUM")),
        _chart("Dispatches per second, against the queue's limit",
               _series(f'metric.type="{TASKS_METRICS}/task_attempt_count" AND {queue}', "ALIGN_RATE", "REDUCE_SUM"),
               threshold=settings.max_dispatches_per_second),
        _chart("Attempts by response code",
               _series(f'metric.type="{TASKS_METRICS}/task_attempt_count" AND {queue}', "ALIGN_RATE", "REDUCE_SUM",
                       ("metric.label.response_code",)), plot="STACKED_BAR"),
        _chart("Attempt delay (schedule to dispatch), p50 and p99",
               _series(f'metric.type="{TASKS_METRICS}/task_attempt_delays" AND {queue}', "ALIGN_PERCENTILE_50",
                       "REDUCE_MEAN"),
               _series(f'metric.type="{TASKS_METRICS}/task_attempt_delays" AND {queue}', "ALIGN_PERCENTILE_99",
                       "REDUCE_MEAN")),
        # The handler.
        _chart("Handler requests by response class",
               _series(f'metric.type="{RUN_METRICS}/request_count" AND {run}', "ALIGN_RATE", "REDUCE_SUM",
                       ("metric.label.response_code_class",)), plot="STACKED_BAR"),
        # Distributions across revisions: aligned by delta, then reduced to a percentile (as Google's own
        # Cloud Run dashboard does).
        _chart("Handler latency p50 / p95 / p99 (ms)", *[
            _series(f'metric.type="{RUN_METRICS}/request_latencies" AND {run}', "ALIGN_DELTA",
                    f"REDUCE_PERCENTILE_{p}") for p in (50, 95, 99)]),
        _chart("Instances", _series(f'metric.type="{RUN_METRICS}/container/instance_count" AND {run}', "ALIGN_MAX",
                                    "REDUCE_SUM", ("metric.label.state",))),
        _chart("CPU and memory utilisation, p99", *[
            _series(f'metric.type="{RUN_METRICS}/container/{kind}/utilizations" AND {run}', "ALIGN_DELTA",
                    "REDUCE_PERCENTILE_99") for kind in ("cpu", "memory")]),
        # Failures.
        _chart("Dead letters by kind",
               _series(f'metric.type="{user}/{dead_letter_metric_name(settings)}"', "ALIGN_DELTA", "REDUCE_SUM",
                       ("metric.label.kind",), period="300s"), plot="STACKED_BAR"),
        _chart("Dead letters by reason",
               _series(f'metric.type="{user}/{dead_letter_metric_name(settings)}"', "ALIGN_DELTA", "REDUCE_SUM",
                       ("metric.label.reason",), period="300s"), plot="STACKED_BAR"),
        _chart("Handler errors by class",
               _series(f'metric.type="{user}/{handler_error_metric_name(settings)}"', "ALIGN_DELTA", "REDUCE_SUM",
                       ("metric.label.error_class",), period="300s"), plot="STACKED_BAR"),
        _chart("Tasks given up unseen",
               _series(f'metric.type="{user}/{dead_letter_metric_name(settings)}" AND '
                       'metric.label.kind="gave_up_unseen"', "ALIGN_DELTA", "REDUCE_SUM", period="300s"),
               plot="STACKED_BAR"),
    ]
    tiles = [{"xPos": (index % 4) * 12, "yPos": (index // 4) * 16, "width": 12, "height": 16, "widget": widget}
             for index, widget in enumerate(widgets)]
    return json.dumps({"displayName": f"Tasklane pipeline {settings.name}", "mosaicLayout": {"columns": 48,
                                                                                          "tiles": tiles}},
                      sort_keys=True)


def create_dashboard(name: str, settings: PipelineSettings, queue: gcp.cloudtasks.Queue,
                     opts: pulumi.ResourceOptions) -> tuple[gcp.monitoring.Dashboard, pulumi.Output[str]]:
    dashboard = gcp.monitoring.Dashboard(
        f"{name}-dashboard",
        project=settings.project,
        dashboard_json=queue.name.apply(lambda queue_id: dashboard_json(settings, queue_id)),
        opts=opts,
    )
    url = dashboard.id.apply(lambda dashboard_id: "https://console.cloud.google.com/monitoring/dashboards/builder/"
                             f"{dashboard_id.rsplit('/', 1)[-1]}?project={settings.project}")
    return dashboard, url


# -- Alerts --------------------------------------------------------------------------------------------

def _threshold(title: str, filter_: str, threshold: float, duration: str, aligner: str, reducer: str,
               period: str = "300s", denominator: str | None = None,
               ) -> gcp.monitoring.AlertPolicyConditionArgs:
    aggregations = [gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
        alignment_period=period, per_series_aligner=aligner, cross_series_reducer=reducer)]
    ratio: dict[str, Any] = {}
    if denominator is not None:
        ratio = {"denominator_filter": denominator, "denominator_aggregations": [
            gcp.monitoring.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs(
                alignment_period=period, per_series_aligner=aligner, cross_series_reducer=reducer)]}
    return gcp.monitoring.AlertPolicyConditionArgs(
        display_name=title,
        condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
            filter=filter_, comparison="COMPARISON_GT", threshold_value=threshold, duration=duration,
            aggregations=aggregations, trigger=gcp.monitoring.AlertPolicyConditionConditionThresholdTriggerArgs(
                count=1), **ratio),
    )


def _documentation(text: str) -> gcp.monitoring.AlertPolicyDocumentationArgs:
    return gcp.monitoring.AlertPolicyDocumentationArgs(content=text, mime_type="text/markdown")


def notification_channels(name: str, settings: PipelineSettings, opts: pulumi.ResourceOptions,
                          ) -> list[pulumi.Input[str]]:
    """The configured existing channels, plus one email channel per configured address."""
    channels: list[pulumi.Input[str]] = list(settings.alert_channels)
    for index, email in enumerate(settings.alert_emails):
        channels.append(gcp.monitoring.NotificationChannel(
            f"{name}-alert-email-{index}", project=settings.project, type="email",
            display_name=f"Tasklane {settings.name}: {email}", labels={"email_address": email}, opts=opts).id)
    return channels


def create_alerts(name: str, settings: PipelineSettings, queue: gcp.cloudtasks.Queue,
                  metrics: tuple[gcp.logging.Metric, gcp.logging.Metric], opts: pulumi.ResourceOptions,
                  ) -> dict[str, gcp.monitoring.AlertPolicy]:
    channels = notification_channels(name, settings, opts)
    after_metrics = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=list(metrics)))
    user = "logging.googleapis.com/user"
    dead = f'metric.type="{user}/{dead_letter_metric_name(settings)}" AND resource.type="cloud_run_revision"'
    run = f'resource.type="cloud_run_revision" AND resource.labels.service_name="{settings.service_name}"'
    queue_filter = queue.name.apply(
        lambda queue_id: f'metric.type="{TASKS_METRICS}/depth" AND resource.type="cloud_tasks_queue" '
                         f'AND resource.labels.queue_id="{queue_id}"')
    docs = {
        "dead-letter": (
            f"A task of **{settings.name}** was dead-lettered: it can never succeed, or its final attempt failed. "
            "First: list it (`tasklane dead-letters list --stack STACK`), read its reason and body "
            "(`show ID`); fix the cause, then `replay ID`. The dashboard's *Dead letters by reason* shows whether "
            "it is one task or many."),
        "gave-up": (
            f"Cloud Tasks gave up a task of **{settings.name}** whose failures never reached the handler (403 at "
            "Cloud Run's edge, 429, timeouts, crashes): a `gave_up_unseen` dead letter, with no body. First: look "
            "at its last status (`dead-letters show ID`). PERMISSION_DENIED: check the invoker account's "
            "run.invoker and the Cloud Tasks agent's role; UNAVAILABLE or DEADLINE_EXCEEDED: the service's "
            "instances, startup and timeout. The producer must create the task again: its body is not kept."),
        "backlog": (
            f"More than {settings.backlog_alert_depth} tasks have waited in **{settings.name}**'s queue for "
            f"{settings.backlog_alert_minutes} minutes. First: is the queue paused (`gcloud tasks queues "
            "describe`)? Are attempts failing (dashboard: *Attempts by response code*)? Is the handler at "
            "maxInstances (*Instances*)? Raise maxDispatchesPerSecond or maxInstances only once failures are "
            "ruled out."),
        "errors": (
            f"More than {settings.error_ratio_alert:.0%} of **{settings.name}**'s handler requests answered 5xx "
            "for 5 minutes. Tasks are retried, so nothing is lost yet. First: *Handler errors by class* on the "
            "dashboard, then the ERROR entries in Cloud Logging (Error Reporting groups them); a new revision is "
            "the usual cause: roll back with `pulumi up` on the previous commit."),
    }
    policies = {
        "dead-letter": gcp.monitoring.AlertPolicy(
            f"{name}-alert-dead-letter", project=settings.project, combiner="OR",
            display_name=f"Tasklane {settings.name}: a task was dead-lettered",
            conditions=[_threshold("Any dead letter within 5 minutes", dead, 0, "0s", "ALIGN_DELTA", "REDUCE_SUM")],
            documentation=_documentation(docs["dead-letter"]), notification_channels=channels,
            opts=after_metrics),
        "gave-up": gcp.monitoring.AlertPolicy(
            f"{name}-alert-gave-up", project=settings.project, combiner="OR",
            display_name=f"Tasklane {settings.name}: a task was given up unseen",
            conditions=[_threshold("Any task given up without the handler's answer",
                                   f'{dead} AND metric.label.kind="gave_up_unseen"', 0, "0s", "ALIGN_DELTA",
                                   "REDUCE_SUM")],
            documentation=_documentation(docs["gave-up"]), notification_channels=channels, opts=after_metrics),
        "backlog": gcp.monitoring.AlertPolicy(
            f"{name}-alert-backlog", project=settings.project, combiner="OR",
            display_name=f"Tasklane {settings.name}: the queue's backlog is growing",
            conditions=[gcp.monitoring.AlertPolicyConditionArgs(
                display_name=f"Queue depth above {settings.backlog_alert_depth}",
                condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=queue_filter, comparison="COMPARISON_GT", threshold_value=settings.backlog_alert_depth,
                    duration=f"{settings.backlog_alert_minutes * 60}s",
                    aggregations=[gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                        alignment_period="60s", per_series_aligner="ALIGN_MEAN", cross_series_reducer="REDUCE_SUM")],
                    trigger=gcp.monitoring.AlertPolicyConditionConditionThresholdTriggerArgs(count=1)))],
            documentation=_documentation(docs["backlog"]), notification_channels=channels, opts=opts),
        "errors": gcp.monitoring.AlertPolicy(
            f"{name}-alert-handler-errors", project=settings.project, combiner="OR",
            display_name=f"Tasklane {settings.name}: the handler answers 5xx",
            conditions=[_threshold(
                f"5xx above {settings.error_ratio_alert:.0%} of requests for 5 minutes",
                f'metric.type="{RUN_METRICS}/request_count" AND {run} AND metric.label.response_code_class="5xx"',
                settings.error_ratio_alert, "300s", "ALIGN_RATE", "REDUCE_SUM", period="60s",
                denominator=f'metric.type="{RUN_METRICS}/request_count" AND {run}')],
            documentation=_documentation(docs["errors"]), notification_channels=channels, opts=opts),
    }
    return policies
