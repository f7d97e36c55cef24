"""The emulator writes task-operation records like Cloud Tasks: only for queues that log, one per finished
attempt, with retryTime only when the task will be tried again."""

from __future__ import annotations

import json
from pathlib import Path

from infra.unseen_failures import final_failure_query
from tasklane.emulator.task_operations_log import AttemptResponse, TaskOperationsLog, is_final_failure

TASK = "projects/p-123456/locations/us-central1/queues/orders/tasks/t-1"


def response(retry_time: float | None, code: int = 7) -> AttemptResponse:
    return AttemptResponse(task_name=TASK, rpc_code=code, dispatch_count=3, response_count=3, max_attempts=3,
                           schedule_time=10.0, dispatch_time=11.0, finished=11.25, retry_time=retry_time,
                           target="POST https://svc.example.com/process-order")


def test_a_record_has_the_shape_cloud_logging_exports() -> None:
    entry = response(None).entry()
    assert entry["logName"] == "projects/p-123456/logs/cloudtasks.googleapis.com%2Ftask_operations_log"
    assert entry["resource"] == {"type": "cloud_tasks_queue", "labels": {
        "project_id": "p-123456", "location": "us-central1", "queue_id": "orders", "target_type": "HTTP"}}
    payload = entry["jsonPayload"]
    assert payload["@type"] == "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog"
    assert payload["task"] == TASK
    assert payload["attemptResponseLog"] == {
        "status": "PERMISSION_DENIED", "dispatchCount": "3", "responseCount": "3", "maxAttempts": 3,
        "scheduleTime": "1970-01-01T00:00:10Z", "attemptDuration": "0.250000s",
        "targetAddress": "POST https://svc.example.com/process-order", "targetType": "HTTP"}
    assert entry["severity"] == "ERROR"
    assert response(20.0).entry()["jsonPayload"]["attemptResponseLog"]["retryTime"] == "1970-01-01T00:00:20Z"


def test_the_final_failure_rule_is_the_log_sinks_filter() -> None:
    """The Python rule and the Logging query test the same fields and values (Cloud Logging's query language
    has no local evaluator, so the query's clauses are checked one by one against the rule's)."""
    assert is_final_failure(response(None).entry())
    assert not is_final_failure(response(20.0).entry())
    assert not is_final_failure(response(None, code=0).entry())
    query = final_failure_query("p-123456", "orders")
    entry = response(None).entry()
    assert f'logName="{entry["logName"]}"' in query
    assert f'resource.type="{entry["resource"]["type"]}"' in query
    assert f'resource.labels.queue_id="{entry["resource"]["labels"]["queue_id"]}"' in query
    assert 'jsonPayload.attemptResponseLog.status!="OK"' in query
    assert "NOT jsonPayload.attemptResponseLog.retryTime:*" in query


def test_only_queues_that_log_are_written_and_sampled_by_their_ratio(tmp_path: Path) -> None:
    from tasklane.emulator.task_operations_log import JsonLinesFile

    path = tmp_path / "ops.jsonl"
    file = JsonLinesFile(path)
    samples = iter([0.05, 0.5, 0.95])
    log = TaskOperationsLog([file], sample=lambda: next(samples))
    log.attempt_finished(response(None), sampling_ratio=0.0)  # not logged at all, no sample drawn
    log.attempt_finished(response(None), sampling_ratio=0.1)  # 0.05 < 0.1: logged
    log.attempt_finished(response(None), sampling_ratio=0.1)  # 0.5: not
    log.attempt_finished(response(20.0), sampling_ratio=1.0)  # 0.95 < 1.0: logged
    file.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [is_final_failure(line) for line in lines] == [True, False]


def test_a_failing_destination_never_stops_dispatch(tmp_path: Path) -> None:
    class Broken:
        def write(self, entry: dict[str, object]) -> None:
            raise OSError("disk full")

    written: list[dict[str, object]] = []

    class Kept:
        def write(self, entry: dict[str, object]) -> None:
            written.append(entry)

    TaskOperationsLog([Broken(), Kept()], sample=lambda: 0.0).attempt_finished(response(None), 1.0)
    assert len(written) == 1
