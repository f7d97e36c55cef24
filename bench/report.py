"""Render every benchmark's results (bench/out/results/*.json) into bench/out/RESULTS.md, with a PNG chart
per comparison in bench/out/charts/; `--publish` copies a run's results, report and charts into the committed
bench/results/, bench/RESULTS.md and bench/charts/ (`make bench-publish`)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.charts import spread_chart  # noqa: E402
from bench.common import BENCH, OUT_DIR, RESULTS_DIR  # noqa: E402

REPORT = OUT_DIR / "RESULTS.md"
CHARTS = OUT_DIR / "charts"
PUBLISHED_RESULTS, PUBLISHED_REPORT, PUBLISHED_CHARTS = BENCH / "results", BENCH / "RESULTS.md", BENCH / "charts"
BAR_WIDTH = 40


def bars(rows: list[tuple[str, float]], unit: str) -> str:
    """A text bar chart: one row per label, bars scaled to the largest value."""
    largest = max(value for _, value in rows) or 1.0
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}} {'█' * max(1, round(BAR_WIDTH * value / largest)):<{BAR_WIDTH}} {value:,.1f} {unit}"
             for label, value in rows]
    return "```\n" + "\n".join(lines) + "\n```"


def handler_section(result: dict[str, Any]) -> str:
    cold, load, ratios = result["cold_start"], result["throughput"], result["ratios"]
    python, express = "python handler", "node express"
    verdict = {
        "cold start (python ≤ express)": ratios["cold_start_python_over_express"] <= 1.0,
        "throughput (python ≥ express)": ratios["throughput_python_over_express"] >= 1.0,
        "peak RSS under load ≤ 100 MB": load[python]["peak_rss_mb"] <= 100,
    }
    rows = "\n".join(
        f"| {label} | {cold[label]['median_ms'] if label in cold else '—'} | "
        f"{cold[label]['p90_ms'] if label in cold else '—'} | {stats['requests_per_second']:,.0f} | "
        f"{stats['latency_p50_ms']} | {stats['latency_p99_ms']} | {stats['peak_rss_mb']} | {stats['non_2xx']} |"
        for label, stats in load.items())
    return f"""## Task handler vs Node 20 + Express 4 (`bench/handler_bench.py`)

{result['machine']}; {result['settings']['cold_starts']} interleaved cold starts each (exec → first 200 on
`GET /`); wrk 1 thread, {result['settings']['connections']} connections, {result['settings']['seconds']} s on
`POST /process-order`, every request a new task name, each server logging one JSON line per task to a file.

| server | cold start median ms | p90 ms | requests/s | p50 ms | p99 ms | peak RSS MB | non-2xx |
|---|---|---|---|---|---|---|---|
{rows}

**Ratios:** cold start python/express = **{ratios['cold_start_python_over_express']}** (target ≤ 1);
throughput python/express = **{ratios['throughput_python_over_express']}** (target ≥ 1).
{chr(10).join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in verdict.items())}

Throughput, requests/s:
{bars([(label, stats['requests_per_second']) for label, stats in load.items()], 'req/s')}

