"""The real gcloud, unmodified, against the emulator's REST surface: the tutorial's commands verbatim, then
every other queue and task command the issue names. One emulator and one gcloud configuration for all,
since each gcloud command costs a second or two of start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import tasks_v2

from tasklane.emulator.clock import ManualClock
from tasklane.emulator.server import EmulatorConfig, EmulatorServer
from tasklane.emulator.testing import start_emulator
from tests.emulator.conftest import Target, client_for, wait_for
from tests.helpers import Gcloud

PROJECT = "tutorial-project"
PARENT = f"projects/{PROJECT}/locations/us-central1"
# The second test's own location, so that each test sees only its own queues.
LOCATION = "europe-west1"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    server = start_emulator(EmulatorConfig(grpc_port=0, http_port=0, clock=ManualClock()))
    yield server
    server.stop_thread()


@pytest.fixture(scope="module")
def gcloud(emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Gcloud:
    return Gcloud(emulator.http_url, Path(tmp_path_factory.mktemp("gcloud-config")), PROJECT)


def test_the_tutorials_commands_run_verbatim(emulator: EmulatorServer, gcloud: Gcloud) -> None:
    gcloud("tasks", "queues", "create", "my-queue", "--location=us-central1", "--max-dispatches-per-second=50",
           "--max-concurrent-dispatches=20", "--max-attempts=5", "--min-backoff=1s", "--max-backoff=60s",
           "--max-doublings=4", "--max-retry-duration=600s")
    queue = client_for(emulator).get_queue(name=f"{PARENT}/queues/my-queue")
    assert (queue.rate_limits.max_dispatches_per_second, queue.rate_limits.max_concurrent_dispatches) == (50, 20)
    retry = queue.retry_config
    assert (retry.max_attempts, retry.min_backoff.total_seconds(), retry.max_backoff.total_seconds(),
            retry.max_doublings, retry.max_retry_duration.total_seconds()) == (5, 1, 60, 4, 600)
    described = gcloud("tasks", "queues", "describe", "my-queue", "--location=us-central1")
    for line in ("name: projects/tutorial-project/locations/us-central1/queues/my-queue",
                 "maxDispatchesPerSecond: 50.0", "maxConcurrentDispatches: 20", "maxAttempts: 5", "minBackoff: 1s",
                 "maxBackoff: 60s", "maxDoublings: 4", "maxRetryDuration: 600s", "state: RUNNING"):
        assert line in described
    in_an_hour = int(emulator.config.clock.now()) + 3600
    client_for(emulator).create_task(parent=f"{PARENT}/queues/my-queue", task={
        "name": f"{PARENT}/queues/my-queue/tasks/listed", "schedule_time": {"seconds": in_an_hour},
        "http_request": {"url": "https://example.com/"}})
    listed = gcloud("tasks", "list", "--queue=my-queue", "--location=us-central1", "--limit=10")
    assert [line.split()[0] for line in listed.splitlines()] == ["TASK_NAME", "listed"]


def test_every_queue_and_task_command_works(emulator: EmulatorServer, gcloud: Gcloud, target: Target) -> None:
    """Each command's effect is read back through the gRPC client, which costs no gcloud start-up."""
    location, parent = f"--location={LOCATION}", f"projects/{PROJECT}/locations/{LOCATION}"
    client, queue = client_for(emulator), f"{parent}/queues/work"
    client.create_queue(parent=parent, queue={"name": queue})
    assert [q["name"] for q in gcloud.json("tasks", "queues", "list", location)] == [queue]
    gcloud("tasks", "queues", "update", "work", location, "--max-attempts=7", "--max-dispatches-per-second=10")
    updated = client.get_queue(name=queue)
    assert (updated.retry_config.max_attempts, updated.rate_limits.max_dispatches_per_second) == (7, 10)
    gcloud("tasks", "queues", "pause", "work", location)
    assert client.get_queue(name=queue).state == tasks_v2.Queue.State.PAUSED

    url = target.answer("/gcloud", 200)
    invoker = "invoker@tutorial-project.iam.gserviceaccount.com"
    gcloud("tasks", "create-http-task", "to-run", "--queue=work", location, f"--url={url}", "--method=POST",
           '--body-content={"orderId": "g-1"}', "--header=Content-Type:application/json",
           f"--oidc-service-account-email={invoker}", f"--oidc-token-audience={target.url}")
    client.create_task(parent=queue, task={"name": f"{queue}/tasks/to-delete", "http_request": {"url": url}})
    described = gcloud.json("tasks", "describe", "to-run", "--queue=work", location)
    assert described["httpRequest"]["oidcToken"] == {"serviceAccountEmail": invoker, "audience": target.url}
    assert described["httpRequest"]["headers"]["Content-Type"] == "application/json"
    gcloud("tasks", "delete", "to-delete", "--queue=work", location)
    assert [task.name for task in client.list_tasks(parent=queue)] == [f"{queue}/tasks/to-run"]
    gcloud("tasks", "run", "to-run", "--queue=work", location)  # runs at once, even in a paused queue
    [received] = wait_for(lambda: target.on("/gcloud"), message="the run task's dispatch")
    assert received.body == b'{"orderId": "g-1"}' and (received.header("Authorization") or "").startswith("Bearer ")

    gcloud("tasks", "queues", "resume", "work", location)
    assert client.get_queue(name=queue).state == tasks_v2.Queue.State.RUNNING
    gcloud("tasks", "queues", "purge", "work", location)
    assert client.get_queue(name=queue).purge_time
    gcloud("tasks", "queues", "delete", "work", location)
    assert client.list_queues(parent=parent).queues == []
