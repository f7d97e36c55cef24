"""POST /task-operations: a task Cloud Tasks gave up without the handler's answer becomes a dead letter.

The records are built by the emulator's own writer (emulator/task_operations_log.py), the one place that
knows the shape Cloud Tasks logs, and pushed in Pub/Sub's envelope.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from google.rpc import code_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from handler.service import create_service_app
from tasklane.core.dead_letter import DeadLetter
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.emulator.task_operations_log import AttemptResponse, is_final_failure
from tasklane.handler.auth import TokenVerifier
from tasklane.handler.config import TokenCheck
from tasklane.handler.task_operations import give_up_of
from tests.handler.conftest import AUDIENCE, HandlerUnderTest, RecordingSink, SigningKey, make_config

TASK = "projects/tasklane-test/locations/us-central1/queues/orders/tasks/t-42"
PUSH = "tasklane-push@tasklane-test.iam.gserviceaccount.com"


def record(*, code: int = code_pb2.PERMISSION_DENIED, retry_time: float | None = None, dispatches: int = 5,
           responses: int = 0) -> dict[str, Any]:
    return AttemptResponse(task_name=TASK, rpc_code=code, dispatch_count=dispatches, response_count=responses,
                           max_attempts=5, schedule_time=1_700_000_000.0, dispatch_time=1_700_000_000.5,
                           finished=1_700_000_000.75, retry_time=retry_time,
                           target="POST https://svc.example.com/process-order").entry()


def push(entry: Any) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(entry).encode()).decode()
    return {"message": {"data": data, "messageId": "1", "publishTime": "2026-11-30T00:00:00Z"},
            "subscription": "projects/tasklane-test/subscriptions/final-failures-push"}


def test_a_final_failure_becomes_a_gave_up_unseen_letter_without_a_body(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    handler = build_handler()
    answer = handler.client.post("/task-operations", json=push(record()))
    assert answer.status_code == 204
    [letter] = handler.sink.letters
    assert (letter.kind, letter.body, letter.headers) == ("gave_up_unseen", b"", {})
    assert (letter.task.queue_name, letter.task.task_name, letter.task.attempt) == ("orders", "t-42", 5)
    assert (letter.method, letter.path) == ("POST", "/process-order")
    assert letter.details["last_status"] == "PERMISSION_DENIED"
    assert letter.details["dispatch_count"] == 5 and letter.details["given_up_at"] == "2023-11-14T22:13:20.750000Z"
    assert "gave the task up after 5 attempt(s)" in letter.reason


def test_attempts_that_will_be_retried_or_succeeded_record_nothing(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    handler = build_handler()
    for entry in (record(retry_time=1_700_000_010.0), record(code=code_pb2.OK, responses=1)):
        assert not is_final_failure(entry)
        assert handler.client.post("/task-operations", json=push(entry)).status_code == 204
    assert handler.sink.letters == []


def test_a_task_the_handler_dead_lettered_itself_is_not_recorded_twice(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    sink = RecordingSink()
    sink.letters.append(DeadLetter("final_attempt_failed", "boom", TaskContext(queue_name="orders", task_name="t-42"),
                                   "POST", "/process-order", {}, b"{}"))
    handler = build_handler(sink=sink)
    assert handler.client.post("/task-operations", json=push(record(code=code_pb2.INTERNAL))).status_code == 204
    assert [letter.kind for letter in sink.letters] == ["final_attempt_failed"]


def test_a_failing_store_is_not_acknowledged_so_pub_sub_pushes_again(
        build_handler: Callable[..., HandlerUnderTest]) -> None:
    handler = build_handler(sink=RecordingSink(fail=True))
    assert handler.client.post("/task-operations", json=push(record())).status_code == 503


def test_pushes_are_checked_as_the_push_account_when_tokens_are_checked(
        build_handler: Callable[..., HandlerUnderTest], signing_key: SigningKey) -> None:
    config = dataclasses.replace(make_config(token_check=TokenCheck.CLAIMS), push_service_account=PUSH,
                                 push_token_check=TokenCheck.CLAIMS)
    sink = RecordingSink()
    app = create_service_app(config, log=StructuredLog(writer=lambda data: None), dead_letters=sink)
    client = TestClient(app)
    body = push(record())
    assert client.post("/task-operations", json=body).status_code == 401
    invoker_token = signing_key.token()
    assert client.post("/task-operations", json=body,
                       headers={"Authorization": f"Bearer {invoker_token}"}).status_code == 403
    assert sink.letters == []
    push_token = signing_key.token(email=PUSH, aud=AUDIENCE)
    assert client.post("/task-operations", json=body,
                       headers={"Authorization": f"Bearer {push_token}"}).status_code == 204
    assert len(sink.letters) == 1
    assert TokenVerifier(config, check=TokenCheck.CLAIMS, email=PUSH).email == PUSH


def test_without_a_push_account_every_push_is_refused() -> None:
    config = dataclasses.replace(make_config(token_check=TokenCheck.CLAIMS), push_token_check=TokenCheck.CLAIMS)
    client = TestClient(create_service_app(config, log=StructuredLog(writer=lambda data: None),
                                           dead_letters=RecordingSink()))
    assert client.post("/task-operations", json=push(record())).status_code == 403


JUNK = st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                 max_leaves=15).map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["jsonPayload", "resource", "timestamp"]), st.text(max_size=30))
    .map(lambda entry: json.dumps(push(entry)).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=JUNK)
def test_whatever_is_pushed_is_answered_and_nothing_unreadable_is_retried_forever(
        build_handler: Callable[..., HandlerUnderTest], raw: bytes) -> None:
    handler = build_handler()
    answer = handler.client.post("/task-operations", content=raw)
    assert answer.status_code in (200, 204)
    if answer.status_code == 200:
        assert answer.json()["status"] == "unreadable"
        [entry] = [e for e in handler.log.entries if e.get("event") == "unreadable_task_operation"]
        assert base64.b64decode(entry["push_base64"]) == raw, "kept whole for an operator"


@pytest.mark.parametrize("where", ["body", "data"])
def test_a_push_nested_past_the_parser_is_unreadable_not_a_500(build_handler: Callable[..., HandlerUnderTest],
                                                               where: str) -> None:
    """JSON nested deeper than the parser goes raised RecursionError: a 500, which Pub/Sub pushes again forever."""
    deep = b"[" * 100_000 + b"]" * 100_000
    raw = deep if where == "body" else json.dumps({"message": {"data": base64.b64encode(deep).decode()}}).encode()
    answer = build_handler().client.post("/task-operations", content=raw)
    assert (answer.status_code, answer.json()["status"]) == (200, "unreadable")


def test_the_parser_reads_what_the_emulator_writes_for_every_kind_of_failure() -> None:
    for code in (code_pb2.PERMISSION_DENIED, code_pb2.UNAVAILABLE, code_pb2.DEADLINE_EXCEEDED, code_pb2.INTERNAL):
        letter = give_up_of(push(record(code=code)))
        assert letter is not None and letter.details["last_status"] == code_pb2.Code.Name(code)
