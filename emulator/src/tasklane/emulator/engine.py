"""The emulator's engine: queues, tasks, tombstones and the life of each attempt.

No sockets and no real time here: the gRPC service calls the RPC methods, the dispatcher asks for due
tasks and reports each attempt's outcome, and every time comes from the injected clock. All methods
run on the emulator's event loop thread, so no locking is needed. Behaviour follows
../shared/reference/cloud-tasks-behaviour.md; section numbers are cited where a rule comes from.
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import heapq
import http
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.cloud.tasks_v2.types import queue as queue_types
from google.protobuf import field_mask_pb2
from google.rpc import code_pb2

from tasklane.core.retry import policy_of
from tasklane.emulator import errors
from tasklane.emulator.clock import Clock
from tasklane.emulator.queue_target import overrides
from tasklane.emulator.store import StorageError, Store, StoredAttempt, StoredTask
from tasklane.emulator.validation import (
    MAX_TIMESTAMP_SECONDS,
    METHOD_NAMES,
    Queue,
    Task,
    apply_queue_defaults,
    burst_size,
    check_parent,
    new_task_id,
    normalise_new_task,
    parse_queue_name,
    task_id_of,
    validate_queue_config,
    with_view,
)

log = logging.getLogger("emulator.engine")
QueueStateEnum = queue_types.Queue.State
RUNNING, PAUSED = QueueStateEnum.RUNNING, QueueStateEnum.PAUSED
DEFAULT_TASK_TOMBSTONE_SECONDS = 3600.0  # §5.2: configurable, 1 h by default
DEFAULT_QUEUE_TOMBSTONE_SECONDS = 7 * 86400.0  # §6.6
TASK_RETENTION_SECONDS = 31 * 86400.0
"""§6.5: "A task is deleted 31 days after it was added, whether or not it was dispatched"; it caps retrying forever."""
MAX_TASKS_PAGE, MAX_QUEUES_PAGE = 1000, 9800  # §6.8
UPDATABLE_QUEUE_FIELDS = ("app_engine_routing_override", "http_target", "rate_limits", "retry_config",
                          "stackdriver_logging_config")

# How an HTTP status shows in last_attempt.response_status (undocumented, §4.7): the usual mapping.
_STATUS_CODES = {400: code_pb2.INVALID_ARGUMENT, 401: code_pb2.UNAUTHENTICATED, 403: code_pb2.PERMISSION_DENIED,
                 404: code_pb2.NOT_FOUND, 409: code_pb2.ABORTED, 429: code_pb2.RESOURCE_EXHAUSTED,
                 499: code_pb2.CANCELLED, 501: code_pb2.UNIMPLEMENTED, 503: code_pb2.UNAVAILABLE,
                 504: code_pb2.DEADLINE_EXCEEDED}


def rpc_code_for(status: int) -> int:
    if 200 <= status < 300:
        return int(code_pb2.OK)
    if status in _STATUS_CODES:
        return int(_STATUS_CODES[status])
    return int(code_pb2.FAILED_PRECONDITION if status < 500 else code_pb2.INTERNAL)


_PHRASES = {status.value: status.phrase for status in http.HTTPStatus}
"""Looked up per attempt, as the method's name is (validation.METHOD_NAMES): building the enum member each time
was a µs of each."""


def reason_phrase(status: int) -> str:
    return _PHRASES.get(status) or f"HTTP {status}"


def _micros(timestamp: Any) -> int:
    return int(timestamp.seconds * 1_000_000 + timestamp.nanos // 1000)


def _set_micros(timestamp: Any, micros: int) -> None:
    """`timestamp.FromMicroseconds(micros)` for a time known to be in range, at a third of its cost."""
    timestamp.seconds, rest = divmod(micros, 1_000_000)
    timestamp.nanos = rest * 1000


@dataclass
class TaskState:
    task: Any
    queue: str
    execution_count: int = 0
    """Earlier attempts that got a non-5xx answer (X-CloudTasks-TaskExecutionCount, §7.5)."""
    previous_response: int | None = None
    retry_reason: str | None = None
    in_flight: bool = False
    run_requested: bool = False

    @property
    def name(self) -> str:
        return str(self.task.name)

    def stored(self) -> StoredTask:
        meta = {"execution_count": self.execution_count, "previous_response": self.previous_response,
                "retry_reason": self.retry_reason}
        return StoredTask(self.name, self.queue, self.task.SerializeToString(), meta)


@dataclass
class QueueState:
    queue: Any
    due: list[tuple[int, int, str]] = field(default_factory=list)
    """A heap of (schedule time in µs, sequence, task name); entries go stale and are skipped."""
    tasks: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return str(self.queue.name)

    @property
    def paused(self) -> bool:
        return bool(self.queue.state == PAUSED)


@dataclass(frozen=True)
class Attempt:
    """Everything the dispatcher needs to send one attempt, fixed when it starts."""

    task_name: str
    queue_id: str
    task_id: str
    kind: str
    """"http_request" or "app_engine_http_request"."""
    method: str
    url: str
    """The full URL for HTTP tasks; the relative URI for App Engine tasks."""
    headers: dict[str, str]
    body: bytes
    oidc_email: str | None
    oidc_audience: str | None
    oauth_email: str | None
    deadline: float
    retry_count: int
    execution_count: int
    eta: float
    previous_response: int | None
    retry_reason: str | None
    started: float
    forced: bool
    """Started by RunTask: a failure reschedules from when RunTask was called (§10.5)."""
    task_state: TaskState = field(repr=False, compare=False)
    """The task this attempt is for. Its outcome applies to that task only: not to one created since under the same
    name (possible once a deleted task's or queue's name is no longer reserved), which would be lost with it."""


class AttemptHistory(Protocol):
    """The dispatcher's record of one attempt, saved in the same transaction as its task's state."""

    seq: int
    outcome: str

    def stored(self) -> StoredAttempt: ...


class Engine:
    def __init__(self, store: Store, clock: Clock, *, task_tombstone_seconds: float = DEFAULT_TASK_TOMBSTONE_SECONDS,
                 queue_tombstone_seconds: float = DEFAULT_QUEUE_TOMBSTONE_SECONDS) -> None:
        self.store = store
        self.clock = clock
        self.task_tombstone_seconds = task_tombstone_seconds
        self.queue_tombstone_seconds = queue_tombstone_seconds
        self.queues: dict[str, QueueState] = {}
        self.tasks: dict[str, TaskState] = {}
        self._task_tombstones: dict[str, float] = {}
        self._queue_tombstones: dict[str, float] = {}
        self._sequence = itertools.count()
        self._run_requested: set[str] = set()
        self._unsaved: set[str] = set()
        """Tasks whose state on disk is behind memory: a dispatch outcome the store could not take."""
        self._unsaved_history: dict[int, AttemptHistory] = {}
        """Attempt records to write with the next save (by `seq`), as they are then."""
        self._storage_failing = False
        self._removed = 0
        """Tasks and tombstones removed since the containers were last compacted."""
        self._by_creation: list[tuple[int, int, TaskState]] = []
        """A heap of (creation time in s, sequence, task), for `expire`; entries of tasks gone since are skipped."""
        self._expired_running: list[TaskState] = []
        """Expired tasks whose attempt was running at `expire`: they go at the next one after it ends."""
        self.on_work: Callable[[], None] = lambda: None
        """Called when something may now be due: the dispatcher wakes up."""
        self.on_task_created: Callable[[], None] = lambda: None
        """Called when a task was created in a running queue: the dispatcher wakes up soon, taking those that
        follow with it."""
        self._load()

    # -- Loading ------------------------------------------------------------------------------------

    def _load(self) -> None:
        for name, data in self.store.queues():
            queue = Queue()
            queue.ParseFromString(data)
            self.queues[name] = QueueState(queue)
        for stored in self.store.tasks():
            task = Task()
            task.ParseFromString(stored.data)
            state = TaskState(task, stored.queue, **stored.meta)
            if stored.queue in self.queues:
                self._index(state)
        self._task_tombstones = dict(self.store.tombstones("task"))
        self._queue_tombstones = dict(self.store.tombstones("queue"))

    def _index(self, state: TaskState) -> None:
        self.tasks[state.name] = state
        queue = self.queues[state.queue]
        queue.tasks.add(state.name)
        self._push(queue, state)
        heapq.heappush(self._by_creation, (state.task.create_time.seconds, next(self._sequence), state))

    def expire(self, now: float) -> int:
        """Delete the tasks added TASK_RETENTION_SECONDS ago or more, dispatched or not (§6.5); one whose attempt is
        running goes once it has ended. Returns how many went. The dispatcher calls this before each pass, so an
        expired task is never sent; the prune calls it too, and the housekeeping wakes for `next_expiry`."""
        heap, oldest, expired = self._by_creation, now - TASK_RETENTION_SECONDS, 0
        waiting, self._expired_running = self._expired_running, []
        while heap and heap[0][0] <= oldest:
            waiting.append(heapq.heappop(heap)[2])
        for state in waiting:
            if self.tasks.get(state.name) is not state:
                continue  # gone already
            if state.in_flight:
                self._expired_running.append(state)
                continue
            self._retire(state, rpc=False)
            expired += 1
        return expired

    def next_expiry(self) -> float | None:
        """When the next task reaches the end of its retention (after `expire`, always in the future)."""
        return self._by_creation[0][0] + TASK_RETENTION_SECONDS if self._by_creation else None

    def _push(self, queue: QueueState, state: TaskState) -> None:
        heapq.heappush(queue.due, (_micros(state.task.schedule_time), next(self._sequence), state.name))

    # -- Tombstones ---------------------------------------------------------------------------------

    def _tombstoned(self, tombstones: dict[str, float], name: str) -> bool:
        """Whether `name` is still reserved; expired tombstones leave the file at the next `prune`."""
        expires = tombstones.get(name)
        return expires is not None and expires > self.clock.now()

    def _retire(self, state: TaskState, *, rpc: bool) -> None:
        """Remove a task for good (done, failed permanently, deleted); its name stays reserved.

        For an RPC the change is on disk first or (StorageError) not made at all. For a dispatch
        outcome memory moves on at once and the disk follows at the dispatcher's next pass (`save_unsaved`)."""
        until = self.clock.now() + self.task_tombstone_seconds
        if rpc:
            self.store.delete_task(state.name, until)
        self.tasks.pop(state.name, None)
        queue = self.queues.get(state.queue)
        if queue is not None:
            queue.tasks.discard(state.name)
        self._task_tombstones[state.name] = until
        self._removed += 1
        if not rpc:
            self._save_outcome(state.name)

    def _save_outcome(self, name: str) -> None:
        """Mark a dispatch outcome for saving. The dispatcher saves every outcome marked since its last pass in
        one transaction at its next pass (`save_unsaved`), with the attempts' records, which the finished attempt
        wakes it for, or before an RPC answers if one comes first: one commit for a burst of deliveries instead
        of one each."""
        if self.store.durable:
            self._unsaved.add(name)

    @property
    def unsaved(self) -> int:
        """How many tasks' latest states and attempt records are not on disk yet (storage failing); retried
        by `save_unsaved`."""
        return len(self._unsaved) + len(self._unsaved_history)

    def save_unsaved(self) -> bool:
        """Write every task state and attempt record the store could not take earlier, in one transaction;
        True when none is left. A task is written as memory has it now: saved if it still exists, else deleted
        and tombstoned."""
        if not self._unsaved and not self._unsaved_history:
            return True
        names = list(self._unsaved)
        saved = [self.tasks[name].stored() for name in names if name in self.tasks]
        removed = [(name, self._task_tombstones.get(name, self.clock.now())) for name in names
                   if name not in self.tasks]
        try:
            self.store.sync_tasks(saved, removed, [record.stored() for record in self._unsaved_history.values()])
        except StorageError as error:
            if not self._storage_failing:
                log.warning("%s; task outcomes are kept in memory and written once it can be", error)
            self._storage_failing = True
            return False
        self._unsaved.difference_update(names)
        self._unsaved_history.clear()
        if self._storage_failing:
            log.warning("the state file can be written again; %d task outcome(s) saved", len(names))
            self._storage_failing = False
        return True

    def prune(self) -> int:
        """Forget expired tombstones in memory and on disk, and give back the memory of removed tasks.
        Returns how many tombstones went. Called on a schedule (`EmulatorServer`)."""
        now = self.clock.now()
        expired = 0
        for tombstones in (self._task_tombstones, self._queue_tombstones):
            gone = [name for name, expires in tombstones.items() if expires <= now]
            for name in gone:
                del tombstones[name]
            expired += len(gone)
        self.store.prune_tombstones(now)
        if self.expire(now):
            self.save_unsaved()
        for queue in self.queues.values():
            if len(queue.due) > 2 * len(queue.tasks) + 64:
                self._compact_due(queue)
        if len(self._by_creation) > 2 * len(self.tasks) + 64:
            self._by_creation = [entry for entry in self._by_creation if self.tasks.get(entry[2].name) is entry[2]]
            heapq.heapify(self._by_creation)
        self._removed += expired
        if self._removed > 1000 and self._removed > len(self.tasks) + len(self._task_tombstones):
            # Python's dicts and sets keep their peak size; copies are sized to what is left.
            self.tasks = dict(self.tasks)
            self._task_tombstones = dict(self._task_tombstones)
            self._queue_tombstones = dict(self._queue_tombstones)
            for queue in self.queues.values():
                queue.tasks = set(queue.tasks)
                queue.due = list(queue.due)
            self._removed = 0
        return expired

    # -- Queues -------------------------------------------------------------------------------------

    def _queue(self, name: str, not_found: Callable[[], errors.ApiError] = errors.queue_not_found) -> QueueState:
        queue = self.queues.get(name)
        if queue is None:
            raise not_found()
        return queue

    def _save_queue(self, queue: QueueState) -> Any:
        self.store.put_queue(queue.name, queue.queue.SerializeToString())
        shown = Queue()
        shown.CopyFrom(queue.queue)
        return shown

    def create_queue(self, parent: str, queue: Any) -> Any:
        check_parent(parent)
        name = parse_queue_name(queue.name)
        if name.parent != parent:
            raise errors.invalid(f"Queue.name ('{queue.name}') must be in the parent ('{parent}').")
        validate_queue_config(queue)
        if name.path in self.queues:
            raise errors.queue_already_exists()
        if self._tombstoned(self._queue_tombstones, name.path):
            raise errors.queue_recently_deleted()
        return self._install_queue(queue)

    def _install_queue(self, queue: Any) -> Any:
        created = Queue()
        created.CopyFrom(queue)
        apply_queue_defaults(created)
        created.state = RUNNING
        created.ClearField("purge_time")
        state = QueueState(created)
        shown = self._save_queue(state)
        self.queues[state.name] = state
        return shown

    def update_queue(self, queue: Any, update_mask: field_mask_pb2.FieldMask) -> Any:
        """UpdateQueue is an upsert (§10.6): it creates a missing queue; it never changes the state."""
        name = parse_queue_name(queue.name)
        validate_queue_config(queue)
        existing = self.queues.get(name.path)
        if existing is None:
            if self._tombstoned(self._queue_tombstones, name.path):
                raise errors.queue_recently_deleted()
            return self._install_queue(queue)
        updated = Queue()
        updated.CopyFrom(existing.queue)
        mask = field_mask_pb2.FieldMask(paths=list(update_mask.paths) or list(UPDATABLE_QUEUE_FIELDS))
        for path in mask.paths:
            single = field_mask_pb2.FieldMask(paths=[path])
            if path.split(".")[0] not in UPDATABLE_QUEUE_FIELDS or not single.IsValidForDescriptor(Queue.DESCRIPTOR):
                raise errors.invalid(f"Invalid update_mask path: '{path}'. Paths name fields of Queue under "
                                     f"{', '.join(UPDATABLE_QUEUE_FIELDS)}, e.g. "
                                     "'rate_limits.max_dispatches_per_second'.")  # inferred
        mask.MergeMessage(queue, updated, replace_message_field=True, replace_repeated_field=True)
        validate_queue_config(updated)
        apply_queue_defaults(updated)
        updated.rate_limits.max_burst_size = burst_size(updated.rate_limits.max_dispatches_per_second)
        shown = self._save_queue(QueueState(updated))
        existing.queue = updated
        self.on_work()
        return shown

    def get_queue(self, name: str) -> Any:
        parse_queue_name(name)
        return _copy(self._queue(name).queue)

    def list_queues(self, parent: str, filter_: str, page_size: int, page_token: str) -> tuple[list[Any], str]:
        check_parent(parent)
        wanted_state = _state_filter(filter_)
        names = sorted(name for name in self.queues if name.startswith(parent + "/queues/"))
        if wanted_state is not None:
            names = [n for n in names if self.queues[n].queue.state == wanted_state]
        page, token = _page(names, page_size, MAX_QUEUES_PAGE, page_token, f"queues\n{parent}\n{filter_}")
        return [_copy(self.queues[n].queue) for n in page], token

    def delete_queue(self, name: str) -> None:
        parse_queue_name(name)
        queue = self._queue(name, errors.entity_not_found)
        until = self.clock.now() + self.queue_tombstone_seconds
        self.store.delete_queue(name, until)
        for task_name in list(queue.tasks):
            self.tasks.pop(task_name, None)
        del self.queues[name]
        if self.queue_tombstone_seconds > 0:
            self._queue_tombstones[name] = until

    def pause_queue(self, name: str) -> Any:
        return self._set_state(name, PAUSED)

    def resume_queue(self, name: str) -> Any:
        return self._set_state(name, RUNNING)

    def _set_state(self, name: str, state: int) -> Any:
        parse_queue_name(name)
        queue = self._queue(name)
        changed = _copy(queue.queue)
        changed.state = state
        shown = self._save_queue(QueueState(changed))
        queue.queue = changed
        self.on_work()
        return shown

    def purge_queue(self, name: str) -> Any:
        """Deletes every task created before the call (§10.3); their names stay reserved (§5.4)."""
        parse_queue_name(name)
        queue = self._queue(name)
        now = self.clock.now()
        purged_queue = _copy(queue.queue)
        purged_queue.purge_time.FromMicroseconds(int(now * 1_000_000))
        until = now + self.task_tombstone_seconds
        purged = [n for n in queue.tasks if self.tasks[n].task.create_time.seconds <= now]
        self.store.delete_tasks(purged, until, queue=(name, purged_queue.SerializeToString()))
        for task_name in purged:
            self.tasks.pop(task_name, None)
            queue.tasks.discard(task_name)
            self._task_tombstones[task_name] = until
        self._removed += len(purged)
        queue.queue = purged_queue
        return _copy(purged_queue)

    # -- Tasks --------------------------------------------------------------------------------------

    def create_task(self, parent: str, task: Any, view: int) -> Any:
        parse_queue_name(parent)
        new = Task()
        new.CopyFrom(task)
        if new.name:
            task_id_of(new.name, parent)
        queue = self._queue(parent)
        if not new.name:  # before validation: the 1 MiB limit counts the generated name too (§6.1)
            new.name = f"{parent}/tasks/{new_task_id()}"
        normalise_new_task(new, self.clock.now())
        if new.name in self.tasks or self._tombstoned(self._task_tombstones, new.name):
            raise errors.task_already_exists()
        state = TaskState(new, queue.name)
        if self.store.durable:
            self.store.put_task(state.stored())
        self._index(state)
        if not queue.paused:  # a paused queue's tasks wait for ResumeQueue, which wakes the dispatcher
            self.on_task_created()
        return with_view(new, view)

    def _task(self, name: str) -> TaskState:
        state = self.tasks.get(name)
        if state is None:
            raise errors.entity_not_found()
        return state

    def get_task(self, name: str, view: int) -> Any:
        state = self.tasks.get(name)
        if state is None:
            if self._tombstoned(self._task_tombstones, name):
                raise errors.task_recently_deleted()
            raise errors.entity_not_found()
        return with_view(state.task, view)

    def list_tasks(self, parent: str, view: int, page_size: int, page_token: str) -> tuple[list[Any], str]:
        parse_queue_name(parent)
        queue = self._queue(parent)
        page, token = _page(sorted(queue.tasks), page_size, MAX_TASKS_PAGE, page_token, f"tasks\n{parent}")
        return [with_view(self.tasks[name].task, view) for name in page], token

    def delete_task(self, name: str) -> None:
        self._retire(self._task(name), rpc=True)

    def run_task(self, name: str, view: int) -> tuple[Any, TaskState]:
        """Marks the task for immediate dispatch, ignoring schedule, pause and rate limits (§10.5)."""
        state = self._task(name)
        state.run_requested = True
        self._run_requested.add(name)
        return with_view(state.task, view), state

    # -- Dispatch -----------------------------------------------------------------------------------

    def running_queues(self) -> Iterator[QueueState]:
        return (queue for queue in self.queues.values() if not queue.paused)

    def peek_due(self, queue: QueueState) -> tuple[int, TaskState] | None:
        """The earliest task of `queue` waiting for an attempt, with its schedule time in µs."""
        while queue.due:
            micros, _, name = queue.due[0]
            state = self._waiting(queue, micros, name)
            if state is None:
                heapq.heappop(queue.due)  # stale: done, deleted, running or rescheduled
                continue
            return micros, state
        return None

    def _waiting(self, queue: QueueState, micros: int, name: str) -> TaskState | None:
        """The task a `due` entry stands for, if it still waits at that time; None for a stale entry."""
        state = self.tasks.get(name)
        if state is None or state.in_flight or state.queue != queue.name or _micros(state.task.schedule_time) != micros:
            return None
        return state

    def _compact_due(self, queue: QueueState) -> None:
        """Drop stale entries from anywhere in the heap. `peek_due` drops them only from its top: tasks scheduled a
        day ahead and then deleted or purged left an entry each, for as long as their schedule was ahead."""
        queue.due = [entry for entry in queue.due if self._waiting(queue, entry[0], entry[2]) is not None]
        heapq.heapify(queue.due)

    def take_due(self, queue: QueueState) -> None:
        heapq.heappop(queue.due)

    def run_requests(self) -> list[TaskState]:
        """Tasks RunTask asked for that can start now (not while an attempt is running)."""
        ready = []
        for name in list(self._run_requested):
            state = self.tasks.get(name)
            if state is None or not state.run_requested:
                self._run_requested.discard(name)
            elif not state.in_flight:
                ready.append(state)
        return ready

    def begin_attempt(self, state: TaskState, persist: bool = True) -> Attempt:
        """Record a dispatch (§4.6, §4.7) and return what to send. With `persist=False` the caller saves
        the task (with `persist`) before the request goes out."""
        now = self.clock.now()
        task = state.task
        forced = state.run_requested
        dispatched = int(now * 1_000_000)
        scheduled = _micros(task.schedule_time)
        if not forced:  # due to the nearest µs (Dispatcher._dispatch_due), and never shown as sent before its time
            dispatched = max(dispatched, scheduled)
        retry_count = task.dispatch_count
        task.dispatch_count += 1
        if retry_count == 0:
            _set_micros(task.first_attempt.dispatch_time, dispatched)
        last = task.last_attempt
        last.Clear()
        last.schedule_time.CopyFrom(task.schedule_time)
        _set_micros(last.dispatch_time, dispatched)
        state.in_flight = True
        state.run_requested = False
        if persist:
            self.persist([state])
        kind = task.WhichOneof("message_type")
        request = getattr(task, kind)
        oidc = request.oidc_token if kind == "http_request" and request.HasField("oidc_token") else None
        oauth = request.oauth_token if kind == "http_request" and request.HasField("oauth_token") else None
        queue_id = state.queue.rsplit("/", 1)[1]
        deadline = task.dispatch_deadline
        attempt = Attempt(
            task_name=state.name, queue_id=queue_id, task_id=state.name.rsplit("/", 1)[1], kind=kind,
            method=METHOD_NAMES[request.http_method],  # CreateTask accepts no other
            url=request.url if kind == "http_request" else request.relative_uri or "/",
            headers=dict(request.headers), body=bytes(request.body),
            oidc_email=oidc.service_account_email if oidc else None,
            oidc_audience=(oidc.audience or request.url) if oidc else None,
            oauth_email=oauth.service_account_email if oauth else None,
            deadline=(deadline.seconds + deadline.nanos / 1e9) or 600.0,
            retry_count=retry_count, execution_count=state.execution_count,
            eta=scheduled / 1_000_000,
            previous_response=state.previous_response, retry_reason=state.retry_reason, started=now, forced=forced,
            task_state=state)
        queue = self.queues.get(state.queue)
        if kind == "http_request" and queue is not None and queue.queue.HasField("http_target"):
            attempt = dataclasses.replace(attempt, **overrides(queue.queue.http_target, attempt))
        return attempt

    def persist(self, states: list[TaskState], history: Sequence[AttemptHistory] | None = None) -> None:
        """With a state file, save attempts that are starting, their records in the history, and every outcome
        still unsaved, in one transaction; if the store fails, they are saved later (`save_unsaved`). Without
        one, nothing: whether anything is written is decided here and in the store, not by the callers."""
        if self.store.durable:
            self._unsaved.update(state.name for state in states)
            self._unsaved_history.update((record.seq, record) for record in history or ())
            self.save_unsaved()

    def forget_history(self, below: int) -> None:
        """Drop the attempt records before `seq` `below` from the store (the dispatcher no longer keeps them);
        if the store fails, the next call tries again."""
        if not self.store.durable:
            return
        for seq in [seq for seq in self._unsaved_history if seq < below]:
            del self._unsaved_history[seq]
        try:
            self.store.prune_attempts(below)
        except StorageError as error:
            log.warning("could not prune the attempt history: %s; trying again later", error)

    def finish_attempt(self, attempt: Attempt, status: int, retry_after: float | None, *, answered: bool = True,
                       history: AttemptHistory | None = None) -> str:
        """Record an attempt's outcome. Without an answer, `status` stands for what happened: 504 for no
        answer before the deadline (§1.4), 502 for a target that could not be reached. With `history`, the
        attempt's record takes the outcome and, with a state file, is saved in the same transaction as the task's
        outcome.

        Returns "succeeded", "retrying", "gave_up" or "gone" (deleted or purged meanwhile).
        """
        outcome = self._outcome(attempt, status, retry_after, answered)
        if history is not None:
            history.outcome = outcome
            if self.store.durable:  # saved with the outcome, at the dispatcher's next pass
                self._unsaved_history[history.seq] = history
        return outcome

    def _outcome(self, attempt: Attempt, status: int, retry_after: float | None, answered: bool) -> str:
        state = attempt.task_state
        if self.tasks.get(state.name) is not state or not state.in_flight:
            return "gone"
        now = self.clock.now()
        task = state.task
        state.in_flight = False
        last = task.last_attempt
        last.response_status.code = rpc_code_for(status)
        last.response_status.message = reason_phrase(status)
        if answered:
            task.response_count += 1
            _set_micros(last.response_time, int(now * 1_000_000))
        if answered and 200 <= status < 300:
            self._retire(state, rpc=False)
            return "succeeded"
        if answered and status < 500:
            state.execution_count += 1
        state.previous_response = status
        state.retry_reason = reason_phrase(status) if answered else (
            "Deadline exceeded" if status == 504 else "Target unreachable")
        policy = policy_of(self.queues[state.queue].queue)
        first = task.first_attempt.dispatch_time
        if policy.gives_up(task.dispatch_count, first.seconds + first.nanos / 1e9, now):
            self._retire(state, rpc=False)
            return "gave_up"
        failed_at = attempt.started if attempt.forced else now
        next_time = min(policy.next_attempt(task.dispatch_count, failed_at, status, retry_after),
                        float(MAX_TIMESTAMP_SECONDS))
        task.schedule_time.FromMicroseconds(int(next_time * 1_000_000))
        self._save_outcome(state.name)
        self._push(self.queues[state.queue], state)
        self.on_work()
        return "retrying"


