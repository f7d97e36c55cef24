"""A task must never vanish: whatever its body and whatever fails, the final attempt ends as a dead letter.

Cloud Tasks drops a task after its final failed attempt and retries every non-2xx answer
(../shared/reference/cloud-tasks-behaviour.md §1.1-1.2, §2.1), so the handler has two ways to lose one:
answering non-2xx to a body that can never succeed (retried to exhaustion, then gone), and failing the
final attempt without keeping the task. These tests attack both, with bodies no decoder expects and with
bugs outside the actions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.orders import OrderRequest
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.handler.actions import ActionLog, ActionRegistry, RetryableError
from tasklane.handler.app import create_app
from tasklane.handler.config import MAX_BODY_BYTES
from tasklane.handler.idempotency import Claim
from tasklane.handler.payloads import PayloadError, PayloadType
from tasklane.handler.task_routes import from_envelope
from tests.handler.conftest import HandlerUnderTest, RecordedLog, RecordingSink, make_config, task_headers

MAX_ATTEMPTS = 3
FINAL = MAX_ATTEMPTS - 1  # the retry count of the final attempt

HOSTILE_BODIES: dict[str, bytes] = {
    "invalid UTF-8 inside orderId": b'{"orderId": "\xff\xfe", "action": "work"}',
    "invalid UTF-8 inside action": b'{"orderId": "o", "action": "wo\x80rk"}',
    "invalid UTF-8 inside an unknown field": b'{"orderId": "o", "action": "work", "note": "\xc3\x28"}',
    "invalid UTF-8 inside a key": b'{"orderId": "o", "action": "work", "\xff": 1}',
    "overlong UTF-8 encoding": b'{"orderId": "\xc0\xaf", "action": "work"}',
    "UTF-8-encoded lone surrogate": b'{"orderId": "\xed\xa0\x80", "action": "work"}',
    "escaped lone surrogate": b'{"orderId": "\\ud800", "action": "work"}',
    "multibyte character cut short": b'{"orderId": "\xe2\x82", "action": "work"}',
    "objects nested 1,000 deep": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "arrays nested 100,000 deep in an unknown field": (b'{"orderId": "o", "action": "work", "x": '
                                                       + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "objects nested 10,000 deep in an unknown field": (b'{"orderId": "o", "action": "work", "x": '
                                                       + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}"),
    "nesting left open": b'{"orderId": "o", "action": "work", "x": ' + b"[" * 5000,
    "empty": b"",
    "whitespace only": b" \r\n\t ",
    "NUL bytes": b"\x00" * 64,
    "byte order mark first": b'\xef\xbb\xbf{"orderId": "o", "action": "work"}',
    "UTF-16": '{"orderId": "o", "action": "work"}'.encode("utf-16"),
    "garbage after a valid order": b'{"orderId": "o", "action": "work"} trailing',
    "two orders": b'{"orderId": "o", "action": "work"}{"orderId": "p", "action": "work"}',
    "NaN where a string goes": b'{"orderId": NaN, "action": "work"}',
    "unterminated string": b'{"orderId": "o',
    "random bytes": bytes(range(256)),
}


def failing_actions() -> ActionRegistry:
    """`work` always fails transiently; `crash` always raises: neither task can ever succeed."""
    registry = ActionRegistry()

    @registry.register("work")
    async def work(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        raise RetryableError("downstream is down for good")

    @registry.register("crash")
    async def crash(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        raise ZeroDivisionError("a bug")

    return registry


@pytest.fixture
def failing(build_handler: Callable[..., HandlerUnderTest]) -> HandlerUnderTest:
    return build_handler(actions=failing_actions(), max_attempts=MAX_ATTEMPTS)


def post(handler: HandlerUnderTest, body: bytes, headers: dict[str, str] | None = None) -> Any:
    # As bytes: header values may hold any octet, which HTTP carries and the handler reads as Latin-1.
    raw = {name: value.encode("latin-1") for name, value in (headers or {}).items()}
    return handler.client.post("/process-order", content=body, headers=raw)


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_a_body_that_is_not_a_valid_order_is_poison_from_cloud_tasks(failing: HandlerUnderTest,
                                                                     body: bytes) -> None:
    response = post(failing, body, task_headers("hostile", retry_count=0))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "rejected"
    # 1,000 levels deep, msgspec may or may not run out of recursion first (the interpreter's limit decides):
    # either refusal is a refusal, never a crash or an order.
    assert response.json()["reason"].startswith(("body is not JSON", "invalid order", "missing required field"))
    [letter] = failing.sink.letters
    assert (letter.kind, letter.body, letter.task.task_name) == ("rejected", body, "hostile")


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_the_same_body_called_directly_is_a_400_and_not_dead_lettered(failing: HandlerUnderTest,
                                                                       body: bytes) -> None:
    response = post(failing, body)
    assert response.status_code == 400, response.text
    assert response.json()["status"] == "rejected"
    assert failing.sink.letters == []


@pytest.mark.parametrize("depth", [10, 100, 1000, 10_000, 200_000])
def test_deep_nesting_is_refused_with_a_reason_never_raised(depth: int) -> None:
    for body in (b"[" * depth + b"]" * depth, b'{"orderId": "o", "action": "w", "x": ' + b"[" * depth
                 + b"]" * depth + b"}", b'{"a":' * depth + b"1" + b"}" * depth):
        assert isinstance(refusal(body), str)
        assert isinstance(refusal(body, route_of="work"), str)


def refusal(body: bytes, route_of: str | None = None) -> OrderRequest | str:
    """What /process-order (or, given an action, /tasks/<action>) makes of `body`: a payload or a reason."""
    try:
        if route_of is not None:
            return PayloadType(OrderRequest).decode(body)
        return from_envelope(failing_actions(), {}, body).payload  # type: ignore[no-any-return]
    except PayloadError as error:
        return str(error)


def test_the_reasons_say_what_was_wrong() -> None:
    reason = refusal(HOSTILE_BODIES["invalid UTF-8 inside orderId"])
    assert reason == "body is not JSON: it is not UTF-8 (invalid start byte at byte 13)"
    # Whether msgspec runs out of recursion first depends on the interpreter's limit (other libraries raise
    # it), so either refusal may come; what matters is that it is a refusal, never a crash or an order.
    deep = refusal(HOSTILE_BODIES["objects nested 1,000 deep"])
    assert isinstance(deep, str)
    assert "nested too deeply" in deep or "missing required field `action`" in deep
    deep = refusal(HOSTILE_BODIES["objects nested 1,000 deep"], route_of="work")
    assert isinstance(deep, str)
    assert "nested too deeply" in deep or "unknown field `a`" in deep


@pytest.mark.parametrize("action, status", [("work", 503), ("crash", 500)])
def test_a_task_that_always_fails_is_dead_lettered_on_its_final_attempt_only(
        failing: HandlerUnderTest, action: str, status: int) -> None:
    body = json.dumps({"orderId": "o", "action": action}).encode()
    for retry_count in range(FINAL):
        assert post(failing, body, task_headers("doomed", retry_count)).status_code == status
        assert failing.sink.letters == []
    assert post(failing, body, task_headers("doomed", FINAL)).status_code == status
    [letter] = failing.sink.letters
    assert (letter.kind, letter.body, letter.task.attempt) == ("final_attempt_failed", body, MAX_ATTEMPTS)


class BrokenStore:
    """An idempotency store with a bug: the failure happens outside any action."""

    async def begin(self, key: str, lease: str) -> Claim:
        raise RuntimeError("store bug")

    async def succeeded(self, key: str) -> None:
        pass

    async def abandoned(self, key: str, lease: str) -> None:
        pass


def test_a_bug_outside_the_action_answers_500_and_is_dead_lettered_on_the_final_attempt() -> None:
    log, sink = RecordedLog(), RecordingSink()
    app = create_app(make_config(max_attempts=MAX_ATTEMPTS), actions=failing_actions(), dead_letters=sink,
                     idempotency=BrokenStore(), log=StructuredLog(writer=log.write))
    from starlette.testclient import TestClient

    client = TestClient(app, raise_server_exceptions=False)
    body = b'{"orderId": "o", "action": "work"}'
    first = client.post("/process-order", content=body, headers=task_headers("t-bug", 0))
    assert first.status_code == 500 and first.json() == {"status": "error", "reason": "RuntimeError"}
    assert sink.letters == []
    assert any("store bug" in entry.get("stack_trace", "") for entry in log.entries), "the traceback is logged"

    final = client.post("/process-order", content=body, headers=task_headers("t-bug", FINAL))
    assert final.status_code == 500
    [letter] = sink.letters
    assert letter.kind == "final_attempt_failed" and "RuntimeError: store bug" in letter.reason
    assert letter.body == body


@pytest.mark.parametrize("error", [MemoryError("decoder out of memory"), SystemError("decoder crashed"),
                                   KeyError("decoder bug")])
def test_a_decoder_crash_is_dead_lettered_on_the_final_attempt(
        failing: HandlerUnderTest, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def crash(self: PayloadType[Any], body: bytes) -> Any:
        raise error

    monkeypatch.setattr(PayloadType, "decode", crash)
    body = b'{"orderId": "o", "action": "work"}'
    assert post(failing, body, task_headers("t-dec", 0)).status_code == 500
    assert failing.sink.letters == []
    assert post(failing, body, task_headers("t-dec", FINAL)).status_code == 500
    [letter] = failing.sink.letters
    assert letter.kind == "final_attempt_failed" and type(error).__name__ in letter.reason


def test_a_caller_that_leaves_mid_body_on_the_final_attempt_is_dead_lettered_with_what_arrived() -> None:
    sink = RecordingSink()
    app = create_app(make_config(max_attempts=MAX_ATTEMPTS), actions=failing_actions(), dead_letters=sink,
                     log=StructuredLog(writer=RecordedLog().write))
    headers = [(name.lower().encode(), value.encode()) for name, value in task_headers("t-gone", FINAL).items()]
    scope = {"type": "http", "method": "POST", "path": "/process-order", "raw_path": b"/process-order",
             "query_string": b"", "headers": headers, "http_version": "1.1", "scheme": "http",
             "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5000), "root_path": "", "asgi": {"version": "3.0"}}
    messages = [{"type": "http.request", "body": b'{"orderId": "o", "act', "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    [letter] = sink.letters
    assert letter.kind == "final_attempt_failed" and "disconnected" in letter.reason
    assert letter.body == b'{"orderId": "o", "act'


# -- Property: at the handler's boundary, no body and no headers can make a task vanish -------------------

JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8).map(lambda value: json.dumps(value).encode())


@st.composite
def corrupted(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """A body with bytes spliced in: invalid UTF-8, quotes, brackets, NULs."""
    body = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 3))):
        position = draw(st.integers(0, len(body)))
        body[position:position] = draw(st.sampled_from(
            [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x00", b'"', b"[", b"{", b"\\u", b"\\ud800"]))
    return bytes(body)


ORDER_BODIES = st.fixed_dictionaries(
    {"orderId": st.text(max_size=20), "action": st.sampled_from(["work", "crash", "unknown", ""])},
    optional={"idempotencyKey": st.text(max_size=20), "customerEmail": st.text(max_size=10)},
).map(lambda order: json.dumps(order).encode())
NESTED = st.builds(lambda depth: b'{"orderId": "o", "action": "work", "x": ' + b"[" * depth + b"]" * depth + b"}",
                   st.integers(0, 50_000)) | st.builds(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth,
                                                       st.integers(0, 5000))
BODIES = (st.binary(max_size=200) | JSON_TEXT | ORDER_BODIES | corrupted(ORDER_BODIES) | corrupted(JSON_TEXT)
          | NESTED)
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=20) | st.sampled_from(
    ["-1", "1e400", "9" * 5000, "nan", "0x10", " 2 "])
EXTRA_HEADERS = st.dictionaries(st.sampled_from([
    "X-CloudTasks-QueueName", "X-CloudTasks-TaskExecutionCount", "X-CloudTasks-TaskETA",
    "X-CloudTasks-TaskPreviousResponse", "X-CloudTasks-TaskRetryReason", "X-Cloud-Trace-Context", "Content-Type"]),
    HEADER_VALUES, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, retry_count=st.integers(0, MAX_ATTEMPTS + 2), task_name=st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30), extra=EXTRA_HEADERS)
def test_a_task_that_cannot_succeed_is_acknowledged_only_when_dead_lettered_and_always_kept_at_the_end(
        failing: HandlerUnderTest, body: bytes, retry_count: int, task_name: str, extra: dict[str, str]) -> None:
    failing.sink.letters.clear()
    headers = {**extra, **task_headers(task_name, retry_count)}
    response = post(failing, body, headers)
    assert response.status_code in (200, 500, 503), response.text
    letters = failing.sink.letters
    if response.status_code == 200:
        assert response.json()["status"] == "rejected", "no action here can succeed"
        assert [letter.kind for letter in letters] == ["rejected"], "acknowledged means dead-lettered"
    elif retry_count + 1 >= MAX_ATTEMPTS:
        assert [letter.kind for letter in letters] == ["final_attempt_failed"], "the final attempt keeps the task"
    else:
        assert letters == [], "Cloud Tasks will retry it"
    for letter in letters:
        assert letter.body == body[:MAX_BODY_BYTES]
        assert letter.task.task_name == task_name


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_a_direct_call_with_any_body_gets_a_clear_answer_and_no_dead_letter(failing: HandlerUnderTest,
                                                                            body: bytes) -> None:
    response = post(failing, body)
    assert response.status_code in (400, 500, 503), response.text
    assert response.json()["status"] in ("rejected", "error", "retry")
    assert failing.sink.letters == []
