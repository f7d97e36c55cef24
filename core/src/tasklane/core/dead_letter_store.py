"""Dead letters kept where operators can list, show, replay and delete them.

A store keeps one record per letter: kind, reason, task and queue, attempt, method, path, headers
(credentials already removed by `DeadLetter.capture`), details, when it was first and last seen, its
replays, and the whole body with its length and SHA-256. Implementations:

- `FirestoreDeadLetterStore` (handler/firestore_dead_letters.py), in the stack's Firestore database;
- `FileDeadLetterStore` below, one JSON file per letter, for `make local` without the Firestore emulator.

A letter's ID is derived from its queue, task name, kind and body, so a second recording of the same
letter (a redelivered push message, say) updates it (`lastSeen`, `timesSeen`) rather than adding another.

`StoringSink` is the handler's sink: it stores the letter, then writes the structured log entry (with the
same ID) for alerting. If storing fails it raises, and the handler does not acknowledge the task.

`replay_request` is the rule for replaying a letter, which the operators' CLI (`python -m tasklane.producer
dead-letters replay`) and the local console both follow.

Light on purpose (the standard library only), so the local emulator's console can read the same stores.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: importing them would bring the handler's logging with it
    from tasklane.core.dead_letter import DeadLetter, LogDeadLetterSink

from tasklane.core.wire import ENVELOPE_KEY_FIELD, IDEMPOTENCY_KEY_HEADER, MAX_IDEMPOTENCY_KEY

KINDS = ("rejected", "final_attempt_failed", "gave_up_unseen")
LETTER_ID_LENGTH = 32
REPLAY_SUFFIX = re.compile(r"~replay-[0-9a-f]{8}$")


class CorruptLetter(RuntimeError):
    """A stored body does not match its recorded length or SHA-256."""


@dataclass(frozen=True)
class Replay:
    at: datetime.datetime
    task_name: str
    idempotency_key: str | None = None

    def record(self) -> dict[str, Any]:
        return {"at": self.at, "taskName": self.task_name, "idempotencyKey": self.idempotency_key}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Replay:
        return cls(at=_aware(record["at"]), task_name=record["taskName"], idempotency_key=record.get("idempotencyKey"))


@dataclass(frozen=True)
class StoredLetter:
    id: str
    kind: str
    reason: str
    task_name: str | None
    queue_name: str | None
    attempt: int
    method: str
    path: str
    headers: Mapping[str, str]
    details: Mapping[str, Any]
    first_seen: datetime.datetime
    last_seen: datetime.datetime
    times_seen: int
    body_bytes: int
    body_sha256: str
    replays: tuple[Replay, ...] = ()
    body: bytes | None = None
    """Loaded by `get`, not by `list`."""

    def summary(self) -> dict[str, Any]:
        """Everything but the body, JSON-ready."""
        return {"id": self.id, "kind": self.kind, "reason": self.reason, "taskName": self.task_name,
                "queueName": self.queue_name, "attempt": self.attempt, "method": self.method, "path": self.path,
                "headers": dict(self.headers), "details": dict(self.details),
                "firstSeen": self.first_seen.isoformat(), "lastSeen": self.last_seen.isoformat(),
                "timesSeen": self.times_seen, "bodyBytes": self.body_bytes, "bodySha256": self.body_sha256,
                "replays": [{"at": r.at.isoformat(), "taskName": r.task_name, "idempotencyKey": r.idempotency_key}
                            for r in self.replays]}


def make_letter_id(letter: DeadLetter) -> str:
    """Stable for the same task, kind and body; random for a letter without a task name."""
    if not letter.task.task_name:
        return uuid.uuid4().hex
    identity = "\n".join([letter.task.queue_name or "", letter.task.task_name, letter.kind,
                          hashlib.sha256(letter.body).hexdigest()])
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:LETTER_ID_LENGTH]


def letter_fields(letter: DeadLetter, now: datetime.datetime) -> dict[str, Any]:
    """The record of a new letter, without its body (camelCase, as stored in Firestore)."""
    return {"kind": letter.kind, "reason": letter.reason, "taskName": letter.task.task_name,
            "queueName": letter.task.queue_name, "attempt": letter.task.attempt, "method": letter.method,
            "path": letter.path, "headers": [{"name": k, "value": v} for k, v in letter.headers.items()],
            "details": dict(letter.details), "firstSeen": now, "lastSeen": now, "timesSeen": 1,
            "bodyBytes": len(letter.body), "bodySha256": hashlib.sha256(letter.body).hexdigest(), "replays": []}


def stored_letter(letter_id: str, record: Mapping[str, Any], body: bytes | None = None) -> StoredLetter:
    return StoredLetter(
        id=letter_id, kind=record["kind"], reason=record["reason"], task_name=record.get("taskName"),
        queue_name=record.get("queueName"), attempt=int(record.get("attempt", 0)), method=record.get("method", ""),
        path=record.get("path", ""), headers={h["name"]: h["value"] for h in record.get("headers", [])},
        details=dict(record.get("details") or {}), first_seen=_aware(record["firstSeen"]),
        last_seen=_aware(record.get("lastSeen", record["firstSeen"])), times_seen=int(record.get("timesSeen", 1)),
        body_bytes=int(record.get("bodyBytes", 0)), body_sha256=record.get("bodySha256", ""),
        replays=tuple(Replay.from_record(r) for r in record.get("replays", [])), body=body)


def checked_body(letter: StoredLetter, body: bytes) -> StoredLetter:
    """`letter` with `body`, or CorruptLetter if the body is not exactly the one recorded."""
    if len(body) != letter.body_bytes or hashlib.sha256(body).hexdigest() != letter.body_sha256:
        raise CorruptLetter(f"letter {letter.id}: the stored body ({len(body)} bytes) does not match its "
                            f"recorded length ({letter.body_bytes}) and SHA-256")
    return replace(letter, body=body)


def matches(letter: StoredLetter, kind: str | None, reason: str | None, since: datetime.datetime | None,
            until: datetime.datetime | None) -> bool:
    """The list filters: kind exactly, reason as a case-insensitive substring, first seen in [since, until]."""
    return ((kind is None or letter.kind == kind)
            and (reason is None or reason.lower() in letter.reason.lower())
            and (since is None or letter.first_seen >= since)
            and (until is None or letter.first_seen <= until))


class NotReplayable(ValueError):
    """The letter holds nothing to send again."""


@dataclass(frozen=True)
class ReplayRequest:
    """What a replay of a letter sends as a new task."""

    body: bytes
    content_type: str
    path: str
    headers: Mapping[str, str]
    """Headers beyond Content-Type: the fresh X-Tasklane-Idempotency-Key when the letter's task had that header."""
    idempotency_key: str | None
    """The replay's fresh key, in the body or in `headers`, when the letter's task had its own."""


