"""One JSON object per line on stdout, in Cloud Logging's structured format.

Cloud Run forwards stdout to Cloud Logging, which reads `severity` and `message`, links an entry to its
request's trace through `logging.googleapis.com/trace`, and indexes `logging.googleapis.com/labels`.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from tasklane.core.task_context import TaskContext

TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")
SPAN_ID = re.compile(r"[0-9]{1,20}")
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
LABELS_KEY = "logging.googleapis.com/labels"
# Error Reporting groups entries of this type that carry a stack trace.
ERROR_EVENT_TYPE = "type.googleapis.com/google.devtools.clouderrorreporting.v1beta1.ReportedErrorEvent"

Writer = Callable[[bytes], object]


def _write_stdout(data: bytes) -> None:
    # One unbuffered write per entry: nothing sits in a buffer when the instance is stopped.
    os.write(1, data)


def trace_fields(trace_header: str | None, project_id: str | None) -> dict[str, Any]:
    """Fields linking an entry to the request's trace, from `X-Cloud-Trace-Context: TRACE/SPAN;o=1`."""
    if not trace_header or not project_id:
        return {}
    # The header comes from whoever sent the request: anything but the documented shape (a 32-character hex trace
    # ID, a decimal 64-bit span ID) is left out. "²" passed str.isdigit() and 5,000 digits passed it too, and int()
    # raised on both, so every log entry of that request failed.
    trace_id, _, rest = trace_header.partition("/")
    if not TRACE_ID.fullmatch(trace_id):
        return {}
    fields: dict[str, Any] = {TRACE_KEY: f"projects/{project_id}/traces/{trace_id}"}
    span, _, options = rest.partition(";")
    if SPAN_ID.fullmatch(span) and 0 < int(span) < 2**64:
        fields[SPAN_KEY] = f"{int(span):016x}"  # the header's span ID is decimal; Logging wants 16 hex digits
    if options:
        fields[SAMPLED_KEY] = options == "o=1"
    return fields


def task_labels(task: TaskContext) -> dict[str, str]:
    labels = {"retry_count": str(task.retry_count)}
    if task.task_name:
        labels["task_name"] = task.task_name
    if task.queue_name:
        labels["queue_name"] = task.queue_name
    return labels


class StructuredLog:
    """Writes Cloud Logging entries; cheap enough to call once per task on the hot path."""

    def __init__(self, project_id: str | None = None, writer: Writer = _write_stdout) -> None:
        self.project_id = project_id
        self._writer = writer
        self._encode = msgspec.json.Encoder().encode

    def emit(self, severity: str, message: str, *, task: TaskContext | None = None,
             trace_header: str | None = None, extra: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """One entry; `fields` and `extra` (for keys that are not identifiers) become top-level fields."""
        entry: dict[str, Any] = {"severity": severity, "message": message}
        if task is not None:
            entry[LABELS_KEY] = task_labels(task)
        if trace_header:
            entry.update(trace_fields(trace_header, self.project_id))
        entry.update(fields)
        if extra:
            entry.update(extra)
        self._writer(self._encode(entry) + b"\n")

    def exception(self, message: str, error: BaseException, **kwargs: Any) -> None:
        """An ERROR entry carrying the traceback, in the form Error Reporting picks up."""
        stack = "".join(traceback.format_exception(error))
        self.emit("ERROR", f"{message}\n{stack}", stack_trace=stack, error_class=type(error).__name__,
                  extra={"@type": ERROR_EVENT_TYPE}, **kwargs)


class CloudLoggingFormatter(logging.Formatter):
    """Formats standard-library records (uvicorn's own) as the same JSON entries."""

    _encode = msgspec.json.Encoder().encode

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"severity": record.levelname, "message": record.getMessage(),
                                 "logger": record.name}
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        return self._encode(entry).decode()


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` that sends uvicorn's and the root logger's records to stdout as JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"cloud": {"()": f"{__name__}.CloudLoggingFormatter"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "cloud", "stream": "ext://sys.stdout"}},
        "loggers": {
            "uvicorn": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stdout"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["stdout"], "level": level},
    }
