"""Benchmark: the Tasklane emulator against the PyPI gcloud-tasks-emulator, side by side in one run.

- Drain: 5,000 tasks created into a paused queue, then the queue resumed; time from resume to the
  5,000th delivery at a trivial local HTTP target (bench/target_server.py, its own process). Our
  emulator runs with --ignore-rate-limits (an "unlimited" queue; Cloud Tasks itself caps a queue at
  500/s) and 100 dispatches in flight. Also end to end: creating (64 in flight) and delivering
  5,000 tasks into a running queue.
- CreateTask latency over loopback: 2,000 sequential calls from the sync Python client.
- Ours only (the peer has no rate limits): a queue limited to 50/s over 20 s, and a queue limited to 5
  concurrent dispatches against a target that takes 50 ms.

Writes bench/results/emulator.json. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import free_port, wait_for_port, write_results  # noqa: E402

PARENT = "projects/bench/locations/us-central1"
# Our queues allow 100 dispatches in flight (Cloud Tasks' default is 1,000): each needs its own
# connection, and opening 1,000 at once costs more than it gains on two cores. The peer has no limit.
CONCURRENCY = 100


def http(url: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, method=method, data=b"" if method == "POST" else None),
                                timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


class Process:
    def __init__(self, argv: list[str], ready_port: int) -> None:
        self.process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(ready_port)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def sync_client(port: int) -> tasks_v2.CloudTasksClient:
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(
        channel=grpc.insecure_channel(f"127.0.0.1:{port}")))


async def create_many(port: int, queue: str, url: str, count: int, in_flight: int = 64) -> None:
    client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(
        channel=grpc.aio.insecure_channel(f"127.0.0.1:{port}")))
    gate = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with gate:
            await client.create_task(parent=queue, task={"http_request": {"url": url, "body": b"{}"}})

    await asyncio.gather(*(one() for _ in range(count)))


def wait_count(target: str, count: int, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = http(f"{target}/stats")
        if stats["count"] >= count:
            return dict(stats)
        time.sleep(0.05)
    raise RuntimeError(f"only {http(f'{target}/stats')['count']} of {count} tasks arrived")


def start_emulator(kind: str, port: int, peer_python: str, queue: str, *extra: str) -> Process:
    if kind == "tasklane":
        return Process([sys.executable, "-m", "tasklane.emulator", "--grpc-port", str(port),
                        "--http-port", str(free_port()), "--log-level", "WARNING", *extra], port)
    return Process([peer_python, "-m", "gcloud_tasks_emulator", "start", "-p", str(port), "-q", "-d", queue], port)


def drain(kind: str, peer_python: str, target: str, tasks: int) -> dict[str, float]:
    port = free_port()
    queue = f"{PARENT}/queues/drain"
    emulator = start_emulator(kind, port, peer_python, queue, "--ignore-rate-limits")
    try:
        client = sync_client(port)
        if kind == "tasklane":
            client.create_queue(parent=PARENT, queue={"name": queue, "rate_limits": {
                "max_concurrent_dispatches": CONCURRENCY}})
        client.pause_queue(name=queue)
        http(f"{target}/reset", "POST")
        started = time.time()
        asyncio.run(create_many(port, queue, f"{target}/fast", tasks))
        created = time.time()
        client.resume_queue(name=queue)
        resumed = time.time()
        stats = wait_count(target, tasks)
        drained = max(stats["arrivals"])

        # End to end: a running queue, creating and delivering at once.
        running = f"{PARENT}/queues/running"
        client.create_queue(parent=PARENT, queue={"name": running, "rate_limits": {
            "max_concurrent_dispatches": CONCURRENCY}})
        http(f"{target}/reset", "POST")
        began = time.time()
        asyncio.run(create_many(port, running, f"{target}/fast", tasks))
        end_to_end = max(wait_count(target, tasks)["arrivals"]) - began
    finally:
        emulator.stop()
    return {"create_seconds": round(created - started, 3), "drain_seconds": round(drained - resumed, 3),
            "drain_tasks_per_second": round(tasks / (drained - resumed), 1),
            "end_to_end_seconds": round(end_to_end, 3), "end_to_end_tasks_per_second": round(tasks / end_to_end, 1)}


def create_latency(kind: str, peer_python: str, calls: int) -> dict[str, float]:
    port = free_port()
    queue = f"{PARENT}/queues/latency"
    emulator = start_emulator(kind, port, peer_python, queue)
    try:
        client = sync_client(port)
        if kind == "tasklane":
            client.create_queue(parent=PARENT, queue={"name": queue})
        client.pause_queue(name=queue)
        task = {"http_request": {"url": "http://127.0.0.1:9/never", "body": b"{}"}}
        for _ in range(50):  # warm up the channel
            client.create_task(parent=queue, task=task)
        samples = []
        for _ in range(calls):
            began = time.perf_counter()
            client.create_task(parent=queue, task=task)
            samples.append((time.perf_counter() - began) * 1000)
    finally:
        emulator.stop()
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3), "p99_ms": round(samples[int(0.99 * len(samples))], 3),
            "calls_per_second": round(1000 / statistics.mean(samples), 1)}


def rate_limited(target: str, seconds: float) -> dict[str, float]:
    port = free_port()
    emulator = start_emulator("tasklane", port, "", "")
    try:
        client = sync_client(port)
        queue = f"{PARENT}/queues/fifty"
        client.create_queue(parent=PARENT, queue={"name": queue, "rate_limits": {"max_dispatches_per_second": 50}})
        client.pause_queue(name=queue)
        asyncio.run(create_many(port, queue, f"{target}/fast", int(50 * seconds * 1.2)))
        http(f"{target}/reset", "POST")
        client.resume_queue(name=queue)
        time.sleep(seconds + 1.5)
        arrivals = sorted(http(f"{target}/stats")["arrivals"])
        first = arrivals[0]
        in_window = [t for t in arrivals if t < first + seconds]
        rate = len(in_window) / seconds

        narrow = f"{PARENT}/queues/narrow"
        client.create_queue(parent=PARENT, queue={"name": narrow, "rate_limits": {"max_concurrent_dispatches": 5}})
        http(f"{target}/reset", "POST")
        asyncio.run(create_many(port, narrow, f"{target}/slow", 300))
        peak = wait_count(target, 300)["peak_in_flight"]
    finally:
        emulator.stop()
    return {"configured_per_second": 50, "measured_per_second": round(rate, 2),
            "error_percent": round(abs(rate - 50) / 50 * 100, 2), "window_seconds": seconds,
            "concurrency_limit": 5, "peak_in_flight_at_target": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--peer-python", required=True, help="interpreter of the gcloud-tasks-emulator environment")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    args = parser.parse_args()

    target_port = free_port()
    target = f"http://127.0.0.1:{target_port}"
    target_process = Process([sys.executable, str(REPO / "bench" / "target_server.py"), str(target_port)], target_port)
    try:
        drains = {kind: drain(kind, args.peer_python, target, args.tasks) for kind in ("tasklane", "peer")}
        latency = {kind: create_latency(kind, args.peer_python, args.latency_calls) for kind in ("tasklane", "peer")}
        rate = rate_limited(target, args.rate_seconds)
    finally:
        target_process.stop()

    results = {
        "benchmark": "emulator",
        "machine": f"{os.cpu_count()} cores; Python {sys.version.split()[0]}",
        "settings": {"tasks": args.tasks, "latency_calls": args.latency_calls, "rate_seconds": args.rate_seconds},
        "drain": drains,
        "create_task_latency": latency,
        "rate_limit": rate,
        "ratios": {
            "drain_tasklane_over_peer": round(drains["tasklane"]["drain_tasks_per_second"]
                                              / drains["peer"]["drain_tasks_per_second"], 2),
            "end_to_end_tasklane_over_peer": round(drains["tasklane"]["end_to_end_tasks_per_second"]
                                                   / drains["peer"]["end_to_end_tasks_per_second"], 2),
        },
        "targets": {"drain": "tasklane >= 3x peer", "rate": "50/s within 5%", "concurrency": "never above 5",
                    "create_task_p50_ms": "< 2"},
    }
    write_results("emulator", results)


if __name__ == "__main__":
    main()
