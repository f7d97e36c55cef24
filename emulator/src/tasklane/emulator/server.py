"""The emulator as one object: engine, dispatcher, gRPC and HTTP transports on one event loop.

`await EmulatorServer(config).start()` inside a loop (the CLI), or `start_in_thread()` from synchronous
code and tests, which runs the loop in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from google.protobuf.message import DecodeError

from tasklane.emulator.clock import Clock, SystemClock
from tasklane.emulator.console import ConsoleConfig
from tasklane.emulator.dispatcher import Dispatcher
from tasklane.emulator.engine import DEFAULT_QUEUE_TOMBSTONE_SECONDS, DEFAULT_TASK_TOMBSTONE_SECONDS, Engine
from tasklane.emulator.faults import Faults
from tasklane.emulator.grpc_service import grpc_handlers
from tasklane.emulator.http_api import create_http_app
from tasklane.emulator.memory import release_free_memory
from tasklane.emulator.rpc import CloudTasksApi
from tasklane.emulator.store import StateFileError, StorageError, Store
from tasklane.emulator.task_operations_log import Destination, FinalFailuresTopic, JsonLinesFile, TaskOperationsLog
from tasklane.emulator.tokens import TokenIssuer

log = logging.getLogger("emulator")
EMULATOR_HOST_VARIABLE = "CLOUD_TASKS_EMULATOR_HOST"


def _bind(sock: socket.socket, what: str, host: str, port: int) -> None:
    """Bind as the servers do, SO_REUSEADDR set (a port whose last connections are in TIME_WAIT, as after a
    restart, is free), or raise OSError naming what could not listen where, and why."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        raise OSError(f"cannot listen for {what} on {host}:{port}: {error.strerror or error}") from None


def gcloud_environment(http_url: str) -> dict[str, str]:
    """What points an unmodified gcloud at an emulator's REST surface, sending no credentials."""
    return {"CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDTASKS": f"{http_url}/", "CLOUDSDK_AUTH_DISABLE_CREDENTIALS": "true"}


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    grpc_port: int = 8123
    http_port: int = 8124
    """0 picks a free port (tests)."""
    state_file: str | None = None
    """SQLite file; None keeps state in memory."""
    clock: Clock = field(default_factory=SystemClock)
    task_tombstone_seconds: float = DEFAULT_TASK_TOMBSTONE_SECONDS
    queue_tombstone_seconds: float = DEFAULT_QUEUE_TOMBSTONE_SECONDS
    enforce_rate_limits: bool = True
    app_engine_url: str | None = None
    faults: Faults = field(default_factory=Faults)
    queues: list[Any] = field(default_factory=list)
    """Queue messages to create (or update) at start."""
    task_operations_log: str | None = None
    """A file the queues' task-operation records are appended to, one JSON log entry a line."""
    final_failures_topic: str | None = None
    """projects/P/topics/T: final failed attempts are published there (through PUBSUB_EMULATOR_HOST), as the
    deployed Log Router sink does."""
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    """Where the console at / finds dead letters, and where it sends a replay it has no original attempt for."""
    prune_interval_seconds: float | None = None
    """How often expired tombstones and old attempt records are dropped (emulated time); by default a
    quarter of the task tombstone window, between 1 s and 60 s."""

    @property
    def prune_interval(self) -> float:
        if self.prune_interval_seconds is not None:
            return self.prune_interval_seconds
        return min(60.0, max(1.0, self.task_tombstone_seconds / 4))


