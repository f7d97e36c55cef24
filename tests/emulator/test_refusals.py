"""What can never be delivered is refused at the API, with INVALID_ARGUMENT naming what is wrong (issue 11).

Recorded messages are matched exactly in test_conformance.py; the refusals here are the emulator's own
where the real service's answer is not recorded (README, known divergences). Each class is checked with
named examples and then with hypothesis-generated requests at the API boundary: every answer is OK or
INVALID_ARGUMENT (never UNKNOWN), and what is accepted is stored, listed and delivered intact.
"""

from __future__ import annotations

import base64
import http.server
import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.server import EmulatorConfig, EmulatorServer
from tasklane.emulator.testing import start_emulator
from tasklane.emulator.validation import MAX_TASK_BYTES, RESERVED_HEADER, Task, new_task_id, normalise_new_task
from tests.emulator.conftest import PARENT, client_for, wait_for

TARGET = "http://127.0.0.1:9/never-called"
ACCEPTED_OR_REFUSED = (api_exceptions.InvalidArgument,)


class Recorder:
    """A loopback target that records the headers and path of every request (module-wide)."""

    def __init__(self) -> None:
        self.received: dict[str, list[tuple[str, str]]] = {}
        self.lock = threading.Lock()
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                if length:
                    self.rfile.read(length)
                with recorder.lock:
                    recorder.received[self.headers.get("X-CloudTasks-TaskName", "")] = (
                        [("path", self.path), *self.headers.items()])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[EmulatorServer, tasks_v2.CloudTasksClient, Recorder]]:
    """One emulator and target for the module: hypothesis runs many examples against them."""
    server = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, clock=ManualClock(),
                                           enforce_rate_limits=False))
    recorder = Recorder()
    client = client_for(server)
    client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/paused"})
    client.pause_queue(name=f"{PARENT}/queues/paused")
    client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/live"})
    yield server, client, recorder
    recorder.stop()
    server.stop_thread()


@pytest.fixture
def client(shared: tuple[EmulatorServer, tasks_v2.CloudTasksClient, Recorder]) -> tasks_v2.CloudTasksClient:
    return shared[1]


PAUSED = f"{PARENT}/queues/paused"
LIVE = f"{PARENT}/queues/live"


def create(client: tasks_v2.CloudTasksClient, task: dict[str, Any], parent: str = PAUSED) -> Any:
    return client.create_task(parent=parent, task=task, retry=None)


# -- Names: a full match, so a trailing newline is not "the end" ------------------------------------

@pytest.mark.parametrize("task_id", ["ok\n", "ok\r", "ok\n\n", "\nok", "ok ", "ok\t", "ok\x00", "٣"])
def test_a_task_id_with_a_newline_or_other_stray_character_is_refused(client: tasks_v2.CloudTasksClient,
                                                                     task_id: str) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="can contain only letters"):
        create(client, {"name": f"{PAUSED}/tasks/{task_id}", "http_request": {"url": TARGET}})


@pytest.mark.parametrize("queue_id", ["q\n", "q\r\n", "q ", "q\x00"])
def test_a_queue_id_with_a_trailing_newline_is_refused_by_every_queue_rpc(client: tasks_v2.CloudTasksClient,
                                                                         queue_id: str) -> None:
    name = f"{PARENT}/queues/{queue_id}"
    with pytest.raises(api_exceptions.InvalidArgument, match="Queue name must be formatted"):
        client.create_queue(parent=PARENT, queue={"name": name}, retry=None)
    with pytest.raises(api_exceptions.InvalidArgument, match="Queue name must be formatted"):
        client.update_queue(queue={"name": name}, retry=None)
    with pytest.raises(api_exceptions.InvalidArgument, match="Queue name must be formatted"):
        client.create_task(parent=name, task={"http_request": {"url": TARGET}}, retry=None)
    with pytest.raises(api_exceptions.PermissionDenied):
        client.list_queues(parent=PARENT + "\n", retry=None)


