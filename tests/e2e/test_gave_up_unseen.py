"""No task vanishes unseen, end to end with real components: a task whose every attempt is refused before any
action runs (here: a token for the wrong audience) is given up by the local Cloud Tasks, which publishes the
final failed attempt, in the shape Cloud Logging has it, to Google's Pub/Sub emulator; its push subscription
calls the handler's /task-operations route, which records a `gave_up_unseen` dead letter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from local.google_emulators import GoogleEmulator
from tests.e2e.conftest import MAX_ATTEMPTS, PARENT, Pipeline
from tests.helpers import wait_for

PROJECT = PARENT.split("/")[1]
TOPIC = f"projects/{PROJECT}/topics/final-failures"


def push_to(handler_url: str, name: str) -> None:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    existing = [topic.name for topic in publisher.list_topics(request={"project": f"projects/{PROJECT}"})]
    if TOPIC not in existing:
        publisher.create_topic(request={"name": TOPIC})
    subscriber.create_subscription(request={
        "name": f"projects/{PROJECT}/subscriptions/{name}", "topic": TOPIC,
        "push_config": {"push_endpoint": f"{handler_url}/task-operations"}})


def unseen_letters(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [entry["tasklane_dead_letter"] for entry in pipeline.log.entries()
            if entry.get("tasklane_dead_letter", {}).get("kind") == "gave_up_unseen"]


def test_a_task_refused_on_every_attempt_ends_as_a_gave_up_unseen_letter(
        pubsub_emulator: GoogleEmulator, make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(audience="https://not-the-handler.example.com", final_failures_topic=TOPIC)
    push_to(pipeline.handler_url, "refused-everywhere")
    task = pipeline.producer.enqueue("update_inventory", {"orderId": "never-reaches-the-action"})

    def given_up() -> bool:
        pipeline.clock.advance(1)
        return any(attempt["outcome"] == "gave_up" for attempt in pipeline.attempts())

    wait_for(given_up, timeout=30, message="the task to be given up")
    statuses = [attempt["status"] for attempt in pipeline.attempts()]
    assert statuses == [401] * MAX_ATTEMPTS, "refused by the token check every time: no action ran"
    assert pipeline.handled("inventory_updated") == []
    wait_for(lambda: unseen_letters(pipeline), timeout=30, message="the gave_up_unseen letter")
    [letter] = unseen_letters(pipeline)
    assert letter["task_name"] == task.task_name.rsplit("/", 1)[1] and letter["queue_name"] == "orders"
    assert letter["attempt"] == MAX_ATTEMPTS and letter["body_bytes"] == 0
    assert letter["details"]["last_status"] == "UNAUTHENTICATED"
    assert letter["details"]["dispatch_count"] == MAX_ATTEMPTS


def test_retried_and_successful_attempts_are_not_published(
        pubsub_emulator: GoogleEmulator, make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(final_failures_topic=TOPIC)
    push_to(pipeline.handler_url, "only-final-failures")
    pipeline.producer.enqueue("flaky_once", {"orderId": "fails-once"})
    pipeline.producer.enqueue("update_inventory", {"orderId": "fine"})

    def both_done() -> bool:
        pipeline.clock.advance(1)
        return {"fails-once"} <= set(pipeline.handled("flaky_done")) and pipeline.handled("inventory_updated")

    wait_for(both_done, timeout=30, message="both tasks to succeed")
    import time

    time.sleep(1.5)  # what would have been pushed has had time to arrive
    assert unseen_letters(pipeline) == []
