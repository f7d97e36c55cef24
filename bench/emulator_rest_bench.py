"""Benchmark: CreateTask over the emulator's REST surface beside gRPC, on one emulator in its own process.

- Latency: sequential calls from the official sync Python client, gRPC transport and REST transport,
  in alternating blocks so that both see the same machine; p50 and p99.
- Throughput: the same client library from several threads at once (one client per thread), tasks/s.
- Also the REST surface without the client library: the same CreateTask as raw JSON over one kept-alive
  http.client connection, which separates the emulator's own REST cost from the client library's.

The queue is paused, so only CreateTask is measured. Writes bench/out/results/emulator_rest.json. Run
through `make bench`, or alone: `.venv/bin/python bench/emulator_rest_bench.py`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import free_port, write_results  # noqa: E402
from bench.emulator_bench import Process  # noqa: E402

PARENT = "projects/bench/locations/us-central1"
QUEUE = f"{PARENT}/queues/transports"
TASK: dict[str, Any] = {"http_request": {"url": "http://127.0.0.1:9/never", "body": b"{}"}}
TRANSPORTS = ("grpc", "rest")


def make_client(transport: str, grpc_port: int, http_port: int) -> tasks_v2.CloudTasksClient:
    if transport == "grpc":
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(
            channel=grpc.insecure_channel(f"127.0.0.1:{grpc_port}")))
    return tasks_v2.CloudTasksClient(transport="rest", credentials=AnonymousCredentials(),
                                     client_options={"api_endpoint": f"http://127.0.0.1:{http_port}"})


def timed_calls(client: tasks_v2.CloudTasksClient, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        client.create_task(parent=QUEUE, task=TASK)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def raw_http_latency(http_port: int, calls: int) -> dict[str, float]:
    connection = http.client.HTTPConnection("127.0.0.1", http_port)
    body = json.dumps({"task": {"httpRequest": {"url": TASK["http_request"]["url"], "body": "e30="}}})
    samples = []
    for number in range(calls + 100):
        began = time.perf_counter()
        connection.request("POST", f"/v2/{QUEUE}/tasks", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        if number >= 100:  # after warming up
            samples.append((time.perf_counter() - began) * 1000)
    connection.close()
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3), "p99_ms": round(samples[int(0.99 * len(samples))], 3)}


def latency(clients: dict[str, tasks_v2.CloudTasksClient], calls: int, blocks: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {transport: [] for transport in TRANSPORTS}
    for _ in range(blocks):
        for transport in TRANSPORTS:
            samples[transport] += timed_calls(clients[transport], calls // blocks)
    result = {}
    for transport, values in samples.items():
        values.sort()
        result[transport] = {"p50_ms": round(statistics.median(values), 3),
                             "p99_ms": round(values[int(0.99 * len(values))], 3),
                             "calls_per_second": round(1000 / statistics.mean(values), 1)}
    return result


def throughput(make: Callable[[], tasks_v2.CloudTasksClient], tasks: int, threads: int) -> float:
    clients = [make() for _ in range(threads)]
    for client in clients:  # connect before the clock starts
        client.create_task(parent=QUEUE, task=TASK)
    start = threading.Barrier(threads + 1)

    def work(client: tasks_v2.CloudTasksClient) -> None:
        start.wait()
        for _ in range(tasks // threads):
            client.create_task(parent=QUEUE, task=TASK)

    workers = [threading.Thread(target=work, args=(client,)) for client in clients]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return round(tasks // threads * threads / (time.perf_counter() - began), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--throughput-tasks", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    grpc_port, http_port = free_port(), free_port()
    emulator = Process([sys.executable, "-m", "tasklane.emulator", "--grpc-port", str(grpc_port), "--http-port",
                        str(http_port), "--log-level", "WARNING", "--queue", QUEUE], http_port)
    try:
        clients = {transport: make_client(transport, grpc_port, http_port) for transport in TRANSPORTS}
        clients["grpc"].pause_queue(name=QUEUE)
        for client in clients.values():  # warm up connections and both code paths
            timed_calls(client, 100)
        latencies = latency(clients, args.latency_calls, blocks=4)
        raw = raw_http_latency(http_port, args.latency_calls)
        rates: dict[str, Any] = {transport: throughput(lambda t=transport: make_client(t, grpc_port, http_port),
                                                       args.throughput_tasks, args.threads)
                                 for transport in TRANSPORTS}
    finally:
        emulator.stop()

    results = {
        "benchmark": "emulator_rest",
        "machine": f"{os.cpu_count()} cores; Python {sys.version.split()[0]}",
        "settings": {"latency_calls": args.latency_calls, "throughput_tasks": args.throughput_tasks,
                     "threads": args.threads},
        "create_task_latency": latencies,
        "create_task_latency_raw_http": raw,
        "create_task_throughput_per_second": rates,
        "ratios": {
            "rest_over_grpc_p50": round(latencies["rest"]["p50_ms"] / latencies["grpc"]["p50_ms"], 2),
            "rest_over_grpc_p99": round(latencies["rest"]["p99_ms"] / latencies["grpc"]["p99_ms"], 2),
            "rest_over_grpc_throughput": round(rates["rest"] / rates["grpc"], 2),
        },
    }
    write_results("emulator_rest", results)


if __name__ == "__main__":
    main()
