"""The REST surface (/v2/… on the HTTP port): the official Python client's REST transport drives every RPC;
the JSON is proto3's mapping; errors have Google's shape and status; what Google's front end refuses is
refused the same way. One engine: what one transport writes, the other reads.
"""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports.rest_base import _BaseCloudTasksRestTransport

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.rpc import CloudTasksApi
from tasklane.emulator.server import EmulatorServer
from tasklane.emulator.testing import start_emulator
from tests.emulator.conftest import PARENT, Target, client_for, rest_client_for, wait_for

QUEUE = f"{PARENT}/queues/rest"


def call(server: EmulatorServer, method: str, path: str, body: bytes | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of one raw HTTP request."""
    request = urllib.request.Request(server.http_url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def json_call(server: EmulatorServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, content_type, text = call(server, method, path, None if body is None else json.dumps(body).encode())
    assert content_type == "application/json; charset=UTF-8", text
    return status, json.loads(text)


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[EmulatorServer]:
    """One emulator for the refusals, which change nothing; QUEUE exists in it."""
    server = start_emulator()
    json_call(server, "POST", f"/v2/{PARENT}/queues", {"name": QUEUE})
    yield server
    server.stop_thread()


def test_every_rpc_has_the_verb_and_path_of_its_http_annotation(emulator: EmulatorServer) -> None:
    """The table's rules against those generated into the installed client from cloudtasks.proto."""
    assert emulator.engine is not None and emulator.dispatcher is not None
    api = CloudTasksApi(emulator.engine, emulator.dispatcher, emulator.config.faults)
    for name, rpc in api.rpcs.items():
        [option] = getattr(_BaseCloudTasksRestTransport, f"_Base{name}")._get_http_options()
        assert (rpc.http.verb, rpc.http.template, rpc.http.body) == (
            option["method"].upper(), option["uri"], option.get("body")), name
    served = {name.removeprefix("_Base") for name in vars(_BaseCloudTasksRestTransport) if name.startswith("_Base")}
    assert served - set(api.rpcs) == {"GetLocation", "ListLocations", "GetOperation"}  # mixins, not CloudTasks


def test_the_python_rest_client_drives_every_rpc(emulator: EmulatorServer, target: Target) -> None:
    client = rest_client_for(emulator)
    url = target.answer("/rest", 200)
    queue = client.create_queue(parent=PARENT, queue={"name": QUEUE, "retry_config": {
        "max_attempts": 4, "min_backoff": "2.5s"}})
    assert (queue.retry_config.max_attempts, queue.retry_config.min_backoff.total_seconds()) == (4, 2.5)
    updated = client.update_queue(queue={"name": QUEUE, "rate_limits": {"max_dispatches_per_second": 7}},
                                  update_mask={"paths": ["rate_limits.max_dispatches_per_second"]})
    assert updated.rate_limits.max_dispatches_per_second == 7 and updated.retry_config.max_attempts == 4
    client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/rest-2"})
    pages = client.list_queues(request={"parent": PARENT, "page_size": 1}).pages
    assert [[q.name for q in page.queues] for page in pages] == [[QUEUE], [f"{PARENT}/queues/rest-2"]]
    assert client.get_queue(name=QUEUE).rate_limits.max_dispatches_per_second == 7
    assert client.pause_queue(name=QUEUE).state == tasks_v2.Queue.State.PAUSED
    task = client.create_task(request={"parent": QUEUE, "response_view": "FULL", "task": {
        "name": f"{QUEUE}/tasks/first", "http_request": {"url": url, "body": b"\x00\xffbytes",
                                                          "headers": {"Content-Type": "application/octet-stream"}}}})
    assert task.http_request.body == b"\x00\xffbytes" and task.view == tasks_v2.Task.View.FULL
    assert client.get_task(name=task.name).http_request.body == b"", "BASIC hides the body"
    assert client.get_task(request={"name": task.name, "response_view": "FULL"}).http_request.body == b"\x00\xffbytes"
    with pytest.raises(api_exceptions.Conflict, match="Requested entity already exists"):  # 409, as over HTTP
        client.create_task(parent=QUEUE, task={"name": task.name, "http_request": {"url": url}})
    second = client.create_task(parent=QUEUE, task={"http_request": {"url": url}})
    assert [t.name for t in client.list_tasks(parent=QUEUE)] == sorted([task.name, second.name])
    client.delete_task(name=second.name)
    assert client.run_task(name=task.name).dispatch_count == 1
    wait_for(lambda: target.on("/rest"), message="RunTask's dispatch")
    assert target.on("/rest")[0].body == b"\x00\xffbytes"
    assert client.resume_queue(name=QUEUE).state == tasks_v2.Queue.State.RUNNING
    assert client.purge_queue(name=QUEUE).purge_time
    client.delete_queue(name=QUEUE)
    with pytest.raises(api_exceptions.NotFound, match="Queue does not exist"):
        client.get_queue(name=QUEUE)
    with pytest.raises(api_exceptions.MethodNotImplemented, match="GetIamPolicy is not implemented"):
        client.get_iam_policy(resource=f"{PARENT}/queues/rest-2")


def test_both_transports_share_one_engine(emulator: EmulatorServer) -> None:
    rest, grpc_client = rest_client_for(emulator), client_for(emulator)
    rest.create_queue(parent=PARENT, queue={"name": QUEUE})
    task = grpc_client.create_task(parent=QUEUE, task={"http_request": {"url": "https://example.com/"}})
    assert rest.get_task(name=task.name).name == task.name


def test_answers_use_protos_json_mapping(emulator: EmulatorServer, clock: ManualClock) -> None:
    in_an_hour = datetime.datetime.fromtimestamp(clock.now() + 3600, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, queue = json_call(emulator, "POST", f"/v2/{PARENT}/queues?alt=json", {
        "name": QUEUE, "retryConfig": {"minBackoff": "0.5s", "maxRetryDuration": "600s"}})
    assert status == 200
    assert queue["retryConfig"] == {"maxAttempts": 100, "minBackoff": "0.500s", "maxBackoff": "3600s",
                                    "maxDoublings": 16, "maxRetryDuration": "600s"}
    assert queue["state"] == "RUNNING"
    status, task = json_call(emulator, "POST", f"/v2/{QUEUE}/tasks", {"responseView": "FULL", "task": {
        "scheduleTime": in_an_hour, "httpRequest": {"url": "https://example.com/", "body": "aGk="}}})
    assert status == 200, task
    assert task["httpRequest"]["body"] == "aGk=" and task["httpRequest"]["httpMethod"] == "POST"
    assert task["view"] == "FULL" and task["dispatchDeadline"] == "600s"
    assert task["scheduleTime"] == in_an_hour
    status, listed = json_call(emulator, "GET", f"/v2/{QUEUE}/tasks?responseView=2&$alt=json;enum-encoding=int")
    assert [(t["view"], t["httpRequest"]["httpMethod"]) for t in listed["tasks"]] == [(2, 1)]
    status, empty = json_call(emulator, "DELETE", f"/v2/{task['name']}")
    assert (status, empty) == (200, {})


@pytest.mark.parametrize("mask", ["rateLimits.maxConcurrentDispatches", "rate_limits.max_concurrent_dispatches"])
def test_update_masks_come_as_a_query_parameter(emulator: EmulatorServer, mask: str) -> None:
    json_call(emulator, "POST", f"/v2/{PARENT}/queues", {"name": QUEUE, "retryConfig": {"maxAttempts": 3}})
    status, queue = json_call(emulator, "PATCH", f"/v2/{QUEUE}?updateMask={mask}", {
        "rateLimits": {"maxConcurrentDispatches": 9}, "retryConfig": {"maxAttempts": 50}})
    assert status == 200, queue
    assert (queue["rateLimits"]["maxConcurrentDispatches"], queue["retryConfig"]["maxAttempts"]) == (9, 3)


def test_an_update_mask_given_twice_holds_both_paths(emulator: EmulatorServer) -> None:
    """The second updateMask replaced the first, and maxConcurrentDispatches was silently not updated."""
    json_call(emulator, "POST", f"/v2/{PARENT}/queues", {"name": QUEUE, "retryConfig": {"maxAttempts": 3}})
    status, queue = json_call(emulator, "PATCH", f"/v2/{QUEUE}?updateMask=rateLimits.maxConcurrentDispatches"
                                                 "&updateMask=retry_config.max_attempts", {
        "rateLimits": {"maxConcurrentDispatches": 9}, "retryConfig": {"maxAttempts": 50}})
    assert status == 200, queue
    assert (queue["rateLimits"]["maxConcurrentDispatches"], queue["retryConfig"]["maxAttempts"]) == (9, 50)


def test_errors_have_googles_shape(emulator: EmulatorServer) -> None:
    status, body = json_call(emulator, "POST", f"/v2/{PARENT}/queues", {"name": "not-a-queue-name"})
    assert status == 400
    assert body == {"error": {
        "code": 400, "status": "INVALID_ARGUMENT",
        "message": 'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".',
        "details": [{"@type": "type.googleapis.com/google.rpc.Help", "links": [{
            "description": "Definition of queue name",
            "url": "https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#Queue.FIELDS.name",
        }]}]}}
    status, body = json_call(emulator, "GET", f"/v2/{QUEUE}")
    assert (status, set(body["error"])) == (404, {"code", "message", "status"}), "no details: none listed"


# The HTTP status for each gRPC code, per google/rpc/code.proto's "HTTP Mapping" lines.
CODE_TO_HTTP = {"CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504,
                "NOT_FOUND": 404, "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401,
                "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400, "ABORTED": 409, "OUT_OF_RANGE": 400,
                "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503, "DATA_LOSS": 500}


def test_each_grpc_code_has_its_http_status(emulator: EmulatorServer) -> None:
    assert set(CODE_TO_HTTP) == {code.name for code in grpc.StatusCode} - {"OK"}
    for code, http_status in CODE_TO_HTTP.items():  # injected faults answer with any code, on both transports
        call(emulator, "PUT", "/v1/faults", json.dumps({"errorRate": 1, "errorCode": code}).encode())
        status, body = json_call(emulator, "GET", f"/v2/{PARENT}/queues")
        assert (status, body["error"]["code"], body["error"]["status"]) == (http_status, http_status, code)


@pytest.mark.parametrize(("path", "body", "message", "field"), [
    (f"/v2/{QUEUE}/tasks", {"task": {}, "priority": 1},
     'Invalid JSON payload received. Unknown name "priority": Cannot find field.', None),
    (f"/v2/{QUEUE}/tasks", {"task": {"httpRequest": {"url": "https://example.com/", "method": "POST"}}},
     "Invalid JSON payload received. Unknown name \"method\" at 'task.http_request': Cannot find field.",
     "task.http_request"),
    (f"/v2/{PARENT}/queues", {"name": QUEUE, "rateLimits": {"maxDispatchesPerSecond": "fast"}},
     "Invalid value at 'queue.rate_limits.max_dispatches_per_second' (TYPE_DOUBLE), \"fast\"",
     "queue.rate_limits.max_dispatches_per_second"),
    (f"/v2/{QUEUE}/tasks", {"task": {"httpRequest": {"httpMethod": "PUSH"}}},
     "Invalid value at 'task.http_request.http_method' (type.googleapis.com/google.cloud.tasks.v2.HttpMethod), "
     "\"PUSH\"", "task.http_request.http_method"),
])
def test_json_that_fits_no_field_is_refused_naming_it(shared_emulator: EmulatorServer, path: str, body: Any,
                                                      message: str, field: str | None) -> None:
    status, answer = json_call(shared_emulator, "POST", path, body)
    violation = {"description": message, **({"field": field} if field else {})}
    assert (status, answer) == (400, {"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT",
                                                "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                                                             "fieldViolations": [violation]}]}})


@pytest.mark.parametrize(("method", "path", "body", "start"), [
    ("POST", f"/v2/{PARENT}/queues", b'{"name": ', "Invalid JSON payload received. "),
    ("POST", f"/v2/{PARENT}/queues", b"[]", "Invalid JSON payload received. Expected an object."),
    ("GET", f"/v2/{PARENT}/queues?pageSise=3", None,
     "Invalid JSON payload received. Unknown name \"pageSise\": Cannot bind query parameter."),
    ("POST", f"/v2/{QUEUE}:pause?name=x", b"{}", "Invalid JSON payload received. Unknown name \"name\""),
    # json.loads kept the last of a field named twice; protobuf's JSON parser refuses it.
    ("POST", f"/v2/{PARENT}/queues", b'{"name": "a", "name": "b"}', 'Invalid JSON payload received. Duplicate field '
                                                                    '"name"'),
    ("POST", f"/v2/{QUEUE}/tasks", b'{"task": {"httpRequest": {"url": "https://a.example/", "url": "x"}}}',
     'Invalid JSON payload received. Duplicate field "url"'),
])
def test_malformed_requests_are_invalid_arguments(shared_emulator: EmulatorServer, method: str, path: str,
                                                  body: bytes | None, start: str) -> None:
    status, _, text = call(shared_emulator, method, path, body)
    answer = json.loads(text)["error"]
    assert (status, answer["status"]) == (400, "INVALID_ARGUMENT") and answer["message"].startswith(start)


def test_a_domain_scoped_project_id_may_hold_an_unescaped_colon(shared_emulator: EmulatorServer) -> None:
    """PROJECT_ID may be "example.com:my-project" (§4.1) and ":" is legal in a path; only the last segment's ":"
    starts a custom verb. Sent unescaped it was the HTML 404; escaped (%3A) it worked."""
    parent = "projects/example.com:my-project/locations/us-central1"
    status, created = json_call(shared_emulator, "POST", f"/v2/{parent}/queues", {"name": f"{parent}/queues/dq"})
    assert status == 200 and created["name"] == f"{parent}/queues/dq"
    assert json_call(shared_emulator, "GET", f"/v2/{parent}/queues/dq")[0] == 200
    status, paused = json_call(shared_emulator, "POST", f"/v2/{parent}/queues/dq:pause", {})
    assert (status, paused["state"]) == (200, "PAUSED")


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", f"/v2/{QUEUE}"), ("POST", f"/v2/{QUEUE}"), ("GET", f"/v2/{QUEUE}:pause"),
    ("POST", f"/v2/{QUEUE}:stop"), ("GET", "/v2/projects/p/queues"), ("GET", f"/v2/{QUEUE}/tasks/t/extra"),
])
def test_paths_and_verbs_no_method_has_get_the_front_ends_404(shared_emulator: EmulatorServer, method: str,
                                                              path: str) -> None:
    status, content_type, text = call(shared_emulator, method, path, b"{}" if method in ("POST", "PUT") else None)
    assert (status, content_type.split(";")[0]) == (404, "text/html")
    assert f"The requested URL <code>{path}</code> was not found on this server." in text
