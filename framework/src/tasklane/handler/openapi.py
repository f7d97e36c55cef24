"""The handler's OpenAPI document, served at /openapi.json; the order schema comes from the decoder's type."""

from __future__ import annotations

from typing import Any

import msgspec

from tasklane.handler.orders import OrderRequest


def _result(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TaskResult"}}}}


def openapi_document(action_names: tuple[str, ...]) -> dict[str, Any]:
    (order_schema,), components = msgspec.json.schema_components([OrderRequest],
                                                                 ref_template="#/components/schemas/{name}")
    components["OrderRequest"]["properties"]["action"]["enum"] = list(action_names)
    components["TaskResult"] = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string", "enum": ["done", "duplicate", "rejected", "retry", "in_progress",
                                                  "error", "unauthorized", "forbidden"]},
            "reason": {"type": "string"},
        },
    }
    task_headers = [
        {"name": name, "in": "header", "required": False, "schema": {"type": kind}}
        for name, kind in (("X-CloudTasks-QueueName", "string"), ("X-CloudTasks-TaskName", "string"),
                           ("X-CloudTasks-TaskRetryCount", "integer"), ("X-CloudTasks-TaskExecutionCount", "integer"),
                           ("X-CloudTasks-TaskETA", "number"), ("X-CloudTasks-TaskPreviousResponse", "integer"),
                           ("X-CloudTasks-TaskRetryReason", "string"))
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tasklane task handler", "version": "1"},
        "paths": {
            "/": {"get": {"summary": "Health check", "responses": {"200": {"description": "Serving"}}}},
            "/process-order": {"post": {
                "summary": "Run one order action (called by Cloud Tasks)",
                "description": ("From Cloud Tasks a task that can never succeed is acknowledged with 200 "
                                "`rejected` and dead-lettered; called directly it gets 400 or 413."),
                "parameters": task_headers,
                "requestBody": {"required": True, "content": {"application/json": {"schema": order_schema}}},
                "responses": {
                    "200": _result("Done, duplicate, or (from Cloud Tasks) rejected and dead-lettered"),
                    "400": _result("Rejected (direct call): the body can never be processed"),
                    "401": _result("No valid task token"),
                    "403": _result("Token for another principal"),
                    "409": _result("The same task is being processed by another delivery"),
                    "413": _result("Body larger than 1 MiB"),
                    "500": _result("Unexpected failure; Cloud Tasks retries"),
                    "503": _result("Transient failure; Cloud Tasks retries (Retry-After when known)"),
                },
            }},
        },
        "components": {"schemas": components},
    }
