"""Actions: one small async function per action name, its payload type, and the errors that tell the handler
what to do.

Adding an action is adding one function and the type of its payload (a msgspec Struct or a dataclass):

    class Refund(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
        order_id: str
        amount_cents: int

    @actions.register("refund_payment")
    async def refund_payment(refund: Refund, task: TaskContext, log: ActionLog) -> None:
        ...

The payload type is read from the first parameter's annotation (or given: `register(name, payload=Refund)`);
the handler decodes each task's body into it (handler/payloads.py), so the action runs only on a valid
payload. An action that returns has succeeded. To fail, raise:
- `RetryableError` for a transient failure (Cloud Tasks retries; `retry_after` seconds when known);
- `RejectTask` when the task can never succeed (it is acknowledged and dead-lettered, not retried).
Any other exception is unexpected: the attempt fails with 500 and Cloud Tasks retries it.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from tasklane.core.logs import StructuredLog
from tasklane.core.task_context import TaskContext
from tasklane.core.wire import ACTION_NAME_PATTERN
from tasklane.handler.payloads import PayloadType


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


Action = Callable[[Any, TaskContext, ActionLog], Awaitable[None]]
"""`async def action(payload: YourType, task: TaskContext, log: ActionLog) -> None`."""
F = TypeVar("F", bound=Action)


@dataclass(frozen=True)
class RegisteredAction:
    """One action: its name (and route), the function, and the type its payload is decoded into."""

    name: str
    function: Action
    payload: PayloadType[Any]

    async def __call__(self, payload: Any, task: TaskContext, log: ActionLog) -> None:
        await self.function(payload, task, log)


def _annotated_payload(name: str, function: Action) -> type:
    """The type annotated on `function`'s first parameter, or TypeError saying how to declare one."""
    how = (f"action {name!r}: annotate its first parameter with the payload type (a msgspec.Struct or a "
           f"dataclass), or register it with payload=YourType")
    parameters = list(inspect.signature(function).parameters.values())
    if not parameters:
        raise TypeError(f"{how}; {function.__qualname__} takes no parameters")
    try:
        hints = typing.get_type_hints(function)
    except NameError as error:
        raise TypeError(f"{how}; its annotations do not resolve: {error}") from None
    annotation = hints.get(parameters[0].name)
    if not isinstance(annotation, type):
        raise TypeError(f"{how}; its first parameter is annotated {annotation!r}")
    return annotation


class ActionRegistry:
    """Actions by name. Light on purpose (no web framework), so producers can import it to check payloads."""

    def __init__(self) -> None:
        self._actions: dict[str, RegisteredAction] = {}

    def register(self, name: str, *, payload: type | None = None) -> Callable[[F], F]:
        """Register the decorated function as action `name`, its payload of type `payload` (default: the type
        annotated on its first parameter). A bad name or type fails here, at import, not at the first task."""
        if not isinstance(name, str) or not re.fullmatch(ACTION_NAME_PATTERN, name):
            raise ValueError(f"action name {name!r} must be 1-100 letters, digits, '_' or '-' (it is a route)")

        def add(function: F) -> F:
            payload_type: PayloadType[Any] = PayloadType(payload if payload is not None
                                                         else _annotated_payload(name, function))
            self._add(RegisteredAction(name, function, payload_type))
            return function
        return add

    def _add(self, action: RegisteredAction) -> None:
        if action.name in self._actions:
            raise ValueError(f"action {action.name!r} is registered twice")
        self._actions[action.name] = action

    def get(self, name: str) -> RegisteredAction | None:
        return self._actions.get(name)

    def __iter__(self) -> Iterator[RegisteredAction]:
        """Every action, by name."""
        return iter(sorted(self._actions.values(), key=lambda action: action.name))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._actions))

    @classmethod
    def combined(cls, *registries: ActionRegistry) -> ActionRegistry:
        """One registry holding every action of `registries` (a name registered twice is an error)."""
        merged = cls()
        for registry in registries:
            for action in registry:
                merged._add(action)
        return merged
