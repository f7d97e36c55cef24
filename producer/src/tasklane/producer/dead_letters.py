"""`tasklane dead-letters list | show ID | replay ID… | delete ID…`: operators' view of the dead letters.

Where the letters are:
- with --stack/--outputs (or the TASKLANE_* variables, TASKLANE_FIRESTORE_DATABASE among them): the stack's
  Firestore database (output `firestore_database`) in the queue's project; FIRESTORE_EMULATOR_HOST points
  the client at Google's Firestore emulator, as `make local` does;
- with --dir (or TASKLANE_DEAD_LETTER_DIR): the files `make local` keeps when the Firestore emulator is absent.

`replay` needs the queue (the same configuration as `enqueue`): it creates a new task with a fresh name, the
letter's route and body, and a fresh idempotency key where it had its own (`idempotencyKey` in the body, or the
X-Tasklane-Idempotency-Key header; the old key is done, and would make the replay a duplicate), and records the
replay on the letter: `replay_request` in tasklane/core/dead_letter_store.py, the rule the local console's Replay
follows too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tasklane.core.dead_letter_store import (
    KINDS,
    DeadLetterStore,
    FileDeadLetterStore,
    NotReplayable,
    Replay,
    StoredLetter,
    replay_request,
)
from tasklane.core.environment import DEAD_LETTER_DIR, FIRESTORE_DATABASE, FIRESTORE_EMULATOR_HOST
from tasklane.producer.config import ProducerConfig
from tasklane.producer.producer import InvalidTask, TaskProducer

AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DeadLetterError(Exception):
    """A one-line explanation for the operator; exit status `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def age(text: str) -> datetime.timedelta:
    match = AGE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 30m, 6h or 7d")
    return datetime.timedelta(seconds=float(match.group(1)) * AGE_UNITS[match.group(2)])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, help=f"letters kept as files (make local without the Firestore "
                                                 f"emulator); default ${DEAD_LETTER_DIR}")
    commands = parser.add_subparsers(dest="dead_letter_command", required=True)
    listing = commands.add_parser("list", help="letters, newest first")
    listing.add_argument("--kind", choices=KINDS)
    listing.add_argument("--reason", help="only letters whose reason contains this (any case)")
    listing.add_argument("--newer-than", type=age, metavar="AGE", help="first seen within AGE (30m, 6h, 7d)")
    listing.add_argument("--older-than", type=age, metavar="AGE", help="first seen more than AGE ago")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", help="one letter and its decoded body")
    show.add_argument("id")
    show.add_argument("--body-only", action="store_true", help="write only the body's exact bytes to stdout")
    replay = commands.add_parser("replay", help="create a new task from each letter's body, and record it")
    replay.add_argument("ids", nargs="+", metavar="ID")
    delete = commands.add_parser("delete", help="remove letters and their bodies")
    delete.add_argument("ids", nargs="+", metavar="ID")


def open_store(args: argparse.Namespace, config: Callable[[], ProducerConfig]) -> DeadLetterStore:
    directory = args.dir or (Path(os.environ[DEAD_LETTER_DIR]) if os.environ.get(DEAD_LETTER_DIR) else None)
    if directory is not None:
        if not directory.is_dir():
            raise DeadLetterError(f"{directory} is not a directory of dead letters", status=2)
        return FileDeadLetterStore(directory)
    settings = config()
    if not settings.firestore_database:
        raise DeadLetterError(f"no dead-letter store: the stack has no firestore_database output (deploy issue 12's "
                              f"stack), or set {FIRESTORE_DATABASE}; for make local's files pass --dir", status=2)
    from tasklane.core.firestore_client import LazyFirestore
    from tasklane.core.firestore_dead_letters import FirestoreDeadLetterStore

    project = settings.queue_path.split("/")[1]
    return FirestoreDeadLetterStore(LazyFirestore(project, settings.firestore_database))


def run(args: argparse.Namespace, config: Callable[[], ProducerConfig]) -> int:
    from google.api_core import exceptions as api_exceptions

    store = open_store(args, config)
    try:
        return asyncio.run(_closing(_command(args, store, config), store))
    except api_exceptions.PermissionDenied as error:
        raise DeadLetterError(f"Firestore refused access ({_first_line(error)}): the caller needs "
                              "roles/datastore.viewer to list and show, roles/datastore.user to replay and "
                              "delete, on the stack's project") from None
    except api_exceptions.NotFound as error:
        raise DeadLetterError(f"Firestore database not found ({_first_line(error)}): check the stack's "
                              "firestore_database output and project") from None
    except (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded, api_exceptions.RetryError) as error:
        where = os.environ.get(FIRESTORE_EMULATOR_HOST)
        target = f"the Firestore emulator at {where} ({FIRESTORE_EMULATOR_HOST})" if where else "Firestore"
        raise DeadLetterError(f"cannot reach {target}: {_first_line(error)}", status=2) from None


async def _command(args: argparse.Namespace, store: DeadLetterStore, config: Callable[[], ProducerConfig]) -> int:
    command = args.dead_letter_command
    if command == "list":
        if args.limit < 1:
            raise DeadLetterError("--limit must be at least 1", status=2)
        now = datetime.datetime.now(datetime.UTC)
        letters = await store.list(kind=args.kind, reason=args.reason,
                                   since=now - args.newer_than if args.newer_than else None,
                                   until=now - args.older_than if args.older_than else None, limit=args.limit)
        for letter in letters:
            print(json.dumps(letter.summary(), ensure_ascii=False) if args.json else _line(letter))
        if not letters and not args.json:
            print("no dead letters", file=sys.stderr)
        return 0
    if command == "show":
        letter = await _get(store, args.id)
        assert letter.body is not None
        if args.body_only:
            sys.stdout.buffer.write(letter.body)
            return 0
        print(json.dumps(letter.summary(), indent=2, ensure_ascii=False))
        print(f"--- body: {_describe_body(letter.body)} ---")
        print(_decoded(letter.body))
        return 0
    if command == "replay":
        letters = [await _get(store, letter_id) for letter_id in args.ids]  # all found before any is replayed
        producer = TaskProducer(config())
        for letter in letters:
            try:
                replay = replay_request(letter)
            except NotReplayable as error:
                raise DeadLetterError(str(error)) from None
            key = replay.idempotency_key
            try:
                created = await asyncio.to_thread(producer.enqueue_body, replay.body, content_type=replay.content_type,
                                                  route=replay.path, headers=dict(replay.headers))
            except InvalidTask as error:
                raise DeadLetterError(f"letter {letter.id}: {error}") from None
            await store.record_replay(letter.id, Replay(datetime.datetime.now(datetime.UTC), created.task_name, key))
            print(f"replayed {letter.id} as {created.task_name}" + (f" (idempotencyKey {key})" if key else ""))
        return 0
    missing = []
    for letter_id in args.ids:
        if await store.delete(letter_id):
            print(f"deleted {letter_id}")
        else:
            missing.append(letter_id)
    if missing:
        raise DeadLetterError(f"no dead letter {', '.join(missing)}")
    return 0


async def _closing(command: Coroutine[Any, Any, int], store: DeadLetterStore) -> int:
    try:
        return await command
    finally:
        firestore = getattr(store, "firestore", None)
        if firestore is not None:
            await firestore.aclose()


async def _get(store: DeadLetterStore, letter_id: str) -> StoredLetter:
    letter = await store.get(letter_id)
    if letter is None:
        raise DeadLetterError(f"no dead letter {letter_id!r}; `dead-letters list` shows their IDs")
    return letter


def _line(letter: StoredLetter) -> str:
    task = (letter.task_name or "-").rsplit("/", 1)[-1]
    replays = f"  replayed {len(letter.replays)}x" if letter.replays else ""
    reason = letter.reason if len(letter.reason) <= 80 else letter.reason[:77] + "..."
    return (f"{letter.id}  {letter.first_seen.strftime('%Y-%m-%dT%H:%M:%SZ')}  {letter.kind:<20}  task {task}  "
            f"attempt {letter.attempt}  {reason}{replays}")


def _describe_body(body: bytes) -> str:
    try:
        body.decode()
    except UnicodeDecodeError:
        return f"{len(body)} bytes, not UTF-8, shown as base64"
    return f"{len(body)} bytes"


def _decoded(body: bytes) -> str:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return base64.b64encode(body).decode()
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError):
        return text


def _first_line(error: Exception) -> str:
    message = str(getattr(error, "message", None) or error).strip()
    return message.splitlines()[0] if message else type(error).__name__


