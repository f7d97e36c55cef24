"""The handler's settings, read once from the environment at start-up and validated there."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from handler import environment

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"

# Cloud Tasks refuses tasks over 1 MiB, so no genuine task body is larger.
MAX_BODY_BYTES = 1024 * 1024


class TokenCheck(StrEnum):
    OFF = "off"
    """No check in the handler (local runs without an emulator; Cloud Run IAM still checks in the cloud)."""
    CLAIMS = "claims"
    """Check expiry, audience, issuer, email and email_verified; not the signature, which Cloud Run has
    already verified at the edge and may replace with SIGNATURE_REMOVED_BY_GOOGLE."""
    FULL = "full"
    """Everything in CLAIMS plus the RS256 signature against the published keys."""


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

        raw_check = env.get(environment.TOKEN_CHECK, TokenCheck.OFF.value)
        try:
            token_check = TokenCheck(raw_check)
        except ValueError:
            allowed = ", ".join(check.value for check in TokenCheck)
            problems.append(f"{environment.TOKEN_CHECK}={raw_check!r}: must be one of {allowed}")
            token_check = TokenCheck.OFF

        audience = env.get(environment.TASK_AUDIENCE) or None
        invoker = env.get(environment.INVOKER_SERVICE_ACCOUNT) or None
        if token_check is not TokenCheck.OFF:
            for name, value in ((environment.TASK_AUDIENCE, audience),
                                (environment.INVOKER_SERVICE_ACCOUNT, invoker)):
                if not value:
                    problems.append(f"{name} is required when {environment.TOKEN_CHECK}={token_check.value}")
        raw_demo = env.get(environment.DEMO_ACTIONS, "false").lower()
        if raw_demo not in ("true", "false"):
            problems.append(f"{environment.DEMO_ACTIONS}={raw_demo!r}: must be true or false")
        issuers = tuple(issuer.strip() for issuer in env.get(environment.TOKEN_ISSUERS, "").split(",")
                        if issuer.strip()) or GOOGLE_ISSUERS
        if problems:
            raise ConfigError("invalid handler configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        return cls(
            queue_path=env.get(environment.QUEUE_PATH) or None,
            invoker_service_account=invoker,
            task_audience=audience,
            max_attempts=max_attempts,
            token_check=token_check,
            token_issuers=issuers,
            token_certs_url=env.get(environment.TOKEN_CERTS_URL) or GOOGLE_CERTS_URL,
            demo_actions=raw_demo == "true",
        )
