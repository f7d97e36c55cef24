"""Delivering due tasks: per-queue token bucket and concurrency limit, deadlines, headers, outcomes.

Sources: ../shared/reference/cloud-tasks-behaviour.md §3.4-3.5 (a token bucket at
max_dispatches_per_second holding max_burst_size tokens, retries included; never more than
max_concurrent_dispatches in flight), §7 (headers), §8 (OIDC token), §1.3 (redirects are not followed
here: a 3xx is a failed attempt), §1.4 (no answer before the deadline is a failure), §10.5 (RunTask).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.connector import Connection
from multidict import CIMultiDict

from tasklane.emulator.clock import Clock
from tasklane.emulator.engine import Attempt, Engine, QueueState, TaskState, rpc_code_for
from tasklane.emulator.store import StoredAttempt
from tasklane.emulator.task_operations_log import AttemptResponse, TaskOperationsLog
from tasklane.emulator.tokens import TokenIssuer
from tasklane.emulator.validation import FRAMING_HEADER

log = logging.getLogger("emulator.dispatch")

UNREACHABLE, TIMED_OUT = 502, 504
RESPONSE_BYTES_READ = 64 * 1024
"""How much of a target's response body is read (the rest is not: the connection is closed); the first
RESPONSE_BYTES_KEPT of it are kept in the attempt record."""
RESPONSE_BYTES_KEPT = 1024
STORAGE_RETRY_SECONDS = 0.5
"""Real time between tries to save dispatch outcomes the state file could not take."""
OAUTH_PLACEHOLDER_TOKEN = "ya29.tasklane-emulator-oauth-token"  # the emulator cannot mint Google access tokens
INTERRUPTED = "interrupted"
"""The outcome of an attempt the emulator stopped during (read back from the state file); the task, still
there, is dispatched again."""


BATCH_SECONDS = 0.003
"""While tasks are created and finish, a dispatch pass starts no sooner than this (real time) after the one before,
so a stream of CreateTask calls is dispatched in batches rather than one pass, one write and one wake-up of the
target per task (creating and delivering at once went from about 1,600 to 2,300 tasks/s). When the dispatcher has
been idle, a new task still goes out at once; and an attempt finishing in a queue at its concurrency limit, a retry
scheduled, and a queue resumed or changed bring a pass at once. (RunTask starts its attempt itself.)"""

GATHER_TURNS = 10
"""At most this many turns of the event loop given, before a pass, to answers still arriving (`_gather_answers`)."""

OPENING_AT_ONCE = 8
"""Connections to targets being opened at the same time, at most (all queues together)."""


class PacedConnector(aiohttp.TCPConnector):
    """Keep-alive connections per target origin, any number of them, but at most `opening_at_once` being
    opened at a time. A request that needs a new connection waits its turn, and on its turn takes a kept-alive
    one if another request has given one back meanwhile; so a fast target is reached over a few reused
    connections even with 1,000 dispatches in flight, and a slow one still gets one connection per dispatch."""

    def __init__(self, opening_at_once: int = OPENING_AT_ONCE, **options: Any) -> None:
        super().__init__(**options)
        self._free = opening_at_once
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        """Requests waiting their turn, first come first served. Not asyncio.Semaphore: with hundreds
        waiting, its acquire (Python 3.11) looks through every waiter each time."""

    async def connect(self, req: aiohttp.ClientRequest, traces: list[Any], timeout: aiohttp.ClientTimeout,
                      ) -> Connection:
        # A turn is held only while connecting: taking a kept-alive connection from the pool does not wait.
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # handed over by the request whose turn ended
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._pass_turn()  # it was handed this turn just as it was cancelled: pass it on
                raise
        try:
            return await super().connect(req, traces, timeout)
        finally:
            self._pass_turn()

    def _pass_turn(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():  # cancelled waiters are skipped here
                turn.set_result(None)
                return
        self._free += 1


TOKEN_SLACK_SECONDS = 1e-6
"""A token this close to whole counts as whole. Woken at `next_token_at`, float rounding of epoch seconds (steps
of 0.24 µs) may leave 0.9999996 of it, and a manual clock would never move on to the rest."""


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.updated = now

    def configure(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, burst)

    def try_take(self, now: float) -> bool:
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0 - TOKEN_SLACK_SECONDS * self.rate:
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False

    def next_token_at(self) -> float:
        """When the next token is whole, half the slack early: a manual clock moved to exactly that time is past
        it, whatever the float rounding of either, and `try_take` then finds the token."""
        return self.updated + (1.0 - self.tokens) / self.rate - TOKEN_SLACK_SECONDS / 2


@dataclass
class QueueRuntime:
    bucket: TokenBucket
    queue: QueueState
    """The queue it counts for: a queue deleted and created again under its name starts afresh, with nothing in
    flight (its predecessor's attempts still running count against no one)."""
    in_flight: int = 0
    limit: int = 0
    """max_concurrent_dispatches, as of the last pass."""
    peak_in_flight: int = 0


@dataclass
class AttemptRecord:
    """One dispatch as the inspection API shows it."""

    task: str
    queue: str
    attempt: int
    method: str
    url: str
    request_headers: dict[str, str]
    started: float
    status: int | None = None
    outcome: str = "in_flight"
    error: str | None = None
    finished: float | None = None
    response_body: str | None = None
    """The start of the target's answer (at most RESPONSE_BYTES_KEPT bytes, decoded leniently)."""
    extra: dict[str, Any] = field(default_factory=dict)
    request_body: bytes = b""
    """The start of the task's body (at most RESPONSE_BYTES_READ), so the console can show what a finished or
    deleted task sent; the task's own bytes object while it fits, so no copy is made."""
    seq: int = 0
    """Its place in the history, which the state file keeps in this order."""

    def stored(self) -> StoredAttempt:
        return StoredAttempt(self.seq, self.task, {
            "queue": self.queue, "attempt": self.attempt, "method": self.method, "url": self.url,
            "request_headers": self.request_headers, "started": self.started, "status": self.status,
            "outcome": self.outcome, "error": self.error, "finished": self.finished,
            "response_body": self.response_body, "extra": self.extra}, self.request_body)

    @classmethod
    def from_stored(cls, stored: StoredAttempt) -> AttemptRecord:
        record = cls(task=stored.task, seq=stored.seq, request_body=stored.request_body, **stored.record)
        if record.outcome == "in_flight":  # the emulator stopped while it ran
            record.outcome = INTERRUPTED
            record.error = record.error or "the emulator stopped before this attempt finished"
        return record


class Dispatcher:
    def __init__(self, engine: Engine, tokens: TokenIssuer, clock: Clock, *, enforce_rate_limits: bool = True,
                 app_engine_url: str | None = None, attempts_kept: int = 10_000,
                 task_log: TaskOperationsLog | None = None) -> None:
        self.engine = engine
        self.task_log = task_log
        self.tokens = tokens
        self.clock = clock
        self.enforce_rate_limits = enforce_rate_limits
        self.app_engine_url = app_engine_url.rstrip("/") if app_engine_url else None
        self.attempts: collections.deque[AttemptRecord] = collections.deque(
            (AttemptRecord.from_stored(stored) for stored in engine.store.attempts(attempts_kept)),
            maxlen=attempts_kept)
        """The history, oldest first; with a state file the engine saves it there, and it is read back at start."""
        self._next_seq = self.attempts[-1].seq + 1 if self.attempts else 1
        self._history_pruned_below = 0
        self.runtimes: dict[str, QueueRuntime] = {}
        self._woken = asyncio.Event()
        self._urgent = False
        """Whether `wake` (not only `wake_soon`) was called since the last pass."""
        self._last_pass = 0.0
        self._answered = 0
        """Attempts finished so far (see `_gather_answers`)."""
        self._sends: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        engine.on_work = self.wake
        engine.on_task_created = self.wake_soon

    def wake(self) -> None:
        """A pass at once: an attempt finished in a full queue, a retry was scheduled, a queue changed."""
        self._urgent = True
        self._woken.set()

    def wake_soon(self) -> None:
        """A pass soon (see BATCH_SECONDS): a task was created in a running queue, or an attempt finished in a
        queue that was below its concurrency limit, so no task was waiting for the slot it frees."""
        self._woken.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=PacedConnector(limit=0, enable_cleanup_closed=True),
            skip_auto_headers=("Accept", "Accept-Encoding", "Content-Type", "User-Agent"),
            # No timeouts of aiohttp's own (its default gives up after 5 minutes): each attempt's dispatch
            # deadline, up to 30 minutes, is enforced by the clock.
            timeout=aiohttp.ClientTimeout(), auto_decompress=False,
            # Each task's request stands alone, as in Cloud Tasks: a cookie one target set is never sent on.
            cookie_jar=aiohttp.DummyCookieJar())
        self._loop_task = asyncio.create_task(self._run(), name="dispatcher")

    async def stop(self, grace: float = 5.0) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._sends:
            await asyncio.wait(self._sends, timeout=grace)
            for send in self._sends:
                send.cancel()
        self.engine.save_unsaved()  # outcomes of the last attempts, which no further pass will save
        if self._session is not None:
            await self._session.close()

    def prune(self, before: float) -> None:
        """Forget attempt records of attempts that finished before `before` (they are kept for as long as a
        finished task's name is reserved, and at most `attempts_kept` of them), here and in the state file."""
        while self.attempts and self.attempts[0].outcome != "in_flight" and \
                (self.attempts[0].finished or self.attempts[0].started) < before:
            self.attempts.popleft()
        for name in [name for name in self.runtimes if name not in self.engine.queues]:  # deleted queues'
            del self.runtimes[name]
        below = self.attempts[0].seq if self.attempts else self._next_seq
        if below > self._history_pruned_below:
            self.engine.forget_history(below)
            self._history_pruned_below = below
        self.tokens.prune()

    def _runtime(self, queue: QueueState) -> QueueRuntime:
        limits = queue.queue.rate_limits
        runtime = self.runtimes.get(queue.name)
        if runtime is None or runtime.queue is not queue:
            runtime = QueueRuntime(TokenBucket(limits.max_dispatches_per_second, limits.max_burst_size,
                                               self.clock.now()), queue)
            self.runtimes[queue.name] = runtime
        elif runtime.bucket.rate != limits.max_dispatches_per_second:
            runtime.bucket.configure(limits.max_dispatches_per_second, limits.max_burst_size)
        return runtime

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._woken.clear()
            self._urgent = False
            self._last_pass = loop.time()
            try:
                wake_at = self._dispatch_due()  # ends with one commit: outcomes since the last pass, attempts started
            except Exception:  # noqa: BLE001 - one bad task must not stop dispatch for every queue
                log.exception("dispatch loop error; continuing")
                wake_at = self.clock.now() + 0.1
            await self._sleep(wake_at, retry_storage=self.engine.unsaved > 0)
            if self._woken.is_set() and not self._urgent:
                await self._gather_created(self._last_pass + BATCH_SECONDS - loop.time())
            await self._gather_answers()

    async def _gather_answers(self) -> None:
        """Let the answers arriving with the one that woke us finish first, so one pass (and one commit) takes
        them all: give the loop turns while each brings another answer, up to GATHER_TURNS. Against one turn,
        this raised a drain from about 8,000 to 9,000 tasks/s, and with a state file (a commit a pass) from 5,300
        to 6,800."""
        for _ in range(GATHER_TURNS):
            answered = self._answered
            await asyncio.sleep(0)
            if self._answered == answered:
                return

    def _dispatch_due(self) -> float | None:
        """Start every attempt that may start now; return when to look again (None: when woken)."""
        now = self.clock.now()
        self.engine.expire(now)  # so an expired task is never sent; saved with this pass's commit
        wake_at: float | None = None
        started: list[TaskState] = []
        history: list[AttemptRecord] = []
        for state in self.engine.run_requests():  # RunTask: no schedule, pause or rate limit applies
            started.append(state)
            history.append(self._start(state, self._runtime(self.engine.queues[state.queue]), persist=False))
        for queue in list(self.engine.running_queues()):
            runtime = self._runtime(queue)
            most = runtime.limit = queue.queue.rate_limits.max_concurrent_dispatches
            while runtime.in_flight < most:
                due = self.engine.peek_due(queue)
                if due is None:
                    break
                # Schedule times are whole µs, truncated from the clock; as a float, the µs can read a fraction
                # after the moment it came from, which a manual clock set to that moment never reaches. Half a µs
                # before it, and compared exactly as the clock's sleepers are woken, it is due then.
                at = (due[0] - 0.5) / 1_000_000
                if at > now:
                    wake_at = at if wake_at is None else min(wake_at, at)
                    break
                if self.enforce_rate_limits and not runtime.bucket.try_take(now):
                    at = runtime.bucket.next_token_at()
                    wake_at = at if wake_at is None else min(wake_at, at)
                    break
                self.engine.take_due(queue)
                started.append(due[1])
                history.append(self._start(due[1], runtime, persist=False))
        # One commit for every attempt started here, their records, and every outcome since the last pass; the
        # attempts' requests go out only after this returns.
        self.engine.persist(started, history)
        return wake_at

    async def _gather_created(self, seconds: float) -> None:
        """Wait up to `seconds` for more work to gather, unless something that wants a pass at once comes."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._urgent:
                    self._woken.clear()
                    await self._woken.wait()

    async def _sleep(self, until: float | None, retry_storage: bool = False) -> None:
        if until is None and not retry_storage:  # the usual case while busy: only a wake-up can bring work
            await self._woken.wait()
            return
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(self._woken.wait())}
        if until is not None:
            waiters.add(asyncio.ensure_future(self.clock.sleep_until(until)))
        if retry_storage:  # storage recovering is a real-world event, whatever the emulated clock says
            waiters.add(asyncio.ensure_future(asyncio.sleep(STORAGE_RETRY_SECONDS)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def run_now(self, state: TaskState) -> None:
        """RunTask: dispatch at once, whatever the schedule, pause or rate limit; after the current
        attempt if one is running."""
        if not state.in_flight:
            self._start(state, self._runtime(self.engine.queues[state.queue]))

    def _start(self, state: TaskState, runtime: QueueRuntime, persist: bool = True) -> AttemptRecord:
        """Begin an attempt and add its record to the history; with `persist`, save both now (else the caller
        saves them with `Engine.persist` before the request goes out)."""
        attempt = self.engine.begin_attempt(state, persist=False)
        headers = self.headers_for(attempt)
        url = self._url(attempt)
        record = AttemptRecord(task=attempt.task_name, queue=attempt.task_name.split("/tasks/")[0],
                               attempt=attempt.retry_count + 1, method=attempt.method, url=url or attempt.url,
                               request_headers=dict(headers), started=attempt.started,
                               request_body=attempt.body[:RESPONSE_BYTES_READ], seq=self._next_seq)
        self._next_seq += 1
        self.attempts.append(record)
        if persist:
            self.engine.persist([state], [record])
        runtime.in_flight += 1
        runtime.peak_in_flight = max(runtime.peak_in_flight, runtime.in_flight)
        send = asyncio.create_task(self._send(attempt, runtime, record, headers, url))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)
        return record

    def headers_for(self, attempt: Attempt) -> CIMultiDict[str]:
        """The task's own headers (casing kept) and the X-CloudTasks-* headers (§7.1-7.7)."""
        # Framing headers are dropped at CreateTask; also here, for tasks saved by older emulators.
        headers: CIMultiDict[str] = CIMultiDict((key, value) for key, value in attempt.headers.items()
                                                if not FRAMING_HEADER.fullmatch(key))
        headers["X-CloudTasks-QueueName"] = attempt.queue_id
        headers["X-CloudTasks-TaskName"] = attempt.task_id
        headers["X-CloudTasks-TaskRetryCount"] = str(attempt.retry_count)
        headers["X-CloudTasks-TaskExecutionCount"] = str(attempt.execution_count)
        headers["X-CloudTasks-TaskETA"] = f"{attempt.eta:.6f}"
        if attempt.retry_count > 0 and attempt.previous_response is not None:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(attempt.previous_response)
            if attempt.retry_reason:
                headers["X-CloudTasks-TaskRetryReason"] = attempt.retry_reason
        if attempt.oidc_email and attempt.oidc_audience:
            headers["Authorization"] = f"Bearer {self.tokens.token_for(attempt.oidc_email, attempt.oidc_audience)}"
        elif attempt.oauth_email:
            headers["Authorization"] = f"Bearer {OAUTH_PLACEHOLDER_TOKEN}"
        return headers

    def _url(self, attempt: Attempt) -> str | None:
        if attempt.kind == "http_request":
            return attempt.url
        return f"{self.app_engine_url}{attempt.url}" if self.app_engine_url else None

    async def _send(self, attempt: Attempt, runtime: QueueRuntime, record: AttemptRecord,
                    headers: CIMultiDict[str], url: str | None) -> None:
        status, retry_after, answered = UNREACHABLE, None, False
        try:
            if url is None:
                record.error = "App Engine task, and no --app-engine-url to send it to"
            else:
                status, retry_after, record.response_body = await self.clock.run_until(
                    self._request(attempt, url, headers), attempt.started + attempt.deadline)
                answered = True
        except TimeoutError:
            status, record.error = TIMED_OUT, f"no answer within the {attempt.deadline:g} s dispatch deadline"
        except (aiohttp.ClientError, OSError, ValueError) as error:
            record.error = f"{type(error).__name__}: {error}"
        finally:
            slot_awaited = runtime.in_flight >= runtime.limit  # the queue was full: a due task may wait for this slot
            runtime.in_flight -= 1
        record.status, record.finished = status, self.clock.now()
        before = self._log_context(attempt)
        record.outcome = self.engine.finish_attempt(attempt, status, retry_after, answered=answered,
                                                    history=record)
        if before is not None:
            self._log_attempt(attempt, record, before, answered)
        self._answered += 1
        if slot_awaited:
            self.wake()
        else:
            self.wake_soon()

    def _log_context(self, attempt: Attempt) -> tuple[float, int, int, float] | None:
        """(sampling ratio, max attempts, responses so far, schedule time) while the task still exists."""
        state = self.engine.tasks.get(attempt.task_name)
        queue = self.engine.queues.get(attempt.task_name.split("/tasks/")[0])
        if self.task_log is None or state is None or queue is None:
            return None
        schedule = state.task.last_attempt.schedule_time
        return (queue.queue.stackdriver_logging_config.sampling_ratio, queue.queue.retry_config.max_attempts,
                state.task.response_count, schedule.seconds + schedule.nanos / 1e9)

    def _log_attempt(self, attempt: Attempt, record: AttemptRecord, before: tuple[float, int, int, float],
                     answered: bool) -> None:
        assert self.task_log is not None
        ratio, max_attempts, responses, scheduled = before
        retry_time = None
        if record.outcome == "retrying":
            state = self.engine.tasks.get(attempt.task_name)
            if state is not None:
                retry_time = state.task.schedule_time.seconds + state.task.schedule_time.nanos / 1e9
        self.task_log.attempt_finished(AttemptResponse(
            task_name=attempt.task_name, rpc_code=rpc_code_for(record.status or 0),
            dispatch_count=attempt.retry_count + 1, response_count=responses + int(answered),
            max_attempts=max_attempts, schedule_time=scheduled, dispatch_time=attempt.started,
            finished=record.finished or attempt.started, retry_time=retry_time,
            target=f"{attempt.method} {record.url}"), ratio)

    async def _request(self, attempt: Attempt, url: str, headers: CIMultiDict[str],
                       ) -> tuple[int, float | None, str]:
        """The status, Retry-After and the start of the body. Only RESPONSE_BYTES_READ of the body are
        read, so a huge answer costs no memory; the connection is then closed, not reused."""
        assert self._session is not None
        async with self._session.request(attempt.method, url, headers=headers, data=attempt.body or None,
                                         allow_redirects=False) as response:
            body = b""
            try:
                while len(body) < RESPONSE_BYTES_READ:
                    chunk = await response.content.read(RESPONSE_BYTES_READ - len(body))
                    if not chunk:
                        break
                    body += chunk
            except aiohttp.ClientPayloadError:
                pass  # the status is what counts; a broken body after it does not undo the answer
            if not response.content.at_eof():
                response.close()
            return (response.status, _retry_after(response.headers.get("Retry-After")),
                    body[:RESPONSE_BYTES_KEPT].decode("utf-8", errors="replace"))


MAX_RETRY_AFTER_SECONDS = 30 * 86400.0
"""The longest Retry-After honoured (the rest is ignored): how Cloud Tasks weighs the header is undocumented (§1.9),
and a task can be scheduled at most 30 days ahead (§4.3). Before, "1e400" or "inf" parked a task at year 9999."""


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds, up to MAX_RETRY_AFTER_SECONDS; the HTTP-date form is not used by handlers here and is
    ignored, as is anything that is not a finite number."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS) if math.isfinite(seconds) else None
