"""Slowing or failing the API on purpose, for producers' tests and benchmarks (latency per RPC, error rate)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import grpc

from emulator.errors import ApiError

INJECTED_MESSAGE = "Injected failure (emulator fault injection)."


@dataclass
class Faults:
    latency: dict[str, float] = field(default_factory=dict)
    """Seconds added to each call of an RPC by name; "*" applies to every RPC without its own entry."""
    error_rate: float = 0.0
    """Fraction of calls answered with `error_code` instead of being served."""
    error_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    random: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error rate must be between 0 and 1, got {self.error_rate}")
        for method, seconds in self.latency.items():
            if seconds < 0:
                raise ValueError(f"latency for {method} must not be negative, got {seconds}")

    async def before(self, method: str) -> None:
        delay = self.latency.get(method, self.latency.get("*", 0.0))
        if delay > 0:
            await asyncio.sleep(delay)
        if self.error_rate and self.random.random() < self.error_rate:
            raise ApiError(self.error_code, INJECTED_MESSAGE)
