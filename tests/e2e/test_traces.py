"""One trace from producer to action: a task that fails once and then succeeds shows the producer's trace ID on
both attempts' spans, on the action's span inside the second, and on the action's log entry."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.e2e.conftest import Pipeline
from tests.helpers import wait_for


def test_a_retried_task_is_one_trace_from_enqueue_to_the_action(make_pipeline: Callable[..., Pipeline]) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    pipeline = make_pipeline(tracer=provider.get_tracer("test"))
    created = pipeline.producer.enqueue("flaky_once", {"orderId": "traced"})
    traceparent = pipeline.producer.get_task(created.task_name).http_request.headers["traceparent"]
    _, trace_id, producer_span, _ = traceparent.split("-")

    def done() -> bool:
        pipeline.clock.advance(1)
        return "traced" in pipeline.handled("flaky_done")

    wait_for(done, timeout=30, message="the task to succeed on its second attempt")
    finished = spans.get_finished_spans()
    attempts = [span for span in finished if span.name == "task attempt"]
    [action_span] = [span for span in finished if span.name == "action flaky_once" and span.status.is_ok]
    assert len(attempts) == 2
    for span in attempts:
        assert f"{span.context.trace_id:032x}" == trace_id
        assert span.parent is not None and f"{span.parent.span_id:016x}" == producer_span, "continues the producer's"
    assert sorted(span.attributes["cloud_tasks.retry_count"] for span in attempts) == [0, 1]
    assert action_span.parent is not None and action_span.parent.span_id in {s.context.span_id for s in attempts}
    [entry] = pipeline.log.events("flaky_done")
    assert entry["logging.googleapis.com/trace"] == f"projects/tasklane-e2e/traces/{trace_id}"
    assert entry["logging.googleapis.com/spanId"] == f"{action_span.context.span_id:016x}"


def test_without_spans_the_log_entries_still_join_the_producers_trace(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline()
    created = pipeline.producer.enqueue("update_inventory", {"orderId": "logged"})
    trace_id = pipeline.producer.get_task(created.task_name).http_request.headers["traceparent"].split("-")[1]
    wait_for(lambda: "logged" in pipeline.handled("inventory_updated"), timeout=20, message="the task")
    [entry] = pipeline.log.events("inventory_updated")
    assert entry["logging.googleapis.com/trace"] == f"projects/tasklane-e2e/traces/{trace_id}"


def test_a_task_created_inside_an_application_span_joins_that_trace() -> None:
    from opentelemetry import trace

    from tasklane.producer.tracing import current_traceparent

    tracer = TracerProvider().get_tracer("app")
    with tracer.start_as_current_span("checkout") as span:
        header = current_traceparent()
    assert header.split("-")[1] == f"{span.get_span_context().trace_id:032x}"
    assert header.split("-")[2] == f"{span.get_span_context().span_id:016x}"
    outside = current_traceparent()
    assert outside.split("-")[1] != header.split("-")[1] and len(outside.split("-")[1]) == 32
    assert trace.get_current_span().get_span_context().is_valid is False


def test_make_locals_exporter_writes_one_log_line_per_span() -> None:
    import json

    from tasklane.core.logs import StructuredLog
    from tasklane.handler.config import TraceExporter
    from tasklane.handler.tracing import tracer_provider

    lines: list[bytes] = []
    provider = tracer_provider(TraceExporter.LOG, StructuredLog(writer=lines.append))
    assert provider is not None
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("task attempt") as outer, tracer.start_as_current_span("action x"):
        pass
    entries = [json.loads(line) for line in lines]
    assert [entry["span_name"] for entry in entries] == ["action x", "task attempt"]
    assert {entry["trace_id"] for entry in entries} == {f"{outer.get_span_context().trace_id:032x}"}
    assert entries[0]["parent_span_id"] == entries[1]["span_id"]
    assert tracer_provider(TraceExporter.OFF, StructuredLog(writer=lines.append)) is None
