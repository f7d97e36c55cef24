"""The official Node client (@google-cloud/tasks) drives every emulated RPC, unmodified, over gRPC and in
its REST fallback mode, and sees the same on both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tasklane.emulator.server import EmulatorServer
from tests.emulator.conftest import Target, wait_for

NODE_CLIENT = Path(__file__).resolve().parent / "node_client"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node 20 is part of the development setup")
@pytest.mark.parametrize("transport", ["grpc", "rest"])
def test_the_node_client_drives_every_rpc(emulator: EmulatorServer, target: Target, transport: str) -> None:
    assert (NODE_CLIENT / "node_modules" / "@google-cloud" / "tasks").exists(), \
        "run `make test`, which installs the Node client with npm ci"
    url = target.answer("/node", 200)
    result = subprocess.run(["node", "drive.js"], cwd=NODE_CLIENT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "TARGET_URL": url, "CLOUD_TASKS_EMULATOR_HOST":
                                 emulator.grpc_target if transport == "grpc" else "127.0.0.1:1",  # REST alone
                                 "EMULATOR_HTTP_HOST": emulator.http_url.removeprefix("http://"),
                                 "TRANSPORT": transport})
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "created": 3, "rate": 7, "got": "projects/tasklane-node/locations/us-central1/queues/node-queue",
        "listed": 1, "paused": "PAUSED", "taskBody": '{"orderId":"node-1","action":"update_inventory"}',
        "gotTask": "projects/tasklane-node/locations/us-central1/queues/node-queue/tasks/node-task", "tasks": 1,
        "duplicate": 6, "ran": 1, "resumed": "RUNNING", "purged": True, "deleted": 5,
    }
    wait_for(lambda: target.on("/node"), message="RunTask's dispatch")
    [received] = target.on("/node")
    assert json.loads(received.body) == {"orderId": "node-1", "action": "update_inventory"}
