"""How the handler answers, given that Cloud Tasks retries every non-2xx answer, 4xx included.

Source: ../shared/reference/cloud-tasks-behaviour.md §1.1-1.2 (success is 2xx only; 4xx are retried),
§2.1 (max_attempts counts the first attempt), §7.4 (RetryCount counts every earlier attempt).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from handler.order_actions import service_actions
from handler.orders import OrderRequest
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.handler.actions import ActionLog, ActionRegistry, RetryableError
from tasklane.handler.app import create_app
from tasklane.handler.config import MAX_BODY_BYTES
from tasklane.handler.idempotency import Claim, InProcessIdempotencyStore
from tests.handler.conftest import HandlerUnderTest, RecordedLog, RecordingSink, make_config, task_headers

VALID = {"orderId": "order-42", "action": "update_inventory"}

POISON: dict[str, tuple[bytes, str, int]] = {
    # name: (body, fragment of the reason, status for a direct call)
    "not JSON": (b"order 42 please", "body is not JSON", 400),
    "JSON but not an object": (b"[1, 2]", "body is not a JSON object: Expected `object`, got `array`", 400),
    "no action": (b'{"orderId": "o"}', "missing required field `action`; /process-order takes `action` (one of "
                  + ", ".join(service_actions().names), 400),
    "missing orderId": (b'{"action": "update_inventory"}', "missing required field `orderId`", 400),
    "orderId not a string": (b'{"orderId": 42, "action": "update_inventory"}',
                             "Expected `str`, got `int` - at `$.orderId`", 400),
    "empty orderId": (b'{"orderId": "", "action": "update_inventory"}', "length >= 1 - at `$.orderId`", 400),
    "malformed email": (b'{"orderId": "o", "action": "send_confirmation", "customerEmail": "nobody"}',
                        "at `$.customerEmail`", 400),
    "unknown action": (b'{"orderId": "o", "action": "refund"}',
                       f"unknown action 'refund'; known actions: {', '.join(service_actions().names)}", 400),
    "unknown fields": (b'{"orderId": "o", "action": "update_inventory", "quantity": 2, "sku": "S"}',
                       "unknown fields `quantity`, `sku`; OrderRequest takes orderId (required), customerEmail", 400),
    "action refuses the order": (b'{"orderId": "o", "action": "send_confirmation"}',
                                 "send_confirmation: send_confirmation needs customerEmail", 400),
    "body over the task size limit": (b'{"orderId": "' + b"x" * MAX_BODY_BYTES + b'"}',
                                      f"larger than the {MAX_BODY_BYTES} bytes", 413),
}


def recording_actions(behaviour: Callable[[int], None]) -> tuple[ActionRegistry, list[str]]:
    """A registry with one action `work` that records each run and then does `behaviour(run number)`."""
    registry = ActionRegistry()
    runs: list[str] = []

    @registry.register("work")
    async def work(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        runs.append(order.order_id)
        behaviour(len(runs))

    return registry, runs


def post(handler: HandlerUnderTest, body: Any, headers: dict[str, str] | None = None) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return handler.client.post("/process-order", content=content,
                               headers={"Content-Type": "application/json", **(headers or {})})


def test_a_valid_task_runs_its_action_and_answers_200(handler: HandlerUnderTest) -> None:
    response = post(handler, VALID, task_headers())
    assert response.status_code == 200
    assert response.json() == {"status": "done"}
    [event] = [e for e in handler.log.entries if e.get("event") == "inventory_updated"]
    assert event["order_id"] == "order-42"
    assert handler.sink.letters == []


@pytest.mark.parametrize("body, reason, direct_status", POISON.values(), ids=POISON.keys())
def test_a_task_that_can_never_succeed_is_acknowledged_logged_and_dead_lettered(
        handler: HandlerUnderTest, body: bytes, reason: str, direct_status: int) -> None:
    response = post(handler, body, task_headers("poison-1", Authorization="Bearer secret-token"))
    assert response.status_code == 200, "a 4xx would be retried up to max_attempts times"
    assert response.json()["status"] == "rejected"
    assert reason in response.json()["reason"]

    [error] = [e for e in handler.log.with_severity("ERROR") if e["message"].startswith("rejected task")]
    assert "poison-1" in error["message"] and reason in error["message"]
    assert error["logging.googleapis.com/labels"]["task_name"] == "poison-1"

    [letter] = handler.sink.letters
    assert letter.kind == "rejected"
    assert reason in letter.reason
    assert letter.task.task_name == "poison-1"
    assert letter.headers["x-cloudtasks-taskname"] == "poison-1"
    assert "authorization" not in {name.lower() for name in letter.headers}, "credentials are never kept"
    assert letter.body == body[:MAX_BODY_BYTES]


@pytest.mark.parametrize("body, reason, direct_status", POISON.values(), ids=POISON.keys())
def test_the_same_body_sent_directly_gets_a_4xx_with_the_same_reason(
        handler: HandlerUnderTest, body: bytes, reason: str, direct_status: int) -> None:
    response = post(handler, body)
    assert response.status_code == direct_status
    assert response.json()["status"] == "rejected"
    assert reason in response.json()["reason"]
    assert handler.sink.letters == []


def test_a_transient_failure_answers_503_with_retry_after(build_handler: Callable[..., HandlerUnderTest]) -> None:
    def fail(run: int) -> None:
        raise RetryableError("inventory service is busy", retry_after=2.5)

    actions, runs = recording_actions(fail)
    handler = build_handler(actions=actions)
    response = post(handler, {"orderId": "o", "action": "work"}, task_headers(retry_count=0))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"
    assert response.json() == {"status": "retry", "reason": "inventory service is busy"}
    assert handler.sink.letters == [], "not the final attempt: Cloud Tasks will retry"


def test_a_transient_failure_without_a_known_delay_has_no_retry_after(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    def fail(run: int) -> None:
        raise RetryableError("try later")

    actions, _ = recording_actions(fail)
    response = post(build_handler(actions=actions), {"orderId": "o", "action": "work"}, task_headers())
    assert response.status_code == 503
    assert "Retry-After" not in response.headers


def test_an_unexpected_exception_answers_500_logs_the_traceback_and_the_process_keeps_serving(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    def crash(run: int) -> None:
        if run == 1:
            raise KeyError("warehouse")

    actions, runs = recording_actions(crash)
    handler = build_handler(actions=actions)
    response = post(handler, {"orderId": "o", "action": "work"}, task_headers("t-crash"))
    assert response.status_code == 500
    [error] = [e for e in handler.log.with_severity("ERROR") if "stack_trace" in e]
    assert "Traceback" in error["stack_trace"] and "KeyError: 'warehouse'" in error["stack_trace"]
    assert error["logging.googleapis.com/labels"]["task_name"] == "t-crash"
    assert "Traceback" in error["message"], "Error Reporting reads the trace from the message"

    again = post(handler, {"orderId": "o", "action": "work"}, task_headers("t-crash", retry_count=1))
    assert again.status_code == 200
    assert runs == ["o", "o"]


@pytest.mark.parametrize("failure, status", [(RetryableError("busy"), 503), (RuntimeError("bug"), 500)])
def test_a_failure_on_the_final_attempt_is_dead_lettered_before_answering(
        build_handler: Callable[..., HandlerUnderTest], failure: Exception, status: int) -> None:
    def fail(run: int) -> None:
        raise failure

    actions, _ = recording_actions(fail)
    handler = build_handler(actions=actions, max_attempts=3)
    for retry_count in (0, 1):
        assert post(handler, {"orderId": "o", "action": "work"}, task_headers("t", retry_count)).status_code == status
    assert handler.sink.letters == []

    final = post(handler, {"orderId": "o", "action": "work"}, task_headers("t", retry_count=2))
    assert final.status_code == status
    [letter] = handler.sink.letters
    assert letter.kind == "final_attempt_failed"
    assert letter.task.attempt == 3
    assert json.loads(letter.body) == {"orderId": "o", "action": "work"}


def test_with_unlimited_attempts_no_attempt_is_final(build_handler: Callable[..., HandlerUnderTest]) -> None:
    def fail(run: int) -> None:
        raise RetryableError("busy")

    actions, _ = recording_actions(fail)
    handler = build_handler(actions=actions, max_attempts=-1)
    post(handler, {"orderId": "o", "action": "work"}, task_headers("t", retry_count=500))
    assert handler.sink.letters == []


def test_if_the_dead_letter_sink_fails_the_task_is_not_acknowledged(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    sink = RecordingSink(fail=True)
    handler = build_handler(sink=sink)
    response = post(handler, b"not json", task_headers("poison-2"))
    assert response.status_code == 500, "acknowledging would lose the task"
    assert any("dead-letter sink failed" in e["message"] for e in handler.log.with_severity("ERROR"))

    sink.fail = False
    retried = post(handler, b"not json", task_headers("poison-2", retry_count=1))
    assert retried.status_code == 200
    assert len(sink.letters) == 1


def test_a_final_attempt_failing_while_the_dead_letter_sink_is_down_logs_the_letter_whole(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    """Nothing retries a final attempt, so the letter the sink could not take goes to the log, body and all."""
    def fail(run: int) -> None:
        raise RetryableError("busy")

    actions, _ = recording_actions(fail)
    handler = build_handler(actions=actions, sink=RecordingSink(fail=True), max_attempts=3)
    body = {"orderId": "o-final", "action": "work"}
    assert post(handler, body, task_headers("t-last", retry_count=2)).status_code == 503
    messages = [entry["message"] for entry in handler.log.with_severity("ERROR")]
    assert not any("will be retried" in message for message in messages), messages
    assert any("final attempt; the letter is logged instead" in message for message in messages)
    [logged] = [entry["tasklane_dead_letter"] for entry in handler.log.entries if "tasklane_dead_letter" in entry]
    assert logged["kind"] == "final_attempt_failed" and logged["task_name"] == "t-last"
    assert json.loads(base64.b64decode(logged["body_base64"])) == body


def test_poison_on_its_final_attempt_while_the_sink_is_down_is_logged_too(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    handler = build_handler(sink=RecordingSink(fail=True), max_attempts=3)
    assert post(handler, b"not json", task_headers("poison-last", retry_count=2)).status_code == 500
    [logged] = [entry["tasklane_dead_letter"] for entry in handler.log.entries if "tasklane_dead_letter" in entry]
    assert logged["kind"] == "rejected" and base64.b64decode(logged["body_base64"]) == b"not json"


def test_a_final_attempt_meeting_a_held_key_is_dead_lettered(build_handler: Callable[..., HandlerUnderTest]) -> None:
    """A crashed delivery's lease holds the key until it lapses; Cloud Tasks drops the task after the final 409."""
    actions, runs = recording_actions(lambda run: None)
    store = InProcessIdempotencyStore(lease_seconds=600)
    handler = build_handler(actions=actions, idempotency=store, max_attempts=3)
    assert asyncio.run(store.begin("orders/t-held", "crashed")) is Claim.STARTED  # the delivery that crashed
    body = {"orderId": "o-held", "action": "work"}
    early = post(handler, body, task_headers("t-held", retry_count=1))
    assert (early.status_code, early.json()["status"], handler.sink.letters) == (409, "in_progress", [])
    final = post(handler, body, task_headers("t-held", retry_count=2))
    assert final.status_code == 409 and final.headers["Retry-After"] == "10"
    [letter] = handler.sink.letters
    assert letter.kind == "final_attempt_failed" and "held by another delivery" in letter.reason
    assert json.loads(letter.body) == body and runs == []