Cold start, median ms (lower is better):
{bars([(python, cold[python]['median_ms']), (express, cold[express]['median_ms'])], 'ms')}
"""


def emulator_section(result: dict[str, Any]) -> str:
    drain, end_to_end, calls = (result["drain_tasks_per_second"], result["end_to_end_tasks_per_second"],
                                result["create_calls_per_second"])
    p50, p99, rate, ratios, settings = (result["create_p50_ms"], result["create_p99_ms"], result["rate_limit"],
                                        result["ratios"], result["settings"])
    stub_calls, stub_p50, stub_p99 = (result["create_stub_calls_per_second"], result["create_stub_p50_ms"],
                                      result["create_stub_p99_ms"])
    peer = "gcloud-tasks-emulator"
    charts = {
        "emulator-drain.png": ("Drain: tasks/s from resume to the last delivery", "tasks/s",
                               [("tasklane", drain["tasklane"]), (peer, drain["peer"])]),
        "emulator-end-to-end.png": ("End to end: created and delivered, tasks/s", "tasks/s",
                                    [("tasklane", end_to_end["tasklane"]), (peer, end_to_end["peer"])]),
        "emulator-create.png": ("Sequential CreateTask from the sync client, calls/s", "calls/s",
                                [("tasklane", calls["tasklane"]), (peer, calls["peer"]),
                                 ("gRPC server doing nothing", calls["floor"])]),
        "emulator-concurrency.png": (f"Drain at {settings['concurrency']} and {settings['default_concurrency']:,} "
                                     "dispatches in flight, tasks/s", "tasks/s",
                                     [(f"tasklane, {settings['concurrency']} in flight", drain["tasklane"]),
                                      (f"tasklane, {settings['default_concurrency']:,} in flight",
                                       drain["tasklane_1000"])]),
        "emulator-durable.png": ("In memory and with a state file, per second", "per second",
                                 [("tasklane drain, in memory", drain["tasklane"]),
                                  ("tasklane drain, state file", drain["tasklane_durable"]),
                                  ("tasklane CreateTask, in memory", calls["tasklane"]),
                                  ("tasklane CreateTask, state file", calls["tasklane_durable"])]),
    }
    for name, (title, unit, bars) in charts.items():
        spread_chart(CHARTS / name, title, unit, bars)

    def cell(value: dict[str, Any]) -> str:
        return f"{value['median']:,} ({value['min']:,}–{value['max']:,})"

    labels = {"tasklane": "tasklane", "peer": f"{peer} 0.6.2",
              "tasklane_1000": f"tasklane, {settings['default_concurrency']:,} in flight",
              "tasklane_durable": "tasklane, state file", "floor": "gRPC server doing nothing"}
    drain_rows = "\n".join(f"| {labels[kind]} | {cell(drain[kind])} | {cell(end_to_end[kind])} |" for kind in drain)
    create_rows = "\n".join(f"| {labels[kind]} | {cell(calls[kind])} | {p50[kind]['median']} | {p99[kind]['median']} "
                             f"| {cell(stub_calls[kind])} | {stub_p50[kind]['median']} | {stub_p99[kind]['median']} |"
                             for kind in calls)
    images = "\n".join(f"![{title}](charts/{name})" for name, (title, _, _) in charts.items())
    return f"""## Local Cloud Tasks vs gcloud-tasks-emulator (`bench/emulator_bench.py`)

{result['machine']}; {settings['tasks']:,} tasks to a trivial local HTTP target (its own process); every
measure {settings['rounds']} times, interleaved, shown as median (min–max); ratios on the medians.
Drain: tasks created into a paused queue, then resumed; from resume to the last delivery. End to end:
created (64 in flight from the async client) into a running queue and delivered. Our queues allow
{settings['concurrency']} dispatches in flight unless marked.

| emulator | drain tasks/s | end-to-end tasks/s |
|---|---|---|
{drain_rows}

{settings['latency_calls']:,} sequential CreateTask calls, from the sync Python client (google-cloud-tasks) and from a
bare gRPC stub sending a request serialized once (the client library's own time left out):

| server | client calls/s | p50 ms | p99 ms | stub calls/s | p50 ms | p99 ms |
|---|---|---|---|---|---|---|
{create_rows}

**Ratios:** drain tasklane/peer **{ratios['drain_tasklane_over_peer']}**; end to end
**{ratios['end_to_end_tasklane_over_peer']}**; sequential CreateTask **{ratios['create_tasklane_over_peer']}** (the
do-nothing gRPC server reaches {ratios['create_floor_over_peer']}× the peer with this client), from the bare
stub **{ratios['create_stub_tasklane_over_peer']}** (the do-nothing server {ratios['create_stub_floor_over_peer']}×);
drain at
{settings['default_concurrency']:,} over {settings['concurrency']} in flight **{ratios['drain_1000_over_100']}**
(end to end {ratios['end_to_end_1000_over_100']}); with a state file over in memory: drain
**{ratios['durable_drain_over_memory']}**, CreateTask **{ratios['durable_create_over_memory']}**.
Rate limit: a queue at {rate['configured_per_second']}/s measured **{rate['measured_per_second']}/s** over
{rate['window_seconds']:g} s ({rate['error_percent']} % off); a queue limited to {rate['concurrency_limit']}
concurrent dispatches peaked at **{rate['peak_in_flight_at_target']}** in flight at the target.

{chr(10).join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in result['goals'].items())}

