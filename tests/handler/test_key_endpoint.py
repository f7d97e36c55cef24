"""A token signing key endpoint that serves garbage means keys cannot be had now: 503, never 500.

A 503 is retried by Cloud Tasks (../shared/reference/cloud-tasks-behaviour.md §1.5); a 500 from a crash
is too, but says "bug". The key endpoint here is a real HTTP server on a free loopback port that answers
with whatever bytes the test chooses, read by the handler's own fetcher (urllib), not a stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from handler.service import create_service_app
from tasklane.core.logs import StructuredLog
from tasklane.handler.auth import MAX_KEYS_BYTES, AuthError, TokenVerifier
from tasklane.handler.config import TokenCheck
from tests.handler.conftest import (
    RecordedLog,
    RecordingSink,
    SigningKey,
    make_config,
    new_signing_key,
    task_headers,
)

ORDER = b'{"orderId": "o-1", "action": "update_inventory"}'
MAX_ATTEMPTS = 3


class RawHttpServer:
    """Answers every request on 127.0.0.1 with `self.response`, exactly those bytes, then closes."""

    def __init__(self) -> None:
        self.response = b""
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # so stop() is noticed promptly
        self.port = self._listener.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped:
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                self.requests += 1
                with contextlib.suppress(OSError):  # the client may hang up first
                    connection.sendall(self.response)

    def http(self, body: bytes, status: str = "200 OK", headers: str = "Content-Type: application/json\r\n",
             length: int | None = None) -> None:
        self.response = (f"HTTP/1.1 {status}\r\n{headers}Content-Length: "
                         f"{len(body) if length is None else length}\r\nConnection: close\r\n\r\n").encode() + body

    def stop(self) -> None:
        self._stopped = True
        self._thread.join(timeout=5)
        self._listener.close()


@pytest.fixture
def key_server() -> Iterator[RawHttpServer]:
    server = RawHttpServer()
    yield server
    server.stop()


def client_for(server: RawHttpServer, sink: RecordingSink | None = None) -> TestClient:
    config = dataclasses.replace(make_config(max_attempts=MAX_ATTEMPTS, token_check=TokenCheck.FULL),
                                 token_certs_url=f"http://127.0.0.1:{server.port}/certs")
    app = create_service_app(config, dead_letters=sink or RecordingSink(),
                             log=StructuredLog(writer=RecordedLog().write),
                             verifier=TokenVerifier(config, refetch_interval=0))
    return TestClient(app, raise_server_exceptions=False)


def send(client: TestClient, key: SigningKey, retry_count: int = 0, **claims: Any) -> Any:
    headers = task_headers("t-keys", retry_count, Authorization=f"Bearer {key.token(**claims)}")
    return client.post("/process-order", content=ORDER, headers=headers)


def pem_map(key: SigningKey) -> bytes:
    return json.dumps({key.kid: key.public_pem}).encode()


GARBAGE: dict[str, Callable[[RawHttpServer, SigningKey], None]] = {
    "HTML error page": lambda s, k: s.http(b"<html><body>502 Bad Gateway</body></html>",
                                           headers="Content-Type: text/html\r\n"),
    "random bytes": lambda s, k: s.http(bytes(range(256)) * 4),
    "not UTF-8 JSON": lambda s, k: s.http(b'{"key-1": "\xff\xfe"}'),
    "empty body": lambda s, k: s.http(b""),
    "an empty key map": lambda s, k: s.http(b"{}"),
    "JSON but a list": lambda s, k: s.http(b'["key-1"]'),
    "JSON map of numbers": lambda s, k: s.http(b'{"key-1": 42}'),
    "not PEM": lambda s, k: s.http(b'{"key-1": "this is not a key"}'),
    "PEM armour around garbage": lambda s, k: s.http(json.dumps(
        {"key-1": "-----BEGIN PUBLIC KEY-----\nAAAAB3NzaC1yc2E=\n-----END PUBLIC KEY-----\n"}).encode()),
    "one good key beside a bad one": lambda s, k: s.http(json.dumps(
        {k.kid: k.public_pem, "key-2": "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"}).encode()),
    "the private key's shape, truncated": lambda s, k: s.http(json.dumps({k.kid: k.public_pem[:80]}).encode()),
    "JSON nested 100,000 deep": lambda s, k: s.http(b"[" * 100_000 + b"]" * 100_000),
    "key map cut short": lambda s, k: s.http(pem_map(k)[:-40], length=len(pem_map(k))),
    "not HTTP at all": lambda s, k: setattr(s, "response", b"SSH-2.0-OpenSSH_9.6\r\n"),
    "nothing, connection closed": lambda s, k: setattr(s, "response", b""),
    "a server error": lambda s, k: s.http(b"oops", status="500 Internal Server Error"),
    "larger than any key map": lambda s, k: s.http(b'{"k": "' + b"A" * MAX_KEYS_BYTES + b'"}'),
    "absurd max-age beside garbage": lambda s, k: s.http(b"nope", headers="Cache-Control: max-age=" + "9" * 400
                                                        + "\r\n"),
}


@pytest.mark.parametrize("serve", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_from_the_key_endpoint_answers_503_and_the_task_is_retried(
        key_server: RawHttpServer, signing_key: SigningKey, serve: Callable[[RawHttpServer, SigningKey], None]) -> None:
    serve(key_server, signing_key)
    client = client_for(key_server)
    response = send(client, signing_key)
    assert response.status_code == 503, response.text
    assert response.json()["status"] == "retry"
    assert response.json()["reason"].startswith("could not fetch token signing keys")
    assert key_server.requests >= 1, "the real endpoint was asked"

    key_server.http(pem_map(signing_key))  # the endpoint recovers: the next delivery goes through
    assert send(client, signing_key).status_code == 200


def test_keys_that_cannot_be_had_on_the_final_attempt_keep_the_task_as_a_dead_letter(
        key_server: RawHttpServer, signing_key: SigningKey) -> None:
    key_server.http(b"garbage")
    sink = RecordingSink()
    client = client_for(key_server, sink)
    assert send(client, signing_key, retry_count=0).status_code == 503
    assert sink.letters == []
    assert send(client, signing_key, retry_count=MAX_ATTEMPTS - 1).status_code == 503
    [letter] = sink.letters
    assert letter.kind == "final_attempt_failed" and "could not fetch token signing keys" in letter.reason
    assert letter.body == ORDER and "authorization" not in letter.headers


def test_a_token_wrong_on_its_face_is_refused_even_while_keys_cannot_be_had(
        key_server: RawHttpServer, signing_key: SigningKey) -> None:
    key_server.http(b"garbage")
    sink = RecordingSink()
    client = client_for(key_server, sink)
    wrong = send(client, signing_key, retry_count=MAX_ATTEMPTS - 1, email="attacker@example.com")
    assert wrong.status_code == 403, "no retry can make a token for someone else valid"
    expired = send(client, signing_key, retry_count=MAX_ATTEMPTS - 1, exp=int(time.time()) - 600)
    assert expired.status_code == 401
    assert sink.letters == [], "refused callers are never stored"


def test_once_keys_are_cached_a_garbage_refetch_keeps_using_them(key_server: RawHttpServer,
                                                                  signing_key: SigningKey) -> None:
    key_server.http(pem_map(signing_key), headers="Cache-Control: max-age=0\r\n")
    client = client_for(key_server)
    assert send(client, signing_key).status_code == 200
    key_server.http(b"<html>maintenance</html>")
    assert send(client, signing_key).status_code == 200
    assert key_server.requests == 2, "the expired keys were refetched, and the garbage ignored"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300) | st.recursive(
    st.none() | st.integers() | st.text(max_size=30) | st.just("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC "
                                                              "KEY-----\n"),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6).map(lambda value: json.dumps(value).encode()),
    status=st.sampled_from(["200 OK", "404 Not Found", "503 Service Unavailable", "302 Found"]))
def test_whatever_garbage_the_key_endpoint_answers_the_handler_answers_503(
        key_server: RawHttpServer, signing_key: SigningKey, body: bytes, status: str) -> None:
    key_server.http(body, status=status)
    response = send(client_for(key_server), signing_key)
    assert response.status_code == 503, response.text


def test_requests_waiting_for_a_failing_key_fetch_share_its_answer(signing_key: SigningKey) -> None:
    """With no keys held, each request waiting for the fetch used to fetch again in turn when it failed: the k-th
    of k concurrent requests answered after k fetch timeouts (80 of them at 10 s, past the dispatch deadline)."""
    fetches: list[float] = []

    def failing(url: str) -> tuple[dict[str, str], float]:
        fetches.append(time.monotonic())
        time.sleep(0.3)
        raise OSError("connection refused")

    verifier = TokenVerifier(make_config(token_check=TokenCheck.FULL), fetch=failing, refetch_interval=0)

    async def concurrently() -> list[BaseException | dict[str, Any]]:
        header = f"Bearer {signing_key.token()}"
        return await asyncio.gather(*(verifier.verify(header) for _ in range(10)), return_exceptions=True)

    answers = asyncio.run(concurrently())
    assert len(fetches) == 1, "one fetch answered every request waiting for it"
    assert all(isinstance(a, AuthError) and a.status == 503 and "connection refused" in a.reason for a in answers)


def test_a_new_signing_key_while_the_endpoint_is_down_is_retried_not_refused(signing_key: SigningKey) -> None:
    """A key published after the endpoint went down could be the invoker's new one: 503 (retried, dead-lettered on
    the final attempt), not the 401 for a key that is not published, which is never dead-lettered."""
    rotated = new_signing_key("key-2")
    answers: list[Any] = [({signing_key.kid: signing_key.public_pem}, 3600.0), OSError("timed out")]

    def fetch(url: str) -> tuple[dict[str, str], float]:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    verifier = TokenVerifier(make_config(token_check=TokenCheck.FULL), fetch=fetch, refetch_interval=0)
    assert asyncio.run(verifier.verify(f"Bearer {signing_key.token()}"))["email"]
    with pytest.raises(AuthError) as refused:
        asyncio.run(verifier.verify(f"Bearer {rotated.token()}"))
    assert refused.value.status == 503 and "'key-2' is not among the keys held" in refused.value.reason
    assert asyncio.run(verifier.verify(f"Bearer {signing_key.token()}"))["email"], "the held key still verifies"
