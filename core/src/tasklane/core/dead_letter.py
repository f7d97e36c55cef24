"""Dead letters: tasks Cloud Tasks will not deliver again, kept whole where an operator can find them.

A task is dead-lettered when it can never succeed (acknowledged with 2xx so it is not retried) and
when its final attempt fails (Cloud Tasks then deletes it). The sink is pluggable; if it raises, the
handler does not acknowledge the task, so Cloud Tasks delivers it again rather than losing it.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext

# Never kept: credentials, and hop-by-hop headers that mean nothing on a replay.
DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "content-length", "connection"})

# A Cloud Logging entry holds at most 256 KB; bodies larger than this go out in several entries.
LOG_BODY_CHUNK_BYTES = 96 * 1024

DEAD_LETTER_FIELD = "tasklane_dead_letter"


@dataclass(frozen=True)
class DeadLetter:
    kind: str
    """"rejected" (can never succeed), "final_attempt_failed", or "gave_up_unseen" (given up by Cloud Tasks
    without the handler answering its final attempt; recorded from the queue's task-operation log)."""
    reason: str
    task: TaskContext
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    details: Mapping[str, object] = field(default_factory=dict)
    """What else is known, JSON-serialisable: for gave_up_unseen, the last status, attempts and time."""

    @classmethod
    def capture(cls, kind: str, reason: str, task: TaskContext, method: str, path: str,
                headers: Mapping[str, str], body: bytes) -> DeadLetter:
        kept = {name: value for name, value in headers.items() if name.lower() not in DROPPED_HEADERS}
        return cls(kind=kind, reason=reason, task=task, method=method, path=path, headers=kept, body=body)


class DeadLetterSink(Protocol):
    async def send(self, letter: DeadLetter) -> None:
        """Store the letter durably, or raise."""

    async def already_recorded(self, queue_name: str | None, task_name: str | None) -> bool:
        """Whether a letter for this task is stored already (so a give-up is not recorded twice)."""


class LogDeadLetterSink:
    """Writes each dead letter as ERROR log entries carrying the whole task.

    Find them with the filter `jsonPayload.tasklane_dead_letter.id:*` (README: "Dead letters"). A body
    larger than one entry allows is split over entries with the same `id` and `part`/`parts`.
    """

    def __init__(self, log: StructuredLog) -> None:
        self.log = log

    async def already_recorded(self, queue_name: str | None, task_name: str | None) -> bool:
        return False  # log entries cannot be read back from here; Cloud Logging can be searched for both

    async def send(self, letter: DeadLetter, letter_id: str | None = None) -> None:
        """`letter_id`: the ID a store gave the letter, so the entry leads to it; random without a store."""
        letter_id = letter_id or uuid.uuid4().hex
        chunks = [letter.body[i:i + LOG_BODY_CHUNK_BYTES]
                  for i in range(0, len(letter.body), LOG_BODY_CHUNK_BYTES)] or [b""]
        name = letter.task.task_name or "(direct call)"
        for part, chunk in enumerate(chunks, start=1):
            record: dict[str, object] = {"id": letter_id, "part": part, "parts": len(chunks),
                                         "body_base64": base64.b64encode(chunk).decode()}
            if part == 1:
                record.update(kind=letter.kind, reason=letter.reason, task_name=letter.task.task_name,
                              queue_name=letter.task.queue_name, attempt=letter.task.attempt,
                              method=letter.method, path=letter.path, headers=dict(letter.headers),
                              body_bytes=len(letter.body), body_sha256=hashlib.sha256(letter.body).hexdigest())
                if letter.details:
                    record["details"] = dict(letter.details)
            self.log.emit("ERROR", f"dead-lettered task {name} ({letter.kind}): {letter.reason}",
                          task=letter.task, extra={DEAD_LETTER_FIELD: record})
