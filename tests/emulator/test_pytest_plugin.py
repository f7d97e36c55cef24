"""The pytest plugin tasklane-emulator registers: the `cloud_tasks_emulator` fixture, as any project gets it."""

from __future__ import annotations

import os

import pytest
from google.cloud import tasks_v2

from tasklane.emulator.testing import RunningEmulator
from tests.emulator.conftest import Target


def finished(emulator: RunningEmulator, task: str, count: int) -> list[dict[str, object]] | None:
    """The task's attempts once `count` of them have finished (an attempt is listed from the moment it starts)."""
    attempts = emulator.attempts(task=task)
    done = [attempt for attempt in attempts if attempt["outcome"] != "in_flight"]
    return attempts if len(done) == count == len(attempts) else None


def test_the_fixture_names_its_addresses_and_points_clients_at_it(cloud_tasks_emulator: RunningEmulator) -> None:
    assert os.environ["CLOUD_TASKS_EMULATOR_HOST"] == cloud_tasks_emulator.grpc_address
    assert cloud_tasks_emulator.grpc_address.startswith("127.0.0.1:")
    assert cloud_tasks_emulator.http_url.startswith("http://127.0.0.1:")
    queue = cloud_tasks_emulator.queue("orders", rate_limits={"max_concurrent_dispatches": 3})
    assert queue == "projects/test-project/locations/us-central1/queues/orders"
    got = cloud_tasks_emulator.client().get_queue(name=queue)
    assert got.rate_limits.max_concurrent_dispatches == 3


def test_tasks_and_attempts_show_what_happened(cloud_tasks_emulator: RunningEmulator, target: Target) -> None:
    queue = cloud_tasks_emulator.queue()
    url = target.answer("/work", 200)
    created = cloud_tasks_emulator.client().create_task(parent=queue, task={"http_request": {"url": url}})
    [attempt] = cloud_tasks_emulator.wait_for(lambda: finished(cloud_tasks_emulator, created.name, 1),
                                              message="the task's attempt")
    assert attempt["status"] == 200 and attempt["outcome"] == "succeeded"
    assert cloud_tasks_emulator.attempts(queue=queue, outcome="gave_up") == []
    with pytest.raises(ValueError, match=r"outcome must be one of in_flight, succeeded, retrying, gave_up, gone"):
        cloud_tasks_emulator.attempts(outcome="failed")
    cloud_tasks_emulator.wait_for(lambda: not cloud_tasks_emulator.tasks(queue), message="the task to finish")


@pytest.mark.cloud_tasks_emulator(manual_clock=True)
def test_a_manual_clock_brings_retries_due_only_when_the_test_moves_time(cloud_tasks_emulator: RunningEmulator,
                                                                          target: Target) -> None:
    queue = cloud_tasks_emulator.queue(retry_config={"min_backoff": {"seconds": 30}, "max_backoff": {"seconds": 30}})
    url = target.answer("/flaky", 503, 200)
    created = cloud_tasks_emulator.client().create_task(parent=queue, task={"http_request": {"url": url}})
    cloud_tasks_emulator.wait_for(lambda: finished(cloud_tasks_emulator, created.name, 1), message="attempt 1")
    [task] = cloud_tasks_emulator.tasks(queue)
    assert task.dispatch_count == 1 and task.view == tasks_v2.Task.View.FULL

    cloud_tasks_emulator.advance(29)
    assert len(cloud_tasks_emulator.attempts(task=created.name)) == 1, "the backoff has not passed yet"
    cloud_tasks_emulator.advance(1)
    attempts = cloud_tasks_emulator.wait_for(lambda: finished(cloud_tasks_emulator, created.name, 2),
                                             message="attempt 2")
    assert [attempt["status"] for attempt in attempts] == [503, 200]


def test_moving_the_system_clock_is_refused_with_what_to_do(cloud_tasks_emulator: RunningEmulator) -> None:
    with pytest.raises(RuntimeError, match=r"manual_clock=True"):
        cloud_tasks_emulator.advance(1)
