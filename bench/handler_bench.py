"""Benchmark: the Python task handler against the Node 20 + Express 4 handler, side by side in one run.

Measures, for each server on this machine:
- cold start: process exec to the first 200 on GET / (median and p90 of interleaved runs);
- throughput: POST /process-order from wrk (1 thread, 32 connections), each request a distinct task
  name, each server logging one JSON line per task to a file;
- peak RSS of the server process over that load.

Writes bench/out/results/handler.json. Run through `make bench`.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import free_port, write_results  # noqa: E402

EXPRESS = REPO / "bench" / "express-handler" / "server.js"

WRK_SCRIPT = """
local counter = 0
wrk.method = "POST"
wrk.body = '{"orderId":"order-42","action":"update_inventory","customerEmail":"buyer@example.com"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-CloudTasks-QueueName"] = "orders"
wrk.headers["X-CloudTasks-TaskRetryCount"] = "0"
wrk.headers["X-CloudTasks-TaskExecutionCount"] = "0"
%(authorization)s
request = function()
  counter = counter + 1
  wrk.headers["X-CloudTasks-TaskName"] = "task-" .. counter
  return wrk.format()
end
"""


@dataclass(frozen=True)
class Server:
    label: str
    argv: list[str]
    env: dict[str, str]
    authorization: str | None = None


def start(server: Server, port: int, log_file: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **server.env, "PORT": str(port), "HOST": "127.0.0.1"}
    output = open(log_file, "wb") if log_file else subprocess.DEVNULL  # noqa: SIM115 - closed by the OS at exit
    return subprocess.Popen(server.argv, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)


def first_ok(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/")
            if connection.getresponse().status == 200:
                return
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}") from None
            time.sleep(0.001)
    raise RuntimeError("server did not answer in time")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cold_start_ms(server: Server, tries: int = 3) -> float:
    for attempt in range(1, tries + 1):
        port = free_port()
        began = time.perf_counter()
        process = start(server, port)
        try:
            first_ok(port, process)
            return (time.perf_counter() - began) * 1000
        except RuntimeError:
            if attempt == tries:
                raise  # a free port can be taken between probing and binding; try another
        finally:
            stop(process)
    raise AssertionError("unreachable")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def throughput(server: Server, seconds: int, connections: int) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        log_file = Path(scratch) / "server.log"
        script = Path(scratch) / "post.lua"
        header = f'wrk.headers["Authorization"] = "Bearer {server.authorization}"' if server.authorization else ""
        script.write_text(WRK_SCRIPT % {"authorization": header})
        process = start(server, port, log_file)
        try:
            first_ok(port, process)
            result = subprocess.run(
                ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                 f"http://127.0.0.1:{port}/process-order"],
                capture_output=True, text=True, check=True, timeout=seconds + 30)
            rss = peak_rss_mb(process.pid)
        finally:
            stop(process)
        logged = sum(1 for _ in log_file.open("rb"))
    output = result.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    return {"requests_per_second": rate, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "latency_p50_ms": to_ms(p50), "latency_p99_ms": to_ms(p99), "peak_rss_mb": round(rss, 1),
            "log_lines": logged}


def to_ms(match: re.Match[str] | None) -> float:
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)


def unsigned_claims_token() -> str:
    """A token the handler's claims check accepts (the signature is not checked in that mode)."""
    def segment(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
    now = int(time.time())
    claims = {"iss": "https://accounts.google.com", "aud": "https://bench.example", "email": "inv@bench.example",
              "email_verified": True, "iat": now, "exp": now + 3600}
    return f"{segment({'alg': 'RS256', 'kid': 'k'})}.{segment(claims)}.SIGNATURE_REMOVED_BY_GOOGLE"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold-starts", type=int, default=15)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--handler-python", default=sys.executable,
                        help="interpreter of an environment holding only handler/requirements.txt, like the image")
    args = parser.parse_args()

    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    python_server = Server("python handler", [args.handler_python, "-m", "handler"], {})
    express_server = Server("node express", ["node", str(EXPRESS)], {})
    claims_server = Server("python handler, tokenCheck=claims", [args.handler_python, "-m", "handler"], {
        "TASKLANE_TOKEN_CHECK": "claims", "TASKLANE_TASK_AUDIENCE": "https://bench.example",
        "TASKLANE_INVOKER_SERVICE_ACCOUNT": "inv@bench.example"}, authorization=unsigned_claims_token())

    starts: dict[str, list[float]] = {python_server.label: [], express_server.label: []}
    for _ in range(args.cold_starts):  # interleaved, so both see the same machine conditions
        for server in (python_server, express_server):
            starts[server.label].append(cold_start_ms(server))

    loads = {server.label: throughput(server, args.seconds, args.connections)
             for server in (python_server, express_server, claims_server)}

    def summary(samples: list[float]) -> dict[str, float]:
        ordered = sorted(samples)
        return {"median_ms": round(statistics.median(ordered), 1),
                "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 1), "runs": len(ordered)}

    python_rate = loads[python_server.label]["requests_per_second"]
    express_rate = loads[express_server.label]["requests_per_second"]
    cold = {label: summary(samples) for label, samples in starts.items()}
    results = {
        "benchmark": "handler",
        "machine": f"{os.cpu_count()} cores; Python {sys.version.split()[0]}; Node {node}",
        "settings": {key: value for key, value in vars(args).items() if key != "handler_python"},
        "cold_start": cold,
        "throughput": loads,
        "ratios": {
            "cold_start_python_over_express": round(cold[python_server.label]["median_ms"]
                                                    / cold[express_server.label]["median_ms"], 2),
            "throughput_python_over_express": round(python_rate / express_rate, 2),
        },
        "targets": {"cold_start": "python <= express", "throughput": "python >= express",
                    "peak_rss_mb": "python <= 100"},
    }
    write_results("handler", results)


if __name__ == "__main__":
    main()
