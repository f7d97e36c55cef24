"""The sample order actions. Replace their bodies with your own work; keep them idempotent-friendly."""

from __future__ import annotations

from tasklane.core.task_context import TaskContext
from tasklane.handler.actions import ActionLog, ActionRegistry, RejectTask
from tasklane.handler.orders import OrderRequest

actions = ActionRegistry()


@actions.register("send_confirmation")
async def send_confirmation(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
    if order.customer_email is None:
        raise RejectTask("send_confirmation needs customerEmail")
    log.event("order confirmation sent", event="confirmation_sent", order_id=order.order_id,
              customer_email=order.customer_email)


@actions.register("update_inventory")
async def update_inventory(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
    log.event("inventory updated", event="inventory_updated", order_id=order.order_id)


@actions.register("notify_warehouse")
async def notify_warehouse(order: OrderRequest, task: TaskContext, log: ActionLog) -> None:
    log.event("warehouse notified", event="warehouse_notified", order_id=order.order_id)
