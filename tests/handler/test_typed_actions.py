"""Typed actions: each action's payload type decides what its body may hold, on its own route and on
/process-order; bad bodies are poison with a reason naming what was wrong and what is allowed.

The service's actions are taken from its registry, so an action added there is covered here unnamed.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

from handler.order_actions import service_actions
from tasklane.core.task_context import TaskContext
from tasklane.core.wire import IDEMPOTENCY_KEY_HEADER, TASKS_ROUTE
from tasklane.handler.actions import ActionLog, ActionRegistry, RegisteredAction, RetryableError
from tasklane.handler.payloads import PayloadError, PayloadType
from tests.handler.conftest import HandlerUnderTest, task_headers

REPO = Path(__file__).resolve().parents[2]


class Shipment(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    shipment_id: Annotated[str, msgspec.Meta(min_length=1)]
    weight_grams: Annotated[int, msgspec.Meta(gt=0)]
    fragile: bool = False


class Lenient(msgspec.Struct):
    """A Struct that does not forbid unknown fields itself: the handler's policy still refuses them."""

    name: str


@dataclasses.dataclass
class Label:
    shipment_id: str
    copies: int = 1


def typed_registry(runs: list[Any]) -> ActionRegistry:
    registry = ActionRegistry()

    @registry.register("ship")
    async def ship(shipment: Shipment, task: TaskContext, log: ActionLog) -> None:
        runs.append(shipment)

    @registry.register("lenient")
    async def lenient(payload: Lenient, task: TaskContext, log: ActionLog) -> None:
        runs.append(payload)

    @registry.register("print_label")
    async def print_label(label: Label, task: TaskContext, log: ActionLog) -> None:
        runs.append(label)

    return registry


@pytest.fixture
def runs() -> list[Any]:
    return []


@pytest.fixture
def typed(build_handler: Any, runs: list[Any]) -> HandlerUnderTest:
    return build_handler(actions=typed_registry(runs))  # type: ignore[no-any-return]


