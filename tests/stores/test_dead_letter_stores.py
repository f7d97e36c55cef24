"""One behavioural suite for the dead-letter stores (Firestore on Google's emulator, and files), and the
handler's storing sink."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tasklane.core.dead_letter import DeadLetter, LogDeadLetterSink
from tasklane.core.dead_letter_store import (
    MAX_IDEMPOTENCY_KEY,
    CorruptLetter,
    DeadLetterStore,
    FileDeadLetterStore,
    NotReplayable,
    Replay,
    StoredLetter,
    StoringSink,
    letter_fields,
    replay_request,
    stored_letter,
)
from tasklane.core.firestore_dead_letters import (
    BODY_CHUNK_BYTES,
    BODY_CHUNKS_SUBCOLLECTION,
    FirestoreDeadLetterStore,
    chunk_id,
)
from tasklane.core.firestore_names import DEAD_LETTER_COLLECTION
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext

T0 = datetime.datetime(2026, 5, 1, 12, 0, tzinfo=datetime.UTC)
QUEUE = "projects/p/locations/l/queues/q"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture(params=["firestore", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[DeadLetterStore, Clock]:
    clock = Clock()
    if request.param == "file":
        return FileDeadLetterStore(tmp_path / "letters", clock=clock), clock
    from tests.stores.conftest import fresh_firestore

    return FirestoreDeadLetterStore(fresh_firestore(request.getfixturevalue("firestore_emulator")),
                                    clock=clock), clock


def letter(task: str = "t1", kind: str = "rejected", reason: str = "invalid order: missing orderId",
           body: bytes = b'{"sku":"SKU-1","action":"update_inventory"}', **details: Any) -> DeadLetter:
    headers = {"content-type": "application/json", "authorization": "Bearer secret", "user-agent": "Google-Cloud-Tasks",
               "x-cloudtasks-taskname": task, "__weird__.header": "kept"}
    captured = DeadLetter.capture(kind, reason, TaskContext(queue_name="q", task_name=task, retry_count=2), "POST",
                                  "/process-order", headers, body)
    return dataclasses.replace(captured, details=details)


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())


def test_a_letter_is_kept_whole_and_listed(store: tuple[DeadLetterStore, Clock]) -> None:
    backend, _ = store

    async def scenario() -> tuple[Any, Any, Any]:
        letter_id = await backend.put(letter())
        return letter_id, await backend.list(), await backend.get(letter_id)

    letter_id, listed, got = run(scenario)
    assert [item.id for item in listed] == [letter_id]
    assert listed[0].body is None
    assert got.kind == "rejected" and got.reason == "invalid order: missing orderId"
    assert (got.task_name, got.queue_name, got.attempt, got.method, got.path) == ("t1", "q", 3, "POST",
                                                                                  "/process-order")
    assert got.headers == {"content-type": "application/json", "user-agent": "Google-Cloud-Tasks",
                           "x-cloudtasks-taskname": "t1", "__weird__.header": "kept"}
    assert got.body == b'{"sku":"SKU-1","action":"update_inventory"}'
    assert got.first_seen == T0 and got.times_seen == 1 and got.replays == ()


@pytest.mark.parametrize("size", [0, 1, BODY_CHUNK_BYTES, BODY_CHUNK_BYTES + 1, 1024 * 1024])
def test_bodies_up_to_a_mebibyte_come_back_exactly(store: tuple[DeadLetterStore, Clock], size: int) -> None:
    backend, _ = store
    body = os.urandom(size)

    async def scenario() -> Any:
        return await backend.get(await backend.put(letter(body=body)))

    got = run(scenario)
    assert got.body == body and got.body_bytes == size and got.body_sha256 == hashlib.sha256(body).hexdigest()


def test_the_same_letter_twice_is_one_letter_seen_twice(store: tuple[DeadLetterStore, Clock]) -> None:
    backend, clock = store

    async def scenario() -> tuple[str, str, str, Any]:
        first = await backend.put(letter())
        clock.now = T0 + datetime.timedelta(minutes=5)
        again = await backend.put(letter())
        other = await backend.put(letter(body=b"another body"))
        return first, again, other, await backend.get(first)

    first, again, other, got = run(scenario)
    assert first == again != other
    assert (got.first_seen, got.last_seen, got.times_seen) == (T0, T0 + datetime.timedelta(minutes=5), 2)


def test_letters_of_kind_gave_up_unseen_have_no_body_but_their_details(store: tuple[DeadLetterStore, Clock]) -> None:
    backend, _ = store
    unseen = DeadLetter(kind="gave_up_unseen", reason="Cloud Tasks gave up after 5 attempts: last status 403",
                        task=TaskContext(queue_name="q", task_name="t9"), method="POST", path="/process-order",
                        headers={}, body=b"", details={"lastStatus": 403, "attempts": 5,
                                                       "time": "2026-05-01T12:00:00Z"})

    async def scenario() -> Any:
        return await backend.get(await backend.put(unseen))

    got = run(scenario)
    assert got.kind == "gave_up_unseen" and got.body == b"" and got.body_bytes == 0
    assert got.details == {"lastStatus": 403, "attempts": 5, "time": "2026-05-01T12:00:00Z"}


def test_a_store_knows_which_tasks_it_holds_letters_for(store: tuple[DeadLetterStore, Clock]) -> None:
    """What keeps /task-operations from recording a give-up the handler already dead-lettered."""
    backend, _ = store

    async def scenario() -> list[bool]:
        await backend.put(letter())
        held = letter().task
        return [await backend.has_task(held.queue_name, held.task_name),
                await backend.has_task(held.queue_name, "another-task"),
                await backend.has_task("another-queue", held.task_name),
                await backend.has_task(held.queue_name, None)]

    assert run(scenario) == [True, False, False, False]


def test_list_filters_by_kind_reason_and_age_newest_first(store: tuple[DeadLetterStore, Clock]) -> None:
    backend, clock = store

    async def scenario() -> dict[str, list[str | None]]:
        for minutes, task, kind, reason in [(0, "old", "rejected", "invalid order: missing orderId"),
                                            (30, "mid", "final_attempt_failed", "reserve_stock failed transiently"),
                                            (60, "new", "rejected", "unknown action 'x'")]:
            clock.now = T0 + datetime.timedelta(minutes=minutes)
            await backend.put(letter(task=task, kind=kind, reason=reason))

        async def names(**filters: Any) -> list[str | None]:
            return [item.task_name for item in await backend.list(**filters)]

        since = T0 + datetime.timedelta(minutes=20)
        return {"all": await names(), "rejected": await names(kind="rejected"),
                "reason": await names(reason="ORDER"), "since": await names(since=since),
                "until": await names(until=since), "both": await names(kind="rejected", since=since),
                "limit": await names(limit=2), "none": await names(kind="gave_up_unseen")}

    assert run(scenario) == {"all": ["new", "mid", "old"], "rejected": ["new", "old"], "reason": ["old"],
                             "since": ["new", "mid"], "until": ["old"], "both": ["new"], "limit": ["new", "mid"],
                             "none": []}


def test_replays_are_recorded_and_letters_deleted(store: tuple[DeadLetterStore, Clock]) -> None:
    backend, _ = store

    async def scenario() -> tuple[Any, bool, bool, Any, list[Any]]:
        letter_id = await backend.put(letter())
        await backend.record_replay(letter_id, Replay(T0, f"{QUEUE}/tasks/r1", "k-replay-1"))
        await backend.record_replay(letter_id, Replay(T0, f"{QUEUE}/tasks/r2"))
        replayed = await backend.get(letter_id)
        deleted, again = await backend.delete(letter_id), await backend.delete(letter_id)
        with pytest.raises(KeyError):
            await backend.record_replay(letter_id, Replay(T0, "x"))
        return replayed, deleted, again, await backend.get(letter_id), list(await backend.list())

    replayed, deleted, again, gone, listed = run(scenario)
    assert replayed.replays == (Replay(T0, f"{QUEUE}/tasks/r1", "k-replay-1"), Replay(T0, f"{QUEUE}/tasks/r2"))
    assert (deleted, again, gone, listed) == (True, False, None, [])


def test_unknown_and_malformed_ids_are_simply_absent(store: tuple[DeadLetterStore, Clock]) -> None:
    backend, _ = store

    async def scenario() -> list[Any]:
        return [await backend.get(i) for i in ["0" * 32, "../../etc/passwd", "", "a/b", "__x__"]] + [
            await backend.delete("a/b")]

    assert run(scenario) == [None, None, None, None, None, False]


def test_firestore_splits_a_large_body_into_chunk_documents_and_checks_them(
        firestore_emulator: Any) -> None:
    from tests.stores.conftest import fresh_firestore

    firestore = fresh_firestore(firestore_emulator)
    backend = FirestoreDeadLetterStore(firestore)
    body = os.urandom(1024 * 1024)

    async def scenario() -> list[int]:
        letter_id = await backend.put(letter(body=body))
        ref = firestore.client().collection(DEAD_LETTER_COLLECTION).document(letter_id)
        chunks = [chunk async for chunk in ref.collection(BODY_CHUNKS_SUBCOLLECTION).stream()]
        sizes = [len(chunk.get("data")) for chunk in chunks]
        await ref.collection(BODY_CHUNKS_SUBCOLLECTION).document(chunk_id(1)).set({"data": b"tampered"})
        with pytest.raises(CorruptLetter):
            await backend.get(letter_id)
        return sizes

    assert run(scenario) == [BODY_CHUNK_BYTES, BODY_CHUNK_BYTES]


def test_the_storing_sink_stores_then_logs_with_the_same_id(tmp_path: Path) -> None:
    lines: list[bytes] = []
    backend = FileDeadLetterStore(tmp_path)
    sink = StoringSink(backend, LogDeadLetterSink(StructuredLog(writer=lines.append)))
    asyncio.run(sink.send(letter()))
    [stored] = asyncio.run(backend.list())
    assert f'"id":"{stored.id}"'.encode() in lines[0]


def test_the_storing_sink_raises_when_the_store_fails_and_logs_nothing(tmp_path: Path) -> None:
    class Broken(FileDeadLetterStore):
        async def put(self, letter: DeadLetter) -> str:
            raise OSError("disk full")

    lines: list[bytes] = []
    sink = StoringSink(Broken(tmp_path), LogDeadLetterSink(StructuredLog(writer=lines.append)))
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(sink.send(letter()))
    assert lines == []


def test_the_replay_rule_gives_a_fresh_key_within_the_limit_and_refuses_a_letter_without_a_body() -> None:
    """`replay_request`, which the operators' CLI and the local console both follow."""
    def stored(body: bytes, kind: str = "rejected") -> StoredLetter:
        return stored_letter("a" * 32, {**letter_fields(letter(body=body, kind=kind), T0)}, body)

    first = replay_request(stored(b'{"orderId": "o-1", "idempotencyKey": "k-1"}'))
    assert (first.content_type, first.path) == ("application/json", "/process-order")
    assert re.fullmatch(r"k-1~replay-[0-9a-f]{8}", first.idempotency_key or "")
    assert json.loads(first.body) == {"orderId": "o-1", "idempotencyKey": first.idempotency_key}
    again = replay_request(stored(first.body))
    assert again.idempotency_key != first.idempotency_key and again.idempotency_key.startswith("k-1~replay-"), \
        "a replay of a replay replaces the suffix rather than adding one"
    longest = replay_request(stored(json.dumps({"idempotencyKey": "k" * MAX_IDEMPOTENCY_KEY}).encode()))
    assert len(longest.idempotency_key or "") == MAX_IDEMPOTENCY_KEY
    # A body holding an escaped lone surrogate made the re-encoding raise UnicodeEncodeError; it stays an escape.
    surrogate = replay_request(stored(b'{"orderId": "\\ud800", "idempotencyKey": "k-2"}'))
    assert json.loads(surrogate.body) == {"orderId": "\ud800", "idempotencyKey": surrogate.idempotency_key}
    # 1e400 reads as inf, which json.dumps wrote as Infinity (not JSON): such a body is replayed as it was.
    beyond = b'{"qty": 1e400, "idempotencyKey": "k-3"}'
    assert (replay_request(stored(beyond)).body, replay_request(stored(beyond)).idempotency_key) == (beyond, None)
    for unchanged in (b'{"orderId": "o-2"}', b"not json", b"[1, 2]"):
        assert (replay_request(stored(unchanged)).body, replay_request(stored(unchanged)).idempotency_key) == (
            unchanged, None)
    for nothing in (stored(b""), stored(b"", kind="gave_up_unseen")):
        with pytest.raises(NotReplayable, match="has no body"):
            replay_request(nothing)
