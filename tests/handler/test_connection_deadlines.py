"""Idle and slow connections are closed after a bounded time: the real server process, real sockets.

Each test starts `python -m handler` on a free 127.0.0.1 port with short timeouts and plays the client
by hand: one that never speaks, one that stops after an answer, one that sends its headers a byte at a
time (slowloris), one that sends its body too slowly. A task whose action takes longer than the read
timeout must still get its answer: only reading is bounded.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import uvicorn

from handler.orders import OrderRequest
from tasklane.core import environment
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.handler.actions import ActionLog, ActionRegistry
from tasklane.handler.app import create_app
from tasklane.handler.config import ConfigError, HandlerConfig
from tasklane.handler.server import protocol_with_deadlines
from tests.handler.conftest import RecordedLog, RecordingSink, make_config
from tests.helpers import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
IDLE, READ = 0.6, 1.0
ORDER = b'{"orderId": "o-1", "action": "update_inventory"}'


class Server:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port

    def connect(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", environment.IDLE_TIMEOUT: str(IDLE),
           environment.REQUEST_READ_TIMEOUT: str(READ), environment.DEMO_ACTIONS: "true"}
    process = subprocess.Popen([sys.executable, "-m", "handler"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        except httpx2.TransportError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the handler did not start listening"
            time.sleep(0.05)
    yield Server(process, port)
    process.terminate()
    process.wait(timeout=10)


def seconds_until_closed(connection: socket.socket, limit: float = 10.0) -> tuple[float, bytes]:
    """Read until the server closes the connection; how long that took and what it sent."""
    started = time.monotonic()
    connection.settimeout(limit)
    received = b""
    try:
        while chunk := connection.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, received


def request(path: str = "/process-order", body: bytes = ORDER) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: handler\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_a_connection_that_never_sends_a_request_is_closed_after_the_idle_timeout(server: Server) -> None:
    with server.connect() as connection:
        took, received = seconds_until_closed(connection)
    assert IDLE * 0.8 <= took <= IDLE + 2, took
    assert received == b""


def test_a_connection_idle_after_an_answer_is_closed_after_the_idle_timeout(server: Server) -> None:
    with server.connect() as connection:
        connection.sendall(request())
        answer = b""
        while not answer.endswith(b'{"status":"done"}'):
            answer += connection.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        took, _ = seconds_until_closed(connection)
    assert took <= IDLE + 2, took


@pytest.mark.parametrize("gap", [0.05, 0.3])
def test_a_slowloris_sending_headers_byte_by_byte_is_cut_off_within_the_read_timeout(
        server: Server, gap: float) -> None:
    """Each byte arrives well inside the idle timeout, so only a deadline on the whole request stops it."""
    headers = b"POST /process-order HTTP/1.1\r\nHost: handler\r\n" + b"X-Padding: " + b"a" * 10_000
    started = time.monotonic()
    with server.connect() as connection:
        sent = 0
        try:
            for byte in headers:
                connection.send(bytes([byte]))
                sent += 1
                time.sleep(gap)
                if time.monotonic() - started > READ + 5:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        _, received = seconds_until_closed(connection)
    took = time.monotonic() - started
    assert took <= READ + 3, f"still open after {took:.1f} s and {sent} bytes"
    assert sent < len(headers)
    assert received == b"" or received.startswith(b"HTTP/1.1 408"), received


def test_a_body_sent_too_slowly_is_cut_off_within_the_read_timeout(server: Server) -> None:
    started = time.monotonic()
    with server.connect() as connection:
        connection.sendall(request()[: -len(ORDER)])  # headers, promising a body
        try:
            for byte in ORDER:
                connection.send(bytes([byte]))
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass
        _, received = seconds_until_closed(connection)
    assert time.monotonic() - started <= READ + 3
    assert b"200" not in received.split(b"\r\n", 1)[0], "the truncated task was not run"


def test_a_request_that_stops_midway_is_cut_off_within_the_read_timeout(server: Server) -> None:
    with server.connect() as connection:
        connection.sendall(b"POST /process-order HTTP/1.1\r\nHost: hand")
        took, received = seconds_until_closed(connection)
    assert took <= READ + 2, took
    assert received.startswith(b"HTTP/1.1 408"), received


def test_an_answer_that_takes_longer_than_the_read_timeout_is_still_delivered() -> None:
    """Only reading is bounded: a slow action is the dispatch deadline's business. (An in-process uvicorn
    with the same protocol, because the served app needs an action that takes its time.)"""
    registry = ActionRegistry()

    @registry.register("slow")
    async def slow(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        await asyncio.sleep(READ * 2)

    app = create_app(make_config(), actions=registry, dead_letters=RecordingSink(),
                     log=StructuredLog(writer=RecordedLog().write))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           http=protocol_with_deadlines(READ), timeout_keep_alive=1))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, message="the server to start")
        started = time.monotonic()
        response = httpx2.post(f"http://127.0.0.1:{port}/process-order", timeout=30,
                               content=b'{"orderId": "o", "action": "slow"}')
        assert response.status_code == 200 and response.json() == {"status": "done"}
        assert time.monotonic() - started >= READ * 2
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_requests_on_time_keep_their_connection(server: Server) -> None:
    with httpx2.Client(base_url=f"http://127.0.0.1:{server.port}") as client:
        for _ in range(3):
            assert client.post("/process-order", content=ORDER).status_code == 200
            time.sleep(IDLE / 3)
    assert server.process.poll() is None


@pytest.mark.parametrize("name", [environment.IDLE_TIMEOUT, environment.REQUEST_READ_TIMEOUT])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "3601", "soon", "1e400"])
def test_timeouts_are_validated_naming_the_variable_and_what_is_allowed(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as refusal:
        HandlerConfig.from_environment({name: value})
    assert f"{name}={value!r}: must be a number of seconds above 0 and at most 3600" in str(refusal.value)


def test_timeouts_have_defaults_and_accept_fractions() -> None:
    default = HandlerConfig.from_environment({})
    assert (default.idle_timeout_seconds, default.request_read_timeout_seconds) == (5.0, 30.0)
    tuned = HandlerConfig.from_environment({environment.IDLE_TIMEOUT: "0.5", environment.REQUEST_READ_TIMEOUT: "12"})
    assert (tuned.idle_timeout_seconds, tuned.request_read_timeout_seconds) == (0.5, 12.0)


def test_a_bad_setting_stops_the_server_with_the_reason_and_no_traceback() -> None:
    env = {**os.environ, "PORT": str(free_port()), "HOST": "127.0.0.1", environment.REQUEST_READ_TIMEOUT: "never"}
    result = subprocess.run([sys.executable, "-m", "handler"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2
    assert "TASKLANE_REQUEST_READ_TIMEOUT_SECONDS='never'" in result.stderr
    assert "Traceback" not in result.stderr
