"""The pytest plugin tasklane-emulator registers (its `pytest11` entry point): installing the distribution is all a
project does to get a local Cloud Tasks in its tests, with no conftest code.

    def test_enqueue(cloud_tasks_emulator):
        queue = cloud_tasks_emulator.queue("orders")       # created; its full path is returned
        client = cloud_tasks_emulator.client()             # google-cloud-tasks, pointed at the emulator
        client.create_task(parent=queue, task={"http_request": {"url": "http://127.0.0.1:8080/work"}})

    @pytest.mark.cloud_tasks_emulator(manual_clock=True)
    def test_backoff(cloud_tasks_emulator):
        ...
        cloud_tasks_emulator.clock.advance(10)             # retries and schedule times come due at once

Each test gets its own emulator, in this process, on free loopback ports, with state in memory, and
CLOUD_TASKS_EMULATOR_HOST names it while the test runs (the official clients and Tasklane's producer read it).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from tasklane.emulator.clock import Clock, ManualClock, SystemClock
from tasklane.emulator.server import EMULATOR_HOST_VARIABLE, EmulatorConfig, EmulatorServer

MARKER = "cloud_tasks_emulator"
DEFAULT_PROJECT = "test-project"
DEFAULT_LOCATION = "us-central1"


class RunningEmulator:
    """A running emulator, as a test uses it: its addresses, a client, queues, what was attempted, and its clock."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server

    @property
    def grpc_address(self) -> str:
        """host:port of the gRPC API: the value for CLOUD_TASKS_EMULATOR_HOST."""
        return self.server.grpc_target

    host = grpc_address

    @property
    def http_url(self) -> str:
        """The REST API (/v2/…), the console (/), the OIDC keys and the attempt history (/v1/attempts)."""
        return self.server.http_url

    @property
    def clock(self) -> Clock:
        """The emulator's clock: a ManualClock (`advance`, `set`) under `@pytest.mark.cloud_tasks_emulator(
        manual_clock=True)`, else the system's."""
        return self.server.config.clock

    def advance(self, seconds: float) -> None:
        """Move emulated time forward: scheduled tasks and retries that come due are dispatched."""
        if not isinstance(self.clock, ManualClock):
            raise RuntimeError("this emulator runs on the system clock; mark the test with "
                               "@pytest.mark.cloud_tasks_emulator(manual_clock=True) to move time")
        self.clock.advance(seconds)

    def client(self) -> tasks_v2.CloudTasksClient:
        """A google-cloud-tasks client on the emulator's gRPC API (no credentials needed)."""
        channel = grpc.insecure_channel(self.server.grpc_target)
        return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))

    def queue(self, name: str = "default", *, project: str = DEFAULT_PROJECT, location: str = DEFAULT_LOCATION,
              **settings: Any) -> str:
        """Create a queue and return its path; `settings` are Queue fields, e.g.
        `rate_limits={"max_concurrent_dispatches": 1}`, `retry_config={"max_attempts": 3}`."""
        parent = f"projects/{project}/locations/{location}"
        created = self.client().create_queue(request={"parent": parent,
                                                      "queue": {"name": f"{parent}/queues/{name}", **settings}})
        return str(created.name)

    def tasks(self, queue: str) -> list[tasks_v2.Task]:
        """The tasks still in `queue` (a finished task is gone from here; see `attempts`)."""
        return list(self.client().list_tasks(request={"parent": queue, "response_view": tasks_v2.Task.View.FULL}))

    def attempts(self, *, queue: str | None = None, task: str | None = None,
                 outcome: str | None = None) -> list[dict[str, Any]]:
        """Every dispatch attempt so far, oldest first, as the console shows them (status, outcome, headers, …),
        filtered by queue or task path and outcome (in_flight, succeeded, retrying, gave_up, gone)."""
        query = {key: value for key, value in (("queue", queue), ("task", task), ("outcome", outcome)) if value}
        found: list[dict[str, Any]] = []
        while True:
            url = f"{self.http_url}/v1/attempts?{urllib.parse.urlencode(query)}"
            try:
                with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the emulator, on loopback
                    page = json.loads(response.read())
            except urllib.error.HTTPError as error:  # a refused filter: say what the emulator said of it
                raise ValueError(json.loads(error.read()).get("error", str(error))) from None
            found += page["attempts"]
            if not page.get("nextPageToken"):
                return found
            query["pageToken"] = page["nextPageToken"]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 10.0, message: str = "the condition") -> Any:
        """Poll `condition` until it returns something truthy, and return that; fail the test after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"waited {timeout:g} s for {message}", pytrace=False)
            time.sleep(0.02)


def start_emulator(config: EmulatorConfig | None = None) -> EmulatorServer:
    """An emulator running in a background thread; by default on free loopback ports, in memory."""
    return EmulatorServer(config or EmulatorConfig(grpc_port=0, http_port=0)).start_in_thread()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(manual_clock=False, ignore_rate_limits=False): how the test's cloud_tasks_emulator "
                   "runs: on a clock only the test moves, and dispatching as fast as targets answer")


@pytest.fixture
def cloud_tasks_emulator(request: pytest.FixtureRequest) -> Iterator[RunningEmulator]:
    """A local Cloud Tasks for this test, with CLOUD_TASKS_EMULATOR_HOST pointing at it."""
    marker = request.node.get_closest_marker(MARKER)
    options = dict(marker.kwargs) if marker else {}
    unknown = sorted(set(options) - {"manual_clock", "ignore_rate_limits"})
    if unknown:
        pytest.fail(f"@pytest.mark.{MARKER}: unknown option {', '.join(unknown)}; "
                    "it takes manual_clock and ignore_rate_limits", pytrace=False)
    clock: Clock = ManualClock(start=time.time()) if options.get("manual_clock") else SystemClock()
    server = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, clock=clock,
                                           enforce_rate_limits=not options.get("ignore_rate_limits")))
    previous = os.environ.get(EMULATOR_HOST_VARIABLE)
    os.environ[EMULATOR_HOST_VARIABLE] = server.grpc_target
    try:
        yield RunningEmulator(server)
    finally:
        if previous is None:
            os.environ.pop(EMULATOR_HOST_VARIABLE, None)
        else:
            os.environ[EMULATOR_HOST_VARIABLE] = previous
        server.stop_thread()
