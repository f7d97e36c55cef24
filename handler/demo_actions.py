"""Actions for the local demo (`make local`), registered only when TASKLANE_DEMO_ACTIONS=true."""

from __future__ import annotations

from handler.orders import OrderRequest
from tasklane.core.task_context import TaskContext
from tasklane.handler.actions import ActionLog, ActionRegistry, RetryableError

demo_actions = ActionRegistry()


@demo_actions.register("reserve_stock")
async def reserve_stock(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
    """Fails on its first attempt, as a busy downstream would, so the demo shows a retry."""
    if task.retry_count == 0:
        raise RetryableError("stock service is warming up", retry_after=1)
    log.event("stock reserved", event="stock_reserved", order_id=order.order_id, attempt=task.attempt)
