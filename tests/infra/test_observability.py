"""Observability as code, for every stack: log-based metrics that match what the handler writes, a dashboard of
the Dashboard API's shape reading only known metrics, and alerts with their configured thresholds."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from typing import Any

import pytest

from infra.observability import METRIC_TYPES
from tasklane.core.dead_letter import DeadLetter, LogDeadLetterSink
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tests.infra.harness import StackSnapshot, build_stack, stack_file_config, stack_names

METRIC = "gcp:logging/metric:Metric"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
ALERT = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
stacks = pytest.mark.parametrize("stack", stack_names())
ALIGNERS = {"ALIGN_DELTA", "ALIGN_RATE", "ALIGN_MEAN", "ALIGN_MAX", "ALIGN_SUM", "ALIGN_PERCENTILE_50",
            "ALIGN_PERCENTILE_95", "ALIGN_PERCENTILE_99"}
REDUCERS = {"REDUCE_SUM", "REDUCE_MEAN", "REDUCE_MAX", "REDUCE_PERCENTILE_50", "REDUCE_PERCENTILE_95",
            "REDUCE_PERCENTILE_99"}


@functools.cache
def _cached(stack: str) -> StackSnapshot:
    return build_stack(stack)


def snapshot(stack: str, overrides: tuple[tuple[str, Any], ...] = ()) -> StackSnapshot:
    return build_stack(stack, overrides=dict(overrides)) if overrides else _cached(stack)


def user_metric_types(snap: StackSnapshot) -> set[str]:
    return {f"logging.googleapis.com/user/{metric.inputs['name']}" for metric in snap.of_type(METRIC)}


def metric_types_in(filter_: str) -> list[str]:
    return re.findall(r'metric\.type="([^"]+)"', filter_)


# -- Log-based metrics: their filters select what the handler really writes -------------------------------

def handler_entries() -> list[dict[str, Any]]:
    """Real entries from the handler's own code: a dead letter of each kind and a logged exception."""
    lines: list[bytes] = []
    log = StructuredLog(project_id="p", writer=lines.append)
    task = TaskContext(queue_name="orders", task_name="t-1", retry_count=4)
    for kind in ("rejected", "final_attempt_failed", "gave_up_unseen"):
        letter = DeadLetter(kind, "unknown action 'refund': known actions …", task, "POST", "/process-order", {},
                            b"{}" if kind != "gave_up_unseen" else b"")
        asyncio.run(LogDeadLetterSink(log).send(letter))
    try:
        raise KeyError("boom")
    except KeyError as error:
        log.exception("update_inventory raised KeyError", error, task=task)
    return [json.loads(line) for line in lines]


def selects(filter_: str, payload: dict[str, Any], severity: str) -> bool:
    """Our filters' jsonPayload clauses (`jsonPayload.a.b:*`, `severity>=ERROR`), applied to one entry."""
    for path in re.findall(r"jsonPayload\.([\w.]+):\*", filter_):
        value: Any = payload
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return False
    return not ("severity>=ERROR" in filter_ and severity not in ("ERROR", "CRITICAL", "ALERT", "EMERGENCY"))


def extracted(extractor: str, payload: dict[str, Any]) -> str | None:
    match = re.fullmatch(r'(?:REGEXP_)?EXTRACT\(jsonPayload\.([\w.]+)(?:, "(.*)")?\)', extractor)
    assert match, extractor
    value: Any = payload
    for key in match.group(1).split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if value is None or match.group(2) is None:
        return value
    found = re.search(match.group(2).replace("{{", "{").replace("}}", "}"), str(value))
    return found.group(1) if found else None


