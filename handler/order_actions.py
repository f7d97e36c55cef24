"""The sample order actions. Replace their bodies with your own work; keep them idempotent-friendly."""

from __future__ import annotations

from handler.orders import OrderRequest
from tasklane.core.task_context import TaskContext
from tasklane.handler.actions import ActionLog, ActionRegistry, RejectTask

actions = ActionRegistry()


def service_actions(demo: bool = False) -> ActionRegistry:
    """Every action this service runs: these, the delivery check `make verify` sends, and with `demo` the
    local demo's (TASKLANE_DEMO_ACTIONS)."""
    from tasklane.handler.delivery_check import with_delivery_check

    if not demo:
        return with_delivery_check(actions)
    from handler.demo_actions import demo_actions

    return with_delivery_check(ActionRegistry.combined(actions, demo_actions))


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
