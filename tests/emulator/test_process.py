"""The emulator as a process: the ready line, a Pulumi stack's queue, durability across kill -9, the HTTP
port, bad input, and fault injection."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from tasklane.emulator.server import EmulatorServer
from tests.emulator.conftest import PARENT, Target, make_queue, task_gone, wait_for

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"export CLOUD_TASKS_EMULATOR_HOST=(\S+)")


class EmulatorProcess:
    def __init__(self, *args: str) -> None:
        argv = [sys.executable, "-m", "tasklane.emulator", "--grpc-port", "0", "--http-port", "0", *args]
        self.process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ready_line = self._await_ready()
        match = READY.search(self.ready_line)
        assert match, self.ready_line
        self.host = match.group(1)
        self.http_url = re.search(r"HTTP (http://\S+)", self.ready_line).group(1)  # type: ignore[union-attr]

    def _await_ready(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if "ready" in line:
                return line
            if self.process.poll() is not None:
                raise AssertionError(f"emulator exited: {self.process.stderr.read() if self.process.stderr else ''}")
        raise AssertionError("emulator never printed its ready line")

    def client(self) -> tasks_v2.CloudTasksClient:
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(self.host)))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=15)


@pytest.fixture
def processes() -> Iterator[list[EmulatorProcess]]:
    started: list[EmulatorProcess] = []
    yield started
    for emulator in started:
        if emulator.process.poll() is None:
            emulator.process.kill()
            emulator.process.wait()


def http_json(url: str, data: dict[str, Any] | None = None, method: str = "GET") -> Any:
    request = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode(), method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback emulator
        return json.loads(response.read())


def test_the_cli_prints_one_ready_line_and_creates_the_stacks_queue(processes: list[EmulatorProcess]) -> None:
    emulator = EmulatorProcess("--pulumi-stack", "prod")
    processes.append(emulator)
    assert emulator.ready_line.startswith("Cloud Tasks emulator ready: gRPC 127.0.0.1:")
    queue = emulator.client().get_queue(
        name="projects/my-tasklane-prod/locations/us-central1/queues/tasklane-prod-queue")
    assert (queue.rate_limits.max_dispatches_per_second, queue.rate_limits.max_concurrent_dispatches) == (200, 1000)
    assert (queue.retry_config.max_attempts, queue.retry_config.min_backoff.total_seconds(),
            queue.retry_config.max_backoff.total_seconds(), queue.retry_config.max_doublings) == (25, 2, 600, 5)
    assert emulator.stop() == 0


def test_an_accepted_task_survives_kill_9_and_a_delivered_one_is_not_delivered_again(
        processes: list[EmulatorProcess], target: Target, tmp_path: Path) -> None:
    state = str(tmp_path / "emulator.sqlite")
    done_url, later_url = target.answer("/done", 200), target.answer("/later", 200)
    first = EmulatorProcess("--state-file", state)
    processes.append(first)
    client = first.client()
    queue = make_queue(client, "durable")
    delivered = client.create_task(parent=queue.name, task={"http_request": {"url": done_url}}).name
    wait_for(lambda: target.on("/done"))
    wait_for(lambda: task_gone(client, delivered), message="the delivered task to be recorded")
    client.pause_queue(name=queue.name)
    pending = [client.create_task(parent=queue.name, task={"http_request": {"url": later_url}}).name
               for _ in range(20)]
    first.stop(signal.SIGKILL)

    second = EmulatorProcess("--state-file", state)
    processes.append(second)
    client = second.client()
    assert {t.name for t in client.list_tasks(parent=queue.name)} == set(pending)
    with pytest.raises(api_exceptions.AlreadyExists):
        client.create_task(parent=queue.name, task={"name": delivered, "http_request": {"url": done_url}})
    client.resume_queue(name=queue.name)
    wait_for(lambda: len(target.on("/later")) == 20, message="every pending task after the restart")
    time.sleep(0.3)
    assert len(target.on("/done")) == 1, "a task answered 2xx is not delivered again"
    assert second.stop() == 0


def history(http_url: str, tasks: list[str]) -> dict[str, Any]:
    """What the inspection API and the console say of these tasks' attempts."""
    return {"all": http_json(f"{http_url}/v1/attempts")["attempts"],
            "gave_up": http_json(f"{http_url}/v1/attempts?outcome=gave_up")["attempts"],
            "paged": attempt_pages(f"{http_url}/v1/attempts?pageSize=2"),
            "console": [http_json(f"{http_url}/console/api/task?name={name}") for name in tasks]}


