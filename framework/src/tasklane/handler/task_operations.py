"""`POST /task-operations`: tasks Cloud Tasks gave up without the handler answering their final attempt.

A Log Router sink (infra/unseen_failures.py) sends the queue's final failed attempts, as logged by Cloud
Tasks, to Pub/Sub, which pushes each one here (locally: the emulator's records through Google's Pub/Sub
emulator). Each becomes a dead letter of kind `gave_up_unseen`, with no body: the log record carries none,
and the task is gone from Cloud Tasks. A task the handler itself dead-lettered is not recorded twice.

Pub/Sub's push body: {"message": {"data": base64(LogEntry JSON), "attributes", "messageId", "publishTime"},
"subscription"}. A 2xx acknowledges; anything else is pushed again later, so a record is only acknowledged
once stored, and one that can never be read is acknowledged with an ERROR entry carrying it whole.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tasklane.core.dead_letter import DeadLetter, DeadLetterSink
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.handler.auth import AuthError, TokenVerifier

ROUTE = "/task-operations"
KIND = "gave_up_unseen"
ACTIVITY_LOG_TYPE = "type.googleapis.com/google.cloud.tasks.logging.v1.TaskActivityLog"
MAX_PUSH_BYTES = 1024 * 1024


class UnreadableRecord(ValueError):
    """A push that does not hold a task-operation record; it will never be readable, so it is not retried."""


def give_up_of(push: Any) -> DeadLetter | None:
    """The dead letter a pushed record stands for; None when it is not a final failure (nothing to record)."""
    if not isinstance(push, dict) or not isinstance(push.get("message"), dict):
        raise UnreadableRecord("the push has no message")
    try:
        entry = json.loads(base64.b64decode(push["message"].get("data") or "", validate=True))
    except (binascii.Error, ValueError, TypeError, RecursionError) as error:
        raise UnreadableRecord(f"the message data is not a base64 JSON log entry: {error}") from None
    payload = entry.get("jsonPayload") if isinstance(entry, dict) else None
    if not isinstance(payload, dict) or payload.get("@type") != ACTIVITY_LOG_TYPE:
        raise UnreadableRecord(f"the log entry is not a {ACTIVITY_LOG_TYPE}")
    attempt = payload.get("attemptResponseLog")
    task_name = payload.get("task")
    if not isinstance(attempt, dict) or not isinstance(task_name, str) or "/tasks/" not in task_name:
        raise UnreadableRecord("the record has no task and attemptResponseLog")
    status = str(attempt.get("status", ""))
    if status == "OK" or attempt.get("retryTime"):
        return None  # answered, or Cloud Tasks will try again
    queue_path, _, task_id = task_name.rpartition("/tasks/")
    dispatches = _count(attempt.get("dispatchCount"))
    method, _, url = str(attempt.get("targetAddress", "")).partition(" ")
    details = {
        "last_status": status,
        "dispatch_count": dispatches,
        "response_count": _count(attempt.get("responseCount")),
        "max_attempts": _count(attempt.get("maxAttempts")),
        "target": attempt.get("targetAddress"),
        "given_up_at": entry.get("timestamp"),
        "queue": queue_path,
    }
    task = TaskContext(queue_name=queue_path.rsplit("/", 1)[-1] or None, task_name=task_id,
                       retry_count=max(0, dispatches - 1), execution_count=_count(attempt.get("responseCount")))
    reason = (f"Cloud Tasks gave the task up after {dispatches} attempt(s) without the handler answering the last "
              f"(last status {status or 'unknown'})")
    return DeadLetter(kind=KIND, reason=reason, task=task, method=method or "POST", path=urlsplit(url).path or "/",
                      headers={}, body=b"", details=details)


def _count(value: Any) -> int:
    """Counts come as strings (int64 in JSON) or numbers."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


class TaskOperationsRoute:
    def __init__(self, log: StructuredLog, dead_letters: DeadLetterSink, verifier: TokenVerifier | None,
                 accept_unsigned: bool) -> None:
        self.log, self.dead_letters, self.verifier = log, dead_letters, verifier
        self.accept_unsigned = accept_unsigned

    async def handle(self, request: Request) -> Response:
        if self.verifier is not None:
            try:
                await self.verifier.verify(request.headers.get("authorization"))
            except AuthError as refusal:
                self.log.emit("WARNING", f"refused a task-operation push: {refusal.reason}", status=refusal.status)
                return JSONResponse({"status": "refused", "reason": refusal.reason}, refusal.status)
        elif not self.accept_unsigned:
            return JSONResponse({"status": "refused", "reason": "no push account is configured"}, 403)
        raw = await request.body()
        try:
            if len(raw) > MAX_PUSH_BYTES:
                raise UnreadableRecord(f"the push is {len(raw)} bytes; a log entry is at most {MAX_PUSH_BYTES}")
            letter = give_up_of(json.loads(raw))
        except (UnreadableRecord, ValueError, RecursionError) as error:  # nested past the parser: unreadable too
            # Pushing it again cannot help: acknowledge, and keep it whole where an operator will see it.
            self.log.emit("ERROR", f"unreadable task-operation push: {error}", event="unreadable_task_operation",
                          push_base64=base64.b64encode(raw[:MAX_PUSH_BYTES]).decode())
            return JSONResponse({"status": "unreadable", "reason": str(error)}, 200)
        if letter is None:
            return Response(status_code=204)
        try:
            if not await self.dead_letters.already_recorded(letter.task.queue_name, letter.task.task_name):
                await self.dead_letters.send(letter)
        except Exception as error:  # noqa: BLE001 - not stored: Pub/Sub pushes it again
            self.log.exception("dead-letter store failed; the record will be pushed again", error)
            return JSONResponse({"status": "retry", "reason": "dead-letter store failed"}, 503)
        return Response(status_code=204)
