"""Task-operation records, as Cloud Tasks writes them to Cloud Logging when a queue's sampling ratio is above 0.

Each finished attempt gives one LogEntry (JSON, as Cloud Logging exports it) with a
`type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog` payload holding `task` and an
`attemptResponseLog`. Google publishes no schema for it; the fields are those seen in real entries
(README, "Tasks given up unseen"): `status` a gRPC code name, counts as int64 strings, `retryTime` only when
Cloud Tasks will try again, `targetAddress` as "METHOD URL".

Where the records go: a JSON-lines file (`--task-operations-log`), and, like the deployed Log Router sink,
the final failed attempts to a Pub/Sub topic (`--final-failures-topic`, through Google's Pub/Sub emulator).
`is_final_failure` is the same rule as the sink's filter in infra/unseen_failures.py.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from google.rpc import code_pb2

log = logging.getLogger("emulator.task_operations")

LOG_ID = "cloudtasks.googleapis.com%2Ftask_operations_log"
ACTIVITY_LOG_TYPE = "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog"


def _rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class AttemptResponse:
    """What one finished attempt leaves in the log."""

    task_name: str
    rpc_code: int
    dispatch_count: int
    response_count: int
    max_attempts: int
    schedule_time: float
    dispatch_time: float
    finished: float
    retry_time: float | None
    target: str
    """"METHOD URL"."""

    def entry(self) -> dict[str, Any]:
        """The LogEntry, as Cloud Logging exports it (what a Log Router sink publishes to Pub/Sub)."""
        project, location, queue_id = (self.task_name.split("/")[i] for i in (1, 3, 5))
        status = code_pb2.Code.Name(self.rpc_code)
        attempt: dict[str, Any] = {
            "status": status,
            "dispatchCount": str(self.dispatch_count),
            "responseCount": str(self.response_count),
            "maxAttempts": self.max_attempts,
            "scheduleTime": _rfc3339(self.schedule_time),
            "attemptDuration": f"{max(0.0, self.finished - self.dispatch_time):.6f}s",
            "targetAddress": self.target,
            "targetType": "HTTP",
        }
        if self.retry_time is not None:
            attempt["retryTime"] = _rfc3339(self.retry_time)
        return {
            "logName": f"projects/{project}/logs/{LOG_ID}",
            "resource": {"type": "cloud_tasks_queue", "labels": {
                "project_id": project, "location": location, "queue_id": queue_id, "target_type": "HTTP"}},
            "timestamp": _rfc3339(self.finished),
            "severity": "INFO" if status == "OK" else "ERROR",
            "jsonPayload": {"@type": ACTIVITY_LOG_TYPE, "task": self.task_name, "attemptResponseLog": attempt},
        }


def is_final_failure(entry: dict[str, Any]) -> bool:
    """The Log Router sink's filter (infra/unseen_failures.py), in Python: a failed attempt with no retry."""
    attempt = entry.get("jsonPayload", {}).get("attemptResponseLog")
    return (entry.get("resource", {}).get("type") == "cloud_tasks_queue" and isinstance(attempt, dict)
            and attempt.get("status") != "OK" and "retryTime" not in attempt)


class Destination(Protocol):
    def write(self, entry: dict[str, Any]) -> None: ...


class JsonLinesFile:
    """Every record, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def write(self, entry: dict[str, Any]) -> None:
        self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class FinalFailuresTopic:
    """Final failed attempts to a Pub/Sub topic, as the deployed sink does; PUBSUB_EMULATOR_HOST points the
    client at Google's Pub/Sub emulator. Publishing is asynchronous (the client batches in its own thread)."""

    def __init__(self, topic: str, publisher: Any | None = None) -> None:
        if publisher is None:
            from google.cloud import pubsub_v1  # type: ignore[attr-defined]

            publisher = pubsub_v1.PublisherClient()
        self.topic, self._publisher = topic, publisher

    def write(self, entry: dict[str, Any]) -> None:
        if is_final_failure(entry):
            future = self._publisher.publish(self.topic, json.dumps(entry).encode())
            future.add_done_callback(self._published)

    def _published(self, future: Any) -> None:
        error = future.exception()
        if error is not None:
            log.error("could not publish a final failure to %s: %s", self.topic, error)


class TaskOperationsLog:
    """Writes each finished attempt of a queue that logs (sampling ratio > 0) to every destination."""

    def __init__(self, destinations: list[Destination], sample: Callable[[], float] = random.random) -> None:
        self.destinations, self._sample = destinations, sample

    def attempt_finished(self, response: AttemptResponse, sampling_ratio: float) -> None:
        if not self.destinations or sampling_ratio <= 0 or self._sample() >= sampling_ratio:
            return
        entry = response.entry()
        for destination in self.destinations:
            try:
                destination.write(entry)
            except Exception as error:  # noqa: BLE001 - logging must never stop dispatch
                log.error("could not write a task-operation record: %s", error)
