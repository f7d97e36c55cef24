"""Durable state in SQLite: queues, tasks (as the service's own protobuf messages), tombstones, the key,
and the dispatcher's attempt history (what the console and /v1/attempts show of finished tasks).

Every change is committed before the RPC that made it answers, in WAL mode, so an accepted task
survives `kill -9` and a task answered 2xx is not delivered again after a restart. `path=None` keeps
everything in memory (tests).

One emulator owns a state file at a time: it holds an exclusive lock on `<state file>.lock` (which
records its pid) for as long as it runs, and a second one refuses to start. A write that fails (a full
disk, a read-only file) raises `StorageError` and leaves the file as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (name TEXT PRIMARY KEY, queue TEXT NOT NULL, data BLOB NOT NULL,
                                  meta TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_by_queue ON tasks (queue);
CREATE TABLE IF NOT EXISTS tombstones (kind TEXT NOT NULL, name TEXT NOT NULL, expires REAL NOT NULL,
                                       PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (seq INTEGER PRIMARY KEY, task TEXT NOT NULL, record TEXT NOT NULL,
                                     request_body BLOB NOT NULL);
"""
Statement = tuple[str, tuple[Any, ...]]
WAL_CHECKPOINT_PAGES = 10_000
"""4 KiB pages of write-ahead log after which a commit copies the log back into the file."""

_ENCODER = msgspec.json.Encoder()


def _json(value: dict[str, Any]) -> str:
    """A row's JSON column, as text, by msgspec's encoder: every dispatch's record is written twice, and json.dumps
    was an eighth of a drain with a state file. What msgspec refuses (a lone surrogate anywhere) or would write as
    null (a NaN or infinite top-level value; nested values are strings) goes through json.dumps, as before."""
    if not any(isinstance(field, float) and not math.isfinite(field) for field in value.values()):
        with contextlib.suppress(UnicodeEncodeError, TypeError, msgspec.EncodeError):
            return _ENCODER.encode(value).decode()
    return json.dumps(value)


class StateFileError(Exception):
    """The state file cannot be used at all (locked by another emulator, corrupt, unreadable): the
    emulator does not start. The message is one line naming the file."""


class StorageError(Exception):
    """A write to the state file failed; nothing of it was kept. `full` when the disk (or the
    database's size limit) is full."""

    def __init__(self, message: str, full: bool) -> None:
        super().__init__(message)
        self.full = full


@dataclass
class StoredTask:
    name: str
    queue: str
    data: bytes
    meta: dict[str, Any]


@dataclass
class StoredAttempt:
    """One attempt of the dispatcher's history (emulator/dispatcher.py `AttemptRecord`): `seq` orders them,
    `record` is the rest of its fields as JSON, `request_body` the start of the task's body."""

    seq: int
    task: str
    record: dict[str, Any]
    request_body: bytes


def _lock(path: str) -> int:
    """Hold `<path>.lock` exclusively for the life of the process (released by the kernel on exit, even
    after kill -9), with our pid in it for whoever finds it taken."""
    lock_path = f"{path}.lock"
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise StateFileError(f"cannot open the lock file {lock_path}: {error.strerror}") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise StateFileError(f"the state file {path} is in use by another emulator (pid {holder}); stop it or pass "
                             "another --state-file") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


