"""Fixtures for the emulator: a running emulator on a manual clock, clients, and a scripted target."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.server import EmulatorConfig, EmulatorServer
from tasklane.emulator.testing import start_emulator
from tests.helpers import wait_for

__all__ = ["wait_for"]

PARENT = "projects/tasklane-test/locations/us-central1"


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    at: float

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


@dataclass
class Target:
    """A loopback HTTP server answering from a script: per path, a list of answers used in turn (the
    last one repeats). An answer is a status, ("hang", seconds), ("reset",) or (status, {headers})."""

    url: str
    received: list[Received] = field(default_factory=list)
    script: dict[str, list[Any]] = field(default_factory=dict)
    in_flight: int = 0
    peak_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str, *answers: Any) -> str:
        self.script[path] = list(answers)
        return self.url + path

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@pytest.fixture
def target() -> Iterator[Target]:
    state: dict[str, Target] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except (ConnectionError, OSError):
                self.close_connection = True

        def _serve(self) -> None:
            me = state["target"]
            length = int(self.headers.get("Content-Length", 0) or 0)
            body = self.rfile.read(length) if length else b""
            with me.lock:
                me.received.append(Received(self.command, self.path, list(self.headers.items()), body,
                                            time.monotonic()))
                answers = me.script.get(self.path, [200])
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                me.in_flight += 1
                me.peak_in_flight = max(me.peak_in_flight, me.in_flight)
            try:
                if isinstance(answer, tuple) and answer[0] == "hang":
                    time.sleep(answer[1])
                    answer = 200
                if isinstance(answer, tuple) and answer[0] == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                    self.close_connection = True
                    return
                status, headers = (answer if isinstance(answer, tuple) else (answer, {}))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            finally:
                with me.lock:
                    me.in_flight -= 1

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["target"] = Target(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["target"]
    server.shutdown()
    server.server_close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_emulator(clock: ManualClock) -> Iterator[Callable[..., EmulatorServer]]:
    started: list[EmulatorServer] = []

    def make(**options: Any) -> EmulatorServer:
        options.setdefault("clock", clock)
        options.setdefault("grpc_port", 0)
        options.setdefault("http_port", 0)
        server = start_emulator(EmulatorConfig(**options))
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop_thread()


@pytest.fixture
def emulator(make_emulator: Callable[..., EmulatorServer]) -> EmulatorServer:
    return make_emulator()


def client_for(server: EmulatorServer) -> tasks_v2.CloudTasksClient:
    return tasks_v2.CloudTasksClient(
        transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(server.grpc_target)))


def rest_client_for(server: EmulatorServer) -> tasks_v2.CloudTasksClient:
    """The official client over its REST transport, as the issue's users configure it."""
    return tasks_v2.CloudTasksClient(transport="rest", client_options={"api_endpoint": server.http_url},
                                     credentials=AnonymousCredentials())


@pytest.fixture
def client(emulator: EmulatorServer) -> tasks_v2.CloudTasksClient:
    return client_for(emulator)


def task_gone(client: tasks_v2.CloudTasksClient, name: str) -> bool:
    """Whether the task no longer exists (done, dropped or deleted)."""
    try:
        client.get_task(name=name)
    except api_exceptions.NotFound:
        return True
    return False


def make_queue(client: tasks_v2.CloudTasksClient, queue_id: str = "q", **fields: Any) -> Any:
    return client.create_queue(parent=PARENT, queue={"name": f"{PARENT}/queues/{queue_id}", **fields})
