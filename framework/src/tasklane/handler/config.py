"""The handler's settings, read once from the environment at start-up and validated there."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from tasklane.core import environment
from tasklane.core.token_check import TokenCheck as TokenCheck  # where the handler's users import it from

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"

# Cloud Tasks refuses tasks over 1 MiB, so no genuine task body is larger.
MAX_BODY_BYTES = 1024 * 1024

# uvicorn's own keep-alive default; long enough for a caller to reuse the connection for its next task.
DEFAULT_IDLE_TIMEOUT_SECONDS = 5.0
# A task of at most 1 MiB arrives in well under a second from Cloud Tasks; only a stalled or hostile
# client takes this long.
DEFAULT_REQUEST_READ_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 3600.0
# Cloud Tasks' own default dispatch deadline for HTTP targets.
DEFAULT_DISPATCH_DEADLINE_SECONDS = 600.0


class TraceExporter(StrEnum):
    """Where the handler's spans go (handler/tracing.py)."""

    OFF = "off"
    LOG = "log"
    CLOUD_TRACE = "cloud-trace"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class HandlerConfig:
    queue_path: str | None
    invoker_service_account: str | None
    task_audience: str | None
    max_attempts: int
    """The queue's RetryConfig.max_attempts; -1 means unlimited, so no attempt is known to be the last."""
    token_check: TokenCheck
    token_issuers: tuple[str, ...]
    token_certs_url: str
    demo_actions: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    idle_timeout_seconds: float = DEFAULT_IDLE_TIMEOUT_SECONDS
    """How long a connection may wait, open, before it starts a request."""
    request_read_timeout_seconds: float = DEFAULT_REQUEST_READ_TIMEOUT_SECONDS
    """How long a request may take to arrive whole, from its first byte."""
    push_service_account: str | None = None
    """The account Pub/Sub pushes task-operation records as; None refuses every push."""
    push_token_check: TokenCheck = TokenCheck.OFF
    trace_exporter: TraceExporter = TraceExporter.OFF
    """Where spans go: Cloud Trace when deployed, the log locally, or nowhere."""
    dispatch_deadline_seconds: float = DEFAULT_DISPATCH_DEADLINE_SECONDS
    """How long Cloud Tasks waits for an answer; an idempotency lease lasts this long."""
    firestore_database: str | None = None
    """Firestore database for shared idempotency and dead letters; None keeps both in this process and the log."""
    dead_letter_dir: str | None = None
    """Without Firestore: a directory to keep dead letters in as files (make local)."""

    @property
    def project_id(self) -> str | None:
        """The project, from the queue path: used to link log entries to Cloud Trace."""
        if self.queue_path and self.queue_path.startswith("projects/"):
            return self.queue_path.split("/")[1]
        return os.environ.get("GOOGLE_CLOUD_PROJECT")

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> HandlerConfig:
        env = os.environ if env is None else env
        problems: list[str] = []

        raw_attempts = env.get(environment.MAX_ATTEMPTS, "-1")
        try:
            max_attempts = int(raw_attempts)
            if max_attempts < -1 or max_attempts == 0:
                raise ValueError
        except ValueError:
            problems.append(f"{environment.MAX_ATTEMPTS}={raw_attempts!r}: must be -1 (unlimited) or at least 1")
            max_attempts = -1

        token_check = _choice(env, environment.TOKEN_CHECK, TokenCheck, TokenCheck.OFF, problems)

        audience = env.get(environment.TASK_AUDIENCE) or None
        invoker = env.get(environment.INVOKER_SERVICE_ACCOUNT) or None
        if token_check is not TokenCheck.OFF:
            for name, value in ((environment.TASK_AUDIENCE, audience),
                                (environment.INVOKER_SERVICE_ACCOUNT, invoker)):
                if not value:
                    problems.append(f"{name} is required when {environment.TOKEN_CHECK}={token_check.value}")
        push_token_check = _choice(env, environment.PUSH_TOKEN_CHECK, TokenCheck, token_check, problems)
        push_account = env.get(environment.PUSH_SERVICE_ACCOUNT) or None
        trace_exporter = _choice(env, environment.TRACE_EXPORTER, TraceExporter, TraceExporter.OFF, problems)
        raw_demo = env.get(environment.DEMO_ACTIONS, "false").lower()
        if raw_demo not in ("true", "false"):
            problems.append(f"{environment.DEMO_ACTIONS}={raw_demo!r}: must be true or false")
        idle_timeout = _seconds(env, environment.IDLE_TIMEOUT, DEFAULT_IDLE_TIMEOUT_SECONDS, problems)
        read_timeout = _seconds(env, environment.REQUEST_READ_TIMEOUT, DEFAULT_REQUEST_READ_TIMEOUT_SECONDS, problems)
        deadline = _duration(env, environment.TASK_DISPATCH_DEADLINE, DEFAULT_DISPATCH_DEADLINE_SECONDS, problems)
        database = env.get(environment.FIRESTORE_DATABASE, "").strip() or None
        queue_path = env.get(environment.QUEUE_PATH) or None
        if database is not None and not (queue_path or env.get("GOOGLE_CLOUD_PROJECT")):
            problems.append(f"{environment.FIRESTORE_DATABASE} needs the project: set {environment.QUEUE_PATH}")
        issuers = tuple(issuer.strip() for issuer in env.get(environment.TOKEN_ISSUERS, "").split(",")
                        if issuer.strip()) or GOOGLE_ISSUERS
        if problems:
            raise ConfigError("invalid handler configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        return cls(
            queue_path=queue_path,
            invoker_service_account=invoker,
            task_audience=audience,
            max_attempts=max_attempts,
            token_check=token_check,
            token_issuers=issuers,
            token_certs_url=env.get(environment.TOKEN_CERTS_URL) or GOOGLE_CERTS_URL,
            demo_actions=raw_demo == "true",
            idle_timeout_seconds=idle_timeout,
            request_read_timeout_seconds=read_timeout,
            push_service_account=push_account,
            push_token_check=push_token_check,
            trace_exporter=trace_exporter,
            dispatch_deadline_seconds=deadline,
            firestore_database=database,
            dead_letter_dir=env.get(environment.DEAD_LETTER_DIR, "").strip() or None,
        )


Choice = TypeVar("Choice", bound=StrEnum)


def _choice(env: Mapping[str, str], name: str, kind: type[Choice], default: Choice, problems: list[str]) -> Choice:
    """One of `kind`'s values from `env[name]` (`default` when unset); a problem naming the allowed ones else."""
    raw = env.get(name, default.value)
    try:
        return kind(raw)
    except ValueError:
        problems.append(f"{name}={raw!r}: must be one of {', '.join(choice.value for choice in kind)}")
        return default


def _seconds(env: Mapping[str, str], name: str, default: float, problems: list[str]) -> float:
    """A timeout in seconds from `env[name]`: a finite number above 0 and at most MAX_TIMEOUT_SECONDS."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_TIMEOUT_SECONDS:  # False for NaN too
        problems.append(f"{name}={raw!r}: must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS:g}")
        return default
    return seconds


def _duration(env: Mapping[str, str], name: str, default: float, problems: list[str]) -> float:
    """A duration as the stack writes it ("600s", or a bare number of seconds), above 0 and at most an hour."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    return _seconds({name: raw.removesuffix("s")}, name, default, problems)