# -- Headers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["", "X Y", " X", "X:Y", "X(Y)", "X\tY", "X\nY", "Ünicode", "X,Y", "X/Y", "{X}"])
def test_a_header_name_that_is_not_an_http_token_is_refused(client: tasks_v2.CloudTasksClient, name: str) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="not a valid header name"):
        create(client, {"http_request": {"url": TARGET, "headers": {name: "v"}}})
    with pytest.raises(api_exceptions.InvalidArgument, match="not a valid header name"):
        create(client, {"app_engine_http_request": {"relative_uri": "/x", "headers": {name: "v"}}})


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b", "\x7f", "a\x1bb", "\x0b"])
def test_a_header_value_that_could_end_the_header_line_is_refused(client: tasks_v2.CloudTasksClient,
                                                                 value: str) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="control character"):
        create(client, {"http_request": {"url": TARGET, "headers": {"X-Fine": value}}})
    with pytest.raises(api_exceptions.InvalidArgument, match="control character"):
        create(client, {"app_engine_http_request": {"relative_uri": "/x", "headers": {"X-Fine": value}}})


@pytest.mark.parametrize("name, value, message", [("X Y", "v", "not a valid header name"),
                                                  ("", "v", "not a valid header name"),
                                                  ("X-Fine", "a\r\nX-Injected: 1", "control character")])
def test_queue_header_overrides_follow_the_same_rules(client: tasks_v2.CloudTasksClient, name: str, value: str,
                                                      message: str) -> None:
    queue = {"name": f"{PARENT}/queues/overrides-{abs(hash((name, value))) % 10**8}",
             "http_target": {"header_overrides": [{"header": {"key": name, "value": value}}]}}
    with pytest.raises(api_exceptions.InvalidArgument, match=f"HttpTarget.headerOverrides: .*{message}"):
        client.create_queue(parent=PARENT, queue=queue, retry=None)
    with pytest.raises(api_exceptions.InvalidArgument, match=message):
        client.update_queue(queue={**queue, "name": PAUSED}, retry=None)


def test_framing_and_hop_by_hop_headers_are_dropped_and_the_request_is_well_formed(
        shared: tuple[EmulatorServer, tasks_v2.CloudTasksClient, Recorder]) -> None:
    _, client, recorder = shared
    framing = {"Transfer-Encoding": "chunked", "Content-Length": "5", "Connection": "close, X-Keep",
               "Keep-Alive": "timeout=5", "Host": "evil.example", "TE": "trailers", "Trailer": "X-T",
               "Upgrade": "websocket", "Proxy-Connection": "keep-alive", "Expect": "100-continue"}
    task = create(client, {"http_request": {"url": f"{recorder.url}/framed", "body": b"0123456789",
                                            "headers": {**framing, "X-Keep": "kept"}}}, parent=LIVE)
    stored = {key.lower() for key in task.http_request.headers}
    assert stored == {"x-keep", "user-agent"}, "framing headers are not part of the stored task"
    task_id = task.name.rsplit("/", 1)[1]
    received = dict((k.lower(), v) for k, v in wait_for(lambda: recorder.received.get(task_id)))
    assert received["content-length"] == "10", "the body's own length, not the task's"
    assert "transfer-encoding" not in received and received["host"] == recorder.url.removeprefix("http://")
    assert received["x-keep"] == "kept"
    assert not {"te", "trailer", "upgrade", "keep-alive", "proxy-connection", "expect"} & set(received)


# -- URLs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "says"), [
    ("http:///path", "must name a host"), ("http://", "must name a host"), ("https://:8080/x", "must name a host"),
    ("http://?q=1", "must name a host"), ("http://user:secret@example.com/", "must not carry credentials"),
    ("https://user@example.com/", "must not carry credentials"), ("http://:@example.com/", "credentials"),
    ("http://example.com:99999/", "not a valid URL"), ("http://example.com:port/", "not a valid URL"),
    ("http://[::1/", "not a valid URL"), ("http://example.com/a\r\nX-Injected: 1", "control characters"),
    ("http://exa\nmple.com/", "control characters"), ("http://example.com/\x00", "control characters"),
    ("http://example.com:0/", "port"),
])
def test_an_undeliverable_url_is_refused(client: tasks_v2.CloudTasksClient, url: str, says: str) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match=says):
        create(client, {"http_request": {"url": url}})


@pytest.mark.parametrize("url", ["http://example.com/%zz", "http://[::1]:8080/x", "https://EXAMPLE.com",
                                 "https://example.com/a?b=c#d", "http://10.0.0.1:1/"])
def test_a_deliverable_url_is_accepted(client: tasks_v2.CloudTasksClient, url: str) -> None:
    assert create(client, {"http_request": {"url": url}}).http_request.url == url


