"""The producer against the local emulator: what a created task looks like, dedup, refusals before any
API call, explained permission errors, and enqueue_many's per-item results and transient-only retries."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.order_actions import service_actions
from tasklane.emulator.testing import RunningEmulator
from tasklane.producer import ProducerConfig, TaskProducer, TaskSpec
from tasklane.producer.config import ConfigError
from tasklane.producer.producer import MAX_BODY_BYTES, InvalidTask, ProducerError, dedup_task_id
from tests.helpers import free_port, wait_for

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


def stored_order_ids(producer: TaskProducer) -> list[str]:
    """The orderId of every stored task, sorted (list_tasks leaves bodies out: BASIC view)."""
    return sorted(json.loads(producer.get_task(task.name).http_request.body)["orderId"] for task in stored(producer))


def test_a_task_is_an_authenticated_json_post_to_the_handler(producer: TaskProducer) -> None:
    result = producer.enqueue("update_inventory", {"orderId": "o-1"})
    assert not result.already_enqueued
    task = producer.get_task(result.task_name)
    request = task.http_request
    assert request.url == "https://tasklane-dev-x7k2q9p3ma-uc.a.run.app/tasks/update_inventory"
    assert request.http_method.name == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"orderId": "o-1"}, "the action's route names it: the body is the payload"
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


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD_INPUT: dict[str, tuple[dict[str, Any], str]] = {
    "unknown action": ({"action": "refund"}, f"unknown action 'refund'; known actions: "
                                             f"{', '.join(service_actions().names)}"),
    "unknown payload field": ({"payload": {"orderId": "o", "quantity": 2}},
                              "update_inventory: invalid OrderRequest: unknown field `quantity`; OrderRequest takes "
                              "orderId (required), customerEmail"),
    "missing payload field": ({"payload": {"customerEmail": "ada@example.com"}},
                              "missing required field `orderId`"),
    "payload field of the wrong type": ({"payload": {"orderId": 42}}, "Expected `str`, got `int` - at `$.orderId`"),
    "payload of another type": ({"payload": datetime.date(2030, 1, 1)},
                                "payload must be a mapping or an instance of OrderRequest, got date"),
    "idempotency key too long": ({"idempotency_key": "k" * 501}, "idempotency_key must be a string of 1-500"),
    # The key travels in a header: HTTP drops its outer spaces, and only printable ASCII arrives as sent.
    "idempotency key of spaces": ({"idempotency_key": "   "}, "must be printable ASCII"),
    "idempotency key padded": ({"idempotency_key": " padded "}, "not starting or ending with a space"),
    "idempotency key not ASCII": ({"idempotency_key": "é" * 300}, "must be printable ASCII"),
    "idempotency key with a control character": ({"idempotency_key": "k\x01"}, "must be printable ASCII"),
    "idempotency key with a newline": ({"idempotency_key": "k\r\nX-Evil: 1"}, "must be printable ASCII"),
    "payload over 1 MiB": ({"payload": {"orderId": "x" * 1_100_000}}, "a task holds at most"),
    "negative delay": ({"delay": -5}, "delay -5s is negative"),
    "beyond 30 days": ({"delay": 31 * 86400}, "more than 30 days ahead"),
    "naive datetime": ({"at": datetime.datetime(2030, 1, 1)}, "timezone-aware"),
    "delay and at": ({"delay": 5, "at": datetime.datetime.now(datetime.UTC)}, "delay or at, not both"),
    "bad task id": ({"task_id": "has spaces"}, "may contain only letters, digits"),
    "task id and dedup key": ({"task_id": "a", "dedup_key": "b"}, "task_id or dedup_key, not both"),
    "deadline too short": ({"deadline": 5}, "between 15s and 30 minutes"),
    "not JSON-serialisable": ({"payload": {"when": datetime.date(2030, 1, 1)}}, "not JSON-serialisable"),
    # JSON has no NaN or Infinity: a body holding them is refused as poison by the handler.
    "NaN in the payload": ({"payload": {"orderId": "o", "qty": float("nan")}}, "NaN or Infinity"),
    "Infinity deep in the payload": ({"payload": {"orderId": "o", "lines": [{"qty": float("inf")}]}},
                                     "NaN or Infinity"),
    "-Infinity as a key": ({"payload": {"orderId": "o", "m": {float("-inf"): 1}}}, "NaN or Infinity"),
    "lone surrogate in the payload": ({"payload": {"orderId": "\ud800"}}, "not valid Unicode"),
    "payload nested past recursion": ({"payload": {"orderId": "o", "x": _nested(5000)}}, "not JSON-serialisable"),
    "payload not a mapping": ({"payload": ["orderId", "o"]}, "payload must be a mapping"),
    # A task ID is matched in full: `$` would let a final newline through.
    "task id with a trailing newline": ({"task_id": "order-1\n"}, "may contain only letters"),
    "task id with a trailing CRLF": ({"task_id": "order-1\r\n"}, "may contain only letters"),
    "task id with a leading newline": ({"task_id": "\norder-1"}, "may contain only letters"),
    "task id with a NUL": ({"task_id": "order\x001"}, "may contain only letters"),
    "task id of non-ASCII digits": ({"task_id": "\u0661\u0662"}, "may contain only letters"),
    "task id of 501 characters": ({"task_id": "a" * 501}, "1-500 characters"),
    "empty task id": ({"task_id": ""}, "1-500 characters"),
    "task id not a string": ({"task_id": 42}, "task_id must be a string, got int"),
    "dedup key not a string": ({"dedup_key": b"k"}, "dedup_key must be a string, got bytes"),
    "dedup key not valid Unicode": ({"dedup_key": "\udc80"}, "not valid Unicode"),
    # Delays: never a raw ValueError or OverflowError.
    "NaN delay": ({"delay": float("nan")}, "delay must be a finite number of seconds, got nan"),
    "infinite delay": ({"delay": float("inf")}, "delay must be a finite number of seconds, got inf"),
    "negative infinite delay": ({"delay": float("-inf")}, "delay must be a finite number"),
    "huge delay": ({"delay": 1e300}, "more than 30 days ahead"),
    "huge negative delay": ({"delay": -1e300}, "is negative"),
    "integer delay too large for a float": ({"delay": 10**400}, "delay must be a finite number"),
    "negative integer delay too large for a float": ({"delay": -(10**400)}, "delay must be a finite number"),
    "timedelta.max delay": ({"delay": datetime.timedelta.max}, "more than 30 days ahead"),
    "timedelta.min delay": ({"delay": datetime.timedelta.min}, "is negative"),
    "delay as text": ({"delay": "60"}, "delay must be a number of seconds or a datetime.timedelta, got str '60'"),
    "delay as a boolean": ({"delay": True}, "got bool True"),
    "delay as a list": ({"delay": [5]}, "got list [5]"),
    "NaN deadline": ({"deadline": float("nan")}, "deadline must be a finite number"),
    "deadline as text": ({"deadline": "600s"}, "deadline must be a number of seconds"),
    "at as text": ({"at": "2030-01-01T00:00:00Z"}, "at must be a datetime, got str"),
    "at the end of time": ({"at": datetime.datetime.max.replace(tzinfo=datetime.UTC)}, "more than 30 days ahead"),
}


class NoCallsClient:
    """A client that fails the test if the producer calls the API at all."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the producer called the API ({name}) with input it should have refused")


