"""The producer against the local emulator: what a created task looks like, dedup, refusals before any
API call, explained permission errors, and enqueue_many's per-item results and transient-only retries."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions

from emulator.testing import RunningEmulator
from producer import ProducerConfig, TaskProducer, TaskSpec
from producer.config import ConfigError
from producer.producer import InvalidTask, ProducerError, dedup_task_id

REPO = Path(__file__).resolve().parents[2]
QUEUE = "projects/tasklane-test/locations/us-central1/queues/orders"
OUTPUTS = {"queue_path": QUEUE, "service_url": "https://tasklane-dev-x7k2q9p3ma-uc.a.run.app",
           "invoker_service_account": "tasklane-dev-invoker@tasklane-test.iam.gserviceaccount.com",
           "task_audience": "https://tasklane-dev-123456789012.us-central1.run.app",
           "task_dispatch_deadline": "300s", "image_ref": "unused", "region": "us-central1"}


@pytest.fixture
def config(cloud_tasks_emulator: RunningEmulator) -> ProducerConfig:
    client = cloud_tasks_emulator.client()
    client.create_queue(parent=QUEUE.rsplit("/queues/", 1)[0], queue={"name": QUEUE})
    client.pause_queue(name=QUEUE)  # keep created tasks in place to look at them
    return ProducerConfig.from_stack_outputs(OUTPUTS, {"CLOUD_TASKS_EMULATOR_HOST": cloud_tasks_emulator.host})


@pytest.fixture
def producer(config: ProducerConfig) -> TaskProducer:
    return TaskProducer(config)


def stored(producer: TaskProducer) -> list[Any]:
    return producer.list_tasks(1000)


def test_a_task_is_an_authenticated_json_post_to_the_handler(producer: TaskProducer) -> None:
    result = producer.enqueue("update_inventory", {"orderId": "o-1"})
    assert not result.already_enqueued
    task = producer.get_task(result.task_name)
    request = task.http_request
    assert request.url == "https://tasklane-dev-x7k2q9p3ma-uc.a.run.app/process-order"
    assert request.http_method.name == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"orderId": "o-1", "action": "update_inventory"}
    assert request.oidc_token.service_account_email == OUTPUTS["invoker_service_account"]
    assert request.oidc_token.audience == OUTPUTS["task_audience"]
    assert task.dispatch_deadline.total_seconds() == 300


def test_a_dedup_key_becomes_a_hashed_task_id_and_a_repeat_is_already_enqueued(producer: TaskProducer) -> None:
    first = producer.enqueue("notify_warehouse", {"orderId": "o-2"}, dedup_key="order-o-2-warehouse")
    again = producer.enqueue("notify_warehouse", {"orderId": "o-2"}, dedup_key="order-o-2-warehouse")
    assert first.task_name.endswith("/tasks/" + dedup_task_id("order-o-2-warehouse"))
    assert (first.already_enqueued, again.already_enqueued) == (False, True)
    assert again.task_name == first.task_name
    assert len(stored(producer)) == 1


def test_delay_and_at_set_the_schedule_time(producer: TaskProducer) -> None:
    now = datetime.datetime.now(datetime.UTC)
    later = producer.get_task(producer.enqueue("update_inventory", {"orderId": "o"}, delay=3600).task_name)
    assert later.schedule_time.timestamp() == pytest.approx(now.timestamp() + 3600, abs=5)
    at = now + datetime.timedelta(days=2)
    fixed = producer.get_task(producer.enqueue("update_inventory", {"orderId": "o"}, at=at).task_name)
    assert fixed.schedule_time.timestamp() == pytest.approx(at.timestamp(), abs=1)


BAD_INPUT: dict[str, tuple[dict[str, Any], str]] = {
    "unknown action": ({"action": "refund"}, "unknown action 'refund'; known actions: notify_warehouse"),
    "payload over 1 MiB": ({"payload": {"orderId": "x" * 1_100_000}}, "a task holds at most"),
    "negative delay": ({"delay": -5}, "delay -5s is negative"),
    "beyond 30 days": ({"delay": 31 * 86400}, "more than 30 days ahead"),
    "naive datetime": ({"at": datetime.datetime(2030, 1, 1)}, "timezone-aware"),
    "delay and at": ({"delay": 5, "at": datetime.datetime.now(datetime.UTC)}, "delay or at, not both"),
    "bad task id": ({"task_id": "has spaces"}, "may contain only letters, digits"),
    "task id and dedup key": ({"task_id": "a", "dedup_key": "b"}, "task_id or dedup_key, not both"),
    "deadline too short": ({"deadline": 5}, "between 15s and 30 minutes"),
    "not JSON-serialisable": ({"payload": {"when": datetime.date(2030, 1, 1)}}, "not JSON-serialisable"),
}


@pytest.mark.parametrize("overrides, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_refused_before_any_api_call(producer: TaskProducer, overrides: dict[str, Any],
                                                  message: str) -> None:
    arguments: dict[str, Any] = {"action": "update_inventory", "payload": {"orderId": "o"}, **overrides}
    with pytest.raises(InvalidTask, match=message.replace("(", r"\(")):
        producer.enqueue(arguments.pop("action"), arguments.pop("payload"), **arguments)
    assert stored(producer) == []


class RefusingClient:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def create_task(self, **kwargs: Any) -> Any:
        raise self.error


@pytest.mark.parametrize("message, role", [
    ("Permission 'iam.serviceAccounts.actAs' denied on service account", "roles/iam.serviceAccountUser"),
    ("The principal lacks IAM permission \"cloudtasks.tasks.create\"", "roles/cloudtasks.enqueuer"),
])
def test_permission_denied_is_explained_with_the_role_to_grant(message: str, role: str) -> None:
    config = ProducerConfig.from_stack_outputs(OUTPUTS, {})
    producer = TaskProducer(config, client=RefusingClient(api_exceptions.PermissionDenied(message)))  # type: ignore
    with pytest.raises(ProducerError) as refusal:
        producer.enqueue("update_inventory", {"orderId": "o"})
    assert role in str(refusal.value) and "tasklane:producerMembers" in str(refusal.value)


def test_enqueue_many_gives_one_result_per_item_and_reports_progress(producer: TaskProducer) -> None:
    specs = [TaskSpec("update_inventory", {"orderId": f"o-{n}"}) for n in range(200)]
    specs += [TaskSpec("notify_warehouse", {"orderId": "dup"}, dedup_key="same")] * 2
    specs += [TaskSpec("refund", {"orderId": "bad"})]
    seen: list[tuple[int, int]] = []
    results = producer.enqueue_many(specs, concurrency=16, progress=lambda done, total: seen.append((done, total)))
    assert [r.index for r in results] == list(range(len(specs)))
    statuses = [r.status for r in results]
    assert statuses[:200] == ["created"] * 200
    assert sorted(statuses[200:202]) == ["created", "duplicate"]
    assert results[202].status == "failed" and "unknown action 'refund'" in (results[202].reason or "")
    assert seen[-1] == (len(specs), len(specs)) and len(seen) == len(specs)
    assert len(stored(producer)) == 201


def test_enqueue_many_retries_transient_errors_without_creating_twice(cloud_tasks_emulator: RunningEmulator,
                                                                      producer: TaskProducer) -> None:
    import urllib.request

    def faults(body: dict[str, Any]) -> None:
        request = urllib.request.Request(f"{cloud_tasks_emulator.http_url}/v1/faults", method="PUT",
                                         data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - loopback emulator

    faults({"errorRate": 0.3, "errorCode": "UNAVAILABLE"})
    results = producer.enqueue_many([TaskSpec("update_inventory", {"orderId": f"r-{n}"}) for n in range(100)],
                                    attempts=10)
    assert {r.status for r in results} == {"created"}
    assert len(stored(producer)) == 100, "retries of randomly named tasks never create a second task"

    faults({"errorRate": 1.0, "errorCode": "INVALID_ARGUMENT"})
    [refused] = producer.enqueue_many([TaskSpec("update_inventory", {"orderId": "x"})], attempts=10)
    faults({"errorRate": 0.0})
    assert refused.status == "failed" and refused.reason is not None and refused.reason.startswith("InvalidArgument")


def test_config_comes_from_outputs_files_and_the_environment(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(OUTPUTS))
    assert ProducerConfig.from_outputs_file(outputs).task_url.endswith("/process-order")
    env = {"TASKLANE_QUEUE_PATH": QUEUE, "TASKLANE_SERVICE_URL": OUTPUTS["service_url"],
           "TASKLANE_INVOKER_SERVICE_ACCOUNT": OUTPUTS["invoker_service_account"],
           "TASKLANE_TASK_AUDIENCE": OUTPUTS["task_audience"], "CLOUD_TASKS_EMULATOR_HOST": "127.0.0.1:8123"}
    from_env = ProducerConfig.from_environment(env)
    assert (from_env.emulator_host, from_env.dispatch_deadline_seconds) == ("127.0.0.1:8123", 600)
    with pytest.raises(ConfigError, match="set TASKLANE_SERVICE_URL"):
        ProducerConfig.from_environment({k: v for k, v in env.items() if k != "TASKLANE_SERVICE_URL"})
    with pytest.raises(ConfigError, match="queue_path 'nope'"):
        ProducerConfig.from_stack_outputs({**OUTPUTS, "queue_path": "nope"}, {})
    with pytest.raises(ConfigError, match="lack invoker_service_account"):
        ProducerConfig.from_stack_outputs({k: v for k, v in OUTPUTS.items() if k != "invoker_service_account"}, {})


@pytest.fixture
def cli_env(config: ProducerConfig) -> Iterator[dict[str, str]]:
    yield {**os.environ, "CLOUD_TASKS_EMULATOR_HOST": config.emulator_host or "",
           "TASKLANE_QUEUE_PATH": QUEUE, "TASKLANE_SERVICE_URL": OUTPUTS["service_url"],
           "TASKLANE_INVOKER_SERVICE_ACCOUNT": OUTPUTS["invoker_service_account"],
           "TASKLANE_TASK_AUDIENCE": OUTPUTS["task_audience"]}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_cli_enqueues_lists_shows_and_refuses_bad_input(cli_env: dict[str, str], tmp_path: Path) -> None:
    one = cli(cli_env, "enqueue", "update_inventory", "--payload", '{"orderId": "cli-1"}', "--dedup-key", "k1")
    assert one.returncode == 0 and one.stdout.startswith("enqueued: "), one.stderr
    again = cli(cli_env, "enqueue", "update_inventory", "--payload", '{"orderId": "cli-1"}', "--dedup-key", "k1")
    assert again.stdout.startswith("already enqueued: ")
    lines = tmp_path / "orders.jsonl"
    lines.write_text("\n".join(json.dumps({"action": "notify_warehouse", "payload": {"orderId": f"f-{n}"}})
                               for n in range(20)) + "\n" + json.dumps({"action": "refund"}) + "\n")
    many = cli(cli_env, "enqueue-file", str(lines))
    assert many.returncode == 1
    assert "created 20, already enqueued 0, failed 1" in many.stdout
    assert "line 21: failed: unknown action 'refund'" in many.stderr
    listed = cli(cli_env, "list")
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 21
    shown = cli(cli_env, "show", dedup_task_id("k1"))
    assert json.loads(shown.stdout)["httpRequest"]["oidcToken"]["audience"] == OUTPUTS["task_audience"]
    bad = cli(cli_env, "enqueue", "refund")
    assert bad.returncode == 2 and "unknown action 'refund'" in bad.stderr
    missing = cli({k: v for k, v in cli_env.items() if k != "TASKLANE_SERVICE_URL"}, "list")
    assert missing.returncode == 2 and "TASKLANE_SERVICE_URL" in missing.stderr
