"""Which actions the producer knows, and so can check a payload against before any API call.

The registry is found by an import path, `module:attribute` (as uvicorn names an app), naming an
`ActionRegistry` or a function returning one: `TaskProducer(config, actions=...)`, else the
configuration's `actions` (TASKLANE_ACTIONS, or the CLI's `--actions`), else the bundled service's
`handler.order_actions:service_actions` when it can be imported. Without a registry the producer still
creates tasks, checking only the action's name; the handler checks the payload on arrival.

Only the registry's module is imported, never the handler's web application: registries stay light
(no Starlette), so the producer's own dependencies suffice.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

from tasklane.producer.config import ConfigError

if TYPE_CHECKING:
    from tasklane.handler.actions import ActionRegistry

DEFAULT_ACTIONS = "handler.order_actions:service_actions"


def load_registry(path: str) -> ActionRegistry:
    """The registry `path` names, or ConfigError saying why it cannot be had."""
    from tasklane.handler.actions import ActionRegistry

    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"actions {path!r} must be an import path like 'myapp.actions:registry'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"cannot import the actions module {module_name!r} (from {path!r}): {error}") from None
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no {attribute!r} (from actions {path!r})") from None
    registry = found() if callable(found) and not isinstance(found, ActionRegistry) else found
    if not isinstance(registry, ActionRegistry):
        raise ConfigError(f"actions {path!r} is a {type(registry).__name__}, not an ActionRegistry")
    return registry


def default_registry() -> ActionRegistry | None:
    """The bundled service's registry, or None when it is not installed beside the producer (a registry
    that is there but fails to import is an error, not a reason to skip the checks)."""
    module_name = DEFAULT_ACTIONS.partition(":")[0]
    try:
        if importlib.util.find_spec(module_name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return load_registry(DEFAULT_ACTIONS)
