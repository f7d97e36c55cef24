"""The deployable service: the handler framework's app with this service's actions."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette

from handler.order_actions import service_actions
from tasklane.handler.app import create_app
from tasklane.handler.config import HandlerConfig


def create_service_app(config: HandlerConfig | None = None, **collaborators: Any) -> Starlette:
    """`create_app` with this service's actions (the local demo's too when TASKLANE_DEMO_ACTIONS=true);
    `collaborators` as create_app takes them (tests)."""
    config = config or HandlerConfig.from_environment()
    return create_app(config, actions=service_actions(config.demo_actions), **collaborators)
