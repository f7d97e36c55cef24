"""The whole pipeline on loopback: producer → emulator (gRPC) → handler (HTTP), each on its own port.

The handler checks every token in full (signature against the emulator's published keys, audience,
issuer, invoker email) and shares the emulator's manual clock, so tests can jump to schedule times and
backoffs while tokens stay valid.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from handler.order_actions import actions as order_actions
from handler.order_actions import service_actions as every_service_action
from handler.orders import OrderRequest
from tasklane.core.dead_letter import LogDeadLetterSink
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.emulator.clock import ManualClock
from tasklane.emulator.server import EmulatorConfig, EmulatorServer
from tasklane.emulator.testing import start_emulator
from tasklane.handler.actions import ActionLog, ActionRegistry, RetryableError
from tasklane.handler.app import create_app
from tasklane.handler.auth import TokenVerifier
from tasklane.handler.config import HandlerConfig, TokenCheck
from tasklane.producer import ProducerConfig, TaskProducer
from tests.helpers import free_port, wait_for

__all__ = ["free_port", "wait_for"]

PARENT = "projects/tasklane-e2e/locations/us-central1"
QUEUE = f"{PARENT}/queues/orders"
INVOKER = "tasklane-e2e-invoker@tasklane-e2e.iam.gserviceaccount.com"
MAX_ATTEMPTS = 5


class LogLines:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            self.lines.append(data)

    def entries(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(line) for line in self.lines]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.entries() if entry.get("event") == name]


def e2e_actions() -> ActionRegistry:
    """The sample actions, one that fails transiently on its first attempt, and two that never succeed."""
    registry = ActionRegistry()

    @registry.register("flaky_once")
    async def flaky_once(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        if task.retry_count == 0:
            raise RetryableError("downstream busy", retry_after=2)
        log.event("flaky action done", event="flaky_done", order_id=order.order_id,
                  retry_count=task.retry_count, previous_response=task.previous_response)

    @registry.register("always_busy")
    async def always_busy(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        raise RetryableError("downstream is down for good")

    @registry.register("always_crash")
    async def always_crash(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        raise ZeroDivisionError("a bug that never goes away")

    return ActionRegistry.combined(order_actions, registry)


@dataclass
class Pipeline:
    clock: ManualClock
    emulator: EmulatorServer
    handler_url: str
    log: LogLines
    producer: TaskProducer

    def handled(self, event: str) -> list[str]:
        return [entry["order_id"] for entry in self.log.events(event)]

    def attempts(self) -> list[dict[str, Any]]:
        assert self.emulator.dispatcher is not None
        return [vars(record) for record in list(self.emulator.dispatcher.attempts)]

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter the handler logged: its first part's record, with `body` put back together."""
        parts = [entry["tasklane_dead_letter"] for entry in self.log.entries() if "tasklane_dead_letter" in entry]
        letters = []
        for first in (part for part in parts if part["part"] == 1):
            chunks = sorted((part["part"], part["body_base64"]) for part in parts if part["id"] == first["id"])
            if len(chunks) == first["parts"]:
                letters.append({**first, "body": b"".join(base64.b64decode(chunk) for _, chunk in chunks)})
        return letters

    def queue_empty(self) -> bool:
        assert self.emulator.engine is not None
        return not self.emulator.call(lambda: bool(self.emulator.engine.queues[QUEUE].tasks))  # type: ignore


class HandlerThread:
    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> HandlerThread:
        self.thread.start()
        wait_for(lambda: self.server.started, message="the handler to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    stack: list[Any] = []

    def make(state_file: str | None = None, rate: float = 500, clock: ManualClock | None = None,
             audience: str | None = None, ports: tuple[int, int] | None = None,
             final_failures_topic: str | None = None, tracer: Any = None,
             service_actions: bool = False) -> Pipeline:
        """`service_actions`: the handler runs the service's own actions, and the producer finds their registry
        itself, as deployed; otherwise both get the sample actions plus failing ones (`e2e_actions`)."""
        clock = clock or ManualClock(start=time.time())
        grpc_port, http_port = ports or (0, 0)
        emulator = start_emulator(EmulatorConfig(clock=clock, state_file=state_file, grpc_port=grpc_port,
                                                 http_port=http_port, final_failures_topic=final_failures_topic))
        stack.append(emulator)
        client = emulator_client(emulator)
        if QUEUE not in [q.name for q in client.list_queues(parent=PARENT)]:
            client.create_queue(parent=PARENT, queue={"name": QUEUE, "rate_limits": {
                "max_dispatches_per_second": rate}, "stackdriver_logging_config": {"sampling_ratio": 1.0},
                "retry_config": {
                "max_attempts": MAX_ATTEMPTS, "min_backoff": "1s", "max_backoff": "10s", "max_doublings": 2}})
        port = free_port()
        handler_url = f"http://127.0.0.1:{port}"
        log = LogLines()
        config = HandlerConfig(queue_path=QUEUE, invoker_service_account=INVOKER, task_audience=handler_url,
                               max_attempts=MAX_ATTEMPTS, token_check=TokenCheck.FULL,
                               token_issuers=(emulator.http_url,),
                               token_certs_url=f"{emulator.http_url}/oauth2/v1/certs",
                               push_token_check=TokenCheck.OFF)  # Google's Pub/Sub emulator signs no pushes
        structured = StructuredLog(project_id="tasklane-e2e", writer=log.write)
        app = create_app(config, actions=every_service_action() if service_actions else e2e_actions(),
                         log=structured,
                         dead_letters=LogDeadLetterSink(structured), verifier=TokenVerifier(config, clock=clock.now),
                         tracer=tracer)
        handler = HandlerThread(app, port).__enter__()
        stack.append(handler)
        producer_config = ProducerConfig(queue_path=QUEUE, service_url=handler_url, invoker_service_account=INVOKER,
                                         task_audience=audience or handler_url, emulator_host=emulator.grpc_target)
        producer = TaskProducer(producer_config, clock=lambda: _utc(clock.now()),
                                actions=None if service_actions else [*e2e_actions().names, "not_an_action"])
        return Pipeline(clock, emulator, handler_url, log, producer)

    yield make
    for item in reversed(stack):
        if isinstance(item, HandlerThread):
            item.__exit__()
        else:
            item.stop_thread()


def _utc(epoch: float) -> Any:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def emulator_client(emulator: EmulatorServer) -> Any:
    import grpc
    from google.cloud import tasks_v2
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(
        channel=grpc.insecure_channel(emulator.grpc_target)))
