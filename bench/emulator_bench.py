"""Benchmark: the Tasklane emulator against the PyPI gcloud-tasks-emulator, side by side in one run.

Every comparison runs ROUNDS times, interleaved (ours, the peer, ours in its other settings, then the
next round), and is reported as min, median and max; ratios are taken on the medians.

- Drain: 5,000 tasks created into a paused queue, then the queue resumed; time from resume to the
  5,000th delivery at a trivial local HTTP target (bench/target_server.py, its own process). Our
  emulator runs with --ignore-rate-limits (an "unlimited" queue; Cloud Tasks itself caps a queue at
  500/s) and 100 dispatches in flight. Also end to end: creating (64 in flight) and delivering
  5,000 tasks into a running queue.
- The same at Cloud Tasks' default of 1,000 dispatches in flight, and with a state file (durable).
- CreateTask over loopback: 2,000 sequential calls from the sync Python client, to each emulator, to ours
  with a state file, and to a gRPC server that answers a fixed Task without doing anything (the floor
  this client and gRPC leave: no emulator can answer faster). Then the same calls from a bare gRPC stub
  sending a request serialized once, which leaves out the client library's own time (about 0.15 ms a call),
  so the servers' share shows.
- Ours only (the peer has no rate limits): a queue limited to 50/s over 20 s, and a queue limited to 5
  concurrent dispatches against a target that takes 50 ms.

Writes bench/out/results/emulator.json. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, EmulatorProcess, Process, free_port, ratio, spread, write_results  # noqa: E402

PARENT = "projects/bench/locations/us-central1"
CONCURRENCY = 100
"""Dispatches in flight in the main comparison; the high-concurrency run uses Cloud Tasks' default."""
DEFAULT_CONCURRENCY = 1000
ROUNDS = 3


def http(url: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, method=method, data=b"" if method == "POST" else None),
                                timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


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


class Emulator:
    """One emulator under test, in its own process: ours ("tasklane"), the peer, or the floor server."""

    def __init__(self, kind: str, peer_python: str, queue: str, *extra: str) -> None:
        self.kind = kind
        if kind == "tasklane":
            ours = EmulatorProcess(*extra)
            self.port, self.process = ours.port, ours
        else:
            self.port = free_port()
            argv = ([peer_python, "-m", "gcloud_tasks_emulator", "start", "-p", str(self.port), "-q", "-d", queue]
                    if kind == "peer" else [sys.executable, str(Path(__file__)), "--serve-floor", str(self.port)])
            self.process = Process(argv, self.port)

    def stop(self) -> None:
        self.process.stop()


def drain(kind: str, peer_python: str, target: str, tasks: int, concurrency: int = CONCURRENCY,
          state_file: str | None = None) -> dict[str, float]:
    """Drain and end-to-end tasks/s for one emulator."""
    queue = f"{PARENT}/queues/drain"
    extra = ["--ignore-rate-limits", *(["--state-file", state_file] if state_file else [])]
    emulator = Emulator(kind, peer_python, queue, *extra)
    try:
        client = sync_client(emulator.port)
        if kind == "tasklane":
            client.create_queue(parent=PARENT, queue={"name": queue, "rate_limits": {
                "max_concurrent_dispatches": concurrency}})
        client.pause_queue(name=queue)
        http(f"{target}/reset", "POST")
        asyncio.run(create_many(emulator.port, queue, f"{target}/fast", tasks))
        client.resume_queue(name=queue)
        resumed = time.time()
        drained = max(wait_count(target, tasks)["arrivals"])

        # End to end: a running queue, creating and delivering at once.
        running = f"{PARENT}/queues/running"
        client.create_queue(parent=PARENT, queue={"name": running, "rate_limits": {
            "max_concurrent_dispatches": concurrency}})
        http(f"{target}/reset", "POST")
        began = time.time()
        asyncio.run(create_many(emulator.port, running, f"{target}/fast", tasks))
        end_to_end = max(wait_count(target, tasks)["arrivals"]) - began
    finally:
        emulator.stop()
    return {"drain": tasks / (drained - resumed), "end_to_end": tasks / end_to_end}


