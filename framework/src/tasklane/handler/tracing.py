"""Traces from producer to action: each attempt continues the trace the producer started.

The producer puts a W3C `traceparent` on every task (producer/tracing.py); Cloud Tasks passes the task's
headers on, and Cloud Run keeps the trace ID. Here each attempt becomes a span, continuing that trace,
with the action's span inside; log entries written during them carry `logging.googleapis.com/trace` and
`spanId` for that trace, so one trace shows enqueue, every attempt and the action.

Where spans go (TASKLANE_TRACE_EXPORTER): `cloud-trace` (the deployed service: Cloud Trace, through the
runtime account's roles/cloudtrace.agent), `log` (make local: one log line per span), or `off`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.handler.config import TraceExporter

LEGACY_TRACE_HEADER = "x-cloud-trace-context"
TRACER_NAME = "tasklane.handler"


def log_trace(context: trace.SpanContext) -> str | None:
    """A span context as X-Cloud-Trace-Context (TRACE/SPAN_DECIMAL;o=1), the form the log entries take."""
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}/{context.span_id};o={1 if context.trace_flags.sampled else 0}"


class LogSpanExporter(SpanExporter):
    """One structured log line per finished span: the trace, visible in `make local` without a backend."""

    def __init__(self, log: StructuredLog) -> None:
        self.log = log

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context = span.get_span_context()
            if context is None:
                continue
            duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            self.log.emit("DEBUG", f"span {span.name}: {duration_ms:.1f} ms", event="span", span_name=span.name,
                          trace_id=f"{context.trace_id:032x}", span_id=f"{context.span_id:016x}",
                          parent_span_id=f"{span.parent.span_id:016x}" if span.parent else None,
                          duration_ms=round(duration_ms, 3), status=span.status.status_code.name)
        return SpanExportResult.SUCCESS


def tracer_provider(exporter: TraceExporter, log: StructuredLog, project_id: str | None = None,
                    ) -> TracerProvider | None:
    if exporter is TraceExporter.OFF:
        return None
    provider = TracerProvider()
    if exporter is TraceExporter.LOG:
        provider.add_span_processor(SimpleSpanProcessor(LogSpanExporter(log)))
    else:
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        exporter_ = CloudTraceSpanExporter(project_id=project_id)  # type: ignore[no-untyped-call]
        provider.add_span_processor(BatchSpanProcessor(exporter_))
    return provider


class Tracing:
    """Spans for attempts and actions; without a tracer, log entries still join the producer's trace."""

    def __init__(self, tracer: trace.Tracer | None) -> None:
        self.tracer = tracer

    @contextlib.contextmanager
    def attempt(self, headers: Mapping[str, str], task: TaskContext) -> Iterator[str | None]:
        """The attempt's span (continuing the task's traceparent); yields the log entries' trace value."""
        parent = propagate.extract(headers)
        if self.tracer is None:
            yield log_trace(trace.get_current_span(parent).get_span_context()) or headers.get(LEGACY_TRACE_HEADER)
            return
        attributes: dict[str, Any] = {"cloud_tasks.retry_count": task.retry_count}
        if task.task_name:
            attributes["cloud_tasks.task_name"] = task.task_name
        if task.queue_name:
            attributes["cloud_tasks.queue_name"] = task.queue_name
        with self.tracer.start_as_current_span("task attempt", context=parent, kind=SpanKind.SERVER,
                                               attributes=attributes, record_exception=False) as span:
            yield log_trace(span.get_span_context())

    @contextlib.contextmanager
    def action(self, name: str, fallback: str | None) -> Iterator[str | None]:
        """The action's span, inside the attempt's; yields the trace value for the action's own entries."""
        if self.tracer is None:
            yield fallback
            return
        # An exception leaving the action marks its span as an error and is recorded on it.
        with self.tracer.start_as_current_span(f"action {name}", attributes={"tasklane.action": name},
                                               record_exception=True, set_status_on_exception=True) as span:
            yield log_trace(span.get_span_context())
