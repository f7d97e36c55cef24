"""Malformed input of every kind on every published route: never a 5xx, never a crash.

The routes come from the app's own OpenAPI document, the action names from the service's registry (so a
new action is covered without naming it here); bodies range from random bytes through random JSON to
near-valid orders, with random Cloud Tasks headers and tokens. The sample actions never fail
transiently, so any 5xx here is a bug.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.order_actions import service_actions
from tasklane.core.wire import ENVELOPE_ROUTE, IDEMPOTENCY_KEY_HEADER, TASKS_ROUTE
from tasklane.handler.config import TokenCheck
from tests.handler.conftest import HandlerUnderTest

HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
NEAR_VALID = st.fixed_dictionaries(
    {"orderId": JSON_VALUES | st.text(max_size=300), "action": st.sampled_from(
        [*service_actions().names, "", "not_registered"]) | JSON_VALUES},
    optional={"customerEmail": st.sampled_from(["a@b.co", "nope", ""]) | JSON_VALUES,
              "idempotencyKey": st.text(max_size=600) | JSON_VALUES, "extra": JSON_VALUES})
BODIES = (st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode())
          | NEAR_VALID.map(lambda v: json.dumps(v).encode()))
TASK_HEADERS = st.dictionaries(
    st.sampled_from(["X-CloudTasks-QueueName", "X-CloudTasks-TaskName", "X-CloudTasks-TaskRetryCount",
                     "X-CloudTasks-TaskExecutionCount", "X-CloudTasks-TaskETA", "X-CloudTasks-TaskPreviousResponse",
                     "X-CloudTasks-TaskRetryReason", "X-Cloud-Trace-Context", "Authorization", "Content-Type",
                     IDEMPOTENCY_KEY_HEADER]),
    HEADER_TEXT | st.sampled_from(["0", "-1", "99999999999999999999", "1e308", "Bearer a.b.c", "a/b;o=1"]),
    max_size=8)
METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])


def routes(handler: HandlerUnderTest) -> list[str]:
    return list(handler.client.get("/openapi.json").json()["paths"])


def check_no_server_error(handler: HandlerUnderTest, method: str, path: str, headers: dict[str, str],
                          body: bytes) -> None:
    response = handler.client.request(method, path, headers=headers, content=body)
    assert response.status_code < 500, (method, path, headers, body[:80], response.text)
    if response.headers.get("content-type") == "application/json":
        response.json()


def test_the_published_schema_lists_every_route(handler: HandlerUnderTest) -> None:
    registry = service_actions()
    assert routes(handler) == ["/", ENVELOPE_ROUTE, *(TASKS_ROUTE + action.name for action in registry)]


def test_each_actions_route_shows_its_payloads_schema(handler: HandlerUnderTest) -> None:
    document = handler.client.get("/openapi.json").json()
    components = document["components"]["schemas"]

    def schema_at(ref: dict[str, str]) -> dict[str, Any]:
        return components[ref["$ref"].rsplit("/", 1)[1]]  # type: ignore[no-any-return]

    carried: set[str] = set()
    for envelope in document["paths"][ENVELOPE_ROUTE]["post"]["requestBody"]["content"]["application/json"][
            "schema"]["oneOf"]:
        carried |= set(schema_at(envelope)["properties"]["action"]["enum"])
    for action in service_actions():
        body = document["paths"][TASKS_ROUTE + action.name]["post"]["requestBody"]["content"]["application/json"]
        schema = schema_at(body["schema"])
        assert list(schema["properties"]) == list(action.payload.fields)
        assert set(schema.get("required", [])) == action.payload.required
        assert schema["additionalProperties"] is False, "unknown fields are refused, and the schema says so"
    assert carried == set(service_actions().names), "/process-order carries every action"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), method=METHODS, headers=TASK_HEADERS, body=BODIES)
def test_no_input_gets_a_5xx(handler: HandlerUnderTest, data: Any, method: str, headers: dict[str, str],
                             body: bytes) -> None:
    path = data.draw(st.sampled_from([*routes(handler), "/openapi.json", "/nope", "/process-order/x"]))
    check_no_server_error(handler, method, path, headers, body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=TASK_HEADERS, body=BODIES)
def test_no_input_gets_a_5xx_with_token_checks_on(build_handler: Callable[..., HandlerUnderTest],
                                                  headers: dict[str, str], body: bytes) -> None:
    handler = build_handler(token_check=TokenCheck.CLAIMS)
    check_no_server_error(handler, "POST", "/process-order", headers, body)
    assert handler.client.get("/").status_code == 200


# Near-valid bodies for each action's own route, built from its payload type's fields (so a new action is
# fuzzed too): any subset of its fields with random values, sometimes one field too many.
TYPED_NEAR_VALID = st.sampled_from(list(service_actions())).flatmap(
    lambda action: st.fixed_dictionaries({}, optional={**{name: JSON_VALUES | st.text(max_size=30)
                                                          for name in action.payload.fields},
                                                       "unexpected": JSON_VALUES}).map(
        lambda body: (action.name, body)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=TYPED_NEAR_VALID, headers=TASK_HEADERS)
def test_near_valid_payloads_on_each_actions_route_are_done_or_refused_never_a_5xx(
        handler: HandlerUnderTest, case: tuple[str, dict[str, Any]], headers: dict[str, str]) -> None:
    name, body = case
    response = handler.client.post(TASKS_ROUTE + name, headers=headers, content=json.dumps(body).encode())
    assert response.status_code < 500, (name, body, response.text)
    if response.status_code in (200, 400):
        assert response.json()["status"] in {"done", "duplicate", "rejected"}
    if "unexpected" in body and response.status_code in (200, 400):
        assert response.json()["status"] == "rejected", "an unknown field is never dropped silently"
