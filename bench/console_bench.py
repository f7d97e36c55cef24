"""Benchmark: the console's views with 100,000 tasks in a queue (issue 15: every view < 300 ms at p95).

One emulator in this process (its own thread, in-memory state) holds a paused queue of 100,000 tasks, a full
attempt history (10,000 records, the dispatcher's cap) and 200 dead letters in a handler log. Each view's JSON
endpoint (what the page fetches on every refresh) and the page itself are fetched over HTTP from one kept-alive
connection, `--requests` times each; p50, p95 and max in ms. Writes bench/out/results/console.json. Run through
`make bench`, or alone: `.venv/bin/python bench/console_bench.py`.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from google.cloud.tasks_v2.types import queue as queue_types  # noqa: E402
from google.cloud.tasks_v2.types import task as task_types  # noqa: E402

from bench.common import write_results  # noqa: E402
from tasklane.emulator.console import ConsoleConfig  # noqa: E402
from tasklane.emulator.dead_letters import CombinedLetters, HandlerLogLetters  # noqa: E402
from tasklane.emulator.dispatcher import AttemptRecord  # noqa: E402
from tasklane.emulator.server import EmulatorConfig, EmulatorServer  # noqa: E402

PARENT = "projects/tasklane-bench/locations/us-central1"
QUEUE = f"{PARENT}/queues/big"
LIMIT_MS = 300.0


BODY = json.dumps({"orderId": "o", "action": "update_inventory"}).encode()


def fill(server: EmulatorServer, tasks: int) -> None:
    """The queue, its tasks (in batches on the emulator's loop) and a full attempt history."""
    engine, dispatcher = server.engine, server.dispatcher
    assert engine is not None and dispatcher is not None
    server.call(lambda: (engine.create_queue(PARENT, queue_types.Queue.pb()(name=QUEUE)), engine.pause_queue(QUEUE)))
    for start in range(0, tasks, 5000):
        server.call(lambda start=start: create(server, range(start, min(tasks, start + 5000))))
    server.call(lambda: attempts(server, tasks))


def create(server: EmulatorServer, numbers: range) -> None:
    assert server.engine is not None
    for number in numbers:
        task = task_types.Task.pb()(name=f"{QUEUE}/tasks/order-{number:06d}")
        task.http_request.url = "http://127.0.0.1:9/process-order"
        task.http_request.body = BODY
        server.engine.create_task(QUEUE, task, 1)


def attempts(server: EmulatorServer, tasks: int) -> None:
    assert server.engine is not None and server.dispatcher is not None
    dispatcher = server.dispatcher
    now = server.engine.clock.now()
    for number in range(dispatcher.attempts.maxlen or 10_000):
        dispatcher.attempts.append(AttemptRecord(
            task=f"{QUEUE}/tasks/order-{number % tasks:06d}", queue=QUEUE, attempt=1, method="POST",
            url="http://127.0.0.1:9/process-order", request_headers={"Content-Type": "application/json"},
            started=now - 30 + number * 0.001, status=200, outcome="succeeded", finished=now - 30 + number * 0.001,
            request_body=BODY))


def dead_letter_log(path: Path, letters: int) -> None:
    with path.open("w") as log:
        for number in range(letters):
            record = {"id": f"{number:032x}", "part": 1, "parts": 1, "kind": "rejected", "reason": "no orderId",
                      "task_name": f"order-{number:06d}", "queue_name": "big", "attempt": 1, "method": "POST",
                      "path": "/process-order", "headers": {"Content-Type": "application/json"},
                      "body_base64": base64.b64encode(b'{"sku": "SKU-1"}').decode()}
            log.write(json.dumps({"severity": "ERROR", "message": "dead-lettered", "tasklane_dead_letter": record})
                      + "\n")
            log.write(json.dumps({"severity": "INFO", "message": "an ordinary line " * 5}) + "\n")


def measure(connection: http.client.HTTPConnection, path: str, requests: int) -> dict[str, float]:
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        timings.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}")
    timings.sort()
    return {"p50_ms": round(statistics.median(timings), 2),
            "p95_ms": round(timings[max(0, int(len(timings) * 0.95) - 1)], 2), "max_ms": round(timings[-1], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "handler.log"
        dead_letter_log(log, 200)
        server = EmulatorServer(EmulatorConfig(grpc_port=0, http_port=0, console=ConsoleConfig(
            letters=CombinedLetters([HandlerLogLetters(log)])))).start_in_thread()
        try:
            started = time.monotonic()
            fill(server, args.tasks)
            print(f"{args.tasks:,} tasks and 10,000 attempts in {time.monotonic() - started:.1f} s", file=sys.stderr)
            connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
            quoted = urllib.parse.quote(QUEUE, safe="")
            middle = urllib.parse.quote(f"{QUEUE}/tasks/order-{args.tasks // 2:06d}", safe="")
            task = urllib.parse.quote(f"{QUEUE}/tasks/order-{args.tasks - 1:06d}", safe="")
            views = {
                "page (/)": "/",
                "queues (overview)": "/console/api/overview",
                "tasks, first page": f"/console/api/tasks?queue={quoted}&limit=50",
                "tasks, a page in the middle": f"/console/api/tasks?queue={quoted}&limit=50&after={middle}",
                "tasks, search by name": f"/console/api/tasks?queue={quoted}&limit=50&q=order-0999",
                "tasks, search matching nothing": f"/console/api/tasks?queue={quoted}&limit=50&q=nothing",
                "a task with its attempts": f"/console/api/task?name={task}",
                "dead letters (200)": "/console/api/dead-letters?limit=100",
                "/v1/attempts filtered, one page": f"/v1/attempts?queue={quoted}&outcome=succeeded&pageSize=100",
            }
            results: dict[str, Any] = {"benchmark": "console", "tasks": args.tasks, "attempt_records": 10_000,
                                       "dead_letters": 200, "requests_per_view": args.requests,
                                       "limit_p95_ms": LIMIT_MS, "views": {}}
            for label, path in views.items():
                results["views"][label] = measure(connection, path, args.requests)
                print(f"{label:<34} {results['views'][label]}", file=sys.stderr)
        finally:
            server.stop_thread()
    worst = max(view["p95_ms"] for view in results["views"].values())
    results["worst_p95_ms"] = worst
    results["within_limit"] = worst < LIMIT_MS
    write_results("console", results)
    return 0 if worst < LIMIT_MS else 1


if __name__ == "__main__":
    sys.exit(main())
