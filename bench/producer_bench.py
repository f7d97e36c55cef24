"""Benchmark: `TaskProducer.enqueue_many` against a plain sequential `create_task` loop, same client library.

Both create tasks in a paused queue of the local emulator (its own process), once with 20 ms of latency
injected per RPC (real Cloud Tasks calls take tens of milliseconds) and once with none, where the
emulator and the client share the two cores. enqueue_many creates 10,000 tasks each time; the
sequential loop creates 10,000 without latency, and 300 with it (10,000 would take over three
minutes), compared as tasks per second.

Writes bench/out/results/producer.json. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import EmulatorProcess, write_results  # noqa: E402
from tasklane.producer import ProducerConfig, TaskProducer, TaskSpec  # noqa: E402

PARENT = "projects/bench/locations/us-central1"
QUEUE = f"{PARENT}/queues/producer"


def run_case(latency: float, tasks: int, sequential_tasks: int, concurrency: int) -> dict[str, float]:
    emulator = EmulatorProcess(*(["--latency", f"CreateTask={latency}"] if latency else []))
    port = emulator.port
    try:
        client = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(
            channel=grpc.insecure_channel(f"127.0.0.1:{port}")))
        client.create_queue(parent=PARENT, queue={"name": QUEUE})
        client.pause_queue(name=QUEUE)
        config = ProducerConfig(queue_path=QUEUE, service_url="http://127.0.0.1:9", task_audience="http://127.0.0.1:9",
                                invoker_service_account="invoker@bench.iam.gserviceaccount.com",
                                emulator_host=f"127.0.0.1:{port}")
        producer = TaskProducer(config, client=client)

        began = time.perf_counter()
        for number in range(sequential_tasks):  # the plain loop most code starts with
            client.create_task(parent=QUEUE, task=producer.build_task(
                TaskSpec("update_inventory", {"orderId": f"seq-{number}"})))
        sequential = time.perf_counter() - began

        began = time.perf_counter()
        results = producer.enqueue_many([TaskSpec("update_inventory", {"orderId": f"many-{n}"})
                                         for n in range(tasks)], concurrency=concurrency)
        many = time.perf_counter() - began
        failed = sum(1 for result in results if result.status != "created")
    finally:
        emulator.stop()
    return {"injected_latency_ms": latency * 1000, "sequential_tasks": sequential_tasks,
            "sequential_seconds": round(sequential, 3),
            "sequential_tasks_per_second": round(sequential_tasks / sequential, 1),
            "enqueue_many_tasks": tasks, "enqueue_many_seconds": round(many, 3),
            "enqueue_many_tasks_per_second": round(tasks / many, 1), "failed": failed,
            "ratio": round((tasks / many) / (sequential_tasks / sequential), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    with_latency = run_case(0.02, args.tasks, 300, args.concurrency)
    without = run_case(0.0, args.tasks, args.tasks, args.concurrency)
    results = {"benchmark": "producer", "machine": f"{os.cpu_count()} cores; Python {sys.version.split()[0]}",
               "settings": {"tasks": args.tasks, "concurrency": args.concurrency},
               "with_20ms_latency": with_latency, "without_latency": without,
               "targets": {"with_20ms_latency": "ratio >= 20", "without_latency": "ratio >= 1.5"}}
    write_results("producer", results)


if __name__ == "__main__":
    main()