def attempt_pages(url: str) -> list[list[str]]:
    pages, token = [], ""
    while True:
        page = http_json(f"{url}&pageToken={token}")
        pages.append([f"{a['task']}#{a['attempt']}" for a in page["attempts"]])
        token = page.get("nextPageToken", "")
        if not token:
            return pages


def test_the_attempt_history_is_the_same_after_a_restart_and_after_kill_9(
        processes: list[EmulatorProcess], target: Target, tmp_path: Path) -> None:
    state = str(tmp_path / "emulator.sqlite")
    first = EmulatorProcess("--state-file", state)
    processes.append(first)
    client = first.client()
    queue = make_queue(client, "remembered", retry_config={"max_attempts": 2, "min_backoff": "0.1s",
                                                           "max_backoff": "0.1s"})
    urls = [target.answer("/fine", 200), target.answer("/flaky", 503, 200), target.answer("/poison", 400)]
    names = [client.create_task(parent=queue.name, task={"http_request": {
        "url": url, "body": b'{"orderId": "o-%d"}' % number}}).name for number, url in enumerate(urls)]
    wait_for(lambda: all(task_gone(client, name) for name in names), message="every task to finish")
    before = history(first.http_url, names)
    assert [(a["attempt"], a["status"], a["outcome"]) for a in before["all"] if a["task"] == names[1]] == [
        (1, 503, "retrying"), (2, 200, "succeeded")]
    assert [c["status"] for c in before["console"]] == [
        "finished: succeeded (HTTP 200)", "finished: succeeded (HTTP 200)",
        "finished: gave up after 2 attempts (last HTTP 400)"]
    assert first.stop() == 0

    second = EmulatorProcess("--state-file", state)
    processes.append(second)
    assert history(second.http_url, names) == before, "the same answers after a restart"
    assert json.loads(before["console"][2]["body"]["text"]) == {"orderId": "o-2"}

    # kill -9: what had finished is kept (saved with its task's outcome); the attempt then running shows as
    # interrupted, and the task, still there, is dispatched again.
    client = second.client()
    hung = client.create_task(parent=queue.name, task={"http_request": {
        "url": target.answer("/hang", ("hang", 5), 200)}}).name
    wait_for(lambda: target.on("/hang"), message="the attempt to start")
    second.stop(signal.SIGKILL)

    third = EmulatorProcess("--state-file", state)
    processes.append(third)
    after = history(third.http_url, names)
    assert after["all"][:len(before["all"])] == before["all"] and after["console"] == before["console"]
    wait_for(lambda: task_gone(third.client(), hung), message="the interrupted task to be dispatched again")
    attempts = http_json(f"{third.http_url}/v1/attempts?task={hung}")["attempts"]
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "interrupted"), (2, "succeeded")]
    assert attempts[0]["status"] is None and "stopped" in attempts[0]["error"]
    assert third.stop() == 0


