"""The Tasklane handler framework: the Starlette app Cloud Tasks calls (`tasklane.handler.app.create_app`), the
action registry and its errors, idempotency and dead letters. Importing this package or its registry does not
import Starlette, so a producer can validate payloads against the registry without the web stack."""

from tasklane.core.task_context import TaskContext
from tasklane.handler.actions import ActionLog, ActionRegistry, RejectTask, RetryableError

__all__ = ["ActionLog", "ActionRegistry", "RejectTask", "RetryableError", "TaskContext"]
