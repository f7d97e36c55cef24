"""Time for the engine and dispatcher: the system clock, or a manual one tests move by hand.

Everything that waits for a schedule time, a backoff, a dispatch deadline or a tombstone to expire
reads and waits on a `Clock`, so tests jump over hours without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import threading
import time
import weakref
from collections.abc import Awaitable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""

    async def sleep_until(self, when: float) -> None:
        """Return once `now() >= when` (or soon after)."""

    async def run_until(self, work: Awaitable[T], deadline: float) -> T:
        """`work`'s result, or TimeoutError (with `work` cancelled) if the deadline passes first."""


DEADLINE_SLOT_SECONDS = 0.05
"""SystemClock.run_until's deadlines are grouped in slots this wide, and fire at most this late."""


class SystemClock:
    def __init__(self) -> None:
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, set[asyncio.Timeout]]] = \
            weakref.WeakKeyDictionary()
        """Per event loop: slot number -> the timeouts whose deadline falls in that slot."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        delay = when - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def run_until(self, work: Awaitable[T], deadline: float) -> T:
        """One loop timer per 50 ms slot of deadlines rather than one per call: with 1,000 dispatches in
        flight, pushing and cancelling a timer each (Python-level heap comparisons) was a tenth of the
        dispatcher's time. The timeout is asyncio's own, so cancellation behaves exactly as with
        `asyncio.timeout` (no extra task, unlike wait_for)."""
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = {}
        async with asyncio.timeout(None) as timeout:
            number = int(deadline / DEADLINE_SLOT_SECONDS) + 1
            slot = slots.get(number)
            if slot is None:
                slot = slots[number] = set()
                loop.call_at(loop.time() + max(0.0, number * DEADLINE_SLOT_SECONDS - time.time()),
                             self._expire, slots, number)
            slot.add(timeout)
            try:
                return await work
            finally:
                slot.discard(timeout)

    @staticmethod
    def _expire(slots: dict[int, set[asyncio.Timeout]], number: int) -> None:
        for timeout in slots.pop(number, ()):
            timeout.reschedule(-1.0)  # any time in the past: asyncio cancels the work with TimeoutError


class ManualClock:
    """A clock that moves only when `advance()` or `set()` is called, from any thread."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        self.set(self.now() + seconds)

    def set(self, when: float) -> None:
        with self._lock:
            self._now = max(self._now, when)
            due = []
            while self._sleepers and self._sleepers[0][0] <= self._now:
                due.append(heapq.heappop(self._sleepers))
        for _, _, loop, future in due:
            if future.done() or loop.is_closed():
                continue  # cancelled, or left behind by an emulator that has stopped
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(_resolve, future)

    async def run_until(self, work: Awaitable[T], deadline: float) -> T:
        running = asyncio.ensure_future(work)
        timer = asyncio.ensure_future(self.sleep_until(deadline))
        done, _ = await asyncio.wait({running, timer}, return_when=asyncio.FIRST_COMPLETED)
        if running in done:
            timer.cancel()
            return running.result()
        running.cancel()
        raise TimeoutError

    async def sleep_until(self, when: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if when <= self._now:
                return
            heapq.heappush(self._sleepers, (when, next(self._order), loop, future))
        await future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