def replay_request(letter: StoredLetter) -> ReplayRequest:
    """The new task's body, content type, path and headers: the letter's own, with a fresh key where the task had
    its own (an `idempotencyKey` in a JSON body, or the X-Tasklane-Idempotency-Key header): the old key is done,
    and would make the replay a duplicate. NotReplayable for a letter without a body."""
    if letter.kind == "gave_up_unseen" or not letter.body:
        raise NotReplayable(f"letter {letter.id} has no body ({letter.kind}): Cloud Tasks does not log task bodies, "
                            "so there is nothing to replay")
    body, key = with_fresh_key(letter.body)
    content_type = next((value for name, value in letter.headers.items() if name.lower() == "content-type"),
                        "application/json")
    header_key = next((value for name, value in letter.headers.items()
                       if name.lower() == IDEMPOTENCY_KEY_HEADER.lower()), None)
    headers = {}
    if header_key is not None:
        headers[IDEMPOTENCY_KEY_HEADER] = key = fresh_key(header_key)
    return ReplayRequest(body, content_type, letter.path, headers, key)


def with_fresh_key(body: bytes) -> tuple[bytes, str | None]:
    """The body with a new `idempotencyKey` if it is a JSON object holding one (else as it was), and that key."""
    try:
        order = json.loads(body)
    except (ValueError, RecursionError):
        return body, None
    if not isinstance(order, dict) or not isinstance(order.get(ENVELOPE_KEY_FIELD), str):
        return body, None
    order[ENVELOPE_KEY_FIELD] = key = fresh_key(order[ENVELOPE_KEY_FIELD])
    try:
        text = json.dumps(order, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # a number past a float (1e400 read as inf) would be written as Infinity, which is not JSON
        return body, None
    try:
        return text.encode(), key
    except UnicodeEncodeError:  # a lone surrogate the body held as an escape ("\ud800") stays one
        return json.dumps(order, separators=(",", ":"), allow_nan=False).encode(), key


def fresh_key(key: str) -> str:
    """A replay's key for a task that had `key`: `KEY~replay-xxxxxxxx`. An earlier replay's suffix is replaced, not
    added to, so replays of replays keep the original key readable, and the result stays within the limit."""
    base = REPLAY_SUFFIX.sub("", key)[:MAX_IDEMPOTENCY_KEY - 16]
    return f"{base}~replay-{secrets.token_hex(4)}"


def _aware(value: Any) -> datetime.datetime:
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"expected a time, got {type(value).__name__}")
    return value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class DeadLetterStore(Protocol):
    async def put(self, letter: DeadLetter) -> str:
        """Store the letter durably (or raise); its ID. The same letter again updates the first."""

    async def list(self, *, kind: str | None = None, reason: str | None = None,
                   since: datetime.datetime | None = None, until: datetime.datetime | None = None,
                   limit: int = 100) -> Sequence[StoredLetter]:
        """Newest first, without bodies."""

    async def get(self, letter_id: str) -> StoredLetter | None:
        """With its body, checked against the recorded length and SHA-256."""

    async def record_replay(self, letter_id: str, replay: Replay) -> None:
        """KeyError if there is no such letter."""

    async def delete(self, letter_id: str) -> bool:
        """False if there was no such letter."""

    async def has_task(self, queue_name: str | None, task_name: str | None) -> bool:
        """Whether a letter for this task is stored (a give-up it already recorded is not recorded twice)."""