@pytest.fixture(scope="module")
def offline_producer() -> TaskProducer:
    return TaskProducer(ProducerConfig.from_stack_outputs(OUTPUTS, {}), client=NoCallsClient())  # type: ignore


@pytest.mark.parametrize("overrides, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_refused_before_any_api_call(offline_producer: TaskProducer, overrides: dict[str, Any],
                                                  message: str) -> None:
    arguments: dict[str, Any] = {"action": "update_inventory", "payload": {"orderId": "o"}, **overrides}
    with pytest.raises(InvalidTask, match=re.escape(message)):
        offline_producer.enqueue(arguments.pop("action"), arguments.pop("payload"), **arguments)


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
    return subprocess.run([sys.executable, "-m", "tasklane.producer", *args], cwd=REPO, env=env, capture_output=True,
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


def test_enqueue_many_refuses_an_item_that_is_not_a_taskspec_before_creating_anything(
        producer: TaskProducer) -> None:
    specs = [TaskSpec("update_inventory", {"orderId": "first"}), {"action": "update_inventory"}]
    with pytest.raises(TypeError, match="item 1 is a dict; nothing was created"):
        producer.enqueue_many(specs)  # type: ignore[arg-type]
    assert producer.list_tasks() == []


def test_a_progress_callback_that_raises_loses_no_result(producer: TaskProducer) -> None:
    from tasklane.producer import ProgressFailed

    calls: list[int] = []

    def progress(done: int, total: int) -> None:
        calls.append(done)
        raise OSError("the terminal went away")

    specs = [TaskSpec("update_inventory", {"orderId": f"p-{n}"}) for n in range(5)]
    with pytest.raises(ProgressFailed) as failed:
        producer.enqueue_many(specs, progress=progress)
    assert isinstance(failed.value.__cause__, OSError) and calls == [1], "not called again after it raised"
    assert [r.status for r in failed.value.results] == ["created"] * 5
    assert sorted(stored_order_ids(producer)) == [f"p-{n}" for n in range(5)]


def test_enqueue_many_reports_each_bad_item_and_still_creates_the_good_ones(producer: TaskProducer) -> None:
    bad = {1: TaskSpec("update_inventory", {"orderId": "nan", "qty": float("nan")}),
           3: TaskSpec("update_inventory", {"orderId": "d"}, delay=float("inf")),
           4: TaskSpec("update_inventory", {"orderId": "d"}, delay=10**400),
           6: TaskSpec("update_inventory", {"orderId": "d"}, delay="soon"),  # type: ignore[arg-type]
           7: TaskSpec("update_inventory", {"orderId": "id"}, task_id="order-7\n"),
           9: TaskSpec("update_inventory", {"orderId": "d"}, delay=-1e308)}
    specs = [bad.get(n) or TaskSpec("update_inventory", {"orderId": f"good-{n}"}) for n in range(10)]
    results = producer.enqueue_many(specs)
    assert [r.index for r in results] == list(range(10))
    for n, result in enumerate(results):
        assert result.status == ("failed" if n in bad else "created"), (n, result)
    assert "NaN or Infinity" in (results[1].reason or "") and "finite" in (results[3].reason or "")
    assert "may contain only letters" in (results[7].reason or "")
    assert stored_order_ids(producer) == sorted(f"good-{n}" for n in range(10) if n not in bad)


# -- Property: at the producer's input boundary, a task is built valid or refused as InvalidTask ----------

ANY_VALUE = st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400) \
    | st.floats() | st.text(max_size=10) | st.binary(max_size=5) | st.timedeltas() \
    | st.datetimes(timezones=st.none() | st.timezones()) | st.lists(st.integers(), max_size=2)
