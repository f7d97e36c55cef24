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


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        delay = when - time.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def run_until(self, work: Awaitable[T], deadline: float) -> T:
        async with asyncio.timeout(max(0.0, deadline - time.time())):  # no extra task, unlike wait_for
            return await work


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
