"""Producer → emulator → handler: a task that can never succeed always ends as a dead letter.

Whatever its body (bytes no JSON decoder accepts, nesting deep enough to exhaust a recursive decoder)
and however it fails (a poison body is acknowledged at once; an action that never succeeds is retried
until the queue's max_attempts and kept on the final attempt), the task ends in the dead-letter log,
its body intact, and the queue is empty. Nothing vanishes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tasklane.producer import TaskSpec
from tests.e2e.conftest import MAX_ATTEMPTS, QUEUE, Pipeline, emulator_client, wait_for

HOSTILE_BODIES = {
    "invalid-utf8-in-a-string": b'{"orderId": "\xff\xfe", "action": "update_inventory"}',
    "utf8-surrogate": b'{"orderId": "\xed\xa0\x80", "action": "update_inventory"}',
    "nested-1000-deep": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "nested-50000-deep-in-a-field": (b'{"orderId": "o", "action": "update_inventory", "x": '
                                     + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    "nan": b'{"orderId": NaN, "action": "update_inventory"}',
    "garbage": bytes(range(256)),
    "empty": b"",
}


def test_hostile_bodies_are_acknowledged_once_and_dead_lettered_whole(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    client = emulator_client(pipeline.emulator)
    names = {}
    for task_id, body in HOSTILE_BODIES.items():
        task = pipeline.producer.build_task(TaskSpec("update_inventory", {"orderId": task_id}, task_id=task_id))
        task["http_request"]["body"] = body  # as another producer, or a bug, might send it
        names[client.create_task(parent=QUEUE, task=task).name.rsplit("/", 1)[1]] = body
    wait_for(lambda: len(pipeline.dead_letters()) >= len(names), timeout=20, message="every dead letter")
    wait_for(pipeline.queue_empty, message="the queue to empty")
    letters = {letter["task_name"]: letter for letter in pipeline.dead_letters()}
    assert set(letters) == set(names)
    for name, body in names.items():
        assert letters[name]["kind"] == "rejected", name
        assert letters[name]["body"] == body, name
    assert [a["status"] for a in pipeline.attempts()] == [200] * len(names), "each acknowledged once"


@pytest.mark.parametrize("action, status", [("always_busy", 503), ("always_crash", 500)])
def test_a_task_that_always_fails_is_retried_to_the_last_attempt_and_kept(
        make_pipeline: Callable[..., Pipeline], action: str, status: int) -> None:
    pipeline = make_pipeline()
    name = pipeline.producer.enqueue(action, {"orderId": f"{action}-1"}).task_name.rsplit("/", 1)[1]

    def kept_as_time_passes() -> bool:
        pipeline.clock.advance(1)  # through the queue's 1 s..10 s backoff
        return bool(pipeline.dead_letters()) and pipeline.queue_empty()

    wait_for(kept_as_time_passes, timeout=30, message="the final attempt")
    [letter] = pipeline.dead_letters()
    assert (letter["kind"], letter["task_name"], letter["attempt"]) == ("final_attempt_failed", name, MAX_ATTEMPTS)
    assert f"{action}-1" in letter["body"].decode()
    assert [a["status"] for a in pipeline.attempts()] == [status] * MAX_ATTEMPTS
