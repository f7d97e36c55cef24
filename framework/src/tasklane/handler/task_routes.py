"""From a delivery's route, headers and body to the action to run, its payload and its idempotency key.

Two routes reach an action (handler/wire.py names them):
- `POST /tasks/<action>`: the body is the action's payload, nothing else;
- `POST /process-order`, the tutorial's: one JSON object holding `action` (the name), optionally
  `idempotencyKey`, and the action's payload fields beside them.

The idempotency key is `idempotencyKey` in a /process-order body, else the `X-Tasklane-Idempotency-Key`
header on either route, else (chosen by the handler) the queue and task name.

Every refusal here is a PayloadError whose message says what was wrong and what is allowed; the same
delivery is refused the same way every time, so the handler treats it as poison.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from tasklane.core.wire import (
    ENVELOPE_ACTION_FIELD,
    ENVELOPE_KEY_FIELD,
    ENVELOPE_ROUTE,
    IDEMPOTENCY_KEY_HEADER,
    MAX_IDEMPOTENCY_KEY,
    TASKS_ROUTE,
)
from tasklane.handler.actions import ActionRegistry, RegisteredAction
from tasklane.handler.payloads import PayloadError, json_object_fields

IdempotencyKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)]
_action_name = msgspec.json.Decoder(str)
_key = msgspec.json.Decoder(IdempotencyKey)


@dataclass(frozen=True)
class Delivery:
    action: RegisteredAction
    payload: Any
    idempotency_key: str | None
    """The task's own key, if it carries one."""


def _unknown(name: str, actions: ActionRegistry) -> PayloadError:
    return PayloadError(f"unknown action {name!r}; known actions: {', '.join(actions.names)}")


def _header_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get(IDEMPOTENCY_KEY_HEADER.lower())
    if key is None:
        return None
    # Starlette reads header bytes as Latin-1: a UTF-8 key ("é" * 300) read as twice its length and was refused.
    with contextlib.suppress(UnicodeError):
        key = key.encode("latin-1").decode("utf-8")
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise PayloadError(f"header {IDEMPOTENCY_KEY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY} characters, "
                           f"got {len(key)}")
    return key


def _decoded(action: RegisteredAction, body: bytes) -> Any:
    try:
        return action.payload.decode(body)
    except PayloadError as error:
        raise PayloadError(f"{action.name}: {error}") from None


def from_task_route(actions: ActionRegistry, name: str, headers: Mapping[str, str], body: bytes) -> Delivery:
    """A delivery to `POST /tasks/<name>`."""
    action = actions.get(name)
    if action is None:
        raise _unknown(name, actions)
    return Delivery(action, _decoded(action, body), _header_key(headers))


def envelope_reachable(action: RegisteredAction) -> bool:
    """Whether /process-order can carry this action: its payload must not use the envelope's own fields."""
    return not {ENVELOPE_ACTION_FIELD, ENVELOPE_KEY_FIELD} & set(action.payload.fields)


def from_envelope(actions: ActionRegistry, headers: Mapping[str, str], body: bytes) -> Delivery:
    """A delivery to `POST /process-order`."""
    fields = json_object_fields(body)
    takes = (f"{ENVELOPE_ROUTE} takes `{ENVELOPE_ACTION_FIELD}` (one of {', '.join(actions.names)}), "
             f"`{ENVELOPE_KEY_FIELD}` (optional) and that action's payload fields")
    raw_name = fields.pop(ENVELOPE_ACTION_FIELD, None)
    if raw_name is None:
        raise PayloadError(f"missing required field `{ENVELOPE_ACTION_FIELD}`; {takes}")
    try:
        name = _action_name.decode(raw_name)
    except msgspec.ValidationError as error:
        raise PayloadError(f"invalid `{ENVELOPE_ACTION_FIELD}`: {error}; {takes}") from None
    action = actions.get(name)
    if action is None:
        raise _unknown(name, actions)
    if not envelope_reachable(action):
        raise PayloadError(f"{name} cannot be sent to {ENVELOPE_ROUTE}: its payload has a field named "
                           f"{ENVELOPE_ACTION_FIELD!r} or {ENVELOPE_KEY_FIELD!r}; POST it to {TASKS_ROUTE}{name}")
    raw_key = fields.pop(ENVELOPE_KEY_FIELD, None)
    try:
        key = _key.decode(raw_key) if raw_key is not None else _header_key(headers)
    except msgspec.ValidationError as error:
        raise PayloadError(f"invalid `{ENVELOPE_KEY_FIELD}`: {error}") from None
    # The remaining fields, their bytes untouched, are the payload: decoded exactly as on the action's route.
    return Delivery(action, _decoded(action, msgspec.json.encode(fields)), key)