{images}
"""


def pipeline_section(result: dict[str, Any]) -> str:
    rate, settings, goal = result["tasks_per_second"], result["settings"], result["goal"]
    spread_chart(CHARTS / "pipeline.png", "The whole local pipeline, tasks/s", "tasks/s",
                 [("tasklane pipeline", rate), ("goal", {"min": goal["tasks_per_second_at_least"],
                                                         "median": goal["tasks_per_second_at_least"],
                                                         "max": goal["tasks_per_second_at_least"]})])
    return f"""## The whole local pipeline: producer, emulator, handler (`bench/pipeline_bench.py`)

{result['machine']}; {settings['tasks']:,} tasks per run, {settings['rounds']} runs. The producer's `enqueue_many`
({settings['enqueue_many_in_flight']} calls in flight) into the emulator's running queue
({settings['concurrency']:,} dispatches in flight), each dispatched with a real OIDC token to the real handler,
which checks it in full (signature against the emulator's keys, then the claims), runs the action and logs
it; timed from the first CreateTask until the queue is empty, every task answered 2xx.

**{rate['median']:,} tasks/s** median ({rate['min']:,}–{rate['max']:,}); enqueue_many alone took
{result['enqueue_seconds']['median']} s of {result['seconds']['median']} s.
- at least {goal['tasks_per_second_at_least']:,.0f} tasks/s: {'met' if goal['met'] else 'NOT met'}

![The whole local pipeline, tasks/s](charts/pipeline.png)
"""


def emulator_rest_section(result: dict[str, Any]) -> str:
    latency, rates, raw, ratios = (result["create_task_latency"], result["create_task_throughput_per_second"],
                                   result["create_task_latency_raw_http"], result["ratios"])
    return f"""## CreateTask over REST beside gRPC (`bench/emulator_rest_bench.py`)

{result['machine']}; one emulator in its own process, queue paused; the official Python client, sync,
{result['settings']['latency_calls']:,} sequential calls per transport in alternating blocks, then
{result['settings']['throughput_tasks']:,} calls from {result['settings']['threads']} threads.

| transport | CreateTask p50 ms | p99 ms | sequential calls/s | tasks/s from {result['settings']['threads']} threads |
|---|---|---|---|---|
| gRPC | {latency['grpc']['p50_ms']} | {latency['grpc']['p99_ms']} | {latency['grpc']['calls_per_second']:,} | \
{rates['grpc']:,} |
| REST (client's REST transport) | {latency['rest']['p50_ms']} | {latency['rest']['p99_ms']} | \
{latency['rest']['calls_per_second']:,} | {rates['rest']:,} |
| REST (raw JSON over one kept-alive connection) | {raw['p50_ms']} | {raw['p99_ms']} | | |

**Ratios** REST/gRPC: p50 **{ratios['rest_over_grpc_p50']}×**, p99 {ratios['rest_over_grpc_p99']}×, throughput
**{ratios['rest_over_grpc_throughput']}×**. The raw-JSON row is the emulator's own REST cost; the rest of the
REST client's time is spent in the client library (requests, transcoding, JSON).
"""


def producer_section(result: dict[str, Any]) -> str:
    rows = []
    for key, title in (("with_20ms_latency", "20 ms injected per RPC"), ("without_latency", "no injected latency")):
        case = result[key]
        rows.append(f"| {title} | {case['sequential_tasks_per_second']:,} ({case['sequential_tasks']:,} tasks) | "
                    f"{case['enqueue_many_tasks_per_second']:,} ({case['enqueue_many_tasks']:,} tasks) | "
                    f"**{case['ratio']}** | {case['failed']} |")
    latency, plain = result["with_20ms_latency"], result["without_latency"]
    return f"""## Producer: enqueue_many vs a sequential create_task loop (`bench/producer_bench.py`)

{result['machine']}; the local emulator in its own process, queue paused; enqueue_many with
{result['settings']['concurrency']} calls in flight; the same google-cloud-tasks client library for both.

| case | sequential tasks/s | enqueue_many tasks/s | ratio | failed |
|---|---|---|---|---|
{chr(10).join(rows)}

- with 20 ms latency, ratio ≥ 20: {'met' if latency['ratio'] >= 20 else 'NOT met'}
- without latency, ratio ≥ 1.5: {'met' if plain['ratio'] >= 1.5 else 'NOT met'}

With 20 ms of latency, tasks/s:
{bars([('sequential', latency['sequential_tasks_per_second']),
       ('enqueue_many', latency['enqueue_many_tasks_per_second'])], 'tasks/s')}
"""


def emulator_hardening_section(result: dict[str, Any]) -> str:
    memory, cost = result["memory"], result["validation_cost"]
    rows = "\n".join(f"| {s['label']} | {s['seconds']} | {s['rss_mib']} | {s['state_file_mib']} |"
                     for s in memory["samples"])
    verdict = {
        "RSS after expiry within 10 MiB of the idle start": memory["rss_growth_mib_from_start"] <= 10,
        "state file back to its start size": memory["state_file_growth_mib"] <= 0,
    }
    cost_text = "Not measured in this run (pass `--baseline REF`)."
    if cost:
        before, after = cost["before"], cost["after"]
        cost_text = f"""Against the emulator at `{cost['baseline']}` (before the validation), alternated, median of
{cost['rounds']} rounds each: {cost['tasks']:,}-task drain and {cost['calls']:,} sequential CreateTask calls.

| emulator | drain tasks/s | CreateTask p50 ms |
|---|---|---|
| before | {before['drain_tasks_per_second']:,} | {before['create_task_p50_ms']} |
| after | {after['drain_tasks_per_second']:,} | {after['create_task_p50_ms']} |

**Ratios after/before:** drain **{cost['drain_after_over_before']}**, CreateTask p50
**{cost['create_p50_after_over_before']}**."""
    return f"""## Emulator memory and state file over {memory['tasks']:,} tasks; the cost of validation \
(`bench/emulator_hardening_bench.py`)

{result['machine']}; the emulator in its own process with a state file and {memory['tombstone_seconds']:g} s
task tombstones; tasks created (64 in flight) and delivered to a local target in batches. The state file
counts its write-ahead log.

| when | s | RSS MiB | state file MiB |
|---|---|---|---|
{rows}

RSS after expiry minus idle start: **{memory['rss_growth_mib_from_start']} MiB** (minus after warm-up:
{memory['rss_growth_mib_from_warm']} MiB); state file: **{memory['state_file_growth_mib']} MiB** from the start.
{chr(10).join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in verdict.items())}

{cost_text}
"""


def console_section(result: dict[str, Any]) -> str:
    rows = "\n".join(f"| {label} | {view['p50_ms']} | {view['p95_ms']} | {view['max_ms']} |"
                     for label, view in result["views"].items())
    verdict = "within" if result["within_limit"] else "OVER"
    return (f"## Console views at size (issue 15)\n\n{result['tasks']:,} tasks in one queue, "
            f"{result['attempt_records']:,} attempt records, {result['dead_letters']} dead letters; "
            f"{result['requests_per_view']} requests per view over one connection. Worst p95 "
            f"{result['worst_p95_ms']} ms, {verdict} the {result['limit_p95_ms']:g} ms limit.\n\n"
            f"| view | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- |\n{rows}\n")


SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {"console": console_section, "handler": handler_section,
                                                        "emulator": emulator_section,
                                                        "producer": producer_section,
                                                        "emulator_hardening": emulator_hardening_section,
                                                        "emulator_rest": emulator_rest_section,
                                                        "pipeline": pipeline_section}


def publish() -> None:
    """Copy the last run's results, report and charts over the committed ones."""
    if not REPORT.exists():
        raise SystemExit("nothing to publish: run `make bench` first")
    PUBLISHED_RESULTS.mkdir(exist_ok=True)
    for path in RESULTS_DIR.glob("*.json"):
        shutil.copy2(path, PUBLISHED_RESULTS / path.name)
    PUBLISHED_CHARTS.mkdir(exist_ok=True)
    for path in CHARTS.glob("*.png"):
        shutil.copy2(path, PUBLISHED_CHARTS / path.name)
    shutil.copy2(REPORT, PUBLISHED_REPORT)
    print(f"published {REPORT.relative_to(BENCH.parent)} and its results and charts into bench/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--publish", action="store_true", help="copy the last run into the committed files")
    if parser.parse_args().publish:
        publish()
        return
    sections = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        result = json.loads(path.read_text())
        render = SECTIONS.get(result.get("benchmark", ""))
        if render:
            sections.append(render(result))
    REPORT.write_text("# Benchmark results\n\nWritten by `make bench` (bench/report.py) from bench/out/results/*.json "
                      "and published with `make bench-publish`; each section compares Tasklane with the peer named "
                      "in its issue, in one run on one machine.\n\n" + "\n".join(sections))
    print(f"wrote {REPORT.relative_to(BENCH.parent)}")


if __name__ == "__main__":
    main()