def test_the_http_port_serves_discovery_keys_health_and_inspection(
        emulator: EmulatorServer, client: tasks_v2.CloudTasksClient, target: Target) -> None:
    base = emulator.http_url
    assert http_json(f"{base}/healthz") == {"status": "ok"}
    discovery = http_json(f"{base}/.well-known/openid-configuration")
    assert discovery["issuer"] == base and discovery["jwks_uri"] == f"{base}/oauth2/v3/certs"
    [key] = http_json(discovery["jwks_uri"])["keys"]
    assert (key["kty"], key["alg"]) == ("RSA", "RS256")
    certificates = http_json(f"{base}/oauth2/v1/certs")
    assert list(certificates) == [key["kid"]]
    assert certificates[key["kid"]].startswith("-----BEGIN CERTIFICATE-----")

    url = target.answer("/inspect", 500, 200)
    queue = make_queue(client, "inspected", retry_config={"min_backoff": "1s", "max_backoff": "1s"})
    name = client.create_task(parent=queue.name, task={"http_request": {"url": url}}).name
    wait_for(lambda: [a for a in http_json(f"{base}/v1/attempts?task={name}")["attempts"] if a["finished"]],
             message="the first attempt to finish")
    [attempt] = http_json(f"{base}/v1/attempts?task={name}")["attempts"]
    assert (attempt["status"], attempt["attempt"], attempt["outcome"]) == (500, 1, "retrying")
    assert attempt["request_headers"]["X-CloudTasks-TaskRetryCount"] == "0"
    [listed] = [q for q in http_json(f"{base}/v1/queues")["queues"] if q["name"] == queue.name]
    assert listed["tasks"] == 1
    [task] = http_json(f"{base}/v1/tasks?queue={queue.name}")["tasks"]
    assert task["name"] == name and task["dispatchCount"] == 1
    http_json(f"{base}/v1/clock", {"seconds": 1}, method="POST")
    wait_for(lambda: len(http_json(f"{base}/v1/attempts?task={name}")["attempts"]) == 2)


def test_bad_input_never_takes_the_server_down(emulator: EmulatorServer, client: tasks_v2.CloudTasksClient) -> None:
    channel = grpc.insecure_channel(emulator.grpc_target)
    raw = channel.unary_unary("/google.cloud.tasks.v2.CloudTasks/CreateTask",
                              request_serializer=lambda data: data, response_deserializer=lambda data: data)
    for garbage in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", os.urandom(2048)):
        with pytest.raises(grpc.RpcError) as raised:
            raw(garbage)
        assert raised.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    queue = make_queue(client, "robust")
    with pytest.raises(api_exceptions.InvalidArgument, match="80KB"):
        client.create_task(parent=queue.name, task={"http_request": {"url": "http://127.0.0.1:9/",
                                                                     "headers": {"X-Big": "x" * 90_000}}})
    for bad_name in ("", "queues/x", f"{PARENT}/queues/" + "q" * 101, f"{PARENT}/queues/with space"):
        with pytest.raises(api_exceptions.GoogleAPICallError):
            client.get_queue(name=bad_name)
    with pytest.raises(api_exceptions.InvalidArgument, match="Task ID"):
        client.create_task(parent=queue.name, task={"name": f"{queue.name}/tasks/" + "t" * 501,
                                                    "http_request": {"url": "http://127.0.0.1:9/"}})
    assert client.get_queue(name=queue.name).name == queue.name, "still serving"


def test_latency_and_errors_can_be_injected_per_rpc(emulator: EmulatorServer,
                                                   client: tasks_v2.CloudTasksClient) -> None:
    base = emulator.http_url
    http_json(f"{base}/v1/faults", {"latency": {"GetQueue": 0.2}}, method="PUT")
    queue = make_queue(client, "faulty")
    started = time.monotonic()
    client.get_queue(name=queue.name)
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    client.list_queues(parent=PARENT)
    assert time.monotonic() - started < 0.2, "only the named RPC is slowed"
    http_json(f"{base}/v1/faults", {"errorRate": 1.0, "errorCode": "UNAVAILABLE"}, method="PUT")
    with pytest.raises(api_exceptions.ServiceUnavailable, match="Injected failure"):
        client.get_queue(name=queue.name, retry=None)
    http_json(f"{base}/v1/faults", {"errorRate": 0.0}, method="PUT")
    assert client.get_queue(name=queue.name).name == queue.name
    with pytest.raises(urllib.error.HTTPError):
        http_json(f"{base}/v1/faults", {"errorRate": 2.0}, method="PUT")
