"""What Cloud Tasks says about the attempt being delivered, from its X-CloudTasks-* headers.

Semantics (../shared/reference/cloud-tasks-behaviour.md §7): RetryCount counts every earlier attempt
(0 on the first); ExecutionCount counts earlier attempts that got a non-5xx answer; ETA is the schedule
time in seconds since the epoch; PreviousResponse and RetryReason come only on retries. The headers are
informational: identity comes from the token, never from these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

QUEUE_NAME = "x-cloudtasks-queuename"
TASK_NAME = "x-cloudtasks-taskname"
RETRY_COUNT = "x-cloudtasks-taskretrycount"
EXECUTION_COUNT = "x-cloudtasks-taskexecutioncount"
ETA = "x-cloudtasks-tasketa"
PREVIOUS_RESPONSE = "x-cloudtasks-taskpreviousresponse"
RETRY_REASON = "x-cloudtasks-taskretryreason"


def _count(value: str | None) -> int:
    try:
        return max(0, int(value)) if value is not None else 0
    except ValueError:
        return 0


def _optional_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _optional_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class TaskContext:
    queue_name: str | None = None
    task_name: str | None = None
    retry_count: int = 0
    execution_count: int = 0
    eta: float | None = None
    """Schedule time of this attempt, seconds since the Unix epoch."""
    previous_response: int | None = None
    retry_reason: str | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> TaskContext:
        """Parse the headers (names in lower case, as ASGI gives them); missing or garbled ones are tolerated."""
        return cls(
            queue_name=headers.get(QUEUE_NAME) or None,
            task_name=headers.get(TASK_NAME) or None,
            retry_count=_count(headers.get(RETRY_COUNT)),
            execution_count=_count(headers.get(EXECUTION_COUNT)),
            eta=_optional_float(headers.get(ETA)),
            previous_response=_optional_int(headers.get(PREVIOUS_RESPONSE)),
            retry_reason=headers.get(RETRY_REASON) or None,
        )

    @property
    def from_cloud_tasks(self) -> bool:
        """Whether the request came through Cloud Tasks (which always names the task), not a direct call."""
        return self.task_name is not None

    @property
    def attempt(self) -> int:
        """1 for the first attempt."""
        return self.retry_count + 1

    def is_final_attempt(self, max_attempts: int) -> bool:
        """Whether Cloud Tasks will give up if this attempt fails (never, with unlimited attempts)."""
        return self.from_cloud_tasks and max_attempts != -1 and self.attempt >= max_attempts
