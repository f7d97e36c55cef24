"""Durable state in SQLite: queues, tasks (as the service's own protobuf messages), tombstones, the key.

Every change is committed before the RPC that made it answers, in WAL mode, so an accepted task
survives `kill -9` and a task answered 2xx is not delivered again after a restart. `path=None` keeps
everything in memory (tests).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (name TEXT PRIMARY KEY, queue TEXT NOT NULL, data BLOB NOT NULL,
                                  meta TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_by_queue ON tasks (queue);
CREATE TABLE IF NOT EXISTS tombstones (kind TEXT NOT NULL, name TEXT NOT NULL, expires REAL NOT NULL,
                                       PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass
class StoredTask:
    name: str
    queue: str
    data: bytes
    meta: dict[str, Any]


class Store:
    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._db = sqlite3.connect(path or ":memory:", isolation_level=None, check_same_thread=False)
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _transaction(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        self._db.execute("BEGIN")
        try:
            for sql, args in statements:
                self._db.execute(sql, args)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # Queues
    def put_queue(self, name: str, data: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO queues VALUES (?, ?)", (name, data))

    def delete_queue(self, name: str, tombstone_until: float) -> None:
        self._transaction([
            ("DELETE FROM queues WHERE name = ?", (name,)),
            ("DELETE FROM tasks WHERE queue = ?", (name,)),
            ("INSERT OR REPLACE INTO tombstones VALUES ('queue', ?, ?)", (name, tombstone_until)),
        ])

    def queues(self) -> Iterator[tuple[str, bytes]]:
        yield from self._db.execute("SELECT name, data FROM queues")

    # Tasks
    def put_task(self, task: StoredTask) -> None:
        self._db.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?)",
                         (task.name, task.queue, task.data, json.dumps(task.meta)))

    def put_tasks(self, tasks: list[StoredTask]) -> None:
        """Several tasks in one transaction."""
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?)",
                                 [(t.name, t.queue, t.data, json.dumps(t.meta)) for t in tasks])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def delete_task(self, name: str, tombstone_until: float) -> None:
        self._transaction([
            ("DELETE FROM tasks WHERE name = ?", (name,)),
            ("INSERT OR REPLACE INTO tombstones VALUES ('task', ?, ?)", (name, tombstone_until)),
        ])

    def delete_tasks(self, names: list[str], tombstone_until: float) -> None:
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for name in names:
            statements.append(("DELETE FROM tasks WHERE name = ?", (name,)))
            statements.append(("INSERT OR REPLACE INTO tombstones VALUES ('task', ?, ?)", (name, tombstone_until)))
        self._transaction(statements)

    def tasks(self) -> Iterator[StoredTask]:
        for name, queue, data, meta in self._db.execute("SELECT name, queue, data, meta FROM tasks"):
            yield StoredTask(name, queue, data, json.loads(meta))

    # Tombstones
    def tombstones(self, kind: str) -> Iterator[tuple[str, float]]:
        yield from self._db.execute("SELECT name, expires FROM tombstones WHERE kind = ?", (kind,))

    def forget_tombstone(self, kind: str, name: str) -> None:
        self._db.execute("DELETE FROM tombstones WHERE kind = ? AND name = ?", (kind, name))

    # Settings (the token signing key)
    def setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_setting(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))
