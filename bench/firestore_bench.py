"""Benchmark: what the shared Firestore stores cost the handler, against the in-process ones (issue 12).

Both runs are `python -m handler` (from the handler-only environment, as in its image) on this machine,
token check off, each POST a distinct task of update_inventory:
- added latency: 500 sequential requests on one keep-alive connection, p50 and p99 for each store;
- throughput: wrk, 1 thread, 32 connections, 10 s.
Then the exactly-once proof at the issue's size: tests/e2e/test_across_instances.py with 2,000 tasks
(plus 1,000 duplicates) over two handler processes sharing one Firestore emulator.

The Firestore store here talks to Google's Firestore EMULATOR on the same two cores (Java, in memory,
single node), not the real service: real Firestore adds network round trips (typically a few ms per RPC
within a region) but does not compete with the handler for this machine's CPU. Writes
bench/out/results/firestore.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import Process, free_port, write_results  # noqa: E402
from bench.handler_bench import WRK_SCRIPT  # noqa: E402
from local.google_emulators import GoogleEmulator  # noqa: E402

QUEUE = "projects/tasklane-bench/locations/us-central1/queues/orders"
BODY = b'{"orderId":"order-42","action":"update_inventory","customerEmail":"buyer@example.com"}'


def start_handler(python: str, port: int, extra: dict[str, str], log: Path) -> Process:
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "TASKLANE_QUEUE_PATH": QUEUE,
           "TASKLANE_TOKEN_CHECK": "off", "TASKLANE_MAX_ATTEMPTS": "5", **extra}
    env.pop("FIRESTORE_EMULATOR_HOST", None)
    env.update(extra)
    with open(log, "wb") as output:
        return Process([python, "-m", "handler"], port, env=env, stdout=output, stderr=subprocess.STDOUT)


def latencies(port: int, count: int, prefix: str) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for i in range(count):
        headers = {"Content-Type": "application/json", "X-CloudTasks-QueueName": "orders",
                   "X-CloudTasks-TaskName": f"{prefix}-{i}", "X-CloudTasks-TaskRetryCount": "0"}
        started = time.perf_counter()
        connection.request("POST", "/process-order", BODY, headers)
        response = connection.getresponse()
        response.read()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, response.status
    connection.close()
    return times


def wrk(port: int, seconds: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"authorization": ""})
    url = f"http://127.0.0.1:{port}/process-order"
    out = subprocess.run(["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", script.name, url],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    rate = next(line for line in out.splitlines() if line.startswith("Requests/sec:"))
    non_2xx = [line for line in out.splitlines() if "Non-2xx" in line]
    if non_2xx:
        raise RuntimeError(f"wrk saw errors: {non_2xx}")
    return float(rate.split()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--handler-python", default=sys.executable)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--skip-exactly-once", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {
        "note": "Firestore store against Google's Firestore emulator on this machine, not the real service"}
    with GoogleEmulator.firestore() as firestore, tempfile.TemporaryDirectory() as tmp:
        stores = {"in_process": {},
                  "firestore": {**firestore.environment(), "TASKLANE_FIRESTORE_DATABASE": "bench"}}
        for name, extra in stores.items():
            port = free_port()
            process = start_handler(args.handler_python, port, extra, Path(tmp) / f"{name}.log")
            try:
                latencies(port, 50, f"warm-{name}")
                times = latencies(port, args.requests, f"lat-{name}")
                rate = wrk(port, args.seconds)
            finally:
                process.stop()
            results[name] = {"p50_ms": round(statistics.median(times), 2), "p99_ms": round(percentile(times, 0.99), 2),
                             "requests_per_second": round(rate, 1)}
            print(name, results[name], flush=True)
    in_process, shared = results["in_process"], results["firestore"]
    assert isinstance(in_process, dict) and isinstance(shared, dict)
    results["added_p50_ms"] = round(shared["p50_ms"] - in_process["p50_ms"], 2)
    results["added_p99_ms"] = round(shared["p99_ms"] - in_process["p99_ms"], 2)
    results["throughput_ratio"] = round(shared["requests_per_second"] / in_process["requests_per_second"], 3)
    if not args.skip_exactly_once:
        report = Path(tempfile.mkstemp(suffix=".json")[1])
        env = {**os.environ, "TASKLANE_EXACTLY_ONCE_TASKS": "2000", "TASKLANE_EXACTLY_ONCE_REPORT": str(report)}
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/e2e/test_across_instances.py", "-k", "exactly_once"], cwd=REPO, env=env, check=True)
        results["exactly_once"] = json.loads(report.read_text())
        report.unlink()
    write_results("firestore", results)


if __name__ == "__main__":
    main()