class StoringSink:
    """The handler's dead-letter sink with a store: store first (or raise), then the log entry for alerting."""

    def __init__(self, store: DeadLetterStore, log: LogDeadLetterSink) -> None:
        self.store = store
        self.log = log

    async def send(self, letter: DeadLetter) -> None:
        stored_as = await self.store.put(letter)
        await self.log.send(letter, letter_id=stored_as)

    async def already_recorded(self, queue_name: str | None, task_name: str | None) -> bool:
        return await self.store.has_task(queue_name, task_name)


@dataclass
class FileDeadLetterStore:
    """One JSON file per letter in `directory` (body base64), each written whole by rename."""

    directory: Path
    clock: Callable[[], datetime.datetime] = field(default=utc_now)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)

    def _path(self, letter_id: str) -> Path:
        if not letter_id or not all(c in "0123456789abcdef" for c in letter_id) or len(letter_id) > 64:
            raise KeyError(letter_id)
        return self.directory / f"{letter_id}.json"

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        except FileNotFoundError:
            return None

    def _write(self, path: Path, record: Mapping[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record, default=_json_default, ensure_ascii=False)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.directory, suffix=".tmp",
                                         delete=False) as temporary:
            temporary.write(text)
            temporary.flush()
            os.fsync(temporary.fileno())
        os.replace(temporary.name, path)

    async def put(self, letter: DeadLetter) -> str:
        return await asyncio.to_thread(self._put, letter)

    def _put(self, letter: DeadLetter) -> str:
        letter_id = make_letter_id(letter)
        path = self._path(letter_id)
        now = self.clock()
        record = self._read(path)
        if record is None:
            record = {**letter_fields(letter, now), "body": base64.b64encode(letter.body).decode()}
        else:
            record.update(lastSeen=now, timesSeen=int(record.get("timesSeen", 1)) + 1)
        self._write(path, record)
        return letter_id

    async def list(self, *, kind: str | None = None, reason: str | None = None,
                   since: datetime.datetime | None = None, until: datetime.datetime | None = None,
                   limit: int = 100) -> Sequence[StoredLetter]:
        return await asyncio.to_thread(self._list, kind, reason, since, until, limit)

    def _list(self, kind: str | None, reason: str | None, since: datetime.datetime | None,
              until: datetime.datetime | None, limit: int) -> Sequence[StoredLetter]:
        letters = []
        for path in self.directory.glob("*.json") if self.directory.is_dir() else ():
            try:
                record = self._read(self._path(path.stem))
                letter = stored_letter(path.stem, record) if isinstance(record, dict) else None
            except (KeyError, TypeError, ValueError):
                continue  # not a letter: another file in the directory
            if letter is not None and matches(letter, kind, reason, since, until):
                letters.append(letter)
        letters.sort(key=lambda letter: (letter.first_seen, letter.id), reverse=True)
        return letters[:limit]

    async def get(self, letter_id: str) -> StoredLetter | None:
        try:
            record = self._read(self._path(letter_id))
        except KeyError:
            return None
        if record is None:
            return None
        return checked_body(stored_letter(letter_id, record), base64.b64decode(record.get("body", "")))

    async def record_replay(self, letter_id: str, replay: Replay) -> None:
        path = self._path(letter_id)
        record = self._read(path)
        if record is None:
            raise KeyError(letter_id)
        record.setdefault("replays", []).append(replay.record())
        self._write(path, record)

    async def delete(self, letter_id: str) -> bool:
        try:
            self._path(letter_id).unlink()
        except (FileNotFoundError, KeyError):
            return False
        return True

    async def has_task(self, queue_name: str | None, task_name: str | None) -> bool:
        if not task_name:
            return False
        letters = await self.list(limit=1_000_000)
        return any((letter.queue_name, letter.task_name) == (queue_name, task_name) for letter in letters)



def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
