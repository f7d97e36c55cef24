"""Where the console finds dead letters: the dead-letter store the handler keeps them in, or its structured log.

The store is the one the operators' CLI (`python -m tasklane.producer dead-letters`) reads: `FileDeadLetterStore` (one
JSON file a letter, `make local` without the Firestore emulator) or `FirestoreDeadLetterStore` (Google's
Firestore emulator), both from handler/dead_letter_store.py, with the same record, `StoredLetter`. Those modules
are light: the console needs neither the handler's web stack nor its dependencies.

The handler also writes every dead letter as ERROR log entries carrying `tasklane_dead_letter`
(handler/dead_letter.py; a large body is split over entries with the same `id` and `part`/`parts`), which is
all there is without a store. With both, a letter in the store wins over its log entry (the same ID).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from tasklane.core.dead_letter import DEAD_LETTER_FIELD
from tasklane.core.dead_letter_store import (
    CorruptLetter,
    DeadLetterStore,
    FileDeadLetterStore,
    Replay,
    StoredLetter,
    utc_now,
)
from tasklane.core.environment import FIRESTORE_EMULATOR_HOST

MOST_LETTERS = 10_000
"""The most letters the console lists (and counts) from one source."""
STORE_SECONDS = 5.0
"""How long the console waits for a store's answer before saying it cannot be read."""
log = logging.getLogger("emulator.console")


class LettersUnavailable(Exception):
    """A store could not be read or written now (the message says which, and why); the console shows it."""


class LetterSource(Protocol):
    description: str

    async def list(self) -> Sequence[StoredLetter]:
        """Every letter, newest first; bodies may be left out (see `with_body`)."""

    async def with_body(self, letter: StoredLetter) -> StoredLetter:
        """A listed letter with its body."""

    async def get(self, letter_id: str) -> StoredLetter | None:
        """The letter as it is now, with its body."""

    async def record_replay(self, letter_id: str, replay: Replay) -> None:
        """Remember that the letter was replayed; KeyError if there is no such letter."""

    async def aclose(self) -> None:
        """Release what the source holds open."""


