"""Where tasks go and how they are signed, from the deployed stack's outputs or the environment.

Sources, all giving the same `ProducerConfig`:
- `from_stack_outputs(dict)`: the JSON of `pulumi stack output --json`;
- `from_outputs_file(path)`: that JSON saved to a file (what CI hands a deploy job);
- `from_pulumi_stack(name)`: runs `pulumi stack output --json --stack NAME`;
- `from_environment()`: TASKLANE_QUEUE_PATH, TASKLANE_SERVICE_URL, TASKLANE_INVOKER_SERVICE_ACCOUNT,
  TASKLANE_TASK_AUDIENCE and optionally TASKLANE_TASK_DISPATCH_DEADLINE and TASKLANE_FIRESTORE_DATABASE.
With CLOUD_TASKS_EMULATOR_HOST set, the producer talks to that local emulator instead of Google, and
TASKLANE_ACTIONS (`module:attribute`) names the action registry payloads are checked against
(producer/registry.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasklane.core.wire import ENVELOPE_ROUTE

EMULATOR_HOST = "CLOUD_TASKS_EMULATOR_HOST"
ACTIONS = "TASKLANE_ACTIONS"
# Always fullmatch: `$` would let a final newline through.
QUEUE_PATH = re.compile(r"projects/[A-Za-z0-9\-:.]+/locations/[A-Za-z0-9-]+/queues/[A-Za-z0-9-]{1,100}")
ENVIRONMENT_KEYS = {
    "queue_path": "TASKLANE_QUEUE_PATH",
    "service_url": "TASKLANE_SERVICE_URL",
    "invoker_service_account": "TASKLANE_INVOKER_SERVICE_ACCOUNT",
    "task_audience": "TASKLANE_TASK_AUDIENCE",
    "task_dispatch_deadline": "TASKLANE_TASK_DISPATCH_DEADLINE",
    "firestore_database": "TASKLANE_FIRESTORE_DATABASE",
}
OPTIONAL_KEYS = frozenset({"task_dispatch_deadline", "firestore_database"})
DEFAULT_ROUTE = ENVELOPE_ROUTE
DEFAULT_DEADLINE_SECONDS = 600.0


class ConfigError(ValueError):
    pass


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)s?", text.strip())
    if not match:
        raise ConfigError(f"task_dispatch_deadline {text!r} is not a duration in seconds, e.g. '600s'")
    return float(match.group(1))


@dataclass(frozen=True)
class ProducerConfig:
    queue_path: str
    service_url: str
    invoker_service_account: str
    task_audience: str
    dispatch_deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    route: str = DEFAULT_ROUTE
    emulator_host: str | None = None
    firestore_database: str | None = None
    """The stack's Firestore database (output firestore_database), where dead letters are kept."""
    actions: str | None = None
    """Import path (`module:attribute`) of the action registry to check payloads against; None: the default."""

    def __post_init__(self) -> None:
        problems = []
        if not QUEUE_PATH.fullmatch(self.queue_path):
            problems.append(f"queue_path {self.queue_path!r} must be projects/P/locations/L/queues/Q")
        if not self.service_url.startswith(("https://", "http://")):
            problems.append(f"service_url {self.service_url!r} must be an http(s) URL")
        if "@" not in self.invoker_service_account:
            problems.append(f"invoker_service_account {self.invoker_service_account!r} must be an email")
        if not self.task_audience:
            problems.append("task_audience is required")
        if problems:
            raise ConfigError("invalid producer configuration: " + "; ".join(problems))

    def url_for(self, route: str) -> str:
        """The service's URL for `route` (which starts with /)."""
        return self.service_url.rstrip("/") + route

    @property
    def task_url(self) -> str:
        return self.url_for(self.route)

    @classmethod
    def from_stack_outputs(cls, outputs: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ProducerConfig:
        if not isinstance(outputs, Mapping):
            raise ConfigError(f"stack outputs must be a JSON object, got {type(outputs).__name__}; "
                              "save `pulumi stack output --json`")
        missing = [key for key in ("queue_path", "service_url", "invoker_service_account", "task_audience")
                   if not outputs.get(key)]
        if missing:
            raise ConfigError(f"stack outputs lack {', '.join(missing)}; is this a Tasklane stack?")
        not_text = [key for key in ("queue_path", "service_url", "invoker_service_account", "task_audience")
                    if not isinstance(outputs[key], str)]
        if not_text:
            raise ConfigError(f"stack outputs {', '.join(not_text)} must be strings")
        env = os.environ if env is None else env
        deadline = outputs.get("task_dispatch_deadline")
        return cls(queue_path=outputs["queue_path"], service_url=outputs["service_url"],
                   invoker_service_account=outputs["invoker_service_account"], task_audience=outputs["task_audience"],
                   dispatch_deadline_seconds=_seconds(str(deadline)) if deadline else DEFAULT_DEADLINE_SECONDS,
                   emulator_host=env.get(EMULATOR_HOST) or None, actions=env.get(ACTIONS) or None,
                   firestore_database=str(outputs.get("firestore_database") or "") or None)

    @classmethod
    def from_outputs_file(cls, path: Path) -> ProducerConfig:
        try:
            outputs = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError) as error:
            raise ConfigError(f"cannot read stack outputs from {path}: {error}") from None
        return cls.from_stack_outputs(outputs)

    @classmethod
    def from_pulumi_stack(cls, stack: str, cwd: Path | None = None) -> ProducerConfig:
        try:
            result = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack], cwd=cwd,
                                    capture_output=True, text=True, check=True, timeout=120)
        except FileNotFoundError:
            raise ConfigError("the pulumi CLI is not installed; save `pulumi stack output --json` to a file "
                              "and use from_outputs_file") from None
        except subprocess.CalledProcessError as error:
            raise ConfigError(f"pulumi stack output failed: {error.stderr.strip()}") from None
        except subprocess.TimeoutExpired:
            raise ConfigError("pulumi stack output took more than 2 minutes; save its output to a file and "
                              "use from_outputs_file") from None
        try:
            outputs = json.loads(result.stdout)
        except (ValueError, RecursionError) as error:
            raise ConfigError(f"pulumi stack output did not print JSON: {error}") from None
        return cls.from_stack_outputs(outputs)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ProducerConfig:
        env = os.environ if env is None else env
        missing = [name for key, name in ENVIRONMENT_KEYS.items() if key not in OPTIONAL_KEYS
                   and not env.get(name)]
        if missing:
            raise ConfigError(f"set {', '.join(missing)} (the stack's outputs), or build the producer from "
                              "`pulumi stack output --json`")
        outputs = {key: env.get(name) for key, name in ENVIRONMENT_KEYS.items()}
        return cls.from_stack_outputs(outputs, env)
