"""The retry interval (§2.5, §2.7) at its edges: far past maxDoublings' usual range."""

from __future__ import annotations

import pytest

from tasklane.core.retry import RetryPolicy


def policy(**overrides: float) -> RetryPolicy:
    values = {"max_attempts": -1, "max_retry_duration": 0.0, "min_backoff": 0.1, "max_backoff": 3600.0,
              "max_doublings": 16}
    values.update(overrides)
    return RetryPolicy(**values)  # type: ignore[arg-type]


def test_the_documented_example_still_holds() -> None:
    example = policy(min_backoff=10, max_backoff=300, max_doublings=3)
    assert [example.interval(failures) for failures in range(1, 8)] == [10, 20, 40, 80, 160, 240, 300]


@pytest.mark.parametrize("failures", [1024, 1025, 1026, 5000, 100_000])
def test_a_huge_max_doublings_reaches_max_backoff_rather_than_overflowing(failures: int) -> None:
    """2 ** 1024 is past a float; the 1025th failure used to raise OverflowError, leaving the task in flight."""
    assert policy(max_doublings=1_000_000).interval(failures) == 3600.0
    assert policy(max_doublings=1_000_000, min_backoff=1e-9, max_backoff=3e11).interval(failures) == 3e11
    assert policy(max_doublings=1_000_000, min_backoff=0.0, max_backoff=0.0).interval(failures) == 0.0


def test_linear_steps_after_the_doublings_stay_finite() -> None:
    assert policy(max_doublings=1020, min_backoff=1.0, max_backoff=1e9).interval(50_000) == 1e9
