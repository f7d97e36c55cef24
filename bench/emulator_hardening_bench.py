"""Benchmark for issue 11's emulator half: memory and state file over a long run, and what validation costs.

- Memory and state file over time: the emulator (its own process, a state file, a short task tombstone
  window) creates, delivers and expires 200,000 tasks; RSS (/proc) and the state file with its WAL are
  sampled when idle, after a 2,000-task warm-up, at the peak, and once the tombstones have expired and
  been pruned. Goal: RSS back within 10 MiB of where it started, the state file back to its start size.
- The throughput cost of the new validation: drain (5,000 tasks into a paused queue, resumed; resume to
  last delivery) and sequential CreateTask p50 over loopback, for this tree and for --baseline REF (the
  emulator before the change, extracted with git archive), alternated so both see the same machine.

Writes bench/out/results/emulator_hardening.json. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import REPO, EmulatorProcess, Process, free_port, write_results  # noqa: E402
from bench.emulator_bench import CONCURRENCY, PARENT, create_many, http, sync_client, wait_count  # noqa: E402

MIB = 1024 * 1024


def state_size(state: Path) -> int:
    wal = state.with_name(state.name + "-wal")
    return state.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def memory_over_time(target: str, tasks: int, tombstone_seconds: float, batch: int = 20_000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        state = Path(directory) / "state.sqlite"
        emulator = EmulatorProcess("--state-file", str(state), "--ignore-rate-limits",
                            "--task-tombstone-seconds", str(tombstone_seconds))
        samples: list[dict[str, Any]] = []
        began = time.monotonic()

        def sample(label: str) -> dict[str, Any]:
            point = {"label": label, "seconds": round(time.monotonic() - began, 1),
                     "rss_mib": round(emulator.rss() / MIB, 2), "state_file_mib": round(state_size(state) / MIB, 3)}
            samples.append(point)
            print(point, flush=True)
            return point

        def settle(label: str) -> dict[str, Any]:
            """Wait out the tombstone window and a few prune rounds, then sample."""
            time.sleep(tombstone_seconds + 5)
            return sample(label)

        try:
            client = sync_client(emulator.port)
            queue = f"{PARENT}/queues/memory"
            client.create_queue(parent=PARENT, queue={"name": queue, "rate_limits": {
                "max_concurrent_dispatches": CONCURRENCY}})
            start = sample("idle, queue created")
            http(f"{target}/reset", "POST")
            asyncio.run(create_many(emulator.port, queue, f"{target}/fast", 2_000))
            wait_count(target, 2_000)
            warm = settle("after a 2,000-task warm-up, expired")
            peak = dict(warm)
            done = 0
            while done < tasks:
                http(f"{target}/reset", "POST")
                step = min(batch, tasks - done)
                asyncio.run(create_many(emulator.port, queue, f"{target}/fast", step))
                wait_count(target, step, timeout=600)
                done += step
                point = sample(f"{done:,} created and delivered")
                peak = max(peak, point, key=lambda p: p["rss_mib"])
            end = settle(f"all {tasks:,} expired (tombstones {tombstone_seconds:g} s) and pruned")
            later = settle("after another tombstone window")
        finally:
            emulator.stop()
    return {"tasks": tasks, "tombstone_seconds": tombstone_seconds, "samples": samples,
            "start": start, "warm": warm, "peak_rss_mib": peak["rss_mib"],
            "peak_state_file_mib": max(s["state_file_mib"] for s in samples), "end": end, "later": later,
            "rss_growth_mib_from_start": round(later["rss_mib"] - start["rss_mib"], 2),
            "rss_growth_mib_from_warm": round(later["rss_mib"] - warm["rss_mib"], 2),
            "state_file_growth_mib": round(later["state_file_mib"] - start["state_file_mib"], 3)}


def drain(source: Path, target: str, tasks: int) -> float:
    emulator = EmulatorProcess("--ignore-rate-limits", source=source)
    try:
        client = sync_client(emulator.port)
        queue = f"{PARENT}/queues/drain"
        client.create_queue(parent=PARENT, queue={"name": queue, "rate_limits": {
            "max_concurrent_dispatches": CONCURRENCY}})
        client.pause_queue(name=queue)
        http(f"{target}/reset", "POST")
        asyncio.run(create_many(emulator.port, queue, f"{target}/fast", tasks))
        client.resume_queue(name=queue)
        resumed = time.time()
        drained = max(wait_count(target, tasks)["arrivals"])
    finally:
        emulator.stop()
    return tasks / (drained - resumed)


def create_p50(source: Path, calls: int) -> float:
    emulator = EmulatorProcess(source=source)
    try:
        client = sync_client(emulator.port)
        queue = f"{PARENT}/queues/latency"
        client.create_queue(parent=PARENT, queue={"name": queue})
        client.pause_queue(name=queue)
        task = {"http_request": {"url": "http://127.0.0.1:9/never", "body": b"{}",
                                 "headers": {"Content-Type": "application/json", "X-Trace": "abc"}}}
        for _ in range(50):
            client.create_task(parent=queue, task=task)
        samples = []
        for _ in range(calls):
            started = time.perf_counter()
            client.create_task(parent=queue, task=task)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        emulator.stop()
    return statistics.median(samples)


def validation_cost(baseline: str, target: str, tasks: int, calls: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        before = Path(directory)
        archive = subprocess.run(["git", "archive", baseline, "emulator"], cwd=REPO, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        runs: dict[str, dict[str, list[float]]] = {"before": {"drain": [], "p50": []},
                                                   "after": {"drain": [], "p50": []}}
        for _ in range(rounds):
            for label, source in (("before", before), ("after", REPO)):
                runs[label]["drain"].append(drain(source, target, tasks))
                runs[label]["p50"].append(create_p50(source, calls))
                print(label, runs[label], flush=True)
    result: dict[str, Any] = {"baseline": baseline, "tasks": tasks, "calls": calls, "rounds": rounds}
    for label in ("before", "after"):
        result[label] = {"drain_tasks_per_second": round(statistics.median(runs[label]["drain"]), 1),
                         "create_task_p50_ms": round(statistics.median(runs[label]["p50"]), 3),
                         "drain_runs": [round(x, 1) for x in runs[label]["drain"]],
                         "p50_runs": [round(x, 3) for x in runs[label]["p50"]]}
    result["drain_after_over_before"] = round(result["after"]["drain_tasks_per_second"]
                                              / result["before"]["drain_tasks_per_second"], 3)
    result["create_p50_after_over_before"] = round(result["after"]["create_task_p50_ms"]
                                                   / result["before"]["create_task_p50_ms"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=200_000, help="tasks for the memory run")
    parser.add_argument("--tombstone-seconds", type=float, default=5.0)
    parser.add_argument("--baseline", help="git ref of the emulator before the validation change")
    parser.add_argument("--drain-tasks", type=int, default=5000)
    parser.add_argument("--latency-calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    target_port = free_port()
    target = f"http://127.0.0.1:{target_port}"
    target_process = Process([sys.executable, str(REPO / "bench" / "target_server.py"), str(target_port)], target_port)
    try:
        cost = (validation_cost(args.baseline, target, args.drain_tasks, args.latency_calls, args.rounds)
                if args.baseline else None)
        memory = memory_over_time(target, args.tasks, args.tombstone_seconds)
    finally:
        target_process.stop()
    write_results("emulator_hardening", {
        "benchmark": "emulator_hardening", "machine": f"{os.cpu_count()} cores; Python {sys.version.split()[0]}",
        "memory": memory, "validation_cost": cost,
        "targets": {"rss_after_expiry": "within 10 MiB of the start", "state_file": "back to its start size"}})


if __name__ == "__main__":
    main()