def timed(call: Any, calls: int) -> dict[str, float]:
    """`calls` sequential calls after 50 to warm up: calls/s and latency percentiles in ms."""
    for _ in range(50):
        call()
    samples = []
    for _ in range(calls):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p99_ms": samples[int(0.99 * len(samples))],
            "calls_per_second": 1000 / statistics.mean(samples)}


def create_latency(kind: str, peer_python: str, calls: int, state_file: str | None = None,
                   ) -> dict[str, dict[str, float]]:
    """Sequential CreateTask, from the sync client ("client") and from a bare stub ("stub"): calls/s and
    latency percentiles in ms."""
    queue = f"{PARENT}/queues/latency"
    emulator = Emulator(kind, peer_python, queue, *(["--state-file", state_file] if state_file else []))
    try:
        client = sync_client(emulator.port)
        if kind == "tasklane":
            client.create_queue(parent=PARENT, queue={"name": queue})
        if kind != "floor":
            client.pause_queue(name=queue)
        task = {"http_request": {"url": "http://127.0.0.1:9/never", "body": b"{}"}}
        measured = {"client": timed(lambda: client.create_task(parent=queue, task=task), calls)}
        with grpc.insecure_channel(f"127.0.0.1:{emulator.port}") as channel:
            stub = channel.unary_unary("/google.cloud.tasks.v2.CloudTasks/CreateTask")
            request = tasks_v2.CreateTaskRequest.serialize(tasks_v2.CreateTaskRequest(parent=queue, task=task))
            measured["stub"] = timed(lambda: stub(request), calls)
    finally:
        emulator.stop()
    return measured


