"""The handler's own check of the task's OIDC token, behind Cloud Run's IAM check.

Source: ../shared/reference/cloud-tasks-behaviour.md §8.3-8.4 (claims of a Cloud Tasks token; check
signature, exp, aud, iss and email, since aud and signature alone let any Google identity in) and §8.7
(Cloud Run may replace the signature with SIGNATURE_REMOVED_BY_GOOGLE, hence the `claims` mode).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasklane.handler.config import TokenCheck
from tests.handler.conftest import (
    AUDIENCE,
    INVOKER,
    ISSUER,
    HandlerUnderTest,
    SigningKey,
    new_signing_key,
    task_headers,
)

ORDER = b'{"orderId": "o-1", "action": "update_inventory"}'


class KeyServer:
    """Stands in for the published {kid: PEM} key map; counts how often it is fetched."""

    def __init__(self, *keys: SigningKey, max_age: float = 3600) -> None:
        self.keys = {key.kid: key.public_pem for key in keys}
        self.max_age = max_age
        self.fetches = 0
        self.down = False

    def __call__(self, url: str) -> tuple[dict[str, str], float]:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return dict(self.keys), self.max_age


def send(handler: HandlerUnderTest, token: str | None, task: str = "t-1") -> Any:
    headers = task_headers(task)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return handler.client.post("/process-order", content=ORDER, headers=headers)


@pytest.fixture
def keys(signing_key: SigningKey) -> KeyServer:
    return KeyServer(signing_key)


@pytest.fixture
def full_check(build_handler: Callable[..., HandlerUnderTest], keys: KeyServer) -> HandlerUnderTest:
    return build_handler(fetch_keys=keys, token_check=TokenCheck.FULL)


def test_a_valid_token_from_the_invoker_is_accepted(full_check: HandlerUnderTest, signing_key: SigningKey) -> None:
    response = send(full_check, signing_key.token())
    assert response.status_code == 200, response.text


REFUSED: dict[str, tuple[dict[str, Any], int, str]] = {
    "wrong audience": ({"aud": "https://other-service.run.app"}, 401, "token audience"),
    "wrong email": ({"email": "attacker@other-project.iam.gserviceaccount.com"}, 403, "not the invoker account"),
    "unverified email": ({"email_verified": False}, 403, "not verified"),
    "expired": ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 4200}, 401, "token expired"),
    "issued in the future": ({"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, 401, "future"),
    "wrong issuer": ({"iss": "https://evil.example.com"}, 401, "issuer"),
}


@pytest.mark.parametrize("claims, status, reason", REFUSED.values(), ids=REFUSED.keys())
def test_tokens_with_wrong_claims_are_refused(full_check: HandlerUnderTest, signing_key: SigningKey,
                                              claims: dict[str, Any], status: int, reason: str) -> None:
    response = send(full_check, signing_key.token(**claims))
    assert response.status_code == status
    assert reason in response.json()["reason"]
    assert any(reason in e["message"] for e in full_check.log.with_severity("WARNING"))


def test_a_token_signed_by_another_key_under_the_same_kid_is_refused(full_check: HandlerUnderTest) -> None:
    forger = new_signing_key("key-1")
    response = send(full_check, forger.token())
    assert response.status_code == 401
    assert response.json()["reason"] == "token signature is invalid"


def test_a_token_with_a_stripped_or_tampered_signature_is_refused(
        full_check: HandlerUnderTest, signing_key: SigningKey) -> None:
    header, payload, _ = signing_key.token().split(".")
    assert send(full_check, f"{header}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE").status_code == 401
    other_payload = signing_key.token(email="someone@else.com").split(".")[1]
    signature = signing_key.token().split(".")[2]
    assert send(full_check, f"{header}.{other_payload}.{signature}").status_code == 401


@pytest.mark.parametrize("token, reason", [
    (None, "missing bearer token"), ("not-a-jwt", "not a JWT"), ("a.b.c", "not a JWT"),
])
def test_missing_or_malformed_tokens_are_refused(full_check: HandlerUnderTest, token: str | None,
                                                 reason: str) -> None:
    response = send(full_check, token)
    assert response.status_code == 401
    assert reason in response.json()["reason"]


def test_an_hs256_token_is_refused(full_check: HandlerUnderTest, signing_key: SigningKey) -> None:
    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    payload = signing_key.token().split(".")[1]
    token = f"{segment({'alg': 'HS256', 'kid': 'key-1'})}.{payload}.c2lnbmF0dXJl"
    assert send(full_check, token).json()["reason"] == "token algorithm 'HS256' is not RS256"


def test_keys_are_cached_not_fetched_per_request(full_check: HandlerUnderTest, keys: KeyServer,
                                                 signing_key: SigningKey) -> None:
    for number in range(20):
        assert send(full_check, signing_key.token(), task=f"t-{number}").status_code == 200
    assert keys.fetches == 1


def test_a_rotated_key_is_fetched_once_when_first_seen(build_handler: Callable[..., HandlerUnderTest],
                                                       signing_key: SigningKey) -> None:
    keys = KeyServer(signing_key)
    handler = build_handler(fetch_keys=keys, token_check=TokenCheck.FULL)
    assert send(handler, signing_key.token(), "t-a").status_code == 200
    rotated = new_signing_key("key-2")
    keys.keys[rotated.kid] = rotated.public_pem
    # The verifier refetches an unknown kid at most every 30 s; pretend that much time has passed.
    verifier = _verifier_of(handler)
    verifier._last_fetch -= 60
    assert send(handler, rotated.token(), "t-b").status_code == 200
    assert keys.fetches == 2
    assert send(handler, signing_key.token(), "t-c").status_code == 200
    assert keys.fetches == 2


def test_a_token_checked_once_is_refused_when_its_key_is_withdrawn_or_it_expires(
        build_handler: Callable[..., HandlerUnderTest], signing_key: SigningKey) -> None:
    """Remembering a token's checked signature skips only the RS256 maths: keys are still refetched when they
    expire, and the claims are checked on every request."""
    keys = KeyServer(signing_key)
    handler = build_handler(fetch_keys=keys, token_check=TokenCheck.FULL)
    token = signing_key.token()
    assert [send(handler, token, f"t-{n}").status_code for n in range(3)] == [200, 200, 200]
    verifier = _verifier_of(handler)
    later = time.time() + 7200
    verifier._clock = lambda: later  # the same token two hours on (keys refetched, as their max-age is over)
    assert send(handler, token, "t-late").json()["reason"] == "token expired"
    verifier._clock = time.time
    replacement = new_signing_key("key-2")
    keys.keys = {replacement.kid: replacement.public_pem}  # the token's key withdrawn
    verifier._keys_expire_at = 0.0
    assert send(handler, token, "t-withdrawn").json()["reason"] == "token signing key 'key-1' is not published"
    assert send(handler, replacement.token(), "t-new").status_code == 200


def test_an_unknown_key_does_not_make_every_request_refetch(full_check: HandlerUnderTest, keys: KeyServer) -> None:
    stranger = new_signing_key("key-unknown")
    for number in range(5):
        response = send(full_check, stranger.token(), task=f"t-{number}")
        assert response.status_code == 401
        assert "is not published" in response.json()["reason"]
    assert keys.fetches == 1


def test_unreachable_keys_answer_503_so_the_task_is_retried(build_handler: Callable[..., HandlerUnderTest],
                                                           signing_key: SigningKey) -> None:
    keys = KeyServer(signing_key)
    keys.down = True
    handler = build_handler(fetch_keys=keys, token_check=TokenCheck.FULL)
    response = send(handler, signing_key.token())
    assert response.status_code == 503
    assert "could not fetch token signing keys" in response.json()["reason"]


def test_claims_mode_accepts_a_stripped_signature_but_still_checks_every_claim(
        build_handler: Callable[..., HandlerUnderTest], signing_key: SigningKey) -> None:
    handler = build_handler(token_check=TokenCheck.CLAIMS)
    header, payload, _ = signing_key.token().split(".")
    assert send(handler, f"{header}.{payload}.SIGNATURE_REMOVED_BY_GOOGLE").status_code == 200
    wrong = signing_key.token(email="attacker@example.com").split(".")[1]
    assert send(handler, f"{header}.{wrong}.SIGNATURE_REMOVED_BY_GOOGLE", task="t-2").status_code == 403
    expired = signing_key.token(exp=int(time.time()) - 600).split(".")[1]
    assert send(handler, f"{header}.{expired}.x", task="t-3").status_code == 401
    assert send(handler, signing_key.token(aud=AUDIENCE + "/x"), task="t-4").status_code == 401


def test_health_needs_no_token(full_check: HandlerUnderTest) -> None:
    assert full_check.client.get("/").status_code == 200


def _verifier_of(handler: HandlerUnderTest) -> Any:
    route = next(r for r in handler.client.app.routes if getattr(r, "path", "") == "/process-order")
    return route.endpoint.__self__.verifier


# -- Property: whatever a token holds, the answer is a refusal or a pass, never a crash ---------------

CLAIM_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**400)
    | st.floats(allow_nan=False) | st.text(max_size=20) | st.sampled_from([AUDIENCE, ISSUER, INVOKER]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6)
CLAIMS = st.dictionaries(st.sampled_from(["iss", "aud", "email", "email_verified", "exp", "iat", "sub", "kid"]),
                         CLAIM_VALUES, max_size=8)


def _segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@st.composite
def hostile_tokens(draw: st.DrawFn) -> str:
    def part(value: Any) -> str:
        return _segment(json.dumps(value).encode())

    header = draw(st.just(part({"alg": "RS256", "kid": "key-1"})) | CLAIMS.map(part)
                  | st.builds(lambda depth: _segment(b"[" * depth + b"]" * depth), st.integers(1, 20_000))
                  | st.binary(max_size=30).map(_segment))
    payload = draw(CLAIMS.map(part) | st.builds(lambda depth: _segment(b'{"a":' * depth + b"1" + b"}" * depth),
                                                st.integers(1, 20_000)) | st.binary(max_size=30).map(_segment))
    printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
    signature = draw(st.binary(max_size=300).map(_segment) | st.text(printable, max_size=20))
    return f"{header}.{payload}.{signature}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=hostile_tokens(), full=st.booleans())
def test_any_token_is_passed_or_refused_never_a_crash(build_handler: Callable[..., HandlerUnderTest],
                                                      signing_key: SigningKey, token: str, full: bool) -> None:
    if full:
        handler = build_handler(fetch_keys=KeyServer(signing_key), token_check=TokenCheck.FULL)
    else:
        handler = build_handler(token_check=TokenCheck.CLAIMS)
    response = send(handler, token)
    assert response.status_code in (200, 401, 403), response.text
    assert handler.sink.letters == [], "a refused caller is never stored"
