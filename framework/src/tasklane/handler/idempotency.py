"""At-most-once execution of an action per key, over Cloud Tasks' at-least-once delivery.

The key is the body's `idempotencyKey`, else the queue and task name. The store is pluggable: the
in-process default protects one instance (and concurrent duplicates within it); with several instances
use a shared store with the same three operations (README: "Idempotency across instances").
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from typing import Protocol


class Claim(Enum):
    STARTED = "started"
    """The caller now holds the key and must call `succeeded` or `abandoned`."""
    ALREADY_DONE = "already_done"
    """The action already succeeded for this key: do not run it again."""
    IN_PROGRESS = "in_progress"
    """Another delivery of the same task is running now: try again later."""


class IdempotencyStore(Protocol):
    async def begin(self, key: str, lease: str) -> Claim:
        """Claim `key` for the delivery named by `lease` (unique per delivery), unless done or claimed by another."""

    async def succeeded(self, key: str) -> None: ...

    async def abandoned(self, key: str, lease: str) -> None:
        """The attempt failed; a later delivery may run the action. Released only while `lease` still holds the key:
        a delivery whose lease ran out, and was taken over, must not release the newer delivery's claim."""


class InProcessIdempotencyStore:
    """Remembers the last `capacity` completed keys; an in-flight claim lapses after `lease_seconds`.

    No awaits happen between the check and the update, so concurrent duplicates on one event loop
    cannot both start.
    """

    def __init__(self, capacity: int = 100_000, lease_seconds: float = 1800.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._done: OrderedDict[str, None] = OrderedDict()
        self._in_flight: dict[str, tuple[float, str]] = {}
        """key -> (when its lease ends, the lease)."""

    async def begin(self, key: str, lease: str) -> Claim:
        if key in self._done:
            self._done.move_to_end(key)
            return Claim.ALREADY_DONE
        now = self._clock()
        held = self._in_flight.get(key)
        if held is not None and held[0] > now:
            return Claim.IN_PROGRESS
        self._in_flight[key] = (now + self.lease_seconds, lease)
        return Claim.STARTED

    async def succeeded(self, key: str) -> None:
        self._in_flight.pop(key, None)
        self._done[key] = None
        while len(self._done) > self.capacity:
            self._done.popitem(last=False)

    async def abandoned(self, key: str, lease: str) -> None:
        held = self._in_flight.get(key)
        if held is not None and held[1] == lease:
            del self._in_flight[key]