async def serve_floor(port: int) -> None:
    """A CloudTasks gRPC server that answers every CreateTask with one fixed Task, doing nothing else."""
    answer = tasks_v2.Task.pb()(name=f"{PARENT}/queues/latency/tasks/floor").SerializeToString()

    async def create_task(request: bytes, context: Any) -> bytes:
        return answer

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("google.cloud.tasks.v2.CloudTasks", {
        "CreateTask": grpc.unary_unary_rpc_method_handler(create_task)}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def rate_limited(target: str, seconds: float) -> dict[str, float]:
    emulator = EmulatorProcess()
    port = emulator.port
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


def rounds(peer_python: str, target: str, tasks: int, calls: int, count: int) -> dict[str, Any]:
    """Every comparison `count` times, interleaved; each measure's runs as a `spread`."""
    drains: dict[str, list[dict[str, float]]] = {"tasklane": [], "peer": [], "tasklane_1000": [],
                                                 "tasklane_durable": []}
    latencies: dict[str, list[dict[str, dict[str, float]]]] = {"tasklane": [], "peer": [], "tasklane_durable": [],
                                                               "floor": []}
    for round_number in range(1, count + 1):
        with tempfile.TemporaryDirectory() as directory:
            drains["tasklane"].append(drain("tasklane", peer_python, target, tasks))
            drains["peer"].append(drain("peer", peer_python, target, tasks))
            drains["tasklane_1000"].append(drain("tasklane", peer_python, target, tasks, DEFAULT_CONCURRENCY))
            drains["tasklane_durable"].append(drain("tasklane", peer_python, target, tasks,
                                                    state_file=f"{directory}/drain.sqlite"))
            latencies["tasklane"].append(create_latency("tasklane", peer_python, calls))
            latencies["peer"].append(create_latency("peer", peer_python, calls))
            latencies["tasklane_durable"].append(create_latency("tasklane", peer_python, calls,
                                                                state_file=f"{directory}/create.sqlite"))
            latencies["floor"].append(create_latency("floor", peer_python, calls))
        print(f"round {round_number}: drain {[round(runs[-1]['drain']) for runs in drains.values()]}, "
              f"calls/s {[round(runs[-1]['client']['calls_per_second']) for runs in latencies.values()]}", flush=True)
    return {
        "drain_tasks_per_second": {k: spread([r["drain"] for r in runs]) for k, runs in drains.items()},
        "end_to_end_tasks_per_second": {k: spread([r["end_to_end"] for r in runs]) for k, runs in drains.items()},
        **{f"{prefix}_{measure}": {k: spread([r[caller][measure] for r in runs], digits)
                                   for k, runs in latencies.items()}
           for caller, prefix in (("client", "create"), ("stub", "create_stub"))
           for measure, digits in (("calls_per_second", 1), ("p50_ms", 3), ("p99_ms", 3))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-python", help="interpreter of the gcloud-tasks-emulator environment")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        asyncio.run(serve_floor(args.serve_floor))
        return
    if not args.peer_python:
        parser.error("--peer-python is required")

    target_port = free_port()
    target = f"http://127.0.0.1:{target_port}"
    target_process = Process([sys.executable, str(REPO / "bench" / "target_server.py"), str(target_port)], target_port)
    try:
        measures = rounds(args.peer_python, target, args.tasks, args.latency_calls, args.rounds)
        rate = rate_limited(target, args.rate_seconds)
    finally:
        target_process.stop()

    drain_rate, end_to_end = measures["drain_tasks_per_second"], measures["end_to_end_tasks_per_second"]
    calls, p50 = measures["create_calls_per_second"], measures["create_p50_ms"]
    stub_calls = measures["create_stub_calls_per_second"]
    ratios = {
        "drain_tasklane_over_peer": ratio(drain_rate["tasklane"], drain_rate["peer"]),
        "end_to_end_tasklane_over_peer": ratio(end_to_end["tasklane"], end_to_end["peer"]),
        "create_tasklane_over_peer": ratio(calls["tasklane"], calls["peer"]),
        "create_floor_over_peer": ratio(calls["floor"], calls["peer"]),
        "create_stub_tasklane_over_peer": ratio(stub_calls["tasklane"], stub_calls["peer"]),
        "create_stub_floor_over_peer": ratio(stub_calls["floor"], stub_calls["peer"]),
        "drain_1000_over_100": ratio(drain_rate["tasklane_1000"], drain_rate["tasklane"]),
        "end_to_end_1000_over_100": ratio(end_to_end["tasklane_1000"], end_to_end["tasklane"]),
        "durable_drain_over_memory": ratio(drain_rate["tasklane_durable"], drain_rate["tasklane"]),
        "durable_create_over_memory": ratio(calls["tasklane_durable"], calls["tasklane"]),
    }
    goals = {
        "sequential CreateTask ≥ 1.5× the peer's calls/s": ratios["create_tasklane_over_peer"] >= 1.5,
        "CreateTask p50 ≤ 0.5 ms": p50["tasklane"]["median"] <= 0.5,
        "drain ≥ 4× the peer": ratios["drain_tasklane_over_peer"] >= 4.0,
        "end to end ≥ 2× the peer": ratios["end_to_end_tasklane_over_peer"] >= 2.0,
        "drain at 1,000 in flight not slower than at 100": ratios["drain_1000_over_100"] >= 1.0,
        "durable drain ≥ 70 % of in-memory": ratios["durable_drain_over_memory"] >= 0.7,
        "durable CreateTask ≥ 70 % of in-memory": ratios["durable_create_over_memory"] >= 0.7,
        "50/s queue within 5 %": rate["error_percent"] <= 5.0,
        "concurrency never above its limit": rate["peak_in_flight_at_target"] <= rate["concurrency_limit"],
    }
    write_results("emulator", {
        "benchmark": "emulator",
        "machine": f"{os.cpu_count()} cores; Python {sys.version.split()[0]}",
        "settings": {"tasks": args.tasks, "latency_calls": args.latency_calls, "rate_seconds": args.rate_seconds,
                     "rounds": args.rounds, "concurrency": CONCURRENCY, "default_concurrency": DEFAULT_CONCURRENCY},
        **measures, "rate_limit": rate, "ratios": ratios, "goals": goals})


if __name__ == "__main__":
    main()
