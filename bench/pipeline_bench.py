"""Benchmark: the whole local pipeline, tasks/s from the producer to the handler's answer (issue 17).

The producer's `enqueue_many` (64 calls in flight) creates the tasks in the local emulator's running
queue; the emulator dispatches each with a real OIDC token for the invoker account; the real handler
(`python -m handler`, its own process, from the handler's own environment) checks every token in full
(RS256 signature against the emulator's published keys, then the claims), runs the sample action and logs
its JSON line to a file. From the first CreateTask to the queue being empty, every task answered 2xx.
ROUNDS runs, reported as min, median and max. Goal: at least 1,000 tasks/s on this machine.

Writes bench/out/results/pipeline.json. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import EmulatorProcess, Process, free_port, spread, write_results  # noqa: E402
from bench.emulator_bench import ROUNDS, http, sync_client  # noqa: E402
from tasklane.producer import ProducerConfig, TaskProducer, TaskSpec  # noqa: E402

PARENT = "projects/bench/locations/us-central1"
QUEUE = f"{PARENT}/queues/pipeline"
INVOKER = "tasks-invoker@bench.iam.gserviceaccount.com"
GOAL_TASKS_PER_SECOND = 1000.0


def start_handler(python: str, port: int, emulator: EmulatorProcess, log: Path) -> Process:
    """The handler as `make local` runs it: every task token checked in full against the emulator's keys."""
    url = f"http://127.0.0.1:{port}"
    environment = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "TASKLANE_QUEUE_PATH": QUEUE,
                   "TASKLANE_INVOKER_SERVICE_ACCOUNT": INVOKER, "TASKLANE_TASK_AUDIENCE": url,
                   "TASKLANE_MAX_ATTEMPTS": "-1", "TASKLANE_TOKEN_CHECK": "full",
                   "TASKLANE_TOKEN_ISSUERS": emulator.http_url,
                   "TASKLANE_TOKEN_CERTS_URL": f"{emulator.http_url}/oauth2/v1/certs"}
    with log.open("wb") as output:  # the child keeps its own copy of the descriptor
        return Process([python, "-m", "handler"], port, env=environment, stdout=output)


def queued(emulator: EmulatorProcess) -> int:
    return next(int(queue["tasks"]) for queue in http(f"{emulator.http_url}/v1/queues")["queues"]
                if queue["name"] == QUEUE)


def failed_attempts(emulator: EmulatorProcess) -> int:
    """Attempts that did not end in 2xx (each outcome's first page is enough to tell none from some)."""
    return sum(len(http(f"{emulator.http_url}/v1/attempts?outcome={outcome}&pageSize=1000")["attempts"])
               for outcome in ("retrying", "gave_up"))


def one_run(handler_python: str, tasks: int, concurrency: int, directory: Path) -> dict[str, Any]:
    emulator = EmulatorProcess("--ignore-rate-limits")
    handler_port = free_port()
    handler_url = f"http://127.0.0.1:{handler_port}"
    handler = start_handler(handler_python, handler_port, emulator, directory / "handler.log")
    try:
        client = sync_client(emulator.port)
        client.create_queue(parent=PARENT, queue={"name": QUEUE, "rate_limits": {
            "max_concurrent_dispatches": concurrency}})
        producer = TaskProducer(ProducerConfig(queue_path=QUEUE, service_url=handler_url,
                                               invoker_service_account=INVOKER, task_audience=handler_url,
                                               emulator_host=f"127.0.0.1:{emulator.port}"), client=client)
        urllib.request.urlopen(f"{handler_url}/", timeout=10).close()  # noqa: S310 - loopback; started, warm
        specs = [TaskSpec("update_inventory", {"orderId": f"order-{number}"}) for number in range(tasks)]
        began = time.perf_counter()
        results = producer.enqueue_many(specs)
        enqueued = time.perf_counter()
        while queued(emulator):
            time.sleep(0.02)
        finished = time.perf_counter()
        not_created = sum(1 for result in results if result.status != "created")
        failed = failed_attempts(emulator)
    finally:
        handler.stop()
        emulator.stop()
    logged = sum(1 for line in (directory / "handler.log").read_text().splitlines() if "inventory updated" in line)
    if not_created or failed or logged != tasks:
        raise RuntimeError(f"the pipeline lost work: {not_created} not created, {failed} attempts failed, "
                           f"{logged} of {tasks} tasks logged by the handler")
    return {"tasks_per_second": tasks / (finished - began), "enqueue_seconds": enqueued - began,
            "seconds": finished - began}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--handler-python", default=sys.executable,
                        help="interpreter of the handler's own environment (make bench: .venv-handler)")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1000,
                        help="the queue's max_concurrent_dispatches (Cloud Tasks' default: 1,000)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    runs = []
    for round_number in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as directory:
            runs.append(one_run(args.handler_python, args.tasks, args.concurrency, Path(directory)))
        print(f"round {round_number}: {runs[-1]['tasks_per_second']:,.0f} tasks/s", flush=True)
    rate = spread([run["tasks_per_second"] for run in runs])
    write_results("pipeline", {
        "benchmark": "pipeline", "machine": f"{os.cpu_count()} cores; Python {sys.version.split()[0]}",
        "settings": {"tasks": args.tasks, "concurrency": args.concurrency, "rounds": args.rounds,
                     "enqueue_many_in_flight": 64},
        "tasks_per_second": rate, "seconds": spread([run["seconds"] for run in runs], 3),
        "enqueue_seconds": spread([run["enqueue_seconds"] for run in runs], 3),
        "goal": {"tasks_per_second_at_least": GOAL_TASKS_PER_SECOND,
                 "met": rate["median"] >= GOAL_TASKS_PER_SECOND}})


if __name__ == "__main__":
    main()
