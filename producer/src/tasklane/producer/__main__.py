"""`tasklane`: create and inspect Tasklane tasks from the command line.

    tasklane enqueue update_inventory --payload '{"orderId": "o-1"}'   # POSTed to /tasks/update_inventory
    tasklane enqueue-file orders.jsonl        # one {"action", "payload", ...} per line
    tasklane list [--limit N]                 # every task, fetched in pages
    tasklane show TASK_ID                     # enum names, the body decoded; how a finished one ended
    tasklane dead-letters list [--kind K] [--reason TEXT] [--newer-than 6h] [--older-than 7d]
    tasklane dead-letters show ID | replay ID... | delete ID...

Where tasks go comes from --stack (runs `pulumi stack output`), --outputs (that JSON saved to a file),
or the TASKLANE_* environment variables; CLOUD_TASKS_EMULATOR_HOST points it at the local emulator, and
FIRESTORE_EMULATOR_HOST the dead-letter commands at Google's Firestore emulator (see tasklane/producer/dead_letters.py).
Payloads are checked against the action registry before any API call: --actions MODULE:ATTRIBUTE (or
TASKLANE_ACTIONS), by default the bundled service's when it can be imported (see tasklane/producer/registry.py).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import tasks_v2

from tasklane.producer import dead_letters
from tasklane.producer.config import EMULATOR_HOST, ENVIRONMENT_KEYS, OPTIONAL_KEYS, ConfigError, ProducerConfig
from tasklane.producer.producer import InvalidTask, ProducerError, TaskProducer, TaskSpec

EMULATOR_CONNECT_SECONDS = 3.0


class Unreachable(Exception):
    """Cloud Tasks (or the local emulator) cannot be reached; the message says what to do."""


def _config(args: argparse.Namespace) -> ProducerConfig:
    config = _where(args)
    return dataclasses.replace(config, actions=args.actions) if args.actions else config


def _where(args: argparse.Namespace) -> ProducerConfig:
    if args.stack:
        return ProducerConfig.from_pulumi_stack(args.stack)
    if args.outputs:
        return ProducerConfig.from_outputs_file(Path(args.outputs))
    required = [name for key, name in ENVIRONMENT_KEYS.items() if key not in OPTIONAL_KEYS]
    missing = [name for name in required if not os.environ.get(name)]
    if missing:
        found = "no configuration found" if missing == required else f"{', '.join(missing)} not set"
        raise ConfigError(f"{found}: pass --stack STACK or --outputs FILE (a saved `pulumi stack output --json`), "
                          f"or set {', '.join(required)}; with {EMULATOR_HOST} set, tasks go to the local emulator")
    return ProducerConfig.from_environment()


def _unreachable(config: ProducerConfig, detail: str) -> Unreachable:
    if config.emulator_host:
        return Unreachable(f"cannot reach the Cloud Tasks emulator at {config.emulator_host} ({EMULATOR_HOST}): "
                           f"{detail}. Start it (`make local`, or `python -m tasklane.emulator`), or point "
                           f"{EMULATOR_HOST} at where it listens; unset it to use Google Cloud")
    return Unreachable(f"cannot reach Cloud Tasks: {detail}. Check the network, or set {EMULATOR_HOST} to use "
                       "the local emulator")


def _check_emulator(config: ProducerConfig) -> None:
    """Fail in seconds, not after the client's 20 s of retries, when the emulator is not running."""
    if not config.emulator_host:
        return
    channel = grpc.insecure_channel(config.emulator_host)
    try:
        grpc.channel_ready_future(channel).result(timeout=EMULATOR_CONNECT_SECONDS)
    except grpc.FutureTimeoutError:
        raise _unreachable(config, f"nothing answered within {EMULATOR_CONNECT_SECONDS:g} s") from None
    finally:
        channel.close()


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"orderId\": \"o-1\"}'")
    return value