class EmulatorServer:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.store: Store | None = None
        self.engine: Engine | None = None
        self.dispatcher: Dispatcher | None = None
        self.grpc_port = self.config.grpc_port
        self.http_port = self.config.http_port
        self._grpc: grpc.aio.Server | None = None
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._http_socket: socket.socket | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    @property
    def grpc_target(self) -> str:
        return f"{self.config.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}"

    @property
    def ready_line(self) -> str:
        return (f"Cloud Tasks emulator ready: gRPC {self.grpc_target}, HTTP {self.http_url} "
                f"(issuer {self.http_url}, keys {self.http_url}/oauth2/v1/certs); "
                f"export {EMULATOR_HOST_VARIABLE}={self.grpc_target}")

    async def start(self) -> None:
        """Start serving. Raises StateFileError or OSError with a one-line reason (state file unusable or
        locked, a port taken), having released whatever it had opened."""
        try:
            await self._start()
        except BaseException:
            if self._http_socket is not None:
                self._http_socket.close()
            if self.store is not None:
                self.store.close()
            raise

    async def _start(self) -> None:
        config = self.config
        self._http_socket = http_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Accepted connections inherit it: without it a response's header and body writes meet the client's
        # delayed ACK, and every HTTP answer (REST calls, token keys) took about 40 ms instead of under 1 ms.
        http_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _bind(http_socket, "HTTP", config.host, config.http_port)
        self.http_port = http_socket.getsockname()[1]

        self.store = Store(config.state_file)
        destinations: list[Destination] = []
        if config.task_operations_log:
            destinations.append(JsonLinesFile(Path(config.task_operations_log)))
        if config.final_failures_topic:
            destinations.append(FinalFailuresTopic(config.final_failures_topic))
        try:
            self.engine = Engine(self.store, config.clock, task_tombstone_seconds=config.task_tombstone_seconds,
                                 queue_tombstone_seconds=config.queue_tombstone_seconds)
            tokens = TokenIssuer(self.store, config.clock, issuer=self.http_url)
            self.dispatcher = Dispatcher(self.engine, tokens, config.clock,
                                         enforce_rate_limits=config.enforce_rate_limits,
                                         app_engine_url=config.app_engine_url,
                                         task_log=TaskOperationsLog(destinations) if destinations else None)
        except (sqlite3.Error, StorageError, DecodeError, ValueError, TypeError) as error:
            raise StateFileError(f"the state file {config.state_file} cannot be used: it holds data this emulator "
                                 f"cannot read ({type(error).__name__}: {error})") from None
        # Attempts read back from the state file are held to the same window as those kept since.
        self.dispatcher.prune(config.clock.now() - config.task_tombstone_seconds)
        from google.protobuf import field_mask_pb2

        for queue in config.queues:
            self.engine.update_queue(queue, field_mask_pb2.FieldMask())

        self._grpc = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 * 1024 * 1024),
                                              ("grpc.so_reuseport", 0)])
        api = CloudTasksApi(self.engine, self.dispatcher, config.faults)
        self._grpc.add_generic_rpc_handlers((grpc_handlers(api),))
        if config.grpc_port:  # a clear reason now, rather than gRPC's own log line and a bare failure
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                _bind(probe, "gRPC", config.host, config.grpc_port)
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{config.host}:{config.grpc_port}")
        except RuntimeError:
            self.grpc_port = 0
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {config.host}:{config.grpc_port}: address in use or "
                          "not available")
        await self._grpc.start()

        app = create_http_app(api, tokens, self.http_url, config.console, config.host)
        self._http = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self._http_task = asyncio.create_task(self._http.serve(sockets=[http_socket]))
        while not self._http.started:
            await asyncio.sleep(0.005)
        await self.dispatcher.start()
        self._housekeeping = asyncio.create_task(self._prune_on_schedule(), name="housekeeping")
        self._stopped = asyncio.Event()

    async def _prune_on_schedule(self) -> None:
        """Expired tombstones and old attempt records leave memory and the state file on a schedule, so
        neither grows with the number of tasks ever handled."""
        assert self.engine is not None and self.dispatcher is not None
        clock = self.config.clock
        while True:
            # Woken for the next task to reach its 31 days too, if that comes first (a new task's, added since,
            # is noticed at the next wake-up, at most a prune interval on).
            expiry = self.engine.next_expiry()
            await clock.sleep_until(min(clock.now() + self.config.prune_interval, expiry or math.inf))
            # Attempt records first: the engine's prune then gives their space back with the tombstones'.
            self.dispatcher.prune(clock.now() - self.config.task_tombstone_seconds)
            pruned = 0
            try:
                pruned = self.engine.prune()
            except StorageError as error:
                log.warning("could not prune tombstones: %s; trying again later", error)
            if pruned:
                release_free_memory()

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        if self.dispatcher is not None:
            await self.dispatcher.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        if self.store is not None:
            self.store.close()
        if self.config.console.letters is not None:  # a Firestore client's channel, closed in its own loop
            await self.config.console.letters.aclose()
        if self._stopped is not None:
            self._stopped.set()

    async def wait_stopped(self) -> None:
        assert self._stopped is not None
        await self._stopped.wait()

    # -- Running from synchronous code ----------------------------------------------------------------

    def start_in_thread(self) -> EmulatorServer:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as error:  # noqa: BLE001 - reported to the starting thread
                failure.append(error)
                started.set()
                return
            started.set()
            loop.run_until_complete(self.wait_stopped())
            loop.close()

        self._thread = threading.Thread(target=run, name="cloud-tasks-emulator", daemon=True)
        self._thread.start()
        started.wait(timeout=30)
        if failure:
            raise failure[0]
        return self

    def call(self, function: Any) -> Any:
        """Run `function()` on the emulator's loop thread and return its result (engine access from tests)."""
        assert self._loop is not None
        async def invoke() -> Any:
            return function()
        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout=30)

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.stop(), self._loop).result(timeout=30)
            self._thread.join(timeout=30)