# -- Out-of-range values --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["http_request", "app_engine_http_request"])
@pytest.mark.parametrize("method", [8, 99, -1])
def test_an_http_method_that_is_not_an_httpmethod_is_refused(client: tasks_v2.CloudTasksClient, kind: str,
                                                             method: int) -> None:
    """protobuf keeps an enum number it does not know; accepted, such a task could never be sent."""
    task = tasks_v2.Task.pb()()
    if kind == "http_request":
        task.http_request.url = TARGET
    else:
        task.app_engine_http_request.relative_uri = "/work"
    getattr(task, kind).http_method = method
    with pytest.raises(api_exceptions.InvalidArgument, match=rf"httpMethod {method} is not an HttpMethod; "
                                                             r"allowed: POST, GET, HEAD, PUT, DELETE, PATCH, OPTIONS"):
        create(client, tasks_v2.Task.wrap(task))


@pytest.mark.parametrize(("relative_uri", "refusal"), [
    ("@evil.example/x", "must begin with '/'"), ("x", "must begin with '/'"),
    ("http://evil.example/x", "must begin with '/'"), ("/" + "a" * 2083, "must be at most 2083 characters")])
def test_an_app_engine_relative_uri_must_be_a_path(client: tasks_v2.CloudTasksClient, relative_uri: str,
                                                   refusal: str) -> None:
    """Sent after the App Engine URL: "@evil.example/x" made it http://127.0.0.1:PORT@evil.example/x, another host."""
    with pytest.raises(api_exceptions.InvalidArgument, match=f"AppEngineHttpRequest.relativeUri {refusal}"):
        create(client, {"app_engine_http_request": {"relative_uri": relative_uri}})


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "PATCH", "OPTIONS"])
def test_an_app_engine_body_needs_post_or_put(client: tasks_v2.CloudTasksClient, method: str) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="body can only be set for POST or PUT"):
        create(client, {"app_engine_http_request": {"relative_uri": "/work", "http_method": method, "body": b"x"}})
    for allowed in ("POST", "PUT"):
        create(client, {"app_engine_http_request": {"relative_uri": "/work", "http_method": allowed, "body": b"x"}})
    create(client, {"app_engine_http_request": {"relative_uri": "", "http_method": method}})  # "/" when empty


@pytest.mark.parametrize("tail", ["a" * 6000 + " ", "é" * 3000 + " ", "😀" * 20_000])
def test_an_error_echoing_a_huge_name_still_arrives_as_its_own_code(client: tasks_v2.CloudTasksClient,
                                                                    tail: str) -> None:
    """The message is cut, so gRPC's trailers stay under the client's metadata limit: the code is INVALID_ARGUMENT
    every time, not RESOURCE_EXHAUSTED or a bare ValueError from the client."""
    for _ in range(5):
        with pytest.raises(api_exceptions.InvalidArgument) as refused:
            create(client, {"name": f"{PAUSED}/tasks/{tail}", "http_request": {"url": TARGET}})
        assert len(refused.value.message.encode()) <= 1024 and refused.value.message.endswith("…")


@pytest.mark.parametrize("schedule", [
    timestamp_pb2.Timestamp(seconds=253_402_300_800), timestamp_pb2.Timestamp(seconds=2**62),
    timestamp_pb2.Timestamp(seconds=-(2**62)), timestamp_pb2.Timestamp(seconds=-62_135_596_801),
    timestamp_pb2.Timestamp(seconds=1, nanos=-1), timestamp_pb2.Timestamp(seconds=1, nanos=1_000_000_000)])
def test_a_schedule_time_beyond_the_timestamp_range_is_invalid_not_unknown(client: tasks_v2.CloudTasksClient,
                                                                          schedule: Any) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="Task.scheduleTime must be between"):
        create(client, {"schedule_time": schedule, "http_request": {"url": TARGET}})


@pytest.mark.parametrize("deadline", [duration_pb2.Duration(seconds=2**62), duration_pb2.Duration(seconds=-(2**62)),
                                      duration_pb2.Duration(seconds=20, nanos=-5)])
def test_an_overflowing_deadline_is_invalid(client: tasks_v2.CloudTasksClient, deadline: Any) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="Task.dispatchDeadline"):
        create(client, {"dispatch_deadline": deadline, "http_request": {"url": TARGET}})


