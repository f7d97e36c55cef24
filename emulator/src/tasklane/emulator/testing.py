"""A pytest fixture for code that talks to Cloud Tasks: `cloud_tasks_emulator` runs the emulator in-process
on free loopback ports with in-memory state.

    pytest_plugins = ["tasklane.emulator.testing"]

    def test_enqueue(cloud_tasks_emulator):
        client = cloud_tasks_emulator.client()
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from tasklane.emulator.server import EmulatorConfig, EmulatorServer


class RunningEmulator:
    def __init__(self, server: EmulatorServer) -> None:
        self.server = server

    @property
    def host(self) -> str:
        """The value for CLOUD_TASKS_EMULATOR_HOST."""
        return self.server.grpc_target

    @property
    def http_url(self) -> str:
        return self.server.http_url

    def client(self) -> tasks_v2.CloudTasksClient:
        channel = grpc.insecure_channel(self.server.grpc_target)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


def start_emulator(config: EmulatorConfig | None = None) -> EmulatorServer:
    """An emulator running in a background thread; by default on free loopback ports, in memory."""
    return EmulatorServer(config or EmulatorConfig(grpc_port=0, http_port=0)).start_in_thread()


@pytest.fixture
def cloud_tasks_emulator() -> Iterator[RunningEmulator]:
    server = start_emulator()
    try:
        yield RunningEmulator(server)
    finally:
        server.stop_thread()