class Store:
    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._lock_descriptor = _lock(path) if path else None
        try:
            self._db = sqlite3.connect(path or ":memory:", isolation_level=None, check_same_thread=False)
            if path:
                if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                    # Freed pages go back to the file system when tombstones are pruned (PRAGMA
                    # incremental_vacuum); an existing file is converted once.
                    self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                    self._db.execute("VACUUM")
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                # Checkpoint every 40 MB of log rather than SQLite's 4 MB: a burst of deliveries rewrites the same
                # pages over and over, and copying them back into the file was a fifth of a durable drain's CPU.
                # The log is truncated at each prune (prune_tombstones), so the file still shrinks back.
                self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._db.executescript(SCHEMA)
            self._db.execute("SELECT count(*) FROM tasks").fetchone()
            if path:  # a read-only file or full disk is found now, not at the first task
                self._write([("INSERT OR REPLACE INTO settings VALUES ('opened_by_pid', ?)", (str(os.getpid()),))])
        except (sqlite3.Error, StorageError) as error:
            self.close()
            reason = error.__cause__ if isinstance(error, StorageError) else error
            raise StateFileError(f"the state file {path} cannot be used: {reason}") from None

    @property
    def durable(self) -> bool:
        """Whether writes are kept; without a state file the engine skips them altogether."""
        return self.path is not None

    def close(self) -> None:
        with contextlib.suppress(AttributeError, sqlite3.Error):
            self._db.close()
        if self._lock_descriptor is not None:
            os.close(self._lock_descriptor)
            self._lock_descriptor = None

    def _write(self, statements: list[Statement], *many: tuple[str, list[tuple[Any, ...]]]) -> None:
        """One transaction: all of it is kept, or (StorageError) none of it. Nothing, without a state file.
        `many` are (statement, rows) pairs run with executemany."""
        if self.path is None:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                self._db.execute(sql, args)
            for sql, rows in many:
                if rows:
                    self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            full = isinstance(error, sqlite3.OperationalError) and "full" in str(error)
            raise StorageError(f"the state file {self.path or '(memory)'} could not be written: {error}",
                               full) from error

    # Queues
    def put_queue(self, name: str, data: bytes) -> None:
        self._write([("INSERT OR REPLACE INTO queues VALUES (?, ?)", (name, data))])

    def delete_queue(self, name: str, tombstone_until: float) -> None:
        self._write([
            ("DELETE FROM queues WHERE name = ?", (name,)),
            ("DELETE FROM tasks WHERE queue = ?", (name,)),
            ("INSERT OR REPLACE INTO tombstones VALUES ('queue', ?, ?)", (name, tombstone_until)),
        ])

    def queues(self) -> Iterator[tuple[str, bytes]]:
        yield from self._db.execute("SELECT name, data FROM queues")

    # Tasks
    @staticmethod
    def _row(task: StoredTask) -> tuple[Any, ...]:
        return task.name, task.queue, task.data, _json(task.meta)

    def put_task(self, task: StoredTask) -> None:
        self._write([("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?)", self._row(task))])

    def put_tasks(self, tasks: list[StoredTask]) -> None:
        """Several tasks in one transaction."""
        self._write([], ("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?)", [self._row(t) for t in tasks]))

    def delete_task(self, name: str, tombstone_until: float) -> None:
        self.delete_tasks([name], tombstone_until)

    def delete_tasks(self, names: list[str], tombstone_until: float, queue: tuple[str, bytes] | None = None) -> None:
        """Remove tasks, leaving tombstones; with `queue` (name, data), save that queue in the same transaction."""
        statements: list[Statement] = []
        for name in names:
            statements.append(("DELETE FROM tasks WHERE name = ?", (name,)))
            statements.append(("INSERT OR REPLACE INTO tombstones VALUES ('task', ?, ?)", (name, tombstone_until)))
        if queue is not None:
            statements.append(("INSERT OR REPLACE INTO queues VALUES (?, ?)", queue))
        self._write(statements)

    def sync_tasks(self, saved: list[StoredTask], removed: list[tuple[str, float]],
                   attempts: list[StoredAttempt] | None = None) -> None:
        """Bring tasks on disk in line with memory in one transaction: `saved` written, `removed`
        (name, tombstone expiry) deleted and tombstoned, and `attempts` of the history written as they are now."""
        self._write([], ("DELETE FROM tasks WHERE name = ?", [(name,) for name, _ in removed]),
                    ("INSERT OR REPLACE INTO tombstones VALUES ('task', ?, ?)", removed),
                    ("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?)", [self._row(t) for t in saved]),
                    ("INSERT OR REPLACE INTO attempts VALUES (?, ?, ?, ?)",
                     [(a.seq, a.task, _json(a.record), a.request_body) for a in attempts or ()]))

    def tasks(self) -> Iterator[StoredTask]:
        for name, queue, data, meta in self._db.execute("SELECT name, queue, data, meta FROM tasks"):
            yield StoredTask(name, queue, data, json.loads(meta))

    # Attempt history
    def attempts(self, most: int) -> Iterator[StoredAttempt]:
        """The newest `most` attempts, oldest first."""
        rows = self._db.execute("SELECT seq, task, record, request_body FROM attempts ORDER BY seq DESC LIMIT ?",
                                (most,)).fetchall()
        for seq, task, record, request_body in reversed(rows):
            yield StoredAttempt(seq, task, json.loads(record), bytes(request_body))

    def prune_attempts(self, below: int) -> None:
        """Forget the attempts before `seq` `below` (the dispatcher no longer keeps them)."""
        self._write([("DELETE FROM attempts WHERE seq < ?", (below,))])

    # Tombstones
    def tombstones(self, kind: str) -> Iterator[tuple[str, float]]:
        yield from self._db.execute("SELECT name, expires FROM tombstones WHERE kind = ?", (kind,))

    def prune_tombstones(self, now: float) -> int:
        """Forget every tombstone expired by `now` and give the freed space back; how many went."""
        before = self._db.total_changes
        self._write([("DELETE FROM tombstones WHERE expires <= ?", (now,))])
        pruned = self._db.total_changes - before
        if self.path and (pruned or self._db.execute("PRAGMA freelist_count").fetchone()[0] > 256):
            with contextlib.suppress(sqlite3.Error):  # shrinking is an optimisation; the next prune retries
                self._db.executescript("PRAGMA incremental_vacuum;")  # steps to the end: one page per step
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return pruned

    # Settings (the token signing key)
    def setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_setting(self, key: str, value: str) -> None:
        self._write([("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))])