@pytest.mark.parametrize("retry_after", [float("inf"), float("nan"), -float("inf")])
def test_a_retry_after_that_is_not_a_number_is_left_out(build_handler: Callable[..., HandlerUnderTest],
                                                        retry_after: float) -> None:
    def fail(run: int) -> None:
        raise RetryableError("busy", retry_after=retry_after)

    actions, _ = recording_actions(fail)
    answer = post(build_handler(actions=actions), {"orderId": "o", "action": "work"}, task_headers("t-ra"))
    assert (answer.status_code, answer.json()["status"]) == (503, "retry") and "Retry-After" not in answer.headers


def test_a_duplicate_delivery_does_not_run_the_action_again(build_handler: Callable[..., HandlerUnderTest]) -> None:
    actions, runs = recording_actions(lambda run: None)
    handler = build_handler(actions=actions)
    first = post(handler, {"orderId": "o", "action": "work"}, task_headers("t-dup"))
    second = post(handler, {"orderId": "o", "action": "work"}, task_headers("t-dup"))
    assert (first.json(), second.json()) == ({"status": "done"}, {"status": "duplicate"})
    assert second.status_code == 200
    assert runs == ["o"]


def test_an_idempotency_key_in_the_body_deduplicates_across_task_names(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    actions, runs = recording_actions(lambda run: None)
    handler = build_handler(actions=actions)
    body = {"orderId": "o", "action": "work", "idempotencyKey": "order-o-work"}
    post(handler, body, task_headers("t-a"))
    post(handler, body, task_headers("t-b"))
    post(handler, body)  # a direct call with the same key
    assert runs == ["o"]


def test_a_failed_attempt_releases_its_key_so_the_retry_runs(build_handler: Callable[..., HandlerUnderTest]) -> None:
    def fail_first(run: int) -> None:
        if run == 1:
            raise RetryableError("busy")

    actions, runs = recording_actions(fail_first)
    handler = build_handler(actions=actions)
    assert post(handler, {"orderId": "o", "action": "work"}, task_headers("t-r", 0)).status_code == 503
    assert post(handler, {"orderId": "o", "action": "work"}, task_headers("t-r", 1)).status_code == 200
    assert post(handler, {"orderId": "o", "action": "work"}, task_headers("t-r", 2)).json()["status"] == "duplicate"
    assert runs == ["o", "o"]


def test_concurrent_duplicates_run_the_action_once() -> None:
    """Two deliveries of one task in flight at once: one runs, the other is told to come back later."""
    registry = ActionRegistry()
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[str] = []

    @registry.register("slow")
    async def slow(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        runs.append(task.task_name or "")
        started.set()
        await release.wait()

    async def scenario() -> list[httpx2.Response]:
        log = RecordedLog()
        app = create_app(make_config(), actions=registry, dead_letters=RecordingSink(),
                         log=StructuredLog(writer=log.write))
        async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://handler") as client:
            body = json.dumps({"orderId": "o", "action": "slow"})
            first = asyncio.create_task(client.post("/process-order", content=body, headers=task_headers("t-c")))
            await started.wait()
            second = await client.post("/process-order", content=body, headers=task_headers("t-c"))
            release.set()
            done = await first
            third = await client.post("/process-order", content=body, headers=task_headers("t-c"))
            return [done, second, third]

    first, concurrent, later = asyncio.run(scenario())
    assert first.json() == {"status": "done"}
    assert concurrent.status_code == 409 and concurrent.headers["Retry-After"] == "10"
    assert later.json() == {"status": "duplicate"}
    assert runs == ["t-c"]


def test_a_rejected_task_delivered_twice_is_dead_lettered_once(handler: HandlerUnderTest) -> None:
    body = {"orderId": "o", "action": "send_confirmation", "idempotencyKey": "k-1"}
    post(handler, body, task_headers("t-p"))
    post(handler, body, task_headers("t-p"))
    assert len(handler.sink.letters) == 1


def test_the_default_sink_logs_the_whole_task_and_splits_large_bodies() -> None:
    from tasklane.core.dead_letter import LOG_BODY_CHUNK_BYTES, DeadLetter, LogDeadLetterSink

    log = RecordedLog()
    body = bytes(range(256)) * (LOG_BODY_CHUNK_BYTES // 256 * 2 + 3)
    letter = DeadLetter.capture("rejected", "bad", TaskContext(queue_name="orders", task_name="t-big"), "POST",
                                "/process-order", {"X-CloudTasks-TaskName": "t-big", "Authorization": "Bearer x"},
                                body)
    asyncio.run(LogDeadLetterSink(StructuredLog(writer=log.write)).send(letter))
    records = [entry["tasklane_dead_letter"] for entry in log.entries]
    assert [r["part"] for r in records] == [1, 2, 3] and {r["parts"] for r in records} == {3}
    assert len({r["id"] for r in records}) == 1
    assert b"".join(base64.b64decode(r["body_base64"]) for r in records) == body
    assert records[0]["headers"] == {"X-CloudTasks-TaskName": "t-big"}
    assert records[0]["body_bytes"] == len(body)
    assert all(len(line) < 256_000 for line in log.lines), "each entry fits Cloud Logging's limit"
