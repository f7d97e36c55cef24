"""The emulator answers every recorded case as the real Cloud Tasks service did.

Source: recordings/errors.json and recordings/happypath.json (see recordings/PROVENANCE.md); each
case's request is built the way the recording harness built it.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, text_format, timestamp_pb2

from emulator.server import EmulatorServer
from emulator.testing import start_emulator
from tests.emulator.conftest import PARENT, client_for

RECORDINGS = Path(__file__).resolve().parent / "recordings"
ERROR_CASES = json.loads((RECORDINGS / "errors.json").read_text())
HAPPY_PATH = json.loads((RECORDINGS / "happypath.json").read_text())


class Case:
    def __init__(self, client: tasks_v2.CloudTasksClient, number: int) -> None:
        self.c = client
        self.queue_path = f"{PARENT}/queues/conformance-{number}"
        self.task_path = f"{self.queue_path}/tasks/task-{number}"

    def create_queue(self, **fields: Any) -> Any:
        return self.c.create_queue(parent=PARENT, queue={"name": self.queue_path, **fields})

    def delete_queue(self) -> None:
        self.c.delete_queue(name=self.queue_path)

    def create_task(self, task: dict[str, Any] | None = None, parent: str | None = None) -> Any:
        task = task or {"name": self.task_path, "http_request": {"url": "https://example.com/"}}
        return self.c.create_task(parent=parent or self.queue_path, task=task)

    def task_with_url(self, url: str) -> Any:
        return self.create_task({"name": self.task_path, "http_request": {"url": url}})


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromNanoseconds(int(seconds * 1e9))
    return value


def _app_engine_task(case: Case, deadline_seconds: float) -> Any:
    return case.create_task({"name": case.task_path, "dispatch_deadline": _duration(deadline_seconds),
                             "app_engine_http_request": {"relative_uri": "/work", "body": b"{}"}})


def _http_deadline_task(case: Case, deadline_seconds: float) -> Any:
    return case.create_task({"name": case.task_path, "dispatch_deadline": _duration(deadline_seconds),
                             "http_request": {"url": "https://example.com/"}})


def _too_far(case: Case) -> Any:
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC))
    return case.create_task({"name": case.task_path, "schedule_time": when,
                             "http_request": {"url": "https://example.com/"}})


# case name: (setup, invoke)
Step = Callable[[Case], Any]
NOTHING: Step = lambda case: None  # noqa: E731
CASES: dict[str, tuple[Step, Step]] = {
    "queue/get/not-found": (NOTHING, lambda k: k.c.get_queue(name=k.queue_path)),
    "queue/delete/not-found": (NOTHING, lambda k: k.delete_queue()),
    "queue/pause/not-found": (NOTHING, lambda k: k.c.pause_queue(name=k.queue_path)),
    "queue/resume/not-found": (NOTHING, lambda k: k.c.resume_queue(name=k.queue_path)),
    "queue/purge/not-found": (NOTHING, lambda k: k.c.purge_queue(name=k.queue_path)),
    "queue/get/recently-deleted": (lambda k: (k.create_queue(), k.delete_queue()),
                                   lambda k: k.c.get_queue(name=k.queue_path)),
    "queue/create/recently-deleted": (lambda k: (k.create_queue(), k.delete_queue()), lambda k: k.create_queue()),
    "queue/create/already-exists": (lambda k: k.create_queue(), lambda k: k.create_queue()),
    "queue/create/invalid-name": (NOTHING, lambda k: k.c.create_queue(
        parent=PARENT, queue={"name": "not-a-valid-queue-name"})),
    "queue/create/invalid-parent": (NOTHING, lambda k: k.c.create_queue(
        parent="not-a-valid-parent", queue={"name": k.queue_path})),
    "queue/create/rate-negative": (NOTHING, lambda k: k.create_queue(rate_limits={"max_dispatches_per_second": -1})),
    "queue/create/rate-too-high": (NOTHING, lambda k: k.create_queue(rate_limits={"max_dispatches_per_second": 501})),
    "queue/create/burst-negative": (NOTHING, lambda k: k.create_queue(rate_limits={"max_burst_size": -1})),
    "queue/create/concurrent-negative": (NOTHING, lambda k: k.create_queue(
        rate_limits={"max_concurrent_dispatches": -1})),
    "queue/create/concurrent-too-high": (NOTHING, lambda k: k.create_queue(
        rate_limits={"max_concurrent_dispatches": 5001})),
    "queue/create/max-attempts-below-minus-one": (NOTHING, lambda k: k.create_queue(
        retry_config={"max_attempts": -2})),
    "queue/create/max-doublings-negative": (NOTHING, lambda k: k.create_queue(retry_config={"max_doublings": -1})),
    "queue/create/min-backoff-negative": (NOTHING, lambda k: k.create_queue(
        retry_config={"min_backoff": _duration(-1)})),
    "queue/create/backoff-order": (NOTHING, lambda k: k.create_queue(
        retry_config={"min_backoff": _duration(10), "max_backoff": _duration(5)})),
    "task/create/queue-not-found": (NOTHING, lambda k: k.create_task()),
    "task/create/queue-recently-deleted": (lambda k: (k.create_queue(), k.delete_queue()), lambda k: k.create_task()),
    "task/create/already-exists": (lambda k: (k.create_queue(), k.create_task()), lambda k: k.create_task()),
    "task/create/queue-mismatch": (lambda k: k.create_queue(), lambda k: k.create_task(
        {"name": f"{k.queue_path}-other/tasks/{k.task_path.rsplit('/', 1)[1]}",
         "http_request": {"url": "https://example.com/"}})),
    "task/create/invalid-name": (lambda k: k.create_queue(), lambda k: k.create_task(
        {"name": f"{k.queue_path}/tasks/not a valid id", "http_request": {"url": "https://example.com/"}})),
    "task/create/invalid-url-empty": (lambda k: k.create_queue(), lambda k: k.task_with_url("")),
    "task/create/invalid-url-no-scheme": (lambda k: k.create_queue(), lambda k: k.task_with_url("example.com/path")),
    "task/create/invalid-url-non-http-scheme": (lambda k: k.create_queue(),
                                                lambda k: k.task_with_url("ftp://example.com/")),
    "task/create/invalid-url-bad-escape": (lambda k: k.create_queue(),
                                           lambda k: k.task_with_url("http://example.com/%zz")),
    "task/create/appengine-deadline-one-hour": (lambda k: k.create_queue(), lambda k: _app_engine_task(k, 3600)),
    "task/create/appengine-deadline-too-long": (lambda k: k.create_queue(),
                                                lambda k: _app_engine_task(k, 25 * 3600)),
    "task/create/deadline-too-long": (lambda k: k.create_queue(), lambda k: _http_deadline_task(k, 31 * 60)),
    "task/create/deadline-too-short": (lambda k: k.create_queue(), lambda k: _http_deadline_task(k, 10)),
    "task/create/schedule-too-far": (lambda k: k.create_queue(), _too_far),
    "task/get/not-found": (lambda k: k.create_queue(), lambda k: k.c.get_task(name=k.task_path)),
    "task/delete/not-found": (lambda k: k.create_queue(), lambda k: k.c.delete_task(name=k.task_path)),
    "task/run/not-found": (lambda k: k.create_queue(), lambda k: k.c.run_task(name=k.task_path)),
    "task/get/recently-deleted": (lambda k: (k.create_queue(), k.create_task(), k.c.delete_task(name=k.task_path)),
                                  lambda k: k.c.get_task(name=k.task_path)),
}


@pytest.fixture(scope="module")
def shared_emulator() -> Any:
    """One emulator for every case: each case uses its own queue and task names."""
    server = start_emulator()
    yield server
    server.stop_thread()


def _screaming(code: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", code).upper()


def _collapsed(prototext: str) -> str:
    return re.sub(r":\{", "{", re.sub(r"\s+", "", prototext))


def test_every_recorded_case_has_a_replay() -> None:
    assert sorted(CASES) == sorted(case["name"] for case in ERROR_CASES)


@pytest.mark.parametrize("recorded", ERROR_CASES, ids=[case["name"] for case in ERROR_CASES])
def test_the_emulator_answers_like_the_real_service(shared_emulator: EmulatorServer,
                                                   recorded: dict[str, Any]) -> None:
    number = ERROR_CASES.index(recorded)
    case = Case(client_for(shared_emulator), number)
    setup, invoke = CASES[recorded["name"]]
    setup(case)
    if recorded["code"] == "OK":
        invoke(case)
        return
    with pytest.raises(api_exceptions.GoogleAPICallError) as raised:
        invoke(case)
    error = raised.value
    assert error.grpc_status_code is not None
    assert error.grpc_status_code.name == _screaming(recorded["code"])
    assert error.message == recorded["template"].replace("{queue_path}", case.queue_path)
    expected_details = recorded.get("details", [])
    assert len(error.details) == len(expected_details)
    for detail, expected in zip(error.details, expected_details, strict=True):
        assert type(detail).__name__ == expected["type"].removeprefix("*errdetails.")
        assert _collapsed(text_format.MessageToString(detail)) == _collapsed(expected["template"])


@pytest.mark.parametrize("recorded", [case for case in HAPPY_PATH if case["requestType"] == "http"],
                         ids=lambda case: case["name"])
def test_a_stored_http_task_has_the_recorded_shape(emulator: EmulatorServer, recorded: dict[str, Any]) -> None:
    client = client_for(emulator)
    client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/happy"})
    body = b'{"hello":"world"}'
    created = client.create_task(request={"parent": f"{PARENT}/queues/happy", "response_view": "FULL", "task": {
        "http_request": {"url": "https://example.com/", "headers": recorded["sent"], "body": body}}})
    basic = client.get_task(name=created.name)
    full = client.get_task(request={"name": created.name, "response_view": "FULL"})
    for shown, expected in ((created, recorded["createFull"]), (basic, recorded["getBasic"]),
                            (full, recorded["getFull"])):
        assert dict(shown.http_request.headers) == expected["headers"]
        assert shown.http_request.body == (body if "body" in expected else b"")
        if "body" in expected:
            import base64
            assert base64.b64encode(shown.http_request.body).decode() == expected["body"]