@pytest.mark.parametrize(("queue", "says"), [
    ({"rate_limits": {"max_dispatches_per_second": math.nan}}, "maxDispatchesPerSecond must be a number"),
    ({"rate_limits": {"max_dispatches_per_second": math.inf}}, "less than or equal to 500"),
    ({"rate_limits": {"max_dispatches_per_second": -math.inf}}, "cannot be negative"),
    ({"stackdriver_logging_config": {"sampling_ratio": 1.5}}, "samplingRatio must be between 0.0 and 1.0"),
    ({"stackdriver_logging_config": {"sampling_ratio": -0.01}}, "samplingRatio"),
    ({"stackdriver_logging_config": {"sampling_ratio": math.nan}}, "samplingRatio"),
    ({"stackdriver_logging_config": {"sampling_ratio": math.inf}}, "samplingRatio"),
    ({"retry_config": {"min_backoff": duration_pb2.Duration(seconds=2**62)}}, "RetryConfig.minBackoff"),
    ({"retry_config": {"max_backoff": duration_pb2.Duration(seconds=2**62)}}, "RetryConfig.maxBackoff"),
    ({"retry_config": {"max_retry_duration": duration_pb2.Duration(seconds=-(2**62))}}, "maxRetryDuration"),
])
def test_out_of_range_queue_settings_are_invalid_not_unknown(client: tasks_v2.CloudTasksClient,
                                                            queue: dict[str, Any], says: str) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match=says):
        client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/out-of-range", **queue}, retry=None)
    with pytest.raises(api_exceptions.InvalidArgument, match=says):
        client.update_queue(queue={"name": LIVE, **queue}, retry=None)


@pytest.mark.parametrize("path", ["", "rate_limits.", ".rate_limits", "rate_limits.nope", "nope", "state",
                                  "purge_time", "rate_limits..max_burst_size", "retry_config.max_attempts.x"])
def test_an_unknown_or_empty_update_mask_path_is_invalid(client: tasks_v2.CloudTasksClient, path: str) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="Invalid update_mask path"):
        client.update_queue(queue={"name": LIVE}, update_mask=field_mask_pb2.FieldMask(paths=[path]), retry=None)


def test_a_repeated_field_in_the_update_mask_is_replaced(client: tasks_v2.CloudTasksClient) -> None:
    name = f"{PARENT}/queues/overrides"
    client.create_queue(parent=PARENT, queue={"name": name})
    header = {"header": {"key": "X-Queue", "value": "1"}}
    updated = client.update_queue(queue={"name": name, "http_target": {"header_overrides": [header]}},
                                  update_mask=field_mask_pb2.FieldMask(paths=["http_target.header_overrides"]))
    assert [h.header.key for h in updated.http_target.header_overrides] == ["X-Queue"]


# -- Paging ---------------------------------------------------------------------------------------

def test_a_negative_page_size_is_invalid(client: tasks_v2.CloudTasksClient) -> None:
    with pytest.raises(api_exceptions.InvalidArgument, match="page_size must not be negative"):
        client.list_tasks(request={"parent": PAUSED, "page_size": -5}, retry=None)
    with pytest.raises(api_exceptions.InvalidArgument, match="page_size must not be negative"):
        client.list_queues(request={"parent": PARENT, "page_size": -1}, retry=None)


def test_a_page_token_that_no_listing_gave_is_invalid(client: tasks_v2.CloudTasksClient) -> None:
    queue = f"{PARENT}/queues/tokens"
    client.create_queue(parent=PARENT, queue={"name": queue})
    client.pause_queue(name=queue)
    for _ in range(3):
        create(client, {"http_request": {"url": TARGET}}, parent=queue)
    queues_token = client.list_queues(request={"parent": PARENT, "page_size": 1}).next_page_token
    tasks_token = client.list_tasks(request={"parent": queue, "page_size": 1}).next_page_token
    assert queues_token and tasks_token
    for token in ("garbage", "!!!!", "====", base64.urlsafe_b64encode(b"\xff\xfe").decode(), "é",
                  base64.urlsafe_b64encode(f"{PAUSED}/tasks/a".encode()).decode(), queues_token):
        with pytest.raises(api_exceptions.InvalidArgument, match="Invalid page_token"):
            client.list_tasks(request={"parent": queue, "page_token": token}, retry=None)
    with pytest.raises(api_exceptions.InvalidArgument, match="Invalid page_token"):
        client.list_tasks(request={"parent": PAUSED, "page_token": tasks_token}, retry=None)
    with pytest.raises(api_exceptions.InvalidArgument, match="Invalid page_token"):
        client.list_queues(request={"parent": PARENT, "page_token": tasks_token}, retry=None)
    with pytest.raises(api_exceptions.InvalidArgument, match="Invalid page_token"):
        client.list_queues(request={"parent": PARENT, "page_token": queues_token, "filter": "state: PAUSED"},
                           retry=None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 25), sizes=st.lists(st.integers(0, 30), min_size=1, max_size=40))
