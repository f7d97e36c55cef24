"""When a failed task is tried again, and when Cloud Tasks gives up on it.

Source: ../shared/reference/cloud-tasks-behaviour.md §2.3 (both limits must be spent), §2.5 and §2.7
(the backoff formula, which reproduces the documented 10, 20, 40, 80, 160, 240, 300 s example), §1.5
(429 and 503 honour Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MOST_DOUBLINGS = 1000
"""Doublings counted, at most. maxDoublings has no upper limit, but 2.0 ** 1024 is past a float: the 1025th failure
raised OverflowError and left its task in flight for good. Any min_backoff above zero (1 ns at least) doubled 1,000
times is far past the longest max_backoff, so the interval is the same."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    """-1 for unlimited."""
    max_retry_duration: float
    """Seconds since the first attempt; 0 for no limit."""
    min_backoff: float
    max_backoff: float
    max_doublings: int

    def interval(self, failures: int) -> float:
        """Seconds from the `failures`-th failed attempt to the next attempt (failures >= 1)."""
        doublings = min(failures - 1, self.max_doublings, MOST_DOUBLINGS)
        linear_steps = max(1, failures - self.max_doublings)
        return float(min(self.max_backoff, self.min_backoff * 2.0 ** doublings * linear_steps))

    def gives_up(self, attempts: int, first_attempt: float, now: float) -> bool:
        """Whether a task that has failed `attempts` times is dropped: only when both limits are spent."""
        if self.max_attempts == -1 and self.max_retry_duration == 0:
            return False
        attempts_spent = self.max_attempts == -1 or attempts >= self.max_attempts
        duration_spent = self.max_retry_duration == 0 or now - first_attempt >= self.max_retry_duration
        return attempts_spent and duration_spent

    def next_attempt(self, failures: int, failed_at: float, status: int, retry_after: float | None) -> float:
        delay = self.interval(failures)
        if status in (429, 503) and retry_after is not None:
            delay = max(delay, retry_after)
        return failed_at + delay


def policy_of(queue: Any) -> RetryPolicy:
    retry = queue.retry_config

    def seconds(duration: Any) -> float:
        return float(duration.seconds + duration.nanos / 1e9)

    return RetryPolicy(max_attempts=retry.max_attempts, max_retry_duration=seconds(retry.max_retry_duration),
                       min_backoff=seconds(retry.min_backoff), max_backoff=seconds(retry.max_backoff),
                       max_doublings=retry.max_doublings)