def spec_from_line(line: str, number: int) -> TaskSpec:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise InvalidTask(f"line {number}: not JSON: {error}") from None
    except RecursionError:
        raise InvalidTask(f"line {number}: JSON nested too deeply to read") from None
    if not isinstance(item, dict) or not isinstance(item.get("action"), str):
        raise InvalidTask(f"line {number}: expected {{\"action\": str, \"payload\": {{...}}, \"dedupKey\"?, "
                          "\"taskId\"?, \"delay\"?, \"idempotencyKey\"?}")
    payload = item.get("payload")
    return TaskSpec(action=item["action"], payload={} if payload is None else payload, task_id=item.get("taskId"),
                    dedup_key=item.get("dedupKey"), delay=item.get("delay"), idempotency_key=item.get("idempotencyKey"))


EMULATOR_HTTP_URL = "TASKLANE_EMULATOR_HTTP_URL"


def describe(task: Any) -> dict[str, Any]:
    """The task as JSON with enum names (POST, not 1), and its body decoded beside the base64 the API gives."""
    shown: dict[str, Any] = json.loads(tasks_v2.Task.to_json(task, use_integers_for_enums=False))
    request = shown.get("httpRequest") or shown.get("appEngineHttpRequest")
    if request is not None and "body" in request:
        request["bodyDecoded"] = decoded_body(base64.b64decode(request["body"]))
    return shown


def decoded_body(body: bytes) -> Any:
    """JSON if it is, else UTF-8 text, else hex."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": body.hex()}
    try:
        return json.loads(text)
    except ValueError:
        return text


def emulator_http_url(config: ProducerConfig) -> str | None:
    """The emulator's HTTP port: TASKLANE_EMULATOR_HTTP_URL, else the gRPC port + 1 (its default layout)."""
    if os.environ.get(EMULATOR_HTTP_URL):
        return os.environ[EMULATOR_HTTP_URL].rstrip("/")
    if not config.emulator_host or ":" not in config.emulator_host:
        return None
    host, _, port = config.emulator_host.rpartition(":")
    return f"http://{host}:{int(port) + 1}" if port.isdigit() else None


