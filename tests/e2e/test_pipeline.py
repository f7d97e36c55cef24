"""Producer → local Cloud Tasks → handler, over real loopback sockets, with full token checks."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tasklane.producer import TaskSpec
from tests.e2e.conftest import Pipeline, free_port, wait_for


def test_each_task_is_handled_exactly_once_with_verified_tokens(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    results = pipeline.producer.enqueue_many([TaskSpec("update_inventory", {"orderId": f"o-{n}"})
                                              for n in range(40)])
    assert {r.status for r in results} == {"created"}
    wait_for(lambda: len(pipeline.handled("inventory_updated")) >= 40, message="every order")
    wait_for(pipeline.queue_empty, message="the queue to empty")
    assert sorted(pipeline.handled("inventory_updated")) == sorted(f"o-{n}" for n in range(40))
    assert {a["status"] for a in pipeline.attempts()} == {200}, "every token passed the handler's full check"


def test_a_token_for_another_audience_is_refused_by_the_handler(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(audience="https://some-other-service.run.app")
    pipeline.producer.enqueue("update_inventory", {"orderId": "wrong-aud"})

    def refused() -> bool:
        attempts = pipeline.attempts()
        if attempts and attempts[-1]["outcome"] == "retrying" and attempts[-1]["status"] != 401:
            pipeline.clock.advance(10)  # an attempt that met something else first (keys still loading): retry it
        return any(attempt["status"] == 401 for attempt in attempts)

    wait_for(refused, timeout=20, message="the 401")
    assert pipeline.handled("inventory_updated") == []


def test_a_transient_failure_is_retried_with_backoff_and_the_retry_headers(
        make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    pipeline.producer.enqueue("flaky_once", {"orderId": "flaky-1"})
    wait_for(lambda: [a for a in pipeline.attempts() if a["status"] == 503], message="the first, failed attempt")
    time.sleep(0.2)
    assert pipeline.handled("flaky_done") == [], "the retry waits for its backoff"
    pipeline.clock.advance(2)  # Retry-After: 2 on a 503 (longer than the 1 s min backoff)
    [done] = wait_for(lambda: pipeline.log.events("flaky_done"), message="the retry")
    assert (done["retry_count"], done["previous_response"]) == (1, 503)
    # The handler logs before it answers: wait for the emulator to have read the answer.
    wait_for(lambda: [a["status"] for a in pipeline.attempts()] == [503, 200], message="both attempts recorded")


def test_a_poison_task_is_not_retried_and_is_dead_lettered(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    name = pipeline.producer.enqueue("not_an_action", {"orderId": "poison-1"}).task_name
    wait_for(pipeline.queue_empty, message="the poison task to be acknowledged")
    pipeline.clock.advance(60)
    time.sleep(0.3)
    assert [a["status"] for a in pipeline.attempts()] == [200], "acknowledged once, never retried"
    [letter] = [e["tasklane_dead_letter"] for e in pipeline.log.entries() if "tasklane_dead_letter" in e]
    assert letter["kind"] == "rejected" and "unknown action 'not_an_action'" in letter["reason"]
    assert letter["task_name"] == name.rsplit("/", 1)[1]


def test_dedup_holds_from_producer_to_handler(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    first = pipeline.producer.enqueue("notify_warehouse", {"orderId": "d-1"}, dedup_key="order-d-1")
    second = pipeline.producer.enqueue("notify_warehouse", {"orderId": "d-1"}, dedup_key="order-d-1")
    assert second.already_enqueued and second.task_name == first.task_name
    wait_for(lambda: pipeline.handled("warehouse_notified"), message="the order")
    wait_for(pipeline.queue_empty)
    third = pipeline.producer.enqueue("notify_warehouse", {"orderId": "d-1"}, dedup_key="order-d-1")
    assert third.already_enqueued, "the name stays reserved after the task ran"
    time.sleep(0.2)
    assert pipeline.handled("warehouse_notified") == ["d-1"]


def test_a_scheduled_task_runs_at_its_time_on_the_emulators_clock(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    pipeline.producer.enqueue("update_inventory", {"orderId": "later-1"}, delay=600)
    pipeline.clock.advance(590)
    time.sleep(0.3)
    assert pipeline.handled("inventory_updated") == []
    pipeline.clock.advance(15)
    wait_for(lambda: pipeline.handled("inventory_updated") == ["later-1"], message="the scheduled task")


def test_the_queue_rate_limit_holds_end_to_end(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(rate=2)
    pipeline.producer.enqueue_many([TaskSpec("update_inventory", {"orderId": f"r-{n}"}) for n in range(6)])
    counts = []
    for _ in range(4):
        time.sleep(0.4)
        counts.append(len(pipeline.handled("inventory_updated")))
        pipeline.clock.advance(0.5)
    assert counts == [1, 2, 3, 4], "a burst of one, then one every half second"


def test_an_emulator_restart_in_the_middle_of_a_run_loses_nothing(make_pipeline: Callable[..., Pipeline],
                                                                 tmp_path: Path) -> None:
    state = str(tmp_path / "emulator.sqlite")
    ports = (free_port(), free_port())
    first = make_pipeline(state_file=state, rate=20, ports=ports)
    results = first.producer.enqueue_many([TaskSpec("update_inventory", {"orderId": f"s-{n}"})
                                           for n in range(60)])
    assert {r.status for r in results} == {"created"}
    first.clock.advance(0.5)
    wait_for(lambda: len(first.handled("inventory_updated")) >= 5, message="the run to start")
    first.emulator.stop_thread()  # stopped mid-run: most tasks are still queued

    second = make_pipeline(state_file=state, clock=first.clock, ports=ports)
    handled = lambda: first.handled("inventory_updated") + second.handled("inventory_updated")  # noqa: E731

    def all_handled_as_time_passes() -> bool:
        second.clock.advance(0.25)  # the restored queue keeps its 20/s limit: let time pass
        return set(handled()) == {f"s-{n}" for n in range(60)}

    wait_for(all_handled_as_time_passes, timeout=30, message="every order")
    assert len(handled()) == len(set(handled())) == 60, "each order handled once"
