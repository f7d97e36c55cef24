"""The action `make verify` sends after a deploy: proof that a task went all the way from the queue to here.

It is registered in every handler, beside the application's own actions, so a deploy can be verified
whatever actions the application has. It does nothing but write the entry the verifier looks for.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from tasklane.core.task_context import TaskContext
from tasklane.core.verification import VERIFIED_EVENT, VERIFY_ACTION
from tasklane.handler.actions import ActionLog, ActionRegistry

__all__ = ["VERIFIED_EVENT", "VERIFY_ACTION", "SmokeTask", "delivery_check", "with_delivery_check"]


class SmokeTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel"):
    """`{"orderId": str}`: the smoke task's own ID, which the verifier finds in the log entry."""

    order_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


delivery_check = ActionRegistry()


@delivery_check.register(VERIFY_ACTION)
async def verify_delivery(smoke: SmokeTask, task: TaskContext, log: ActionLog) -> None:
    log.event("smoke task delivered", event=VERIFIED_EVENT, order_id=smoke.order_id,
              execution_count=task.execution_count)


def with_delivery_check(actions: ActionRegistry) -> ActionRegistry:
    """`actions` plus the delivery check, unless it is there already."""
    if actions.get(VERIFY_ACTION) is not None:
        return actions
    return ActionRegistry.combined(actions, delivery_check)