@stacks
def test_the_dead_letter_metric_counts_every_kind_once_with_its_kind_and_reason(stack: str) -> None:
    [metric] = [m for m in snapshot(stack).of_type(METRIC) if m.inputs["name"].endswith("/dead_letters")]
    entries = handler_entries()
    counted = [entry for entry in entries if selects(metric.inputs["filter"], entry, entry["severity"])]
    kinds = [extracted(metric.inputs["labelExtractors"]["kind"], entry) for entry in counted]
    assert sorted(kinds) == ["final_attempt_failed", "gave_up_unseen", "rejected"]
    reasons = {extracted(metric.inputs["labelExtractors"]["reason"], entry) for entry in counted}
    assert reasons == {"unknown action 'refund'"}
    assert f'resource.labels.service_name="{stack_file_config(stack)["tasklane:name"]}"' in metric.inputs["filter"]
    assert {label["key"] for label in metric.inputs["metricDescriptor"]["labels"]} == {"kind", "reason"}


@stacks
def test_the_error_metric_counts_exceptions_by_class_and_nothing_else(stack: str) -> None:
    [metric] = [m for m in snapshot(stack).of_type(METRIC) if m.inputs["name"].endswith("/handler_errors")]
    counted = [entry for entry in handler_entries() if selects(metric.inputs["filter"], entry, entry["severity"])]
    assert [extracted(metric.inputs["labelExtractors"]["error_class"], entry) for entry in counted] == ["KeyError"]


# -- The dashboard ----------------------------------------------------------------------------------------

@stacks
def test_the_dashboard_has_the_dashboard_apis_shape_and_reads_only_known_metrics(stack: str) -> None:
    snap = snapshot(stack)
    dashboard = json.loads(snap.one(DASHBOARD).inputs["dashboardJson"])
    layout = dashboard["mosaicLayout"]
    assert 1 <= layout["columns"] <= 48
    known = set(METRIC_TYPES) | user_metric_types(snap)
    titles = []
    for tile in layout["tiles"]:
        assert set(tile) == {"xPos", "yPos", "width", "height", "widget"}
        assert tile["xPos"] + tile["width"] <= layout["columns"]
        chart = tile["widget"]["xyChart"]
        titles.append(tile["widget"]["title"])
        for data_set in chart["dataSets"]:
            series = data_set["timeSeriesQuery"]["timeSeriesFilter"]
            [metric_type] = metric_types_in(series["filter"])
            assert metric_type in known, metric_type
            aggregation = series["aggregation"]
            assert aggregation["perSeriesAligner"] in ALIGNERS
            assert aggregation.get("crossSeriesReducer", "REDUCE_SUM") in REDUCERS
            assert int(aggregation["alignmentPeriod"].rstrip("s")) >= 60
    boxes = {(tile["xPos"], tile["yPos"]) for tile in layout["tiles"]}
    assert len(boxes) == len(layout["tiles"]), "no two tiles overlap"
    for needed in ("Queue depth", "against the queue's limit", "by response code", "Attempt delay",
                   "response class", "latency p50 / p95 / p99", "Instances", "CPU and memory",
                   "Dead letters by kind", "Handler errors by class"):
        assert any(needed in title for title in titles), needed
    assert snap.outputs["dashboard_url"].startswith("https://console.cloud.google.com/monitoring/dashboards/builder/")
    queue_name = snap.one("gcp:cloudtasks/queue:Queue").outputs["name"]
    assert f'resource.labels.queue_id=\\"{queue_name}\\"' in snap.one(DASHBOARD).inputs["dashboardJson"]


@stacks
def test_the_rate_chart_shows_the_queues_limit(stack: str) -> None:
    dashboard = json.loads(snapshot(stack).one(DASHBOARD).inputs["dashboardJson"])
    [chart] = [tile["widget"]["xyChart"] for tile in dashboard["mosaicLayout"]["tiles"]
               if "limit" in tile["widget"]["title"]]
    assert chart["thresholds"][0]["value"] == float(stack_file_config(stack)["tasklane:maxDispatchesPerSecond"])


# -- Alerts -----------------------------------------------------------------------------------------------

