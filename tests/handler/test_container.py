"""The handler's container: linted, and its exact command starts a service that answers and drains on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "handler" / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line.strip() and not line.lstrip().startswith("#")]


def instruction(name: str) -> list[str]:
    return [argument for keyword, argument in dockerfile_instructions() if keyword == name]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_a_slim_python_of_the_tested_version_running_as_non_root() -> None:
    [base] = instruction("FROM")
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.\d+-slim(-\w+)?", base)
    assert match, base
    assert (int(match.group(1)), int(match.group(2))) == sys.version_info[:2]
    [user] = instruction("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert any("compileall" in run for run in instruction("RUN")), "bytecode is compiled at build time"
    assert any("handler/requirements.txt" in run for run in instruction("RUN"))


def test_dockerignore_sends_only_the_framework_and_the_service() -> None:
    """The image is built from the repository's root: only core/, framework/ and handler/ code is sent."""
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "**", "everything is excluded unless listed"
    sent = {rule[1:].split("/")[0] for rule in rules if rule.startswith("!")}
    assert sent == {"core", "framework", "handler"}
    copied = {argument.split()[0].split("/")[0] for argument in instruction("COPY")}
    assert copied <= sent, "the Dockerfile copies only what the context sends"


@pytest.fixture
def container_process() -> tuple[subprocess.Popen[str], int]:
    """The Dockerfile's CMD, run from a folder laid out like the image's WORKDIR (handler/ inside it)."""
    [cmd] = instruction("CMD")
    argv = json.loads(cmd)
    if argv[0] == "python":
        argv[0] = sys.executable
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def wait_until_serving(process: subprocess.Popen[str], port: int) -> httpx2.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx2.get(f"http://127.0.0.1:{port}/", timeout=1)
        except httpx2.TransportError:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the handler did not start listening"
            time.sleep(0.05)


def test_the_dockerfile_command_serves_health_on_port_and_exits_cleanly_on_sigterm(
        container_process: tuple[subprocess.Popen[str], int]) -> None:
    process, port = container_process
    response = wait_until_serving(process, port)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0, "Cloud Run allows 10 s after SIGTERM"
    output = process.stdout.read() if process.stdout else ""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the server logs its start and stop"
    for line in lines:
        assert {"severity", "message"} <= set(json.loads(line)), line


def test_sigterm_stops_new_connections_finishes_the_request_in_flight_and_exits_0(
        container_process: tuple[subprocess.Popen[str], int]) -> None:
    process, port = container_process
    wait_until_serving(process, port)
    body = b'{"orderId": "order-in-flight", "action": "update_inventory"}'
    in_flight = socket.create_connection(("127.0.0.1", port), timeout=10)
    in_flight.sendall(b"POST /process-order HTTP/1.1\r\nHost: handler\r\nContent-Type: application/json\r\n"
                      b"X-CloudTasks-TaskName: t-drain\r\nX-CloudTasks-QueueName: orders\r\n"
                      b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
    time.sleep(0.3)  # the request is now being received
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # no longer accepting

    in_flight.sendall(body[10:])
    response = b""
    while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
        chunk = in_flight.recv(4096)
        if not chunk:
            break
        response += chunk
    in_flight.close()
    assert response.startswith(b"HTTP/1.1 200"), response
    assert response.rstrip().endswith(b'{"status":"done"}')
    assert process.wait(timeout=10) == 0
