"""The task handler's HTTP application: Cloud Tasks delivers each task as a POST here.

Cloud Tasks retries every answer that is not 2xx, 4xx included, so the answer is chosen by what should
happen next:

| outcome                                     | from Cloud Tasks                  | called directly |
|---------------------------------------------|-----------------------------------|-----------------|
| done, or a duplicate of a done task         | 200                               | 200             |
| can never succeed (*)                       | 200 `rejected`, dead-lettered     | 400 / 413       |
| transient failure (RetryableError)          | 503, Retry-After when known       | 503             |
| token signing keys cannot be had now        | 503                               | 503             |
| unexpected exception anywhere (a bug)       | 500, traceback logged             | 500             |
| same task running in another delivery       | 409, Retry-After                  | 409             |
| token missing, invalid or for someone else  | 401 / 403, never dead-lettered    | 401 / 403       |

(*) a body that is not a valid payload for its action, whatever its bytes (not UTF-8, not JSON, nested too
deeply, missing, invalid or unknown fields); an unknown action; a body over the task size limit (413); an
action's RejectTask.

Routes: `POST /tasks/<action>` for every action, and the tutorial's `POST /process-order` naming its
action in the body (handler/task_routes.py); `GET /openapi.json` describes both, with every payload's schema.

A failure on the final attempt is dead-lettered before answering, because Cloud Tasks then drops it:
whatever failed, the action, the decoder or the handler itself, or a key another delivery still holds (409).
If the dead-letter sink fails, the task is not acknowledged, so it is retried rather than lost; on the final
attempt, which nothing retries, the letter is written to the log whole instead.
"""

from __future__ import annotations

import contextlib
import gc
import math
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry import trace as otel_trace
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from tasklane.core.dead_letter import DeadLetter, DeadLetterSink, LogDeadLetterSink
from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.core.wire import ENVELOPE_ROUTE, TASKS_ROUTE
from tasklane.handler.actions import ActionLog, ActionRegistry, RejectTask, RetryableError
from tasklane.handler.auth import AuthError, TokenVerifier
from tasklane.handler.config import HandlerConfig, TokenCheck
from tasklane.handler.delivery_check import with_delivery_check
from tasklane.handler.idempotency import Claim, IdempotencyStore, InProcessIdempotencyStore
from tasklane.handler.openapi import openapi_document
from tasklane.handler.payloads import PayloadError
from tasklane.handler.task_operations import ROUTE as TASK_OPERATIONS_ROUTE
from tasklane.handler.task_operations import TaskOperationsRoute
from tasklane.handler.task_routes import Delivery, from_envelope, from_task_route
from tasklane.handler.tracing import TRACER_NAME, Tracing, tracer_provider

TRACE_HEADER = "x-cloud-trace-context"
IN_PROGRESS_RETRY_AFTER_SECONDS = 10

_encode = msgspec.json.Encoder().encode

Resolve = Callable[[Request, bytes], Delivery]
"""What a route makes of a delivery's request and body, or PayloadError."""


