"""The system clock's deadlines (SystemClock.run_until): grouped in 50 ms slots, one loop timer per slot."""

from __future__ import annotations

import asyncio
import time

import pytest

from tasklane.emulator.clock import DEADLINE_SLOT_SECONDS, SystemClock


def test_work_past_its_deadline_is_cancelled_with_timeout_error_soon_after_it() -> None:
    clock = SystemClock()
    cancelled = []

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> float:
        started = time.time()
        with pytest.raises(TimeoutError):
            await clock.run_until(slow(), started + 0.2)
        return time.time() - started

    took = asyncio.run(main())
    assert cancelled == [True]
    assert 0.2 <= took < 0.2 + DEADLINE_SLOT_SECONDS + 0.15


def test_many_calls_sharing_a_slot_each_get_their_own_outcome() -> None:
    clock = SystemClock()

    async def answer(value: int, delay: float) -> int:
        await asyncio.sleep(delay)
        return value

    async def main() -> list[object]:
        deadline = time.time() + 0.3
        calls = [clock.run_until(answer(n, 0.01 if n % 2 else 5), deadline) for n in range(200)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [o for o in outcomes if not isinstance(o, TimeoutError)] == list(range(1, 200, 2))
    assert sum(isinstance(o, TimeoutError) for o in outcomes) == 100


def test_a_deadline_already_past_times_out_and_a_finished_call_is_never_cancelled_later() -> None:
    clock = SystemClock()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await clock.run_until(asyncio.sleep(1), time.time() - 5)
        assert await clock.run_until(asyncio.sleep(0, result="done"), time.time() + 0.05) == "done"
        await asyncio.sleep(0.2)  # the slot's timer fires with nothing left in it: no stray cancellation

    asyncio.run(main())