def _copy(message: Any) -> Any:
    copied = type(message)()
    copied.CopyFrom(message)
    return copied


def _state_filter(filter_: str) -> Any:
    if not filter_.strip():
        return None
    key, _, value = filter_.partition(":")
    if key.strip() != "state" or value.strip() not in QueueStateEnum.__members__:
        raise errors.invalid(f"Unsupported filter: '{filter_}'; only 'state: <STATE>' is supported.")  # inferred
    return int(getattr(QueueStateEnum, value.strip()))


def _page(names: list[str], size: int, most: int, token: str, listing: str) -> tuple[list[str], str]:
    """A page of sorted `names` after the one encoded in `token`, and the next token ("" at the end).

    A token names the listing it came from and the last name returned, so every name is listed exactly
    once however the pages are sized; a token from another listing, or garbage, is refused (§6.8)."""
    if size < 0:
        raise errors.invalid(f"page_size must not be negative, got {size}; use 0 for the default of {most}, "
                             f"or at most {most}.")  # inferred
    size = min(size or most, most)
    start = 0
    if token:
        try:
            kind, _, after = base64.urlsafe_b64decode(token.encode("ascii")).decode().rpartition("\n")
        except ValueError:
            kind, after = "", ""
        if kind != listing or not after:
            raise errors.invalid("Invalid page_token: it must be the next_page_token of an earlier call with the "
                                 "same parent and filter.")  # inferred
        start = bisect.bisect_right(names, after)
    page = names[start:start + size]
    more = start + size < len(names)
    return page, base64.urlsafe_b64encode(f"{listing}\n{page[-1]}".encode()).decode() if more and page else ""
