"""`TaskProducer`: create tasks for the deployed handler, one at a time or thousands at once.

Every task is an authenticated POST of its action's payload, as JSON, to that action's route on the
handler (`/tasks/<action>`): the OIDC token is signed as the invoker account for the stack's audience, and
the body's Content-Type is set (Cloud Tasks sets none). Bad input is refused before any API call, the
payload included when the action registry can be imported (producer/registry.py): it is checked by the
same decoder the handler runs, so the handler never refuses a task the producer made for its payload.
Facts used: ../shared/reference/cloud-tasks-behaviour.md §4.1 (task IDs), §4.3 and §6.6 (30 days ahead at
most), §4.5 (deadline range), §5.1 and §5.5 (ALREADY_EXISTS; hashed IDs, because sequential ones slow
Cloud Tasks down), §6.1 (1 MiB), §9.1/§13.1 (the two producer permissions).
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import math
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)
from google.protobuf import duration_pb2, timestamp_pb2

from tasklane.core.verification import VERIFY_ACTION
from tasklane.core.wire import (
    ACTION_NAME_PATTERN,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY,
    TASKS_ROUTE,
)
from tasklane.producer.config import ProducerConfig
from tasklane.producer.registry import default_registry, load_registry
from tasklane.producer.tracing import TRACEPARENT, current_traceparent

if TYPE_CHECKING:
    from tasklane.handler.actions import ActionRegistry, RegisteredAction

TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")  # always fullmatch: `$` would let a final newline through
MAX_BODY_BYTES = 1024 * 1024 - 16 * 1024  # the whole task must stay under 1 MiB; leave room for the rest
MAX_SCHEDULE_AHEAD = datetime.timedelta(days=30)
MIN_DEADLINE, MAX_DEADLINE = 15.0, 1800.0
TRANSIENT = (api_exceptions.ServiceUnavailable, api_exceptions.DeadlineExceeded, api_exceptions.InternalServerError,
             api_exceptions.TooManyRequests, api_exceptions.ResourceExhausted, api_exceptions.Aborted)
ENQUEUER_ROLE, SERVICE_ACCOUNT_USER_ROLE = "roles/cloudtasks.enqueuer", "roles/iam.serviceAccountUser"


class InvalidTask(ValueError):
    """The task was refused before any API call; the message says what was wrong and what is allowed."""


class ProducerError(RuntimeError):
    """The API refused the task for a reason the caller can act on (e.g. a missing role)."""


@dataclass(frozen=True)
class TaskSpec:
    """One task to create: the action, its payload (a mapping, or an instance of the action's payload type),
    and optional naming, idempotency key, timing and deadline."""

    action: str
    payload: Any = field(default_factory=dict)
    task_id: str | None = None
    dedup_key: str | None = None
    delay: float | datetime.timedelta | None = None
    at: datetime.datetime | None = None
    deadline: float | datetime.timedelta | None = None
    idempotency_key: str | None = None
    """The handler runs the action at most once per key (default: once per task name)."""


@dataclass(frozen=True)
class Enqueued:
    task_name: str
    already_enqueued: bool = False
    """True when a task with this name exists or existed recently: the same work is already queued."""

    def __str__(self) -> str:
        return self.task_name


@dataclass(frozen=True)
class ItemResult:
    index: int
    status: str
    """"created", "duplicate" or "failed"."""
    task_name: str | None = None
    reason: str | None = None


class ProgressFailed(RuntimeError):
    """`enqueue_many`'s progress callback raised. Enqueueing went on without it: `results` has every item's result,
    and the callback's exception is the cause. (Raising at once lost the results of tasks already created.)"""

    def __init__(self, results: list[ItemResult]) -> None:
        super().__init__("the progress callback raised; every item was still enqueued or failed (see .results)")
        self.results = results


def dedup_task_id(dedup_key: str) -> str:
    """A task ID from a caller's key: hashed, so IDs spread evenly (sequential IDs slow Cloud Tasks)."""
    return hashlib.sha256(dedup_key.encode()).hexdigest()


def _show(value: object, limit: int = 60) -> str:
    """`repr(value)` cut to `limit` characters, for messages about input that may be anything."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - e.g. an integer too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _seconds(name: str, value: object) -> float:
    """A duration in seconds from a number or a timedelta, or InvalidTask naming `name` and what is allowed."""
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTask(f"{name} must be a number of seconds or a datetime.timedelta, got "
                          f"{type(value).__name__} {_show(value)}")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf if value > 0 else -math.inf
    if not math.isfinite(seconds):
        raise InvalidTask(f"{name} must be a finite number of seconds, got {_show(value)}")
    return seconds


def _is_registry(actions: object) -> TypeGuard[ActionRegistry]:
    try:
        from tasklane.handler.actions import ActionRegistry
    except ModuleNotFoundError:  # no handler framework beside the producer: these can only be names
        return False
    return isinstance(actions, ActionRegistry)


def _within_limit(body: bytes) -> bytes:
    if len(body) > MAX_BODY_BYTES:
        raise InvalidTask(f"payload is {len(body)} bytes as JSON; a task holds at most {MAX_BODY_BYTES} bytes")
    return body


def _json_object(payload: Mapping[Any, Any]) -> bytes:
    """A mapping as compact JSON, or InvalidTask: NaN, Infinity and lone surrogates are not JSON, and the
    handler would refuse the body as poison."""
    try:
        return json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise InvalidTask("payload holds a string that is not valid Unicode (a lone surrogate)") from None
    except ValueError as error:
        if "Out of range float" in str(error):
            raise InvalidTask("payload holds NaN or Infinity, which JSON cannot carry; send null or a "
                              "string instead") from None
        raise InvalidTask(f"payload is not JSON-serialisable: {error}") from None
    except (TypeError, RecursionError) as error:
        raise InvalidTask(f"payload is not JSON-serialisable: {error}") from None


def explain_permission_denied(error: api_exceptions.PermissionDenied, config: ProducerConfig) -> ProducerError:
    message = str(error)
    if "actAs" in message:
        fix = (f"grant {SERVICE_ACCOUNT_USER_ROLE} on the invoker account {config.invoker_service_account} "
               "(add the producer to the stack's tasklane:producerMembers and run `pulumi up`)")
    else:
        fix = (f"grant {ENQUEUER_ROLE} on the queue {config.queue_path} and {SERVICE_ACCOUNT_USER_ROLE} on "
               f"{config.invoker_service_account} (add the producer to tasklane:producerMembers, `pulumi up`)")
    return ProducerError(f"Cloud Tasks refused to create the task: {message}. To fix it, {fix}.")


class TaskProducer:
    def __init__(self, config: ProducerConfig, *, actions: ActionRegistry | Iterable[str] | None = None,
                 client: tasks_v2.CloudTasksClient | None = None,
                 clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC)) -> None:
        """`actions`: the registry to check actions and payloads against; or only the names of the actions
        (payloads then unchecked); default: the registry `config.actions` names, else the bundled service's
        if it can be imported, else none (any well-formed name, payloads unchecked)."""
        self.config = config
        self.registry: ActionRegistry | None = None
        self.action_names: tuple[str, ...] | None = None
        registry: ActionRegistry | None = None
        if actions is None:
            registry = load_registry(config.actions) if config.actions else default_registry()
        elif _is_registry(actions):
            registry = actions
        else:  # every handler also has the delivery check `make verify` sends (create_app adds it)
            self.action_names = tuple(dict.fromkeys([*actions, VERIFY_ACTION]))
        if registry is not None:
            from tasklane.handler.delivery_check import with_delivery_check

            self.registry = with_delivery_check(registry)
        self._clock = clock
        self._client = client or self._sync_client()

    def _sync_client(self) -> tasks_v2.CloudTasksClient:
        if self.config.emulator_host:
            channel = grpc.insecure_channel(self.config.emulator_host)
            return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
        return tasks_v2.CloudTasksClient()

    def _async_client(self) -> tasks_v2.CloudTasksAsyncClient:
        """Created inside the running loop, as grpc.aio requires."""
        if self.config.emulator_host:
            channel = grpc.aio.insecure_channel(self.config.emulator_host)
            return tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
        return tasks_v2.CloudTasksAsyncClient()

    # -- Building and checking a task -------------------------------------------------------------------

    def build_task(self, spec: TaskSpec, *, name_if_unnamed: bool = False) -> dict[str, Any]:
        """The Task to create, or InvalidTask saying what is wrong, before any API call."""
        action = self._action(spec.action)
        if spec.task_id is not None and spec.dedup_key is not None:
            raise InvalidTask("give task_id or dedup_key, not both")
        for name, value in (("task_id", spec.task_id), ("dedup_key", spec.dedup_key)):
            if value is not None and not isinstance(value, str):
                raise InvalidTask(f"{name} must be a string, got {type(value).__name__}")
        if spec.dedup_key is not None:
            try:
                task_id: str | None = dedup_task_id(spec.dedup_key)
            except UnicodeEncodeError:
                raise InvalidTask(f"dedup_key {_show(spec.dedup_key)} is not valid Unicode: a lone surrogate") from None
        else:
            task_id = spec.task_id
        if task_id is not None and not TASK_ID.fullmatch(task_id):
            raise InvalidTask(f"task_id {_show(task_id)} may contain only letters, digits, '-' and '_', "
                              "1-500 characters")
        if task_id is None and name_if_unnamed:
            task_id = secrets.token_hex(16)  # named, so a retried create cannot make a second task
        body = self._body(spec.payload, action)
        headers = {"Content-Type": "application/json", TRACEPARENT: current_traceparent()}
        if spec.idempotency_key is not None:
            key = spec.idempotency_key
            if not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
                raise InvalidTask(f"idempotency_key must be a string of 1-{MAX_IDEMPOTENCY_KEY} characters, got "
                                  f"{_show(key)}")
            if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
                raise InvalidTask(f"idempotency_key {_show(key)} must be printable ASCII (letters, digits, "
                                  "punctuation, inner spaces), not starting or ending with a space: it travels in "
                                  "an HTTP header")
            headers[IDEMPOTENCY_KEY_HEADER] = key

        task: dict[str, Any] = {"http_request": self._http_request(TASKS_ROUTE + spec.action, headers, body)}
        if task_id is not None:
            task["name"] = f"{self.config.queue_path}/tasks/{task_id}"
        schedule_time = self._schedule_time(spec)
        if schedule_time is not None:
            task["schedule_time"] = schedule_time
        deadline = (_seconds("deadline", spec.deadline) if spec.deadline is not None
                    else self.config.dispatch_deadline_seconds)
        if not MIN_DEADLINE <= deadline <= MAX_DEADLINE:
            raise InvalidTask(f"deadline {deadline:g}s must be between 15s and 30 minutes")
        task["dispatch_deadline"] = duration_pb2.Duration(seconds=int(deadline),
                                                          nanos=int((deadline % 1) * 1e9))
        return task

    def _action(self, name: object) -> RegisteredAction | None:
        """The registered action (None when there is no registry), or InvalidTask for an unknown name."""
        if self.registry is not None:
            action = self.registry.get(name) if isinstance(name, str) else None
            if action is None:
                raise InvalidTask(f"unknown action {_show(name)}; known actions: {', '.join(self.registry.names)}")
            return action
        if self.action_names is not None and name not in self.action_names:
            raise InvalidTask(f"unknown action {_show(name)}; known actions: {', '.join(sorted(self.action_names))}")
        if not isinstance(name, str) or not re.fullmatch(ACTION_NAME_PATTERN, name):  # it is a path segment
            raise InvalidTask(f"action {_show(name)} must be 1-100 letters, digits, '_' or '-'")
        return None

    def _body(self, payload: object, action: RegisteredAction | None) -> bytes:
        """The task's body: the payload as JSON, checked against the action's payload type when known."""
        if action is None:
            if not isinstance(payload, Mapping):
                raise InvalidTask(f"payload must be a mapping (a JSON object), got {type(payload).__name__}")
            return _within_limit(_json_object(payload))
        from tasklane.handler.payloads import PayloadError  # there is a registry, so the handler framework is here

        try:
            if isinstance(payload, action.payload.cls):
                body = action.payload.encode(payload)
            elif isinstance(payload, Mapping):
                body = _json_object(payload)
            else:
                raise InvalidTask(f"payload must be a mapping or an instance of {action.payload.name}, got "
                                  f"{type(payload).__name__}")
            action.payload.decode(_within_limit(body))  # exactly what the handler will run on it
        except PayloadError as error:
            raise InvalidTask(f"{action.name}: {error}") from None
        return body

    def _schedule_time(self, spec: TaskSpec) -> timestamp_pb2.Timestamp | None:
        if spec.delay is not None and spec.at is not None:
            raise InvalidTask("give delay or at, not both")
        now = self._clock()
        if spec.delay is not None:
            delay = _seconds("delay", spec.delay)
            if delay < 0:
                raise InvalidTask(f"delay {delay:g}s is negative; it must be 0 or more")
            if delay > MAX_SCHEDULE_AHEAD.total_seconds():
                raise InvalidTask(f"delay {delay:g}s is more than 30 days ahead; Cloud Tasks refuses it")
            when = now + datetime.timedelta(seconds=delay)
        elif spec.at is not None:
            if not isinstance(spec.at, datetime.datetime):
                raise InvalidTask(f"at must be a datetime, got {type(spec.at).__name__}")
            if spec.at.tzinfo is None or spec.at.utcoffset() is None:
                raise InvalidTask("at must be a timezone-aware datetime")
            when = spec.at
        else:
            return None
        if when - now > MAX_SCHEDULE_AHEAD:
            raise InvalidTask(f"schedule time {when.isoformat()} is more than 30 days ahead; Cloud Tasks refuses it")
        if when < now - datetime.timedelta(days=1):
            return None  # long past: Cloud Tasks runs it now, as it does an unset time (and year 1 stays valid)
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(when)
        return stamp

    # -- One task ---------------------------------------------------------------------------------------

    def enqueue(self, action: str, payload: Any = None, *, task_id: str | None = None,
                dedup_key: str | None = None, delay: float | datetime.timedelta | None = None,
                at: datetime.datetime | None = None, deadline: float | datetime.timedelta | None = None,
                idempotency_key: str | None = None) -> Enqueued:
        """Create one task; a name that exists or existed recently is reported as already enqueued.

        Args:
            action: the action's name; the task goes to its route, `/tasks/<action>`.
            payload: a mapping, or an instance of the action's payload type; checked against that type
                when the registry is known.
            idempotency_key: the handler runs the action at most once per key (default: per task name).
        """
        task = self.build_task(TaskSpec(action, {} if payload is None else payload, task_id, dedup_key, delay, at,
                                        deadline, idempotency_key))
        try:
            created = self._client.create_task(request={"parent": self.config.queue_path, "task": task})
        except api_exceptions.AlreadyExists:
            return Enqueued(task["name"], already_enqueued=True)
        except api_exceptions.PermissionDenied as error:
            raise explain_permission_denied(error, self.config) from error
        return Enqueued(created.name)

    def _http_request(self, route: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        """An authenticated POST of `body` to the service's `route`: the OIDC token Cloud Tasks mints for the
        invoker account, for the service's audience."""
        return {"url": self.config.url_for(route), "http_method": "POST", "headers": dict(headers), "body": body,
                "oidc_token": {"service_account_email": self.config.invoker_service_account,
                               "audience": self.config.task_audience}}

    def enqueue_body(self, body: bytes, *, content_type: str = "application/json", route: str | None = None,
                     deadline: float | None = None, headers: Mapping[str, str] | None = None) -> Enqueued:
        """Create a task carrying `body` exactly as given (a dead letter's replay), under a fresh random name,
        with `headers` besides its Content-Type."""
        if len(body) > MAX_BODY_BYTES:
            raise InvalidTask(f"the body is {len(body)} bytes; a task holds at most {MAX_BODY_BYTES} bytes")
        route = route if route and route.startswith("/") else self.config.route
        deadline = self.config.dispatch_deadline_seconds if deadline is None else deadline
        task: dict[str, Any] = {
            "name": f"{self.config.queue_path}/tasks/{secrets.token_hex(16)}",
            "http_request": self._http_request(route, {**(headers or {}), "Content-Type": content_type}, body),
            "dispatch_deadline": duration_pb2.Duration(seconds=int(deadline), nanos=int((deadline % 1) * 1e9))}
        try:
            created = self._client.create_task(request={"parent": self.config.queue_path, "task": task})
        except api_exceptions.PermissionDenied as error:
            raise explain_permission_denied(error, self.config) from error
        return Enqueued(created.name)

    # -- Many tasks -------------------------------------------------------------------------------------

    def enqueue_many(self, specs: Iterable[TaskSpec], *, concurrency: int = 64, attempts: int = 5,
                     progress: Callable[[int, int], None] | None = None) -> list[ItemResult]:
        """Create many tasks with the async client, `concurrency` calls in flight, one result per item.

        Only transient API errors are retried (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED,
        ABORTED), with backoff; unnamed tasks get a random name first, so a retried call whose first try
        did succeed cannot create the task twice. A `progress` callback that raises is not called again; once
        every item has its result, ProgressFailed is raised holding them.
        """
        if concurrency < 1 or attempts < 1:
            raise ValueError("concurrency and attempts must be at least 1")
        items = list(specs)
        # Before any call: an item of another type failed halfway through, after other tasks had been created, and
        # their results were lost with it (a re-run then created the unnamed ones again).
        for index, item in enumerate(items):
            if not isinstance(item, TaskSpec):
                raise TypeError(f"enqueue_many takes TaskSpec items; item {index} is a {type(item).__name__}; "
                                "nothing was created")
        return asyncio.run(self._enqueue_all(items, concurrency, attempts, progress))

    async def _enqueue_all(self, items: list[TaskSpec], concurrency: int, attempts: int,
                           progress: Callable[[int, int], None] | None) -> list[ItemResult]:
        client = self._async_client()
        gate = asyncio.Semaphore(concurrency)
        done = 0
        progress_error: list[Exception] = []

        async def one(index: int, spec: TaskSpec) -> ItemResult:
            nonlocal done
            try:
                task = self.build_task(spec, name_if_unnamed=True)
            except InvalidTask as error:
                result = ItemResult(index, "failed", reason=str(error))
            else:
                async with gate:
                    result = await self._create_with_retries(client, index, task, spec, attempts)
            done += 1
            if progress is not None and not progress_error:
                try:
                    progress(done, len(items))
                except Exception as error:  # noqa: BLE001 - raised below, once every item has its result
                    progress_error.append(error)
            return result

        try:
            results = list(await asyncio.gather(*(one(i, spec) for i, spec in enumerate(items))))
        finally:
            await client.transport.close()  # type: ignore[no-untyped-call]
        if progress_error:
            raise ProgressFailed(results) from progress_error[0]
        return results

    async def _create_with_retries(self, client: tasks_v2.CloudTasksAsyncClient, index: int, task: dict[str, Any],
                                   spec: TaskSpec, attempts: int) -> ItemResult:
        caller_named = spec.task_id is not None or spec.dedup_key is not None
        for attempt in range(1, attempts + 1):
            try:
                created = await client.create_task(request={"parent": self.config.queue_path, "task": task},
                                                   retry=None)
                return ItemResult(index, "created", created.name)
            except api_exceptions.AlreadyExists:
                # A retry of our own randomly named task found the first try's task: it was created.
                status = "duplicate" if caller_named or attempt == 1 else "created"
                return ItemResult(index, status, task["name"])
            except api_exceptions.PermissionDenied as error:
                return ItemResult(index, "failed", reason=str(explain_permission_denied(error, self.config)))
            except TRANSIENT as error:
                if attempt == attempts:
                    return ItemResult(index, "failed", reason=f"{type(error).__name__} after {attempts} tries: "
                                                             f"{error.message}")
                await asyncio.sleep(min(2.0, 0.05 * 2 ** (attempt - 1)))
            except api_exceptions.GoogleAPICallError as error:
                return ItemResult(index, "failed", reason=f"{type(error).__name__}: {error.message}")
        raise AssertionError("unreachable")

    # -- Looking at the queue ---------------------------------------------------------------------------

    def list_tasks(self, limit: int = 100) -> list[Any]:
        return list(self.iter_tasks(limit))

    def iter_tasks(self, limit: int | None = None) -> Iterator[Any]:
        """The queue's tasks, page after page (1,000 a call), stopping after `limit` if given."""
        pages = self._client.list_tasks(request={"parent": self.config.queue_path,
                                                 "page_size": min(limit or 1000, 1000)})
        for count, task in enumerate(pages, start=1):
            yield task
            if limit is not None and count >= limit:
                return

    def get_task(self, name_or_id: str) -> Any:
        name = name_or_id if "/" in name_or_id else f"{self.config.queue_path}/tasks/{name_or_id}"
        return self._client.get_task(request={"name": name, "response_view": "FULL"})
