"""Task headers parsed once into a typed context; log entries in Cloud Logging's format; settings from env."""

from __future__ import annotations

import json
import logging

import pytest

from tasklane.core import environment
from tasklane.core.logs import CloudLoggingFormatter, StructuredLog, trace_fields
from tasklane.core.task_context import TaskContext
from tasklane.handler.config import GOOGLE_CERTS_URL, GOOGLE_ISSUERS, ConfigError, HandlerConfig, TokenCheck
from tests.handler.conftest import RecordedLog, task_headers


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def test_cloud_tasks_headers_become_a_typed_context() -> None:
    headers = lower(task_headers("t-7", retry_count=3, **{"X-CloudTasks-TaskExecutionCount": "1",
                                                        "X-CloudTasks-TaskPreviousResponse": "500",
                                                        "X-CloudTasks-TaskRetryReason": "Internal Server Error"}))
    task = TaskContext.from_headers(headers)
    assert task == TaskContext(queue_name="orders", task_name="t-7", retry_count=3, execution_count=1,
                               eta=1700000000.123456, previous_response=500, retry_reason="Internal Server Error")
    assert task.from_cloud_tasks and task.attempt == 4


def test_missing_or_garbled_headers_are_tolerated() -> None:
    assert TaskContext.from_headers({}) == TaskContext()
    assert not TaskContext.from_headers({}).from_cloud_tasks
    garbled = TaskContext.from_headers({"x-cloudtasks-taskretrycount": "many", "x-cloudtasks-tasketa": "soon",
                                        "x-cloudtasks-taskpreviousresponse": "?"})
    assert (garbled.retry_count, garbled.eta, garbled.previous_response) == (0, None, None)


@pytest.mark.parametrize("retry_count, max_attempts, final", [
    (0, 1, True), (0, 3, False), (1, 3, False), (2, 3, True), (7, 3, True), (99, -1, False)])
def test_final_attempt_is_the_max_attempts_th(retry_count: int, max_attempts: int, final: bool) -> None:
    task = TaskContext(task_name="t", retry_count=retry_count)
    assert task.is_final_attempt(max_attempts) is final


def test_a_direct_call_is_never_a_final_attempt() -> None:
    assert not TaskContext(retry_count=10).is_final_attempt(1)


def test_entries_carry_severity_message_trace_and_task_labels() -> None:
    log = RecordedLog()
    task = TaskContext(queue_name="orders", task_name="t-9", retry_count=2)
    StructuredLog(project_id="p-1", writer=log.write).emit(
        "WARNING", "slow", task=task, trace_header="105445aa7843bc8bf206b12000100000/10;o=1", order_id="o")
    [line] = log.lines
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    entry = json.loads(line)
    assert entry == {
        "severity": "WARNING", "message": "slow", "order_id": "o",
        "logging.googleapis.com/trace": "projects/p-1/traces/105445aa7843bc8bf206b12000100000",
        "logging.googleapis.com/spanId": "000000000000000a",
        "logging.googleapis.com/trace_sampled": True,
        "logging.googleapis.com/labels": {"task_name": "t-9", "queue_name": "orders", "retry_count": "2"},
    }


TRACE = "105445aa7843bc8bf206b12000100000"


@pytest.mark.parametrize("header", ["", "/", "no-slash-at-all;o=1", f"{TRACE}/²", f"{TRACE}/{'9' * 5000}",
                                    f"{TRACE}/{2**64}", f"{TRACE}/0", f"{TRACE}/-5", "x" * 32 + "/10", "a/10",
                                    f"{TRACE}0/10", f"{TRACE}/١٢٣"])
def test_odd_trace_headers_do_not_break_logging(header: str) -> None:
    """The header is the caller's: a span that is not a decimal 64-bit ID is left out, and a trace ID that is not
    32 hex digits leaves out the trace; every entry is still written."""
    fields = trace_fields(header, "p")
    assert all(isinstance(value, str | bool) for value in fields.values())
    assert "logging.googleapis.com/spanId" not in fields
    log = RecordedLog()
    StructuredLog(project_id="p", writer=log.write).emit("INFO", "still logged", trace_header=header)
    assert json.loads(log.lines[0])["message"] == "still logged"


