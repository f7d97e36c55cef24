"""Issue 12, proven locally: two handler processes behind the local Cloud Tasks, sharing one Firestore emulator.

- Exactly once across instances: 2,000 keyed tasks, 500 of them sent again concurrently to the other
  instance and 500 re-created after they were done; every action runs exactly once.
- A letter seen from anywhere: one instance dead-letters a task, and the CLI lists, shows and replays it;
  the replay is processed by the other instance.

The handlers run as `python -m handler` with TASKLANE_FIRESTORE_DATABASE set, as on Cloud Run. Their token
check is off here (tokens are tested elsewhere); what is under test is the shared state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local.google_emulators import GoogleEmulator
from tasklane.emulator.server import EmulatorConfig, EmulatorServer
from tasklane.emulator.testing import start_emulator
from tasklane.producer import ProducerConfig, TaskProducer
from tasklane.producer.__main__ import main as producer_main
from tasklane.producer.producer import TaskSpec
from tests.e2e.conftest import emulator_client
from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
DATABASE = "tasklane-e2e"
INVOKER = "tasklane-e2e-invoker@tasklane-e2e.iam.gserviceaccount.com"
# The 2,000 under `make bench` (bench/firestore_bench.py); fewer under `make test`, which must stay quick
# on two cores (Google's Firestore emulator handles about 150 transactions a second there).
TASKS = int(os.environ.get("TASKLANE_EXACTLY_ONCE_TASKS", "400"))
CONCURRENT_COPIES = RECREATED_COPIES = TASKS // 4


@dataclass
class Instance:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


@dataclass
class Cluster:
    project: str
    queue: str
    emulator: EmulatorServer
    one: Instance
    two: Instance
    firestore: GoogleEmulator

    def producer(self, instance: Instance) -> TaskProducer:
        return TaskProducer(ProducerConfig(queue_path=self.queue, service_url=instance.url,
                                           invoker_service_account=INVOKER, task_audience=instance.url,
                                           emulator_host=self.emulator.grpc_target, firestore_database=DATABASE))

    def queue_empty(self) -> bool:
        return not self.emulator.call(lambda: bool(self.emulator.engine.queues[self.queue].tasks))  # type: ignore


def start_instance(tmp: Path, name: str, queue: str, demo_actions: bool, firestore: GoogleEmulator) -> Instance:
    port = free_port()
    log = tmp / f"{name}.log"
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "TASKLANE_QUEUE_PATH": queue,
           "TASKLANE_MAX_ATTEMPTS": "5", "TASKLANE_TOKEN_CHECK": "off", "TASKLANE_TASK_DISPATCH_DEADLINE": "60s",
           "TASKLANE_DEMO_ACTIONS": str(demo_actions).lower(), "TASKLANE_FIRESTORE_DATABASE": DATABASE,
           **firestore.environment()}
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "handler"], cwd=REPO, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
    instance = Instance(f"http://127.0.0.1:{port}", process, log)
    wait_for(lambda: b"Application startup complete" in log.read_bytes() or process.poll() is not None,
             timeout=30, message=f"handler {name} to start")
    assert process.poll() is None, log.read_text()
    return instance


@pytest.fixture(scope="module")
def cluster(firestore_emulator: GoogleEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("instances")
    project = f"tasklane-e2e-{uuid.uuid4().hex[:8]}"
    parent = f"projects/{project}/locations/us-central1"
    queue = f"{parent}/queues/orders"
    emulator = start_emulator(EmulatorConfig(grpc_port=0, http_port=0))
    instances: list[Instance] = []
    try:
        emulator_client(emulator).create_queue(parent=parent, queue={
            "name": queue, "rate_limits": {"max_dispatches_per_second": 500, "max_concurrent_dispatches": 200},
            "retry_config": {"max_attempts": 5, "min_backoff": "0.2s", "max_backoff": "1s"}})
        # One instance without the demo actions (an older release, say) and one with them.
        instances.append(start_instance(tmp, "one", queue, False, firestore_emulator))
        instances.append(start_instance(tmp, "two", queue, True, firestore_emulator))
        yield Cluster(project, queue, emulator, instances[0], instances[1], firestore_emulator)
    finally:
        for instance in instances:
            instance.process.terminate()
            instance.process.wait(timeout=15)
        emulator.stop_thread()


def test_each_action_runs_exactly_once_across_two_instances(cluster: Cluster) -> None:
    run_id = uuid.uuid4().hex[:6]

    def spec(i: int) -> TaskSpec:
        return TaskSpec("update_inventory", {"orderId": f"{run_id}-{i}"}, idempotency_key=f"{run_id}-key-{i}")

    one, two = cluster.producer(cluster.one), cluster.producer(cluster.two)
    started = time.monotonic()
    # Wave 1: every task, each to one instance, and a copy of every fourth to the other at the same moment.
    first = [i for i in range(TASKS) if i % 2 == 0]
    second = [i for i in range(TASKS) if i % 2 == 1]
    concurrent = list(range(0, TASKS, 4))[:CONCURRENT_COPIES]
    results = one.enqueue_many([spec(i) for i in first] + [spec(i) for i in concurrent if i % 2 == 1])
    results += two.enqueue_many([spec(i) for i in second] + [spec(i) for i in concurrent if i % 2 == 0])
    assert all(r.status == "created" for r in results)
    wait_for(cluster.queue_empty, timeout=180, message="the first wave to drain")
    # Wave 2: 500 more, re-created after their first run was done, each to the instance that did not run it.
    recreated = list(range(1, TASKS, 4))[:RECREATED_COPIES]
    results = one.enqueue_many([spec(i) for i in recreated if i % 2 == 1])
    results += two.enqueue_many([spec(i) for i in recreated if i % 2 == 0])
    assert all(r.status == "created" for r in results)
    wait_for(cluster.queue_empty, timeout=120, message="the re-created tasks to drain")
    elapsed = time.monotonic() - started

    entries = {"one": cluster.one.entries(), "two": cluster.two.entries()}
    runs = Counter(e["order_id"] for log in entries.values() for e in log if e.get("event") == "inventory_updated"
                   and e["order_id"].startswith(run_id))
    duplicates = sum(1 for log in entries.values() for e in log if "duplicate delivery of" in e.get("message", "")
                     and run_id in e["message"])
    assert len(runs) == TASKS and set(runs.values()) == {1}, [k for k, n in runs.items() if n != 1][:10]
    assert duplicates == CONCURRENT_COPIES + RECREATED_COPIES
    per_instance = {name: sum(1 for e in log if e.get("event") == "inventory_updated") for name, log in entries.items()}
    assert all(count > TASKS / 4 for count in per_instance.values()), per_instance
    report = os.environ.get("TASKLANE_EXACTLY_ONCE_REPORT")
    if report:
        Path(report).write_text(json.dumps({"tasks": TASKS, "duplicates": CONCURRENT_COPIES + RECREATED_COPIES,
                                            "instances": 2, "seconds": elapsed, "actions_per_instance": per_instance,
                                            "every_action_once": True}))
    print(f"\n{TASKS} tasks + {CONCURRENT_COPIES + RECREATED_COPIES} duplicates over 2 instances in {elapsed:.1f} s; "
          f"actions per instance {per_instance}")


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(cluster: Cluster, outputs: Path, *args: str, capsys: pytest.CaptureFixture[str] | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> Ran:
    """`python -m tasklane.producer --outputs FILE dead-letters ARGS`: in this process when given capsys (quick), else
    as a child process."""
    command = ["--outputs", str(outputs), "dead-letters", *args]
    env = {"CLOUD_TASKS_EMULATOR_HOST": cluster.emulator.grpc_target, **cluster.firestore.environment()}
    if capsys is not None and monkeypatch is not None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            status = producer_main(command)
        except SystemExit as exit_:  # argparse's refusals
            status = int(exit_.code or 0)
        captured = capsys.readouterr()
        return Ran(status, captured.out, captured.err)
    done = subprocess.run([sys.executable, "-m", "tasklane.producer", *command], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    return Ran(done.returncode, done.stdout, done.stderr)


def test_a_letter_from_one_instance_is_listed_shown_and_replayed_through_the_cli(
        cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def quick(*args: str) -> Ran:
        return cli(cluster, outputs, *args, capsys=capsys, monkeypatch=monkeypatch)

    order = f"o-{uuid.uuid4().hex[:6]}"
    body = {"orderId": order, "action": "reserve_stock", "idempotencyKey": f"{order}-key"}
    # Instance one has no reserve_stock: it rejects the task and dead-letters it.
    created = cluster.producer(cluster.one).enqueue_body(json.dumps(body).encode())
    wait_for(lambda: any(created.task_name.endswith(e.get("tasklane_dead_letter", {}).get("task_name") or "-")
                         for e in cluster.one.entries()), timeout=30, message="the letter")
    # The CLI, pointed at the stack whose service is instance two.
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"queue_path": cluster.queue, "service_url": cluster.two.url,
                                   "invoker_service_account": INVOKER, "task_audience": cluster.two.url,
                                   "firestore_database": DATABASE}))

    listed = quick("list", "--kind", "rejected", "--reason", "unknown action", "--newer-than", "10m",
                 "--json")
    assert listed.returncode == 0, listed.stderr
    [letter] = [item for item in map(json.loads, listed.stdout.splitlines())
                if created.task_name.rsplit("/", 1)[1] == item["taskName"]]
    assert letter["kind"] == "rejected" and "reserve_stock" in letter["reason"]
    assert "authorization" not in {name.lower() for name in letter["headers"]}
    assert quick("list", "--older-than", "10m").stdout.count(letter["id"]) == 0

    shown = quick("show", letter["id"])
    assert shown.returncode == 0 and f'"orderId": "{order}"' in shown.stdout, shown.stderr
    exact = cli(cluster, outputs, "show", letter["id"], "--body-only")
    assert json.loads(exact.stdout) == body

    replayed = cli(cluster, outputs, "replay", letter["id"])
    assert replayed.returncode == 0, replayed.stderr
    assert f"idempotencyKey {order}-key~replay-" in replayed.stdout
    # Instance two has the action: the replay runs there (after the demo action's one transient failure).
    wait_for(lambda: any(e.get("event") == "stock_reserved" and e.get("order_id") == order
                         for e in cluster.two.entries()), timeout=30, message="the replay to be processed")
    after = json.loads(quick("show", letter["id"]).stdout.split("\n--- body")[0])
    [replay] = after["replays"]
    assert replay["taskName"].startswith(cluster.queue + "/tasks/") and replay["idempotencyKey"].startswith(order)

    assert quick("delete", letter["id"]).returncode == 0
    missing = quick("show", letter["id"])
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no dead letter" in missing.stderr
    bad = quick("list", "--newer-than", "soon")
    assert bad.returncode == 2 and "not an age" in bad.stderr
