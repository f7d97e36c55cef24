"""Actions: one small async function per action name, and the errors that tell the handler what to do.

Adding an action is adding one function:

    @actions.register("refund_payment")
    async def refund_payment(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
        ...

An action that returns has succeeded. To fail, raise:
- `RetryableError` for a transient failure (Cloud Tasks retries; `retry_after` seconds when known);
- `RejectTask` when the task can never succeed (it is acknowledged and dead-lettered, not retried).
Any other exception is unexpected: the attempt fails with 500 and Cloud Tasks retries it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.handler.orders import OrderRequest


class RetryableError(Exception):
    """A transient failure: the handler answers 503 (with Retry-After when known) and Cloud Tasks retries."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RejectTask(Exception):
    """The task can never succeed: acknowledged so it is not retried, and dead-lettered for an operator."""


@dataclass(frozen=True)
class ActionLog:
    """Structured log entries from inside an action, tagged with the task and the request's trace."""

    log: StructuredLog
    task: TaskContext
    trace_header: str | None

    def event(self, message: str, severity: str = "INFO", **fields: Any) -> None:
        self.log.emit(severity, message, task=self.task, trace_header=self.trace_header, **fields)


Action = Callable[[OrderRequest, TaskContext, ActionLog], Awaitable[None]]


class ActionRegistry:
    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}

    def register(self, name: str) -> Callable[[Action], Action]:
        def add(action: Action) -> Action:
            if name in self._actions:
                raise ValueError(f"action {name!r} is registered twice")
            self._actions[name] = action
            return action
        return add

    def get(self, name: str) -> Action | None:
        return self._actions.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._actions))

    @classmethod
    def combined(cls, *registries: ActionRegistry) -> ActionRegistry:
        """One registry holding every action of `registries` (a name registered twice is an error)."""
        merged = cls()
        for registry in registries:
            for name, action in registry._actions.items():
                merged.register(name)(action)
        return merged
