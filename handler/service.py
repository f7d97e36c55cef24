"""The deployable service: the handler framework's app with this service's actions."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from handler.order_actions import actions as order_actions
from tasklane.handler.actions import ActionRegistry
from tasklane.handler.app import create_app
from tasklane.handler.config import HandlerConfig


def service_actions(config: HandlerConfig) -> ActionRegistry:
    """The sample order actions, and the local demo's when TASKLANE_DEMO_ACTIONS=true."""
    if not config.demo_actions:
        return order_actions
    from handler.demo_actions import demo_actions

    return ActionRegistry.combined(order_actions, demo_actions)


def create_service_app(config: HandlerConfig | None = None, **collaborators: Any) -> Starlette:
    """`create_app` with this service's actions; `collaborators` as create_app takes them (tests)."""
    config = config or HandlerConfig.from_environment()
    return create_app(config, actions=service_actions(config), **collaborators)
