"""The W3C trace context each task carries, so one trace shows enqueue, every attempt and the action.

When the application uses OpenTelemetry, a task joins the span that is current when it is created;
otherwise each task starts a trace of its own. Cloud Tasks passes the header on with the task's others.
"""

from __future__ import annotations

import secrets

from opentelemetry import propagate

TRACEPARENT = "traceparent"


def current_traceparent() -> str:
    """The current OpenTelemetry span's `traceparent`, or a new sampled trace (random trace and parent IDs)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT) or f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