def test_paging_returns_every_task_exactly_once_whatever_the_page_sizes(
        client: tasks_v2.CloudTasksClient, count: int, sizes: list[int]) -> None:
    queue = f"{PARENT}/queues/paging-{new_task_id()[:12]}"
    client.create_queue(parent=PARENT, queue={"name": queue})
    client.pause_queue(name=queue)
    created = {create(client, {"http_request": {"url": TARGET}}, parent=queue).name for _ in range(count)}
    seen: list[str] = []
    token = ""
    for round_number in range(count + 2):
        page = client.list_tasks(request={"parent": queue, "page_size": sizes[round_number % len(sizes)],
                                          "page_token": token})
        seen += [task.name for task in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert not token, "paging ended"
    assert sorted(seen) == sorted(created) and len(seen) == len(set(seen))
    client.delete_queue(name=queue)


# -- The 1 MiB limit counts a generated name ------------------------------------------------------

def _largest_body_that_fits(name: str) -> int:
    """The body size at which a task named `name` is exactly at the limit, by the stored encoding."""
    probe = Task(name=name)
    probe.http_request.url = TARGET
    normalise_new_task(probe, 1_800_000_000.0)
    base = probe.ByteSize()
    body = MAX_TASK_BYTES - base
    while True:  # the body's length prefix grows with it
        probe.http_request.body = b"x" * body
        if probe.ByteSize() <= MAX_TASK_BYTES:
            return body
        body -= 1


def test_the_one_mebibyte_limit_counts_the_generated_name(client: tasks_v2.CloudTasksClient) -> None:
    fits = _largest_body_that_fits(f"{PAUSED}/tasks/{new_task_id()}")
    unnamed_without_name = _largest_body_that_fits("")
    assert unnamed_without_name > fits, "the generated name takes room"
    with pytest.raises(api_exceptions.InvalidArgument, match="maximum is 1048569 bytes"):
        create(client, {"http_request": {"url": TARGET, "body": b"x" * (fits + 1)}})
    task = create(client, {"http_request": {"url": TARGET, "body": b"x" * fits}})
    assert tasks_v2.Task.pb(client.get_task(request={"name": task.name, "response_view": "FULL"})).ByteSize() \
        <= MAX_TASK_BYTES + 2  # + the view field the response carries


# -- Hypothesis at the boundary --------------------------------------------------------------------

header_names = st.one_of(st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True), st.text(max_size=12))
header_values = st.one_of(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40),
                          st.text(max_size=20))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_id=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_-]{1,40}\n?", fullmatch=True), st.text(max_size=30)),
       headers=st.dictionaries(header_names, header_values, max_size=5),
       url=st.one_of(st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["http://", "https://", "ftp://",
                                                                                    ""]), st.text(max_size=40)),
                     st.from_regex(r"https?://[a-z0-9.:@\[\]]{0,20}(/[ -~]{0,20})?", fullmatch=True)),
       schedule=st.builds(timestamp_pb2.Timestamp, seconds=st.integers(-(2**63), 2**63 - 1),
                          nanos=st.integers(-(2**31), 2**31 - 1)),
       deadline=st.one_of(st.none(), st.builds(duration_pb2.Duration, seconds=st.integers(-(2**63), 2**63 - 1))),
       body=st.binary(max_size=64))