def post(handler: HandlerUnderTest, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return handler.client.post(path, content=content, headers={"Content-Type": "application/json", **(headers or {})})


def test_each_action_gets_its_payload_decoded_into_its_type(typed: HandlerUnderTest, runs: list[Any]) -> None:
    assert post(typed, "/tasks/ship", {"shipmentId": "s-1", "weightGrams": 1200}).json() == {"status": "done"}
    assert post(typed, "/tasks/print_label", {"shipment_id": "s-1", "copies": 2}).status_code == 200
    assert post(typed, "/tasks/lenient", {"name": "n"}).status_code == 200
    assert runs == [Shipment("s-1", 1200), Label("s-1", 2), Lenient("n")]


def test_process_order_carries_a_typed_action_beside_action_and_idempotency_key(
        typed: HandlerUnderTest, runs: list[Any]) -> None:
    body = {"action": "ship", "shipmentId": "s-2", "weightGrams": 5, "idempotencyKey": "ship-s-2"}
    assert post(typed, "/process-order", body, task_headers("t-1")).json() == {"status": "done"}
    assert post(typed, "/process-order", body, task_headers("t-2")).json() == {"status": "duplicate"}
    assert runs == [Shipment("s-2", 5)]


REFUSALS: dict[str, tuple[str, bytes, str]] = {
    # name: (path, body, the whole reason)
    "unknown fields, every one named": (
        "/tasks/ship", b'{"shipmentId": "s", "weightGrams": 1, "weight": 1, "colour": "red"}',
        "ship: invalid Shipment: unknown fields `weight`, `colour`; Shipment takes shipmentId (required), "
        "weightGrams (required), fragile"),
    "unknown field on a Struct that allows them": (
        "/tasks/lenient", b'{"name": "n", "nmae": "n"}',
        "lenient: invalid Lenient: unknown field `nmae`; Lenient takes name (required)"),
    "unknown field on a dataclass": (
        "/tasks/print_label", b'{"shipment_id": "s", "copes": 2}',
        "print_label: invalid Label: unknown field `copes`; Label takes shipment_id (required), copies"),
    "missing field": ("/tasks/ship", b'{"shipmentId": "s"}',
                      "ship: invalid Shipment: Object missing required field `weightGrams`; Shipment takes "
                      "shipmentId (required), weightGrams (required), fragile"),
    "wrong type": ("/tasks/ship", b'{"shipmentId": "s", "weightGrams": "heavy"}',
                   "ship: invalid Shipment: Expected `int`, got `str` - at `$.weightGrams`; Shipment takes "
                   "shipmentId (required), weightGrams (required), fragile"),
    "out of range": ("/tasks/ship", b'{"shipmentId": "s", "weightGrams": 0}',
                     "ship: invalid Shipment: Expected `int` >= 1 - at `$.weightGrams`; Shipment takes "
                     "shipmentId (required), weightGrams (required), fragile"),
    "wrong type in a dataclass": ("/tasks/print_label", b'{"shipment_id": "s", "copies": 1.5}',
                                  "print_label: invalid Label: Expected `int`, got `float` - at `$.copies`; Label "
                                  "takes shipment_id (required), copies"),
    "not JSON": ("/tasks/ship", b"ship it", "ship: body is not JSON: JSON is malformed: invalid character (byte 0)"),
    "not JSON, on a dataclass": ("/tasks/print_label", b"{", "print_label: body is not JSON: Input data was "
                                                            "truncated"),
    "not an object": ("/tasks/print_label", b"[1]",
                      "print_label: body is not a JSON object: Expected `object`, got `array`"),
    "unknown action route": ("/tasks/refund", b"{}", "unknown action 'refund'; known actions: lenient, "
                                                    "print_label, ship, verify_delivery"),
    "a path below an action's route": ("/tasks/ship/now", b"{}", "unknown action 'ship/now'; known actions: "
                                                               "lenient, print_label, ship, verify_delivery"),
    "the envelope's fields on a typed route": (
        "/tasks/ship", b'{"action": "ship", "shipmentId": "s", "weightGrams": 1}',
        "ship: invalid Shipment: unknown field `action`; Shipment takes shipmentId (required), weightGrams "
        "(required), fragile"),
    "an envelope's payload with an unknown field": (
        "/process-order", b'{"action": "ship", "shipmentId": "s", "weightGrams": 1, "fragle": true}',
        "ship: invalid Shipment: unknown field `fragle`; Shipment takes shipmentId (required), weightGrams "
        "(required), fragile"),
    "an envelope whose action is not a string": (
        "/process-order", b'{"action": 7}', "invalid `action`: Expected `str`, got `int`; /process-order takes "
                                            "`action` (one of lenient, print_label, ship, verify_delivery), "
                                            "`idempotencyKey` (optional) and that action's payload fields"),
}


@pytest.mark.parametrize("path, body, reason", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_bad_body_is_poison_with_a_reason_naming_what_is_wrong_and_what_is_allowed(
        typed: HandlerUnderTest, runs: list[Any], path: str, body: bytes, reason: str) -> None:
    direct = post(typed, path, body)
    assert (direct.status_code, direct.json()) == (400, {"status": "rejected", "reason": reason})
    from_cloud_tasks = post(typed, path, body, task_headers("poison-1"))
    assert from_cloud_tasks.status_code == 200, "acknowledged: a 4xx would be retried"
    [letter] = typed.sink.letters
    assert (letter.kind, letter.reason, letter.path, letter.body) == ("rejected", reason, path, body)
    assert runs == []


def test_a_typed_routes_idempotency_key_comes_from_its_header(typed: HandlerUnderTest, runs: list[Any]) -> None:
    body = {"shipmentId": "s-3", "weightGrams": 9}
    first = post(typed, "/tasks/ship", body, task_headers("t-1", **{IDEMPOTENCY_KEY_HEADER: "ship-s-3"}))
    again = post(typed, "/tasks/ship", body, task_headers("t-2", **{IDEMPOTENCY_KEY_HEADER: "ship-s-3"}))
    other = post(typed, "/tasks/ship", body, task_headers("t-3"))  # no key: once per task name
    assert [r.json()["status"] for r in (first, again, other)] == ["done", "duplicate", "done"]
    assert len(runs) == 2
    too_long = post(typed, "/tasks/ship", body, task_headers("t-4", **{IDEMPOTENCY_KEY_HEADER: "k" * 501}))
    assert too_long.json()["reason"] == f"header {IDEMPOTENCY_KEY_HEADER} must be 1-500 characters, got 501"


def test_a_utf8_idempotency_key_header_counts_its_characters(typed: HandlerUnderTest, runs: list[Any]) -> None:
    """Header bytes read as Latin-1 made "é" count twice: 300 of them read as 600 and the task was poison."""
    body = {"shipmentId": "s-4", "weightGrams": 9}
    key = ("é" * 300).encode()  # UTF-8 bytes on the wire

    def send(task_name: str) -> Any:
        return typed.client.post("/tasks/ship", content=json.dumps(body).encode(), headers={
            **task_headers(task_name), "Content-Type": "application/json", IDEMPOTENCY_KEY_HEADER: key})

    first, again = send("t-5"), send("t-6")
    assert [r.json()["status"] for r in (first, again)] == ["done", "duplicate"] and len(runs) == 1


def test_a_typed_tasks_final_failed_attempt_is_dead_lettered_with_its_route(build_handler: Any) -> None:
    registry = ActionRegistry()

    @registry.register("ship")
    async def ship(shipment: Shipment, task: TaskContext, log: ActionLog) -> None:
        raise RetryableError("carrier is down", retry_after=7)

    handler = build_handler(actions=registry, max_attempts=3)
    body = b'{"shipmentId": "s-9", "weightGrams": 1}'
    early = post(handler, "/tasks/ship", body, task_headers("t-9", retry_count=0))
    assert (early.status_code, early.headers["Retry-After"], handler.sink.letters) == (503, "7", [])
    final = post(handler, "/tasks/ship", body, task_headers("t-9", retry_count=2))
    assert final.status_code == 503
    [letter] = handler.sink.letters
    assert (letter.kind, letter.reason, letter.path, letter.body) == (
        "final_attempt_failed", "ship failed transiently: carrier is down", "/tasks/ship", body)


@pytest.mark.parametrize("action", list(service_actions(demo=True)), ids=lambda action: action.name)
def test_every_service_action_has_a_route_that_refuses_an_unknown_field(
        build_handler: Any, action: RegisteredAction) -> None:
    handler = build_handler(actions=service_actions(demo=True))
    response = post(handler, TASKS_ROUTE + action.name, {"tasklane_not_a_field": 1}, task_headers("poison-2"))
    assert response.json()["status"] == "rejected"
    assert "unknown field `tasklane_not_a_field`" in response.json()["reason"]
    assert action.payload.takes in response.json()["reason"], "and says what the type takes"


def test_a_registration_that_cannot_work_fails_at_import_saying_how_to_fix_it() -> None:
    registry = ActionRegistry()

    async def untyped(payload, task, log):  # type: ignore[no-untyped-def]
        pass

    async def not_a_payload(payload: dict[str, Any], task: TaskContext, log: ActionLog) -> None:
        pass

    with pytest.raises(TypeError, match="annotate its first parameter with the payload type"):
        registry.register("untyped")(untyped)
    with pytest.raises(TypeError, match="annotate its first parameter"):
        registry.register("not_a_payload")(not_a_payload)
    with pytest.raises(TypeError, match="must be a msgspec.Struct or a dataclass, got <class 'int'>"):
        registry.register("explicit", payload=int)(untyped)
    with pytest.raises(ValueError, match="must be 1-100 letters, digits"):
        registry.register("refund payment")
    registry.register("labelled", payload=Label)(untyped)  # an explicit type needs no annotation
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("labelled", payload=Label)(untyped)
    with pytest.raises(TypeError, match="array_like"):
        PayloadType(type("Row", (msgspec.Struct,), {"__annotations__": {"a": int}}, array_like=True))


def test_the_decoder_refuses_and_never_raises_anything_else_on_any_bytes() -> None:
    for payload_type in (PayloadType(Shipment), PayloadType(Lenient), PayloadType(Label)):
        for body in (b"", b"\xff", b"null", b'{"a":' * 5000, b"[" * 100_000, b'{"shipmentId": "\xed\xa0\x80"}'):
            with pytest.raises(PayloadError):
                payload_type.decode(body)


def test_the_registries_import_no_web_framework() -> None:
    """What the producer imports to check payloads stays light: no Starlette, no handler app."""
    code = ("import sys; import tasklane.producer; from tasklane.producer.registry import default_registry; "
            "registry = default_registry(); assert registry is not None and registry.names; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn') "
            "or m == 'tasklane.handler.app'); print(heavy); sys.exit(1 if heavy else 0)")
    ran = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stdout + ran.stderr