class StoreLetters:
    """Letters in a dead-letter store. A letter's body never changes (its ID and SHA-256 say so), so each is read
    once, not at every refresh of the page."""

    def __init__(self, store: DeadLetterStore, description: str,
                 close: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.description = description
        self._close = close
        self._bodies: dict[tuple[str, str], bytes] = {}

    async def _call(self, operation: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(STORE_SECONDS):
                return await operation
        except (KeyError, CorruptLetter):
            raise
        except TimeoutError:
            raise LettersUnavailable(f"{self.description} did not answer within {STORE_SECONDS:g} s") from None
        except Exception as error:  # noqa: BLE001 - whatever the store's client raises, the page says it
            reason = str(getattr(error, "message", None) or error).strip().splitlines()
            raise LettersUnavailable(f"{self.description} cannot be read: "
                                     f"{reason[0] if reason else type(error).__name__}") from error

    async def list(self) -> Sequence[StoredLetter]:
        letters: Sequence[StoredLetter] = await self._call(self.store.list(limit=MOST_LETTERS))
        listed = {(letter.id, letter.body_sha256) for letter in letters}
        for gone in [key for key in self._bodies if key not in listed]:
            del self._bodies[gone]
        return letters

    async def with_body(self, letter: StoredLetter) -> StoredLetter:
        body = self._bodies.get((letter.id, letter.body_sha256))
        if body is None:
            try:
                full = await self._call(self.store.get(letter.id))
            except CorruptLetter as error:
                log.warning("%s", error)
                return replace(letter, body=b"", details={**letter.details, "bodyError": str(error)})
            if full is None or full.body is None:  # deleted meanwhile
                return replace(letter, body=b"")
            body = self._bodies[(letter.id, letter.body_sha256)] = full.body
        return replace(letter, body=body)

    async def get(self, letter_id: str) -> StoredLetter | None:
        letter: StoredLetter | None = await self._call(self.store.get(letter_id))
        return letter

    async def record_replay(self, letter_id: str, replay: Replay) -> None:
        await self._call(self.store.record_replay(letter_id, replay))

    async def aclose(self) -> None:
        if self._close is not None:
            await self._close()


def directory_letters(directory: Path) -> StoreLetters:
    """The local dead-letter store's files (`make local` without the Firestore emulator)."""
    return StoreLetters(FileDeadLetterStore(Path(directory)), f"the dead-letter store {directory}")


def firestore_letters(project: str, database: str) -> StoreLetters:
    """The dead letters in a database of Google's Firestore emulator (FIRESTORE_EMULATOR_HOST), as the handler
    and the operators' CLI keep and read them."""
    from tasklane.core.firestore_client import LazyFirestore
    from tasklane.core.firestore_dead_letters import FirestoreDeadLetterStore

    firestore = LazyFirestore(project, database)
    return StoreLetters(FirestoreDeadLetterStore(firestore),
                        f"the Firestore database {database} of project {project} (Firestore emulator on "
                        f"{os.environ.get(FIRESTORE_EMULATOR_HOST, 'unset')})", close=firestore.aclose)


class HandlerLogLetters:
    """Letters from the handler's JSON-lines log, read incrementally (only what was appended since the last
    look), so a long log costs nothing per refresh. Replays are remembered for the life of the emulator."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.description = f"the handler log {self.path}"
        self._offset = 0
        self._pending = b""
        self._parts: dict[str, dict[int, dict[str, Any]]] = {}
        self._letters: dict[str, StoredLetter] = {}

    def _read(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size < self._offset:  # truncated or replaced: start over
            self._offset, self._pending, self._parts, self._letters = 0, b"", {}, {}
        if size == self._offset:
            return
        with self.path.open("rb") as handler_log:
            handler_log.seek(self._offset)
            chunk = handler_log.read(size - self._offset)
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
        record["seen"] = _seen(when)
        total = int(record.get("parts", 1))
        if len(parts) < total or 1 not in parts:
            return
        first = parts[1]
        try:
            body = b"".join(base64.b64decode(parts[number].get("body_base64", "")) for number in range(1, total + 1))
        except (KeyError, binascii.Error):
            return
        del self._parts[letter_id]
        earlier = self._letters.get(letter_id)
        self._letters[letter_id] = StoredLetter(
            id=letter_id, kind=str(first.get("kind", "")), reason=str(first.get("reason", "")),
            task_name=first.get("task_name"), queue_name=first.get("queue_name"),
            attempt=int(first.get("attempt") or 0), method=str(first.get("method", "POST")),
            path=str(first.get("path", "/")), headers=dict(first.get("headers") or {}),
            details=dict(first.get("details") or {}), first_seen=earlier.first_seen if earlier else first["seen"],
            last_seen=first["seen"], times_seen=earlier.times_seen + 1 if earlier else 1, body_bytes=len(body),
            body_sha256=hashlib.sha256(body).hexdigest(), replays=earlier.replays if earlier else (), body=body)

    async def list(self) -> Sequence[StoredLetter]:
        self._read()
        return list(reversed(self._letters.values()))[:MOST_LETTERS]

    async def with_body(self, letter: StoredLetter) -> StoredLetter:
        return letter

    async def get(self, letter_id: str) -> StoredLetter | None:
        self._read()
        return self._letters.get(letter_id)

    async def record_replay(self, letter_id: str, replay: Replay) -> None:
        letter = self._letters[letter_id]
        self._letters[letter_id] = replace(letter, replays=(*letter.replays, replay))

    async def aclose(self) -> None:
        pass


def _seen(when: Any) -> datetime.datetime:
    """When a log entry was written, if it says; else now (when the console first read it)."""
    if isinstance(when, str):
        try:
            seen = datetime.datetime.fromisoformat(when)
        except ValueError:
            return utc_now()
        return seen if seen.tzinfo is not None else seen.replace(tzinfo=datetime.UTC)
    return utc_now()


class CombinedLetters:
    """Several sources as one; the first source that has a letter's ID wins."""

    def __init__(self, sources: list[LetterSource]) -> None:
        self.sources = sources
        self.description = " and ".join(source.description for source in sources) or "none configured"
        self._owners: dict[str, LetterSource] = {}

    async def list(self) -> Sequence[StoredLetter]:
        seen: dict[str, StoredLetter] = {}
        owners: dict[str, LetterSource] = {}
        for source in self.sources:
            for letter in await source.list():
                if letter.id not in seen:
                    seen[letter.id], owners[letter.id] = letter, source
        self._owners = owners
        return sorted(seen.values(), key=lambda letter: (letter.first_seen, letter.id), reverse=True)

    async def with_body(self, letter: StoredLetter) -> StoredLetter:
        owner = self._owners.get(letter.id)
        return letter if owner is None else await owner.with_body(letter)

    async def get(self, letter_id: str) -> StoredLetter | None:
        for source in self.sources:
            letter = await source.get(letter_id)
            if letter is not None:
                return letter
        return None

    async def record_replay(self, letter_id: str, replay: Replay) -> None:
        for source in self.sources:
            if await source.get(letter_id) is not None:
                await source.record_replay(letter_id, replay)
                return
        raise KeyError(letter_id)

    async def aclose(self) -> None:
        for source in self.sources:
            await source.aclose()