def _json(status: int, content: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    return Response(_encode(content), status_code=status, headers=headers, media_type="application/json")


@dataclass(frozen=True)
class _Hold:
    """This delivery's claim on an idempotency key: `lease` is drawn per delivery, so only this one releases it."""

    key: str
    lease: str


@dataclass
class _Received:
    """What one delivery's body turned out to be, kept for the dead letter if anything fails later."""

    body: bytes = b""


class TaskHandler:
    """Runs one task delivery from request to answer; the policy in the module docstring lives here."""

    def __init__(self, config: HandlerConfig, actions: ActionRegistry, log: StructuredLog,
                 dead_letters: DeadLetterSink, idempotency: IdempotencyStore,
                 verifier: TokenVerifier | None, tracing: Tracing | None = None) -> None:
        self.config = config
        self.tracing = tracing or Tracing(None)
        self.actions = actions
        self.log = log
        self.dead_letters = dead_letters
        self.idempotency = idempotency
        self.verifier = verifier

    async def process_task(self, request: Request) -> Response:
        """`POST /tasks/<action>`: the body is that action's payload."""
        return await self._handle(request, lambda request, body: from_task_route(
            self.actions, request.path_params["action"], request.headers, body))

    async def process_order(self, request: Request) -> Response:
        """`POST /process-order`: the body names its action beside the payload's fields."""
        return await self._handle(request, lambda request, body: from_envelope(self.actions, request.headers, body))

    async def _handle(self, request: Request, resolve: Resolve) -> Response:
        headers = request.headers
        task = TaskContext.from_headers(headers)
        with self.tracing.attempt(headers, task) as trace:
            return await self._process_traced(request, task, trace, resolve)

    async def _process_traced(self, request: Request, task: TaskContext, trace: str | None,
                              resolve: Resolve) -> Response:
        received = _Received()
        try:
            return await self._process(request, task, trace, received, resolve)
        except ClientDisconnect:
            # Nobody hears this answer; on the final attempt the task would vanish, so keep it.
            self.log.emit("WARNING", f"task {task.task_name}: the caller left before its body arrived", task=task,
                          trace_header=trace)
            return await self._fail(request, task, received.body, 400, {"status": "error", "reason": "disconnected"},
                                    {}, "the caller disconnected before the body arrived")
        except Exception as error:  # noqa: BLE001 - a bug anywhere must fail the attempt, never lose the task
            self.log.exception(f"handling task {task.task_name} raised {type(error).__name__}", error, task=task,
                               trace_header=trace)
            return await self._fail(request, task, received.body, 500,
                                    {"status": "error", "reason": type(error).__name__}, {},
                                    f"the handler raised {type(error).__name__}: {error}")

    async def _process(self, request: Request, task: TaskContext, trace: str | None,
                       received: _Received, resolve: Resolve) -> Response:
        headers = request.headers
        if self.verifier is not None:
            try:
                await self.verifier.verify(headers.get("authorization"))
            except AuthError as refusal:
                self.log.emit("WARNING", f"refused task {task.task_name}: {refusal.reason}", task=task,
                              trace_header=trace, status=refusal.status)
                status = {401: "unauthorized", 403: "forbidden"}.get(refusal.status, "retry")
                content = {"status": status, "reason": refusal.reason}
                if refusal.status == 503:
                    # The token's claims were right but its signature could not be checked now: a
                    # genuine task, probably, so its final attempt is kept like any other failure.
                    await self._read_body(request, received)
                    return await self._fail(request, task, received.body, 503, content, {},
                                            f"token could not be verified: {refusal.reason}")
                return _json(refusal.status, content)

        too_large = await self._read_body(request, received)
        body = received.body
        if too_large:
            reason = f"body is larger than the {self.config.max_body_bytes} bytes a task can carry"
            return await self._reject(request, task, trace, body, reason, direct_status=413)
        try:
            delivery = resolve(request, body)
        except PayloadError as refusal:
            return await self._reject(request, task, trace, body, str(refusal))
        action = delivery.action
        name = action.name

        key = delivery.idempotency_key or (f"{task.queue_name}/{task.task_name}" if task.task_name else None)
        hold = None if key is None else _Hold(key, secrets.token_hex(8))
        if hold is not None:
            claim = await self.idempotency.begin(hold.key, hold.lease)
            if claim is Claim.ALREADY_DONE:
                self.log.emit("INFO", f"duplicate delivery of {key}; the action already ran", task=task,
                              trace_header=trace)
                return _json(200, {"status": "duplicate"})
            if claim is Claim.IN_PROGRESS:
                # On the final attempt this is dead-lettered too: the lease may be a crashed delivery's, held until
                # it lapses, and Cloud Tasks drops the task after this answer.
                return await self._fail(request, task, body, 409,
                                        {"status": "in_progress", "reason": f"{key} is being processed"},
                                        {"Retry-After": str(IN_PROGRESS_RETRY_AFTER_SECONDS)},
                                        f"{key} was held by another delivery (which may still finish: check before "
                                        "replaying)")

        try:
            with self.tracing.action(name, trace) as action_trace:
                await action(delivery.payload, task, ActionLog(self.log, task, action_trace))
        except RejectTask as rejection:
            return await self._reject(request, task, trace, body, f"{name}: {rejection}", hold=hold)
        except RetryableError as failure:
            await self._release(hold)
            self.log.emit("WARNING", f"{name} failed transiently: {failure}", task=task, trace_header=trace)
            # A Retry-After of whole seconds; one that is not a finite number (inf, NaN) is left out, not a crash.
            retry_after = {} if failure.retry_after is None or not math.isfinite(failure.retry_after) else {
                "Retry-After": str(max(0, math.ceil(failure.retry_after)))}
            return await self._fail(request, task, body, 503, {"status": "retry", "reason": str(failure)},
                                    retry_after, f"{name} failed transiently: {failure}")
        except Exception as error:  # noqa: BLE001 - any bug in an action must fail the attempt, not the process
            await self._release(hold)
            self.log.exception(f"{name} raised {type(error).__name__}", error, task=task, trace_header=trace)
            return await self._fail(request, task, body, 500, {"status": "error", "reason": type(error).__name__},
                                    {}, f"{name} raised {type(error).__name__}: {error}")
        if hold is not None:
            await self.idempotency.succeeded(hold.key)
        return _json(200, {"status": "done"})

    async def _read_body(self, request: Request, received: _Received) -> bool:
        """Read the body into `received`; True if it exceeded the limit (then only the first
        `max_body_bytes` are kept). If the caller leaves halfway, what arrived is kept."""
        limit = self.config.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    chunks.append(chunk[: max(0, limit - (size - len(chunk)))])
                    return True
                chunks.append(chunk)
            return False
        finally:
            received.body = b"".join(chunks)

    async def _reject(self, request: Request, task: TaskContext, trace: str | None, body: bytes, reason: str,
                      direct_status: int = 400, hold: _Hold | None = None) -> Response:
        """A task that can never succeed: dead-letter and acknowledge it, or tell a direct caller why."""
        if not task.from_cloud_tasks:
            await self._release(hold)
            self.log.emit("WARNING", f"rejected direct request: {reason}", trace_header=trace)
            return _json(direct_status, {"status": "rejected", "reason": reason})
        self.log.emit("ERROR", f"rejected task {task.task_name}: {reason}", task=task, trace_header=trace)
        letter = DeadLetter.capture("rejected", reason, task, request.method, request.url.path,
                                    request.headers, body)
        if not await self._dead_letter(letter, trace, final=task.is_final_attempt(self.config.max_attempts)):
            await self._release(hold)
            return _json(500, {"status": "error", "reason": "dead-letter sink failed; retry"})
        if hold is not None:
            await self.idempotency.succeeded(hold.key)
        return _json(200, {"status": "rejected", "reason": reason})

    async def _fail(self, request: Request, task: TaskContext, body: bytes, status: int, content: dict[str, str],
                    headers: dict[str, str], reason: str) -> Response:
        """Answer a failed attempt; on the final one, dead-letter the task first."""
        if task.is_final_attempt(self.config.max_attempts):
            letter = DeadLetter.capture("final_attempt_failed", reason, task, request.method, request.url.path,
                                        request.headers, body)
            await self._dead_letter(letter, request.headers.get(TRACE_HEADER), final=True)
        return _json(status, content, headers)

    async def _dead_letter(self, letter: DeadLetter, trace: str | None, final: bool = False) -> bool:
        """Send `letter` to the sink; False if it failed. On the final attempt nothing retries the task, so a
        failed sink's letter goes to the log instead, body and all, where it can still be found."""
        try:
            await self.dead_letters.send(letter)
            return True
        except Exception as error:  # noqa: BLE001 - a failing sink must not lose the task
            if not final:
                self.log.exception("dead-letter sink failed; the task will be retried", error, task=letter.task,
                                   trace_header=trace)
                return False
            self.log.exception("dead-letter sink failed on the task's final attempt; the letter is logged instead",
                               error, task=letter.task, trace_header=trace)
        try:
            await LogDeadLetterSink(self.log).send(letter)
        except Exception as error:  # noqa: BLE001 - nothing else is left to keep it in
            self.log.exception("could not log the dead letter either", error, task=letter.task, trace_header=trace)
        return False

    async def _release(self, hold: _Hold | None) -> None:
        if hold is not None:
            await self.idempotency.abandoned(hold.key, hold.lease)


def stores_from_config(config: HandlerConfig, log: StructuredLog) -> tuple[IdempotencyStore, DeadLetterSink]:
    """With a Firestore database: keys and letters shared by every instance there (letters logged too).
    Without: keys in this process, letters in the log, and also in files when a directory is set."""
    log_sink = LogDeadLetterSink(log)
    if config.firestore_database:
        # Imported only when used: the Firestore client is not on the path to a plain start's first answer.
        from tasklane.core.dead_letter_store import StoringSink
        from tasklane.core.firestore_client import LazyFirestore
        from tasklane.core.firestore_dead_letters import FirestoreDeadLetterStore
        from tasklane.handler.firestore_idempotency import FirestoreIdempotencyStore

        assert config.project_id is not None  # checked by HandlerConfig.from_environment
        firestore = LazyFirestore(config.project_id, config.firestore_database)
        return (FirestoreIdempotencyStore(firestore, lease_seconds=config.dispatch_deadline_seconds),
                StoringSink(FirestoreDeadLetterStore(firestore), log_sink))
    idempotency = InProcessIdempotencyStore(lease_seconds=config.dispatch_deadline_seconds)
    if config.dead_letter_dir:
        from pathlib import Path

        from tasklane.core.dead_letter_store import FileDeadLetterStore, StoringSink

        return idempotency, StoringSink(FileDeadLetterStore(Path(config.dead_letter_dir)), log_sink)
    return idempotency, log_sink


def create_app(config: HandlerConfig | None = None, *, actions: ActionRegistry | None = None,
               log: StructuredLog | None = None, dead_letters: DeadLetterSink | None = None,
               idempotency: IdempotencyStore | None = None, verifier: TokenVerifier | None = None,
               push_verifier: TokenVerifier | None = None, tracer: otel_trace.Tracer | None = None) -> Starlette:
    """The application, with every collaborator replaceable (tests, other stores and sinks)."""
    config = config or HandlerConfig.from_environment()
    actions = with_delivery_check(actions if actions is not None else ActionRegistry())
    log = log or StructuredLog(project_id=config.project_id)
    if verifier is None and config.token_check is not TokenCheck.OFF:
        verifier = TokenVerifier(config)
    default_idempotency, default_dead_letters = stores_from_config(config, log)
    dead_letters = dead_letters or default_dead_letters
    if tracer is None:
        provider = tracer_provider(config.trace_exporter, log, config.project_id)
        tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None
    handler = TaskHandler(config, actions, log, dead_letters, idempotency or default_idempotency, verifier,
                          Tracing(tracer))
    if push_verifier is None and config.push_token_check is not TokenCheck.OFF and config.push_service_account:
        push_verifier = TokenVerifier(config, check=config.push_token_check, email=config.push_service_account,
                                      who="the push account")
    task_operations = TaskOperationsRoute(log, dead_letters, push_verifier,
                                          accept_unsigned=config.push_token_check is TokenCheck.OFF)
    schema: list[bytes] = []  # built on first request: nothing on the path to the first answer

    async def health(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def openapi(request: Request) -> Response:
        if not schema:
            schema.append(_encode(openapi_document(actions)))
        return Response(schema[0], media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not gc.isenabled():
            # `python -m handler` pauses collection while importing; what exists now lives for the
            # whole process, so move it out of the collector's way and turn collection back on.
            gc.freeze()
            gc.enable()
        if verifier is not None:
            # Load the token verifier's libraries after the port is open, not before the first answer.
            threading.Thread(target=verifier.warm_up, name="warm-up", daemon=True).start()
        yield

    return Starlette(routes=[
        Route("/", health, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(ENVELOPE_ROUTE, handler.process_order, methods=["POST"]),
        # Any path below /tasks/, so a task for an unknown action is refused as poison, not left to a 404.
        Route(TASKS_ROUTE + "{action:path}", handler.process_task, methods=["POST"]),
        Route(TASK_OPERATIONS_ROUTE, task_operations.handle, methods=["POST"]),
    ], lifespan=lifespan)