def alerts(snap: StackSnapshot) -> dict[str, dict[str, Any]]:
    return {alert.name.rsplit("-alert-", 1)[1]: alert.inputs for alert in snap.of_type(ALERT)}


@stacks
def test_each_alert_exists_with_its_threshold_and_says_what_to_do(stack: str) -> None:
    snap = snapshot(stack)
    found = alerts(snap)
    assert set(found) == {"dead-letter", "gave-up", "backlog", "handler-errors"}
    config = stack_file_config(stack)
    backlog = found["backlog"]["conditions"][0]["conditionThreshold"]
    assert backlog["thresholdValue"] == config["tasklane:backlogAlertDepth"]
    assert backlog["duration"] == f"{config['tasklane:backlogAlertMinutes'] * 60}s"
    assert metric_types_in(backlog["filter"]) == ["cloudtasks.googleapis.com/queue/depth"]
    errors = found["handler-errors"]["conditions"][0]["conditionThreshold"]
    assert errors["thresholdValue"] == 0.05 and errors["duration"] == "300s"
    assert 'metric.label.response_code_class="5xx"' in errors["filter"]
    assert "response_code_class" not in errors["denominatorFilter"], "the ratio is 5xx over all requests"
    for name in ("dead-letter", "gave-up"):
        condition = found[name]["conditions"][0]["conditionThreshold"]
        assert condition["thresholdValue"] == 0 and condition["comparison"] == "COMPARISON_GT"
        assert set(metric_types_in(condition["filter"])) <= user_metric_types(snap)
        assert condition["aggregations"][0]["alignmentPeriod"] == "300s", "any dead letter within 5 minutes"
    assert 'metric.label.kind="gave_up_unseen"' in found["gave-up"]["conditions"][0]["conditionThreshold"]["filter"]
    for alert in found.values():
        assert alert["documentation"]["mimeType"] == "text/markdown"
        assert "First:" in alert["documentation"]["content"]


def test_thresholds_and_channels_come_from_config() -> None:
    snap = snapshot("dev", (("tasklane:backlogAlertDepth", 42), ("tasklane:errorRatioAlert", "0.2"),
                            ("tasklane:alertEmails", ["oncall@example.com"]),
                            ("tasklane:alertChannels", ["projects/p/notificationChannels/123"])))
    found = alerts(snap)
    assert found["backlog"]["conditions"][0]["conditionThreshold"]["thresholdValue"] == 42
    assert found["handler-errors"]["conditions"][0]["conditionThreshold"]["thresholdValue"] == 0.2
    [channel] = snap.of_type(CHANNEL)
    assert (channel.inputs["type"], channel.inputs["labels"]) == ("email", {"email_address": "oncall@example.com"})
    for alert in found.values():
        # The created channel is named by its ID (the mocks give resource NAME the ID "NAME-id").
        assert alert["notificationChannels"] == ["projects/p/notificationChannels/123", f"{channel.name}-id"]


@stacks
def test_a_stack_without_channels_still_gets_every_alert(stack: str) -> None:
    for alert in alerts(snapshot(stack)).values():
        assert alert.get("notificationChannels", []) == []


@pytest.mark.parametrize("overrides, message", [
    ((("tasklane:alertEmails", ["not-an-email"]),), "tasklane:alertEmails[0] = 'not-an-email': is not an email"),
    ((("tasklane:alertChannels", ["123"]),), "projects/PROJECT/notificationChannels/ID"),
    ((("tasklane:errorRatioAlert", "5"),), "tasklane:errorRatioAlert = 5: must be a fraction"),
    ((("tasklane:backlogAlertMinutes", 0),), "tasklane:backlogAlertMinutes = 0: must be between 1 and 1440"),
])
def test_bad_alert_settings_are_refused(overrides: tuple[tuple[str, Any], ...], message: str) -> None:
    from infra.settings import SettingsError

    with pytest.raises(SettingsError, match=re.escape(message)):
        build_stack("dev", overrides=dict(overrides))
