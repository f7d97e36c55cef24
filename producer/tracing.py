"""The W3C trace context each task carries, so one trace shows enqueue, every attempt and the action.

When the application uses OpenTelemetry, a task joins the span that is current when it is created;
otherwise each task starts a trace of its own. Cloud Tasks passes the header on with the task's others.
"""

from __future__ import annotations

import secrets

TRACEPARENT = "traceparent"


def current_traceparent() -> str:
    """The current OpenTelemetry span's `traceparent`, or a new sampled trace (random trace and parent IDs)."""
    try:
        from opentelemetry import propagate
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency; an app may still strip it
        propagate = None  # type: ignore[assignment]
    if propagate is not None:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier.get(TRACEPARENT):
            return carrier[TRACEPARENT]
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