def test_create_task_answers_ok_or_invalid_argument_and_keeps_what_it_accepts(
        client: tasks_v2.CloudTasksClient, task_id: str | None, headers: dict[str, str], url: str, schedule: Any,
        deadline: Any, body: bytes) -> None:
    task: dict[str, Any] = {"http_request": {"url": url, "headers": headers, "body": body},
                            "schedule_time": schedule}
    if task_id is not None:
        task["name"] = f"{PAUSED}/tasks/{task_id}"
    if deadline is not None:
        task["dispatch_deadline"] = deadline
    try:
        created = create(client, task)
    except (api_exceptions.InvalidArgument, api_exceptions.AlreadyExists):
        return
    stored = client.get_task(request={"name": created.name, "response_view": "FULL"})
    assert stored.http_request.url == url and stored.http_request.body == body
    kept = {k: v for k, v in headers.items() if not RESERVED_HEADER.fullmatch(k)}
    assert {k: v for k, v in stored.http_request.headers.items() if k != "User-Agent"} == kept
    assert "\n" not in created.name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(header_names, header_values, max_size=4),
       path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters="#?%"), max_size=20))
@example(headers={"A": "0 "}, path="")  # a trailing space, which the receiving http.server keeps
def test_every_task_accepted_is_delivered_with_its_headers(
        shared: tuple[EmulatorServer, tasks_v2.CloudTasksClient, Recorder], headers: dict[str, str],
        path: str) -> None:
    _, client, recorder = shared
    try:
        created = create(client, {"http_request": {"url": f"{recorder.url}/{path}", "headers": headers}},
                         parent=LIVE)
    except api_exceptions.InvalidArgument:
        return
    received = wait_for(lambda: recorder.received.get(created.name.rsplit("/", 1)[1]),
                        message="the accepted task's delivery")
    got = {key.lower(): value for key, value in received}
    for key, value in created.http_request.headers.items():
        if key.lower() == "user-agent":
            continue
        # http.server reads header bytes as Latin-1. Whitespace around a value is not part of it (RFC 9110 §5.5), and
        # http.server strips only the leading part: "0 " arrived as "0 ".
        assert got[key.lower()].encode("latin-1").strip(b" \t") == value.strip(" \t").encode()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queue_id=st.one_of(st.from_regex(r"[A-Za-z0-9-]{1,100}\n?", fullmatch=True), st.text(max_size=10)),
       rate=st.floats(allow_nan=True, allow_infinity=True), concurrent=st.integers(-(2**31), 2**31 - 1),
       attempts=st.integers(-(2**31), 2**31 - 1), doublings=st.integers(-(2**31), 2**31 - 1),
       backoff=st.builds(duration_pb2.Duration, seconds=st.integers(-(2**63), 2**63 - 1),
                         nanos=st.integers(-999_999_999, 999_999_999)),
       ratio=st.floats(allow_nan=True, allow_infinity=True),
       mask=st.lists(st.one_of(st.sampled_from(["rate_limits", "retry_config.max_attempts",
                                                "rate_limits.max_dispatches_per_second", "stackdriver_logging_config"]),
                               st.text(max_size=25)), max_size=3))
def test_create_and_update_queue_answer_ok_or_invalid_argument(
        client: tasks_v2.CloudTasksClient, queue_id: str, rate: float, concurrent: int, attempts: int, doublings: int,
        backoff: Any, ratio: float, mask: list[str]) -> None:
    fields: dict[str, Any] = {
        "rate_limits": {"max_dispatches_per_second": rate, "max_concurrent_dispatches": concurrent},
        "retry_config": {"max_attempts": attempts, "max_doublings": doublings, "max_backoff": backoff},
        "stackdriver_logging_config": {"sampling_ratio": ratio}}
    try:
        queue = client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/{queue_id}", **fields},
                                    retry=None)
    except (api_exceptions.InvalidArgument, api_exceptions.AlreadyExists, api_exceptions.FailedPrecondition):
        pass
    else:
        assert 0 < queue.rate_limits.max_dispatches_per_second <= 500
        assert 0.0 <= queue.stackdriver_logging_config.sampling_ratio <= 1.0
        assert client.get_queue(name=queue.name) == queue
    try:
        updated = client.update_queue(queue={"name": LIVE, **fields}, update_mask=field_mask_pb2.FieldMask(paths=mask),
                                      retry=None)
    except api_exceptions.InvalidArgument:
        return
    assert 0 < updated.rate_limits.max_dispatches_per_second <= 500
    assert len(list(client.list_queues(parent=PARENT))) >= 2, "every queue can still be listed"
