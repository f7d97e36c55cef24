"""`tasklane-emulator` (or `python -m tasklane.emulator`): run the local Cloud Tasks until Ctrl-C or SIGTERM.

    tasklane-emulator --pulumi-stack dev --state-file .tasklane/emulator.sqlite

prints one ready line with the addresses and the CLOUD_TASKS_EMULATOR_HOST value to export.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
from google.cloud.tasks_v2.types import queue as queue_types

from tasklane.core.environment import FIRESTORE_EMULATOR_HOST
from tasklane.emulator.clock import ManualClock, SystemClock
from tasklane.emulator.console import ConsoleConfig
from tasklane.emulator.dead_letters import (
    CombinedLetters,
    HandlerLogLetters,
    LetterSource,
    directory_letters,
    firestore_letters,
)
from tasklane.emulator.faults import Faults
from tasklane.emulator.server import EmulatorConfig, EmulatorServer
from tasklane.emulator.store import StateFileError
from tasklane.emulator.validation import QUEUE_NAME


class NotATasklaneCheckout(Exception):
    """--pulumi-stack reads the stack's settings with the Tasklane program's own reader (infra/), which lives in a
    Tasklane checkout, not in this distribution."""


def stack_queue(stack: str, project_dir: Path) -> Any:
    """The queue a Pulumi stack deploys, with its rate and retry settings, under a stable local name."""
    if not (project_dir / "Pulumi.yaml").is_file() or not (project_dir / "infra" / "settings.py").is_file():
        raise NotATasklaneCheckout(f"--pulumi-stack {stack}: {project_dir} is not a Tasklane checkout (no Pulumi.yaml "
                                   "and infra/settings.py there); give --project-dir, or --queue PATH instead")
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    from infra.settings import format_duration, settings_from_stack_files

    settings = settings_from_stack_files(stack, project_dir)
    queue = queue_types.Queue.pb()(name=settings.local_queue_path)
    queue.rate_limits.max_dispatches_per_second = settings.max_dispatches_per_second
    queue.rate_limits.max_concurrent_dispatches = settings.max_concurrent_dispatches
    retry = queue.retry_config
    retry.max_attempts = settings.max_attempts
    retry.max_doublings = settings.max_doublings
    for field_name, seconds in (("min_backoff", settings.min_backoff_seconds),
                                ("max_backoff", settings.max_backoff_seconds),
                                ("max_retry_duration", settings.max_retry_duration_seconds)):
        getattr(retry, field_name).FromJsonString(format_duration(seconds))
    queue.stackdriver_logging_config.sampling_ratio = settings.logging_sampling_ratio
    return queue


def _latency(text: str) -> tuple[str, float]:
    method, _, seconds = text.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write METHOD=SECONDS, e.g. CreateTask=0.02 or '*=0.02'") from None
    if not method or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: write METHOD=SECONDS with SECONDS >= 0")
    return method, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds >= 0")
    return value


def _queue_path(text: str) -> str:
    if not QUEUE_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a queue path: projects/P/locations/L/queues/Q")
    return text


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tasklane-emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--grpc-port", type=int, default=8123, help="Cloud Tasks gRPC API port (default 8123)")
    parser.add_argument("--http-port", type=int, default=8124,
                        help="Cloud Tasks REST API (/v2/…), OIDC discovery, signing keys, health and inspection "
                             "(default 8124)")
    parser.add_argument("--state-file", help="SQLite file to keep state in across restarts (default: memory)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--queue", action="append", default=[], type=_queue_path, metavar="PATH",
                        help="create this queue at start (repeatable)")
    parser.add_argument("--pulumi-stack", action="append", default=[], metavar="STACK",
                        help="create the queue of Pulumi.<STACK>.yaml with its rate and retry settings (repeatable)")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(),
                        help="the Tasklane checkout whose Pulumi.<STACK>.yaml --pulumi-stack reads (default: here)")
    parser.add_argument("--task-tombstone-seconds", type=_seconds, default=3600.0,
                        help="how long a finished or deleted task's name stays reserved (default 3600)")
    parser.add_argument("--queue-tombstone-seconds", type=_seconds, default=7 * 86400.0,
                        help="how long a deleted queue's name stays blocked (default 7 days; 0 for never)")
    parser.add_argument("--ignore-rate-limits", action="store_true",
                        help="dispatch as fast as targets answer (concurrency limits still apply)")
    parser.add_argument("--app-engine-url", help="base URL App Engine tasks are sent to")
    parser.add_argument("--manual-clock", action="store_true",
                        help="time moves only through POST /v1/clock (tests across processes)")
    parser.add_argument("--latency", action="append", default=[], type=_latency, metavar="METHOD=SECONDS",
                        help="slow an RPC down on purpose, e.g. CreateTask=0.02 or '*=0.02' (repeatable)")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of RPCs failed with UNAVAILABLE")
    parser.add_argument("--task-operations-log", metavar="FILE",
                        help="append the queues' task-operation records to FILE (JSON lines), as Cloud Logging "
                             "has them")
    parser.add_argument("--final-failures-topic", type=_topic_path, metavar="projects/P/topics/T",
                        help="publish final failed attempts to this Pub/Sub topic, as the deployed log sink does "
                             "(needs PUBSUB_EMULATOR_HOST)")
    parser.add_argument("--dead-letter-log", type=Path, metavar="FILE",
                        help="the handler's JSON log: the console shows the dead letters it records")
    parser.add_argument("--dead-letter-dir", type=Path, metavar="DIR",
                        help="the local dead-letter store's directory (one JSON file a letter), for the console")
    parser.add_argument("--dead-letter-firestore", type=_database_path, metavar="projects/P/databases/D",
                        help="the Firestore database the handler keeps dead letters in, for the console (needs "
                             f"{FIRESTORE_EMULATOR_HOST}: Google's Firestore emulator)")
    parser.add_argument("--console-replay-url", metavar="URL",
                        help="where the console's Replay sends a letter whose original attempts are no longer known "
                             "(the handler's base URL)")
    parser.add_argument("--console-replay-oidc-email", metavar="EMAIL",
                        help="the service account whose OIDC token such a replay carries")
    args = parser.parse_args(argv)
    if args.final_failures_topic and not os.environ.get("PUBSUB_EMULATOR_HOST"):
        parser.error("--final-failures-topic needs PUBSUB_EMULATOR_HOST (Google's Pub/Sub emulator); "
                     "start it with `gcloud beta emulators pubsub start`")
    if args.dead_letter_firestore and not os.environ.get(FIRESTORE_EMULATOR_HOST):
        parser.error(f"--dead-letter-firestore needs {FIRESTORE_EMULATOR_HOST} (Google's Firestore emulator); "
                     "start it with `gcloud emulators firestore start`")
    return args


def _database_path(text: str) -> tuple[str, str]:
    """projects/P/databases/D as (P, D)."""
    match = re.fullmatch(r"projects/([a-z][a-z0-9-]{4,28}[a-z0-9])/databases/([a-z][a-z0-9-]{2,62}|\(default\))",
                         text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a database path; write projects/PROJECT/databases/DATABASE")
    return match.group(1), match.group(2)


def _topic_path(text: str) -> str:
    if not re.fullmatch(r"projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a topic path; write projects/PROJECT/topics/TOPIC")
    return text


def console_config(args: argparse.Namespace) -> ConsoleConfig:
    sources: list[LetterSource] = []
    if args.dead_letter_firestore:
        sources.append(firestore_letters(*args.dead_letter_firestore))
    if args.dead_letter_dir:
        sources.append(directory_letters(args.dead_letter_dir))
    if args.dead_letter_log:
        sources.append(HandlerLogLetters(args.dead_letter_log))
    return ConsoleConfig(letters=CombinedLetters(sources), replay_url=args.console_replay_url,
                         replay_oidc_email=args.console_replay_oidc_email)


async def serve(args: argparse.Namespace) -> None:
    queues = [queue_types.Queue.pb()(name=path) for path in args.queue]
    queues += [stack_queue(stack, args.project_dir) for stack in args.pulumi_stack]
    config = EmulatorConfig(
        host=args.host, grpc_port=args.grpc_port, http_port=args.http_port, state_file=args.state_file,
        clock=ManualClock() if args.manual_clock else SystemClock(),
        task_tombstone_seconds=args.task_tombstone_seconds, queue_tombstone_seconds=args.queue_tombstone_seconds,
        enforce_rate_limits=not args.ignore_rate_limits, app_engine_url=args.app_engine_url,
        faults=Faults(latency=dict(args.latency), error_rate=args.error_rate, error_code=grpc.StatusCode.UNAVAILABLE),
        queues=queues, task_operations_log=args.task_operations_log,
        final_failures_topic=args.final_failures_topic, console=console_config(args))
    server = EmulatorServer(config)
    await server.start()
    gc.freeze()  # what starting made (modules, descriptors, the state file's tasks) is never looked through again
    for queue in queues:
        logging.getLogger("emulator").info("queue ready: %s", queue.name)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before the ready line: a stop right after it is clean
        loop.add_signal_handler(signum, stopping.set)
    print(server.ready_line, flush=True)
    await stopping.wait()
    await server.stop()


YOUNG_OBJECTS_PER_COLLECTION = 50_000
"""The cycle collector's first threshold in the emulator's own process (Python's default is 700 net allocations).
Each dispatch in flight holds a few hundred objects; with 1,000 in flight, a collection every 700 allocations
looked through live requests again and again and moved them into older generations: 15 % of the drain rate.
The older generations are collected after 20 and 100 younger collections (defaults 10, 10), so a full collection
over a large state file's tasks is rare; the prune after tombstones expire collects in full anyway."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    gc.set_threshold(YOUNG_OBJECTS_PER_COLLECTION, 20, 100)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args))
    except (OSError, StateFileError, NotATasklaneCheckout) as error:
        print(f"emulator: cannot start: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"emulator: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