JSON_LIKE = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                         lambda children: st.lists(children, max_size=3)
                         | st.dictionaries(st.text(max_size=5) | st.floats() | st.integers(), children, max_size=3),
                         max_leaves=8)
SPECS = st.builds(
    TaskSpec,
    action=st.sampled_from([*service_actions().names, "not_registered", ""]) | ANY_VALUE,
    payload=st.dictionaries(st.text(max_size=8), JSON_LIKE, max_size=4) | ANY_VALUE,
    task_id=st.none() | st.from_regex(r"[A-Za-z0-9_-]{1,20}\n?", fullmatch=True) | st.text(max_size=10) | ANY_VALUE,
    dedup_key=st.none() | st.text(max_size=10) | ANY_VALUE,
    delay=st.none() | st.floats() | st.integers() | st.timedeltas() | ANY_VALUE,
    at=st.none() | st.datetimes(timezones=st.none() | st.timezones()) | ANY_VALUE,
    deadline=st.none() | st.floats() | st.integers(min_value=0, max_value=4000) | ANY_VALUE)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@settings(max_examples=600, deadline=None)
@given(spec=SPECS, unnamed_get_a_name=st.booleans())
def test_any_task_spec_is_built_valid_or_refused_as_invalid_task(spec: TaskSpec, unnamed_get_a_name: bool) -> None:
    producer = TaskProducer(ProducerConfig.from_stack_outputs(OUTPUTS, {}), client=NoCallsClient())  # type: ignore
    now = producer._clock()
    try:
        task = producer.build_task(spec, name_if_unnamed=unnamed_get_a_name)
    except InvalidTask as refusal:
        assert str(refusal), "a refusal says what is wrong"
        return
    body = task["http_request"]["body"]
    assert len(body) <= MAX_BODY_BYTES
    json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)  # strict JSON: no NaN/Infinity
    assert task["http_request"]["url"].endswith(f"/tasks/{spec.action}")
    action = producer.registry.get(spec.action) if producer.registry is not None else None
    assert action is not None, "only a registered action is built"
    action.payload.decode(body)  # and the handler accepts its payload
    if "name" in task:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,500}", task["name"].rsplit("/tasks/", 1)[1])
    if "schedule_time" in task:
        assert task["schedule_time"].ToDatetime(tzinfo=datetime.UTC) - now <= datetime.timedelta(days=30, seconds=1)
    deadline = task["dispatch_deadline"]
    assert 15 <= deadline.seconds + deadline.nanos / 1e9 <= 1800