def finished_from_history(config: ProducerConfig, name: str) -> str | None:
    """How a task the queue no longer holds ended, from the emulator's attempt history; None if unknown."""
    base = emulator_http_url(config)
    if base is None:
        return None
    query = urllib.parse.urlencode({"task": name})
    try:
        with urllib.request.urlopen(f"{base}/v1/attempts?{query}", timeout=5) as response:  # noqa: S310
            attempts = json.loads(response.read())["attempts"]
    except (OSError, ValueError, KeyError):
        return None
    if not attempts:
        return None
    last = attempts[-1]
    lines = [f"attempt {a['attempt']}: HTTP {a['status']} ({a['outcome'].replace('_', ' ')})" for a in attempts]
    how = {"succeeded": f"succeeded on attempt {last['attempt']} (HTTP {last['status']})",
           "gave_up": f"gave up after {last['attempt']} attempts (last HTTP {last['status']})"}.get(
        last["outcome"], "was deleted")
    return f"{name}: finished: {how}\n" + "\n".join(f"  {line}" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tasklane", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--stack", help="read the stack's outputs with `pulumi stack output --json --stack STACK`")
    source.add_argument("--outputs", help="a file holding `pulumi stack output --json`")
    parser.add_argument("--actions", metavar="MODULE:ATTRIBUTE",
                        help="the action registry payloads are checked against (default: $TASKLANE_ACTIONS, else "
                             "the bundled service's when importable)")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("enqueue", help="create one task")
    one.add_argument("action")
    one.add_argument("--payload", type=_json_object, default={}, help="the task's JSON payload")
    one.add_argument("--dedup-key", help="the same key never creates a second task (while its name is reserved)")
    one.add_argument("--task-id")
    one.add_argument("--delay", type=float, help="seconds from now")
    one.add_argument("--idempotency-key", help="the handler runs the action at most once per key "
                                               "(default: once per task name)")
    many = commands.add_parser("enqueue-file", help="create a task per line of a JSONL file, with progress")
    many.add_argument("file", type=Path)
    many.add_argument("--concurrency", type=int, default=64)
    listing = commands.add_parser("list", help="the queue's tasks")
    listing.add_argument("--limit", type=int, help="stop after this many (default: every task, fetched in pages)")
    show = commands.add_parser("show", help="one task, in full")
    show.add_argument("task", help="task ID or full name")
    letters = commands.add_parser("dead-letters", help="list, show, replay or delete dead letters",
                                  description=dead_letters.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    dead_letters.add_arguments(letters)
    args = parser.parse_args(argv)

    config: ProducerConfig | None = None
    try:
        if args.command == "dead-letters":
            def checked_config() -> ProducerConfig:
                nonlocal config
                config = _config(args)
                if args.dead_letter_command == "replay":  # only a replay talks to Cloud Tasks
                    _check_emulator(config)
                return config

            return dead_letters.run(args, checked_config)
        config = _config(args)
        _check_emulator(config)
        producer = TaskProducer(config)
        if args.command == "enqueue":
            result = producer.enqueue(args.action, args.payload, task_id=args.task_id, dedup_key=args.dedup_key,
                                      delay=args.delay, idempotency_key=args.idempotency_key)
            print(f"{'already enqueued' if result.already_enqueued else 'enqueued'}: {result.task_name}")
        elif args.command == "enqueue-file":
            return _enqueue_file(producer, args.file, args.concurrency)
        elif args.command == "list":
            if args.limit is not None and args.limit < 1:
                raise InvalidTask("--limit must be at least 1")
            count = 0
            for task in producer.iter_tasks(args.limit):
                count += 1
                print(f"{task.name.rsplit('/', 1)[1]}  scheduled {task.schedule_time.isoformat()}  "
                      f"attempts {task.dispatch_count}")
            print(f"{count} task{'s' if count != 1 else ''}", file=sys.stderr)
        else:
            try:
                print(json.dumps(describe(producer.get_task(args.task)), indent=2, ensure_ascii=False))
            except api_exceptions.NotFound:
                assert config is not None
                name = args.task if "/" in args.task else f"{config.queue_path}/tasks/{args.task}"
                finished = finished_from_history(config, name)
                if finished is None:
                    raise
                print(finished)
    except (ConfigError, InvalidTask, ProducerError, Unreachable) as error:
        print(f"producer: {error}", file=sys.stderr)
        return 2
    except dead_letters.DeadLetterError as error:
        print(f"producer: {error}", file=sys.stderr)
        return error.status
    except auth_exceptions.DefaultCredentialsError:
        print(f"producer: no Google Cloud credentials found: run `gcloud auth application-default login`, or set "
              f"{EMULATOR_HOST} to use the local emulator", file=sys.stderr)
        return 2
    except api_exceptions.NotFound as error:
        print(f"producer: not found: {error.message}", file=sys.stderr)
        return 1
    except (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded, api_exceptions.RetryError) as error:
        assert config is not None  # only API calls raise these, and they need a configuration
        print(f"producer: {_unreachable(config, _first_line(error))}", file=sys.stderr)
        return 2
    except api_exceptions.GoogleAPICallError as error:
        print(f"producer: Cloud Tasks refused the request: {type(error).__name__}: {_first_line(error)}",
              file=sys.stderr)
        return 1
    return 0


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None) or str(error)
    return str(message).strip().splitlines()[0] if str(message).strip() else type(error).__name__


def _enqueue_file(producer: TaskProducer, path: Path, concurrency: int) -> int:
    """Create a task per line; a bad line is reported with its number and the good lines are still created."""
    from tqdm import tqdm

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidTask(f"cannot read {path}: {error}") from None
    failures: dict[int, str] = {}
    specs: list[TaskSpec] = []
    spec_lines: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            specs.append(spec_from_line(line, number))
            spec_lines.append(number)
        except InvalidTask as error:
            failures[number] = str(error).removeprefix(f"line {number}: ")
    with tqdm(total=len(specs), unit="task", file=sys.stderr) as bar:
        def advance(done: int, total: int) -> None:
            bar.update(done - bar.n)

        results = producer.enqueue_many(specs, concurrency=concurrency, progress=advance)
    for result in results:
        if result.status == "failed":
            failures[spec_lines[result.index]] = result.reason or "failed"
    counts = {status: sum(1 for r in results if r.status == status) for status in ("created", "duplicate")}
    for number in sorted(failures):
        print(f"line {number}: failed: {failures[number]}", file=sys.stderr)
    print(f"created {counts['created']}, already enqueued {counts['duplicate']}, failed {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
