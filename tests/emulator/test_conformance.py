"""The emulator answers every recorded case as the real Cloud Tasks service did, over gRPC and over REST,
and the two transports' answers agree.

Source: recordings/errors.json and recordings/happypath.json (see recordings/PROVENANCE.md); each
case's request is built the way the recording harness built it, and sent by the official Python client
over each of its transports. Over REST the gRPC code arrives as Google's JSON error (`status`), with the
HTTP status google-api-core maps that code to.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.protobuf import (
    any_pb2,
    duration_pb2,
    json_format,
    message_factory,
    symbol_database,
    text_format,
    timestamp_pb2,
)

from tasklane.emulator.server import EmulatorServer
from tasklane.emulator.testing import start_emulator
from tests.emulator.conftest import PARENT, client_for, rest_client_for

RECORDINGS = Path(__file__).resolve().parent / "recordings"
ERROR_CASES = json.loads((RECORDINGS / "errors.json").read_text())
HAPPY_PATH = json.loads((RECORDINGS / "happypath.json").read_text())


TRANSPORTS: dict[str, Callable[[EmulatorServer], tasks_v2.CloudTasksClient]] = {
    "grpc": client_for, "rest": rest_client_for}


class Case:
    def __init__(self, client: tasks_v2.CloudTasksClient, number: int, transport: str) -> None:
        self.c = client
        self.queue_path = f"{PARENT}/queues/conformance-{transport}-{number}"
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


# What an answer is, whichever the transport: (gRPC code name, message, [(detail type, collapsed prototext)]).
Answer = tuple[str, str, list[tuple[str, str]]]


def _grpc_answer(error: api_exceptions.GoogleAPICallError) -> Answer:
    assert error.grpc_status_code is not None
    return (error.grpc_status_code.name, error.message,
            [(type(detail).__name__, _collapsed(text_format.MessageToString(detail))) for detail in error.details])


def _http_status(code: str) -> int:
    """google-api-core's HTTP status for a gRPC code; UNKNOWN and DATA_LOSS have none there, and
    google/rpc/code.proto maps both to 500."""
    status = api_exceptions.exception_class_for_grpc_status(grpc.StatusCode[code]).code
    return int(status) if status is not None else 500


def _rest_answer(error: api_exceptions.GoogleAPICallError) -> Answer:
    assert error.response is not None
    body = error.response.json()["error"]
    assert set(body) <= {"code", "message", "status", "details"}
    assert error.code == body["code"] == _http_status(body["status"])
    details = []
    for detail in body.get("details", []):
        packed = json_format.ParseDict(detail, any_pb2.Any())
        name = packed.TypeName()
        unpacked = message_factory.GetMessageClass(symbol_database.Default().pool.FindMessageTypeByName(name))()
        assert packed.Unpack(unpacked)
        details.append((name.rsplit(".", 1)[1], _collapsed(text_format.MessageToString(unpacked))))
    return body["status"], body["message"], details


def _replay(server: EmulatorServer, recorded: dict[str, Any], transport: str) -> tuple[Case, Answer | None]:
    case = Case(TRANSPORTS[transport](server), ERROR_CASES.index(recorded), transport)
    setup, invoke = CASES[recorded["name"]]
    setup(case)
    try:
        invoke(case)
    except api_exceptions.GoogleAPICallError as error:
        return case, (_grpc_answer(error) if transport == "grpc" else _rest_answer(error))
    return case, None


# A parent outside projects/*/locations/* fits no REST path: the client refuses to send it, and the URL
# it would have used is a front-end 404 (rest_api.py), never the PERMISSION_DENIED gRPC answers.
NOT_EXPRESSIBLE_OVER_REST = {"queue/create/invalid-parent"}


@pytest.mark.parametrize("recorded", ERROR_CASES, ids=[case["name"] for case in ERROR_CASES])
def test_the_emulator_answers_like_the_real_service(shared_emulator: EmulatorServer,
                                                   recorded: dict[str, Any]) -> None:
    answers: dict[str, Answer | None] = {}
    for transport in TRANSPORTS:
        if transport == "rest" and recorded["name"] in NOT_EXPRESSIBLE_OVER_REST:
            continue
        case, answer = _replay(shared_emulator, recorded, transport)
        answers[transport] = answer
        if recorded["code"] == "OK":
            assert answer is None
            continue
        assert answer is not None, f"{transport}: the call succeeded"
        code, message, details = answer
        assert code == _screaming(recorded["code"]), transport
        assert message == recorded["template"].replace("{queue_path}", case.queue_path), transport
        expected = [(detail["type"].removeprefix("*errdetails."), _collapsed(detail["template"]))
                    for detail in recorded.get("details", [])]
        assert details == expected, transport
    if "rest" in answers:  # the same answer on both wires, once each case's own queue name is set aside
        grpc_answer, rest_answer = (json.dumps(answers[t]).replace(f"conformance-{t}-", "conformance-")
                                    for t in ("grpc", "rest"))
        assert grpc_answer == rest_answer


def test_a_parent_no_rest_path_fits_is_refused_before_and_at_the_front_end(shared_emulator: EmulatorServer) -> None:
    with pytest.raises(ValueError, match="does not match any URL path template|not initialized"):
        rest_client_for(shared_emulator).create_queue(parent="not-a-valid-parent",
                                                      queue={"name": f"{PARENT}/queues/q"})
    request = urllib.request.Request(f"{shared_emulator.http_url}/v2/not-a-valid-parent/queues", data=b"{}",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback
    assert raised.value.code == 404
    assert "/v2/not-a-valid-parent/queues</code> was not found on this server" in raised.value.read().decode()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("recorded", [case for case in HAPPY_PATH if case["requestType"] == "http"],
                         ids=lambda case: case["name"])
def test_a_stored_http_task_has_the_recorded_shape(emulator: EmulatorServer, recorded: dict[str, Any],
                                                   transport: str) -> None:
    client = TRANSPORTS[transport](emulator)
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
            assert base64.b64encode(shown.http_request.body).decode() == expected["body"]
