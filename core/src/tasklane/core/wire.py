"""What a task looks like on the wire, shared by the handler and the producer: routes, fields, a header.

Nothing is imported here, so the producer can read these without the handler's dependencies.
"""

from __future__ import annotations

TASKS_ROUTE = "/tasks/"
"""Every action has its own route, `POST /tasks/<action>`, whose body is the action's payload alone."""

ENVELOPE_ROUTE = "/process-order"
"""The tutorial's route: one JSON object naming its action, with the action's payload fields beside it."""
ENVELOPE_ACTION_FIELD = "action"
ENVELOPE_KEY_FIELD = "idempotencyKey"

IDEMPOTENCY_KEY_HEADER = "X-Tasklane-Idempotency-Key"
"""A task's own idempotency key on any route; without one, the key is the queue and task name."""
MAX_IDEMPOTENCY_KEY = 500
IDEMPOTENCY_KEY_PATTERN = r"[!-~](?:[ -~]*[!-~])?"
"""A key the producer sends in that header: printable ASCII, spaces inside only. HTTP drops a value's outer spaces
("   " arrived empty, " a " as "a"), and only ASCII is sure to cross every proxy and framework as sent (Starlette reads
header bytes as Latin-1), so any other key could arrive as a different one, or be refused as poison after the
producer had accepted it."""

ACTION_NAME_PATTERN = r"[A-Za-z0-9_-]{1,100}"
"""An action's name is a path segment of its route."""