def test_a_well_formed_trace_header_gives_trace_and_span() -> None:
    assert trace_fields(f"{TRACE}/{2**64 - 1};o=0", "p") == {
        "logging.googleapis.com/trace": f"projects/p/traces/{TRACE}",
        "logging.googleapis.com/spanId": "ffffffffffffffff", "logging.googleapis.com/trace_sampled": False}


def test_library_records_are_json_lines_too() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "Started %s", ("server",), None)
    assert json.loads(CloudLoggingFormatter().format(record)) == {
        "severity": "INFO", "message": "Started server", "logger": "uvicorn.error"}


def test_settings_come_from_the_environment_the_stack_sets() -> None:
    config = HandlerConfig.from_environment({
        environment.QUEUE_PATH: "projects/p-1/locations/us-central1/queues/q",
        environment.INVOKER_SERVICE_ACCOUNT: "inv@p-1.iam.gserviceaccount.com",
        environment.TASK_AUDIENCE: "https://svc", environment.MAX_ATTEMPTS: "5",
        environment.TOKEN_CHECK: "claims"})
    assert (config.max_attempts, config.token_check, config.project_id) == (5, TokenCheck.CLAIMS, "p-1")
    assert (config.token_issuers, config.token_certs_url) == (GOOGLE_ISSUERS, GOOGLE_CERTS_URL)


def test_local_runs_point_the_token_check_at_the_emulator() -> None:
    config = HandlerConfig.from_environment({
        environment.INVOKER_SERVICE_ACCOUNT: "inv@p", environment.TASK_AUDIENCE: "http://127.0.0.1:8080",
        environment.TOKEN_CHECK: "full", environment.TOKEN_ISSUERS: "http://127.0.0.1:8124, other",
        environment.TOKEN_CERTS_URL: "http://127.0.0.1:8124/certs"})
    assert config.token_issuers == ("http://127.0.0.1:8124", "other")
    assert config.token_certs_url == "http://127.0.0.1:8124/certs"


def test_without_settings_a_direct_local_run_works() -> None:
    config = HandlerConfig.from_environment({})
    assert (config.token_check, config.max_attempts) == (TokenCheck.OFF, -1)


def test_bad_settings_are_refused_at_start_naming_each_variable() -> None:
    with pytest.raises(ConfigError) as refusal:
        HandlerConfig.from_environment({environment.MAX_ATTEMPTS: "0", environment.TOKEN_CHECK: "strict"})
    message = str(refusal.value)
    assert "TASKLANE_MAX_ATTEMPTS='0': must be -1 (unlimited) or at least 1" in message
    assert "TASKLANE_TOKEN_CHECK='strict': must be one of off, claims, full" in message
    with pytest.raises(ConfigError) as refusal:
        HandlerConfig.from_environment({environment.PUSH_TOKEN_CHECK: "loose", environment.TRACE_EXPORTER: "jaeger"})
    message = str(refusal.value)
    assert "TASKLANE_PUSH_TOKEN_CHECK='loose': must be one of off, claims, full" in message
    assert "TASKLANE_TRACE_EXPORTER='jaeger': must be one of off, log, cloud-trace" in message
    # Pushes are checked as strictly as tasks unless the environment says otherwise.
    config = HandlerConfig.from_environment({environment.TOKEN_CHECK: "claims", environment.TASK_AUDIENCE: "a",
                                             environment.INVOKER_SERVICE_ACCOUNT: "inv@p"})
    assert config.push_token_check is TokenCheck.CLAIMS
    with pytest.raises(ConfigError, match="TASKLANE_TASK_AUDIENCE is required when TASKLANE_TOKEN_CHECK=full"):
        HandlerConfig.from_environment({environment.TOKEN_CHECK: "full",
                                        environment.INVOKER_SERVICE_ACCOUNT: "inv@p"})


def test_demo_actions_are_off_unless_asked_for() -> None:
    assert HandlerConfig.from_environment({}).demo_actions is False
    assert HandlerConfig.from_environment({environment.DEMO_ACTIONS: "true"}).demo_actions is True
    with pytest.raises(ConfigError, match="TASKLANE_DEMO_ACTIONS='maybe': must be true or false"):
        HandlerConfig.from_environment({environment.DEMO_ACTIONS: "maybe"})
