"""Slowing or failing the API on purpose, for producers' tests and benchmarks (latency per RPC, error rate)."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from typing import Any

import grpc

from tasklane.emulator.errors import ApiError

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
        if not 0.0 <= self.error_rate <= 1.0:  # NaN fails too
            raise ValueError(f"error rate must be between 0 and 1, got {self.error_rate}")
        for method, seconds in self.latency.items():
            if not 0 <= seconds < math.inf:
                raise ValueError(f"latency for {method} must be a number of seconds >= 0, got {seconds}")
        if self.error_code == grpc.StatusCode.OK:
            raise ValueError("errorCode must be an error, not OK")

    @staticmethod
    def from_json(body: Any) -> Faults:
        """Faults as `PUT /v1/faults` sends them ({"latency": {METHOD: SECONDS}, "errorRate": F,
        "errorCode": NAME}); ValueError naming what is wrong, and nothing applied."""
        if not isinstance(body, dict):
            raise ValueError("send a JSON object: {\"latency\": {\"METHOD\": SECONDS}, \"errorRate\": 0..1, "
                             "\"errorCode\": \"UNAVAILABLE\"}")
        unknown = set(body) - {"latency", "errorRate", "errorCode"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; use latency, errorRate, errorCode")
        latency, rate, code = body.get("latency", {}), body.get("errorRate", 0.0), body.get("errorCode", "UNAVAILABLE")
        if not isinstance(latency, dict) or not all(_is_number(v) for v in latency.values()):
            raise ValueError("latency must map RPC names (or \"*\") to seconds")
        if not _is_number(rate):
            raise ValueError(f"errorRate must be a number between 0 and 1, got {rate!r}")
        if not isinstance(code, str) or code not in grpc.StatusCode.__members__:
            raise ValueError(f"errorCode must be a gRPC status name such as UNAVAILABLE, got {code!r}")
        return Faults(latency={str(k): float(v) for k, v in latency.items()}, error_rate=float(rate),
                      error_code=grpc.StatusCode[code])

    def apply(self, other: Faults) -> None:
        """Take `other`'s settings, all at once (it was validated when made)."""
        self.latency, self.error_rate, self.error_code = other.latency, other.error_rate, other.error_code

    async def before(self, method: str) -> None:
        delay = self.latency.get(method, self.latency.get("*", 0.0))
        if delay > 0:
            await asyncio.sleep(delay)
        if self.error_rate and self.random.random() < self.error_rate:
            raise ApiError(self.error_code, INJECTED_MESSAGE)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
