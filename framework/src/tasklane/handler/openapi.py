"""The handler's OpenAPI document, served at /openapi.json: every action's route with its payload's schema
(from the payload type itself), and the tutorial's /process-order with each action it can carry."""

from __future__ import annotations

import copy
from typing import Any

from tasklane.core.wire import (
    ENVELOPE_ACTION_FIELD,
    ENVELOPE_KEY_FIELD,
    ENVELOPE_ROUTE,
    IDEMPOTENCY_KEY_HEADER,
    MAX_IDEMPOTENCY_KEY,
    TASKS_ROUTE,
)
from tasklane.handler.actions import ActionRegistry
from tasklane.handler.payloads import payload_schemas
from tasklane.handler.task_routes import envelope_reachable

REF = "#/components/schemas/{name}"


def _result(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskResult"}}}}


def _envelope(payload_schema: dict[str, Any], action_names: list[str]) -> dict[str, Any]:
    """A /process-order body for these actions: the payload's fields beside `action` and `idempotencyKey`."""
    schema = copy.deepcopy(payload_schema)
    schema.pop("title", None)
    schema["description"] = f"A {ENVELOPE_ROUTE} body: `{ENVELOPE_ACTION_FIELD}` beside the payload's fields."
    schema["properties"] = {
        ENVELOPE_ACTION_FIELD: {"type": "string", "enum": action_names, "description": "The action to run."},
        **schema.get("properties", {}),
        ENVELOPE_KEY_FIELD: {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY,
                             "description": "Runs the action at most once per key; defaults to the task name."}}
    schema["required"] = [ENVELOPE_ACTION_FIELD, *schema.get("required", [])]
    return schema


def openapi_document(actions: ActionRegistry) -> dict[str, Any]:
    registered = list(actions)
    types = list({action.payload.cls: action.payload for action in registered}.values())
    names, components = payload_schemas(types, REF)
    component_of = {payload_type.cls: name for payload_type, name in zip(types, names, strict=True)}
    envelopes = []
    for payload_type, name in zip(types, names, strict=True):
        carried = [a.name for a in registered if a.payload.cls is payload_type.cls and envelope_reachable(a)]
        if carried:
            components[f"{name}Envelope"] = _envelope(components[name], carried)
            envelopes.append({"$ref": REF.format(name=f"{name}Envelope")})
    task_headers = [
        {"name": name, "in": "header", "required": False, "schema": {"type": kind}}
        for name, kind in (("X-CloudTasks-QueueName", "string"), ("X-CloudTasks-TaskName", "string"),
                           ("X-CloudTasks-TaskRetryCount", "integer"), ("X-CloudTasks-TaskExecutionCount", "integer"),
                           ("X-CloudTasks-TaskETA", "number"), ("X-CloudTasks-TaskPreviousResponse", "integer"),
                           ("X-CloudTasks-TaskRetryReason", "string"))
    ] + [{"name": IDEMPOTENCY_KEY_HEADER, "in": "header", "required": False,
          "description": "Runs the action at most once per key; defaults to the queue and task name.",
          "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}}]
    responses = {
        "200": _result("Done, duplicate, or (from Cloud Tasks) rejected and dead-lettered"),
        "400": _result("Rejected (direct call): the body can never be processed"),
        "401": _result("No valid task token"),
        "403": _result("Token for another principal"),
        "409": _result("The same task is being processed by another delivery"),
        "413": _result("Body larger than 1 MiB"),
        "500": _result("Unexpected failure; Cloud Tasks retries"),
        "503": _result("Transient failure; Cloud Tasks retries (Retry-After when known)"),
    }
    poison = ("From Cloud Tasks a task that can never succeed (unknown, missing or invalid fields included) is "
              "acknowledged with 200 `rejected` and dead-lettered; called directly it gets 400 or 413.")
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "Health check", "responses": {"200": {"description": "Serving"}}}},
        ENVELOPE_ROUTE: {"post": {
            "summary": "Run the action the body names (called by Cloud Tasks; the tutorial's route)",
            "description": poison, "parameters": task_headers, "responses": responses,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": envelopes}}}},
        }},
    }
    for action in registered:
        paths[TASKS_ROUTE + action.name] = {"post": {
            "summary": f"Run {action.name} (called by Cloud Tasks)", "description": poison,
            "parameters": task_headers, "responses": responses, "requestBody": {
                "required": True, "content": {"application/json": {"schema": {
                    "$ref": REF.format(name=component_of[action.payload.cls])}}}},
        }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tasklane task handler", "version": "1"},
        "paths": paths,
        "components": {"schemas": components},
    }
