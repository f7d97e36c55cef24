"""`FirestoreDeadLetterStore`: dead letters in the stack's Firestore database.

`deadLetters/{id}` holds the letter's fields (see handler/dead_letter_store.py) and
`deadLetters/{id}/chunks/{000000, 000001, …}` its body, split in pieces of at most
BODY_CHUNK_BYTES, since a Firestore document holds at most 1 MiB and a task body may be 1 MiB. The
letter and its chunks are written in one batch, so a letter is never seen without its whole body;
reading reassembles the pieces and checks them against the recorded length and SHA-256.

Listing orders by `firstSeen` alone (Firestore's automatic single-field index) and filters kind and
reason here, so the database needs no composite index.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as api_exceptions
from google.cloud.firestore import ArrayUnion, AsyncWriteBatch, Increment, Query

from tasklane.core.dead_letter_store import (
    Replay,
    StoredLetter,
    checked_body,
    letter_fields,
    make_letter_id,
    matches,
    stored_letter,
    utc_now,
)
from tasklane.core.firestore_client import LazyFirestore
from tasklane.core.firestore_names import DEAD_LETTER_COLLECTION

if TYPE_CHECKING:  # an annotation only: the local console reads this store without the handler's logging
    from tasklane.core.dead_letter import DeadLetter

# Under the 1 MiB document limit with room for the document's name and fields.
BODY_CHUNK_BYTES = 512 * 1024
BODY_CHUNKS_SUBCOLLECTION = "chunks"
"""Beneath each letter: its body's pieces, documents "000000", "000001", …"""


def chunk_id(index: int) -> str:
    return f"{index:06d}"


class FirestoreDeadLetterStore:
    def __init__(self, firestore: LazyFirestore, collection: str = DEAD_LETTER_COLLECTION,
                 clock: Callable[[], datetime.datetime] = utc_now) -> None:
        self.firestore = firestore
        self.collection = collection
        self._clock = clock

    def _ref(self, letter_id: str) -> Any:
        if not letter_id or "/" in letter_id or letter_id in (".", "..") or letter_id.startswith("__"):
            raise KeyError(letter_id)
        return self.firestore.client().collection(self.collection).document(letter_id)

    async def put(self, letter: DeadLetter) -> str:
        letter_id = make_letter_id(letter)
        ref = self._ref(letter_id)
        now = self._clock()
        batch: AsyncWriteBatch = self.firestore.client().batch()
        batch.create(ref, letter_fields(letter, now))  # fails whole if the letter exists already
        chunks = ref.collection(BODY_CHUNKS_SUBCOLLECTION)
        for index, start in enumerate(range(0, len(letter.body), BODY_CHUNK_BYTES)):
            batch.set(chunks.document(chunk_id(index)), {"data": letter.body[start:start + BODY_CHUNK_BYTES]})
        try:
            await batch.commit()
        except api_exceptions.AlreadyExists:
            await ref.update({"lastSeen": now, "timesSeen": Increment(1)})
        return letter_id

    async def list(self, *, kind: str | None = None, reason: str | None = None,
                   since: datetime.datetime | None = None, until: datetime.datetime | None = None,
                   limit: int = 100) -> Sequence[StoredLetter]:
        query: Any = self.firestore.client().collection(self.collection)
        if since is not None:
            query = query.where(filter=_field_filter("firstSeen", ">=", since))
        if until is not None:
            query = query.where(filter=_field_filter("firstSeen", "<=", until))
        query = query.order_by("firstSeen", direction=Query.DESCENDING)
        letters: list[StoredLetter] = []
        async for snapshot in query.stream():
            letter = stored_letter(snapshot.id, snapshot.to_dict())
            if matches(letter, kind, reason, since, until):
                letters.append(letter)
                if len(letters) >= limit:
                    break
        return letters

    async def has_task(self, queue_name: str | None, task_name: str | None) -> bool:
        """Whether any letter names this task (equality filters need no composite index)."""
        if not task_name:
            return False
        query: Any = (self.firestore.client().collection(self.collection)
                      .where(filter=_field_filter("taskName", "==", task_name))
                      .where(filter=_field_filter("queueName", "==", queue_name)).limit(1))
        async for _ in query.stream():
            return True
        return False

    async def get(self, letter_id: str) -> StoredLetter | None:
        try:
            ref = self._ref(letter_id)
        except KeyError:
            return None
        snapshot = await ref.get()
        if not snapshot.exists:
            return None
        letter = stored_letter(letter_id, snapshot.to_dict())
        pieces = [chunk async for chunk in ref.collection(BODY_CHUNKS_SUBCOLLECTION).order_by("__name__").stream()]
        return checked_body(letter, b"".join(bytes(piece.get("data")) for piece in pieces))

    async def record_replay(self, letter_id: str, replay: Replay) -> None:
        try:
            await self._ref(letter_id).update({"replays": ArrayUnion([replay.record()])})
        except api_exceptions.NotFound:
            raise KeyError(letter_id) from None

    async def delete(self, letter_id: str) -> bool:
        try:
            ref = self._ref(letter_id)
        except KeyError:
            return False
        snapshot = await ref.get()
        if not snapshot.exists:
            return False
        batch = self.firestore.client().batch()
        async for chunk in ref.collection(BODY_CHUNKS_SUBCOLLECTION).list_documents():
            batch.delete(chunk)
        batch.delete(ref)
        await batch.commit()
        return True


def _field_filter(path: str, op: str, value: Any) -> Any:
    from google.cloud.firestore_v1.base_query import FieldFilter

    return FieldFilter(path, op, value)
