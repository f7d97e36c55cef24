"""Where the console finds dead letters: the handler's structured log, or the local dead-letter store's files.

The handler writes every dead letter as ERROR log entries carrying `tasklane_dead_letter` (handler/dead_letter.py;
a large body is split over entries with the same `id` and `part`/`parts`). The local dead-letter store keeps one
JSON file per letter in a directory (`FileDeadLetterStore`, handler/dead_letter_store.py): camelCase fields, the
body base64, and the letter's replays. The console reads either through `LetterSource`, so it needs neither the
handler's code nor its dependencies; with both, a letter stored as a file wins over its log entry (same ID).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

DEAD_LETTER_FIELD = "tasklane_dead_letter"


@dataclass
class Letter:
    id: str
    kind: str
    reason: str
    task_name: str | None
    queue_name: str | None
    attempt: int
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    first_seen: str | None
    replays: list[dict[str, Any]] = field(default_factory=list)

    @property
    def task_id(self) -> str | None:
        return self.task_name.rsplit("/", 1)[-1] if self.task_name else None


class LetterSource(Protocol):
    description: str

    def letters(self) -> list[Letter]:
        """Every letter, newest first."""

    def record_replay(self, letter_id: str, task_name: str, idempotency_key: str | None) -> None:
        """Remember that the letter was replayed as `task_name`."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


class HandlerLogLetters:
    """Letters from the handler's JSON-lines log, read incrementally (only what was appended since the last
    look), so a long log costs nothing per refresh. Replays are remembered for the life of the emulator."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.description = f"the handler log {self.path}"
        self._offset = 0
        self._pending = b""
        self._parts: dict[str, dict[int, dict[str, Any]]] = {}
        self._letters: dict[str, Letter] = {}
        self._replays: dict[str, list[dict[str, Any]]] = {}

    def _read(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size < self._offset:  # truncated or replaced: start over
            self._offset, self._pending, self._parts, self._letters = 0, b"", {}, {}
        if size == self._offset:
            return
        with self.path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read(size - self._offset)
        self._offset += len(chunk)
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if DEAD_LETTER_FIELD.encode() not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            record = entry.get(DEAD_LETTER_FIELD) if isinstance(entry, dict) else None
            if isinstance(record, dict) and isinstance(record.get("id"), str):
                self._add_part(record, entry.get("timestamp") or entry.get("time"))

    def _add_part(self, record: dict[str, Any], when: Any) -> None:
        letter_id = record["id"]
        parts = self._parts.setdefault(letter_id, {})
        parts[int(record.get("part", 1))] = record
        record["seen"] = str(when) if when is not None else _now()
        total = int(record.get("parts", 1))
        if len(parts) < total or 1 not in parts:
            return
        first = parts[1]
        try:
            body = b"".join(base64.b64decode(parts[number].get("body_base64", "")) for number in range(1, total + 1))
        except (KeyError, binascii.Error):
            return
        del self._parts[letter_id]
        self._letters[letter_id] = Letter(
            id=letter_id, kind=str(first.get("kind", "")), reason=str(first.get("reason", "")),
            task_name=first.get("task_name"), queue_name=first.get("queue_name"),
            attempt=int(first.get("attempt") or 0), method=str(first.get("method", "POST")),
            path=str(first.get("path", "/")), headers=dict(first.get("headers") or {}), body=body,
            first_seen=first.get("seen"), replays=self._replays.setdefault(letter_id, []))

    def letters(self) -> list[Letter]:
        self._read()
        return list(reversed(self._letters.values()))

    def record_replay(self, letter_id: str, task_name: str, idempotency_key: str | None) -> None:
        self._replays.setdefault(letter_id, []).append(
            {"at": _now(), "taskName": task_name, "idempotencyKey": idempotency_key})


class DirectoryLetters:
    """Letters kept one JSON file each by the local dead-letter store (`FileDeadLetterStore`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.description = f"the dead-letter store {self.directory}"
        self._cache: dict[str, tuple[float, Letter]] = {}

    def _load(self, path: Path) -> Letter | None:
        try:
            mtime = path.stat().st_mtime
            cached = self._cache.get(path.stem)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            record = json.loads(path.read_text(encoding="utf-8"))
            letter = Letter(
                id=path.stem, kind=str(record["kind"]), reason=str(record["reason"]),
                task_name=record.get("taskName"), queue_name=record.get("queueName"),
                attempt=int(record.get("attempt") or 0), method=str(record.get("method", "POST")),
                path=str(record.get("path", "/")),
                headers={h["name"]: h["value"] for h in record.get("headers", [])},
                body=base64.b64decode(record.get("body", "")), first_seen=record.get("firstSeen"),
                replays=list(record.get("replays") or []))
        except (OSError, ValueError, KeyError, TypeError, binascii.Error):
            return None
        self._cache[path.stem] = (mtime, letter)
        return letter

    def letters(self) -> list[Letter]:
        if not self.directory.is_dir():
            return []
        found = [letter for path in self.directory.glob("*.json") if (letter := self._load(path)) is not None]
        return sorted(found, key=lambda letter: (letter.first_seen or "", letter.id), reverse=True)

    def record_replay(self, letter_id: str, task_name: str, idempotency_key: str | None) -> None:
        if not letter_id or not all(c in "0123456789abcdef" for c in letter_id):
            raise KeyError(letter_id)
        path = self.directory / f"{letter_id}.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        record.setdefault("replays", []).append({"at": _now(), "taskName": task_name,
                                                  "idempotencyKey": idempotency_key})
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=self.directory, suffix=".tmp",
                                         delete=False) as temporary:
            temporary.write(json.dumps(record, ensure_ascii=False))
        os.replace(temporary.name, path)


class CombinedLetters:
    """Several sources as one; the first source that has a letter's ID wins."""

    def __init__(self, sources: list[LetterSource]) -> None:
        self.sources = sources
        self.description = " and ".join(source.description for source in sources) or "none configured"

    def letters(self) -> list[Letter]:
        seen: dict[str, Letter] = {}
        for source in self.sources:
            for letter in source.letters():
                seen.setdefault(letter.id, letter)
        return sorted(seen.values(), key=lambda letter: (letter.first_seen or "", letter.id), reverse=True)

    def record_replay(self, letter_id: str, task_name: str, idempotency_key: str | None) -> None:
        for source in self.sources:
            if any(letter.id == letter_id for letter in source.letters()):
                source.record_replay(letter_id, task_name, idempotency_key)
                return
        raise KeyError(letter_id)