# -- The CLI: one line saying what is wrong and what to do, never a traceback -----------------------------

def test_the_cli_says_in_one_line_that_the_emulator_is_down(cli_env: dict[str, str]) -> None:
    down = cli({**cli_env, "CLOUD_TASKS_EMULATOR_HOST": f"127.0.0.1:{free_port()}"}, "enqueue", "update_inventory",
               "--payload", '{"orderId": "o"}')
    assert down.returncode == 2
    [line] = down.stderr.strip().splitlines()
    assert "cannot reach the Cloud Tasks emulator at 127.0.0.1:" in line and "CLOUD_TASKS_EMULATOR_HOST" in line
    assert "Start it" in line and "Traceback" not in down.stderr


def test_the_cli_says_in_one_line_that_no_configuration_was_found(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("TASKLANE_") and key != "CLOUD_TASKS_EMULATOR_HOST"}
    result = cli(env, "list")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("producer: no configuration found: pass --stack STACK or --outputs FILE")
    assert "TASKLANE_QUEUE_PATH" in line and "Traceback" not in result.stderr


@pytest.mark.parametrize("content, message", [
    ("[1, 2]", "stack outputs must be a JSON object, got list"),
    ("{not json", "cannot read stack outputs"),
    ('{"queue_path": 5, "service_url": "https://x", "invoker_service_account": "a@b", "task_audience": "a"}',
     "queue_path must be strings"),
    (json.dumps({**OUTPUTS, "queue_path": QUEUE + "\n"}), "must be projects/P/locations/L/queues/Q"),
])
def test_bad_outputs_files_are_one_line_too(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str,
                                            message: str) -> None:
    from tasklane.producer.__main__ import main

    outputs = tmp_path / "outputs.json"
    outputs.write_text(content)
    assert main(["--outputs", str(outputs), "list"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert message in line


def test_enqueue_file_reports_bad_lines_by_their_number_and_creates_the_rest(
        producer: TaskProducer, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tasklane.producer.__main__ import main

    for name, value in cli_env.items():
        monkeypatch.setenv(name, value)
    lines = tmp_path / "orders.jsonl"
    lines.write_text("\n".join([
        '{"action": "update_inventory", "payload": {"orderId": "f-1"}}',
        "",  # blank lines are skipped but still counted
        '{"action": "update_inventory", "payload": {"orderId": "f-3", "qty": NaN}}',
        '{"action": "update_inventory", "payload": {"orderId": "f-4"}, "delay": Infinity}',
        "not json at all",
        '{"action": "update_inventory", "payload": {"orderId": "f-6"}, "taskId": "t\\n"}',
        '{"action": "update_inventory", "payload": {"orderId": "f-7"}, "delay": "later"}',
        '{"action": "update_inventory", "payload": {"orderId": "f-8"}, "delay": 1e999}',
        '{"action": "update_inventory", "payload": [1]}',
        '{"action": "update_inventory", "payload": {"orderId": "f-10"}, "delay": 5}',
        '{"action": "update_inventory", "payload": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ]) + "\n")
    assert main(["enqueue-file", str(lines)]) == 1, "a failed line is a non-zero exit"
    out, err = capsys.readouterr()
    assert "created 2, already enqueued 0, failed 8" in out
    assert "line 11: failed: JSON nested too deeply to read" in err
    failed = {int(line.split(":")[0].removeprefix("line ")): line for line in err.splitlines()
              if line.startswith("line ")}
    assert sorted(failed) == [3, 4, 5, 6, 7, 8, 9, 11]
    assert "NaN or Infinity" in failed[3] and "finite number" in failed[4] and "not JSON" in failed[5]
    assert "may contain only letters" in failed[6] and "got str 'later'" in failed[7]
    assert "payload must be a mapping" in failed[9]
    assert stored_order_ids(producer) == ["f-1", "f-10"]


def test_the_cli_lists_every_task_in_pages_and_shows_names_bodies_and_how_a_finished_task_ended(
        cloud_tasks_emulator: RunningEmulator, cli_env: dict[str, str], producer: TaskProducer,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import http.server
    import threading

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the standard library's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    from tasklane.producer.__main__ import main

    def run(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    for key, value in cli_env.items():
        monkeypatch.setenv(key, value)
    results = producer.enqueue_many([TaskSpec("update_inventory", {"orderId": f"p-{n}"}) for n in range(1005)])
    assert all(result.status == "created" for result in results)
    status, out, err = run("list")
    assert status == 0 and len(out.splitlines()) == 1005 and "1005 tasks" in err, "every task, past the first page"
    assert len(run("list", "--limit", "7")[1].splitlines()) == 7

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{target.server_address[1]}"
        for key, value in {"TASKLANE_SERVICE_URL": url, "TASKLANE_TASK_AUDIENCE": url,
                           "TASKLANE_EMULATOR_HTTP_URL": cloud_tasks_emulator.http_url}.items():
            monkeypatch.setenv(key, value)
        name = run("enqueue", "notify_warehouse", "--payload", '{"orderId": "shown-1"}')[1].split()[-1]
        shown = json.loads(run("show", name)[1])
        assert shown["httpRequest"]["httpMethod"] == "POST" and shown["view"] == "FULL"
        assert shown["httpRequest"]["bodyDecoded"]["orderId"] == "shown-1"
        client = cloud_tasks_emulator.client()
        client.run_task(name=name)
        wait_for(lambda: not [t for t in client.list_tasks(parent=QUEUE) if t.name == name], timeout=15,
                 message="the task to finish")
        status, out, _ = run("show", name)
        assert status == 0
        assert out.splitlines()[0] == f"{name}: finished: succeeded on attempt 1 (HTTP 200)"
        assert "attempt 1: HTTP 200 (succeeded)" in out
    finally:
        target.shutdown()
        target.server_close()
