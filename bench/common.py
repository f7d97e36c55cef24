"""Helpers the benchmarks share: free ports, servers in their own processes, runs and their spread,
writing results.

`make bench` writes under bench/out/ (not committed), so a run leaves the committed tree clean;
`make bench-publish` copies a run's results into bench/results/, bench/RESULTS.md and bench/charts/.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT_DIR = BENCH / "out"
RESULTS_DIR = OUT_DIR / "results"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout:g} s")


class Process:
    """A server the benchmark starts in its own process; ready once something listens on `ready_port`."""

    def __init__(self, argv: list[str], ready_port: int, cwd: Path = REPO, env: dict[str, str] | None = None,
                 stdout: Any = subprocess.DEVNULL, stderr: Any = subprocess.DEVNULL) -> None:
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
        wait_for_port(ready_port)

    def rss(self) -> int:
        """Resident memory in bytes (/proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class EmulatorProcess(Process):
    """This checkout's emulator (`python -m tasklane.emulator`), or an older tree's from `source` (a directory
    holding the top-level emulator/ package it had before the distributions), on free ports."""

    def __init__(self, *args: str, source: Path = REPO) -> None:
        self.port, self.http_port = free_port(), free_port()
        module = "tasklane.emulator" if source == REPO else "emulator"
        super().__init__([sys.executable, "-m", module, "--grpc-port", str(self.port),
                          "--http-port", str(self.http_port), "--log-level", "WARNING", *args], self.port, cwd=source)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def spread(runs: list[float], digits: int = 1) -> dict[str, Any]:
    """Min, median and max of a measure's runs, with the runs themselves."""
    return {"min": round(min(runs), digits), "median": round(statistics.median(runs), digits),
            "max": round(max(runs), digits), "runs": [round(run, digits) for run in runs]}


def ratio(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """How many times `theirs` `ours` is, taken on the medians of two `spread`s."""
    return round(ours["median"] / theirs["median"], 2)


def write_results(name: str, results: dict[str, Any]) -> None:
    """Save one benchmark's results as bench/out/results/NAME.json and print them."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    (RESULTS_DIR / f"{name}.json").write_text(text)
    print(text)
