"""Fixtures for the handler: an app with recorded logs and dead letters, and a key to sign task tokens."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt
from google.auth import jwt as google_jwt
from starlette.testclient import TestClient

from handler.order_actions import service_actions
from tasklane.core.dead_letter import DeadLetter
from tasklane.core.logs import StructuredLog
from tasklane.handler.actions import ActionRegistry
from tasklane.handler.app import create_app
from tasklane.handler.auth import TokenVerifier
from tasklane.handler.config import HandlerConfig, TokenCheck
from tasklane.handler.idempotency import IdempotencyStore

QUEUE_PATH = "projects/tasklane-test/locations/us-central1/queues/orders"
INVOKER = "tasklane-invoker@tasklane-test.iam.gserviceaccount.com"
AUDIENCE = "https://tasklane-handler-123456789012.us-central1.run.app"
ISSUER = "https://accounts.google.com"


@dataclass
class RecordedLog:
    lines: list[bytes] = field(default_factory=list)

    def write(self, data: bytes) -> None:
        self.lines.append(data)

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def with_severity(self, severity: str) -> list[dict[str, Any]]:
        return [entry for entry in self.entries if entry["severity"] == severity]


class RecordingSink:
    def __init__(self, fail: bool = False) -> None:
        self.letters: list[DeadLetter] = []
        self.fail = fail

    async def send(self, letter: DeadLetter) -> None:
        if self.fail:
            raise OSError("dead-letter store unavailable")
        self.letters.append(letter)

    async def already_recorded(self, queue_name: str | None, task_name: str | None) -> bool:
        if self.fail:
            raise OSError("dead-letter store unavailable")
        return any((letter.task.queue_name, letter.task.task_name) == (queue_name, task_name)
                   for letter in self.letters)


def task_headers(task_name: str = "task-1", retry_count: int = 0, **extra: str) -> dict[str, str]:
    """Headers as Cloud Tasks sends them for one attempt."""
    return {"X-CloudTasks-QueueName": "orders", "X-CloudTasks-TaskName": task_name,
            "X-CloudTasks-TaskRetryCount": str(retry_count), "X-CloudTasks-TaskExecutionCount": str(retry_count),
            "X-CloudTasks-TaskETA": "1700000000.123456", "User-Agent": "Google-Cloud-Tasks", **extra}


def make_config(max_attempts: int = 5, token_check: TokenCheck = TokenCheck.OFF) -> HandlerConfig:
    return HandlerConfig(queue_path=QUEUE_PATH, invoker_service_account=INVOKER, task_audience=AUDIENCE,
                         max_attempts=max_attempts, token_check=token_check, token_issuers=(ISSUER,),
                         token_certs_url="http://127.0.0.1:1/certs")


@dataclass
class HandlerUnderTest:
    client: TestClient
    log: RecordedLog
    sink: RecordingSink


@pytest.fixture
def build_handler() -> Callable[..., HandlerUnderTest]:
    def build(actions: ActionRegistry | None = None, sink: RecordingSink | None = None,
              fetch_keys: Callable[[str], tuple[dict[str, str], float]] | None = None,
              idempotency: IdempotencyStore | None = None, **config: Any) -> HandlerUnderTest:
        log = RecordedLog()
        sink = sink or RecordingSink()
        kwargs: dict[str, Any] = {"log": StructuredLog(project_id="tasklane-test", writer=log.write),
                                  "dead_letters": sink, "idempotency": idempotency}
        handler_config = make_config(**config)
        kwargs["actions"] = actions if actions is not None else service_actions(handler_config.demo_actions)
        if fetch_keys is not None:
            kwargs["verifier"] = TokenVerifier(handler_config, fetch=fetch_keys)
        app = create_app(handler_config, **kwargs)
        return HandlerUnderTest(TestClient(app, raise_server_exceptions=False), log, sink)
    return build


@pytest.fixture
def handler(build_handler: Callable[..., HandlerUnderTest]) -> HandlerUnderTest:
    return build_handler()


@dataclass
class SigningKey:
    kid: str
    signer: crypt.RSASigner
    public_pem: str

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "email": INVOKER, "email_verified": True,
                  "sub": "104729104729104729104", "iat": now, "exp": now + 3600, **overrides}
        return google_jwt.encode(self.signer, claims, key_id=self.kid).decode()


def new_signing_key(kid: str) -> SigningKey:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return SigningKey(kid, crypt.RSASigner.from_string(private_pem, key_id=kid), public_pem)


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    return new_signing_key("key-1")
