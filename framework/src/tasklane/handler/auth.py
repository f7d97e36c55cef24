"""Defence in depth behind Cloud Run's IAM check: the handler re-checks the task's OIDC token.

`claims` checks expiry, audience, issuer, email and email_verified; `full` also checks the RS256
signature against the keys published at the configured URL ({kid: PEM}, Google's by default, the
local emulator's in local runs). Keys are cached (honouring Cache-Control max-age) and refetched when a
token names a key not seen yet (rotation), at most every `refetch_interval` seconds.

google-auth's verifier is imported on first use or by `warm_up()` in the background, never on the
path to the first answer, so it costs nothing at cold start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec

from tasklane.handler.config import HandlerConfig, TokenCheck

CLOCK_SKEW_SECONDS = 30.0
DEFAULT_KEYS_MAX_AGE = 3600.0
MAX_KEYS_MAX_AGE = 24 * 3600.0
"""Keys are refetched at least daily, whatever max-age the endpoint claims."""
MAX_KEYS_BYTES = 1024 * 1024
"""Google's key map is a few KB; a larger answer is not one."""
KEYS_FETCH_TIMEOUT_SECONDS = 10.0
VERIFIED_TOKENS_KEPT = 256
"""Tokens whose signature is remembered as checked. Cloud Tasks (and the emulator) sign one token per account
and audience and send it with many tasks; the RS256 check was the costliest step of a task's request."""

CertsFetcher = Callable[[str], tuple[dict[str, str], float]]


class AuthError(Exception):
    """The request is refused: `status` 401 (no valid token), 403 (valid token, wrong principal) or 503."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def fetch_certs(url: str) -> tuple[dict[str, str], float]:
    """Download a {kid: PEM} key map; returns it with its max-age in seconds."""
    import urllib.request  # only needed once keys are fetched, not at start-up

    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the configured key URL
        content = response.read(MAX_KEYS_BYTES + 1)
        match = re.search(r"max-age=(\d{1,9})\b", response.headers.get("Cache-Control", ""))
    if len(content) > MAX_KEYS_BYTES:
        raise ValueError(f"{url} returned more than {MAX_KEYS_BYTES} bytes; a key map is a few KB")
    keys = json.loads(content)
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ValueError(f"{url} did not return a {{kid: PEM}} map")
    return keys, min(float(match.group(1)), MAX_KEYS_MAX_AGE) if match else DEFAULT_KEYS_MAX_AGE


_decode_json = msgspec.json.Decoder().decode


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _split(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, payload, signed part and signature of a compact JWT; AuthError(401) if it is not one."""
    try:
        header_segment, payload_segment, signature_segment = token.split(".")
        header = _decode_json(_b64decode(header_segment))
        payload = _decode_json(_b64decode(payload_segment))
        signature = _b64decode(signature_segment)
    except (ValueError, binascii.Error, msgspec.DecodeError, RecursionError):
        raise AuthError(401, "bearer token is not a JWT") from None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise AuthError(401, "bearer token is not a JWT")
    return header, payload, f"{header_segment}.{payload_segment}".encode(), signature


class TokenVerifier:
    def __init__(self, config: HandlerConfig, fetch: CertsFetcher = fetch_certs,
                 clock: Callable[[], float] = time.time, refetch_interval: float = 30.0, *,
                 check: TokenCheck | None = None, email: str | None = None, who: str = "the invoker account") -> None:
        """Checks tokens for the invoker account by default; `check`, `email` and `who` make one for another
        caller (the Pub/Sub push account)."""
        self.check = config.token_check if check is None else check
        if self.check is TokenCheck.OFF:
            raise ValueError("TokenVerifier needs token_check claims or full")
        self.config = config
        self.email = config.invoker_service_account if email is None else email
        self.who = who
        self._fetch = fetch
        self._clock = clock
        self._refetch_interval = refetch_interval
        self._verifiers: dict[str, Any] = {}
        self._keys_expire_at = 0.0
        self._last_fetch = -float("inf")
        self._fetching: asyncio.Lock | None = None
        self._fetches = 0
        """Fetches finished, each way: a request that waited for another's sees whether it ended meanwhile."""
        self._fetch_error: str | None = None
        """Why the latest fetch failed; None after one that worked."""
        self._verified: dict[str, Any] = {}
        """token -> the key verifier that accepted its signature (keys refetched: new verifiers, so re-checked)."""

    async def verify(self, authorization: str | None) -> dict[str, Any]:
        """The token's claims, or AuthError naming what is wrong."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AuthError(401, "missing bearer token")
        token = authorization[len("Bearer "):].strip()
        header, payload, signed, signature = _split(token)
        if self.check is TokenCheck.FULL:
            try:
                await self._check_signature(token, header, signed, signature)
            except AuthError as refusal:
                if refusal.status == 503:
                    # A token that is wrong on its face is refused now; only a plausible one is retried.
                    self._check_claims(payload)
                raise
        self._check_claims(payload)
        return payload

    def _check_claims(self, claims: dict[str, Any]) -> None:
        now = self._clock()
        expiry = claims.get("exp")
        if not isinstance(expiry, int | float) or isinstance(expiry, bool):
            raise AuthError(401, "token has no expiry")
        if now - CLOCK_SKEW_SECONDS > expiry:  # not expiry + skew: a huge integer would overflow a float
            raise AuthError(401, "token expired")
        issued = claims.get("iat")
        if isinstance(issued, int | float) and issued > now + CLOCK_SKEW_SECONDS:
            raise AuthError(401, "token issued in the future")
        if claims.get("aud") != self.config.task_audience:
            raise AuthError(401, f"token audience {claims.get('aud')!r} is not {self.config.task_audience!r}")
        if claims.get("iss") not in self.config.token_issuers:
            raise AuthError(401, f"token issuer {claims.get('iss')!r} is not accepted")
        if claims.get("email") != self.email:
            raise AuthError(403, f"token is for {claims.get('email')!r}, not {self.who}")
        if claims.get("email_verified") is not True:
            raise AuthError(403, "token email is not verified")

    async def _check_signature(self, token: str, header: dict[str, Any], signed: bytes, signature: bytes) -> None:
        if header.get("alg") != "RS256":
            raise AuthError(401, f"token algorithm {header.get('alg')!r} is not RS256")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError(401, "token names no signing key")
        verifier = await self._verifier_for(kid)  # keys expire, rotate and are refetched as before
        if self._verified.get(token) is verifier:
            return  # this very token was checked with this very key; its claims are still checked each time
        if not verifier.verify(signed, signature):
            raise AuthError(401, "token signature is invalid")
        if len(self._verified) >= VERIFIED_TOKENS_KEPT:
            self._verified.clear()
        self._verified[token] = verifier

    async def _verifier_for(self, kid: str) -> Any:
        now = self._clock()
        if now >= self._keys_expire_at or (kid not in self._verifiers
                                           and now - self._last_fetch >= self._refetch_interval):
            await self._refresh_keys()
        verifier = self._verifiers.get(kid)
        if verifier is None and self._fetch_error is not None:
            # Perhaps a key published since the endpoint went down: a genuine task, probably, retried (503).
            raise AuthError(503, f"token signing key {kid!r} is not among the keys held, and they could not be "
                                 f"refreshed: {self._fetch_error}")
        if verifier is None:
            raise AuthError(401, f"token signing key {kid!r} is not published")
        return verifier

    async def _refresh_keys(self) -> None:
        self._fetching = self._fetching or asyncio.Lock()
        fetches = self._fetches
        async with self._fetching:
            if self._fetches != fetches:
                # Another request fetched while this one waited: its result stands for this one too. (Each waiter
                # fetching again in turn made the k-th of k waiters answer only after k fetch timeouts.)
                if self._fetch_error is not None and not self._verifiers:
                    raise AuthError(503, f"could not fetch token signing keys: {self._fetch_error}")
                return
            try:
                verifiers, max_age = await asyncio.wait_for(asyncio.to_thread(self._load_keys),
                                                            KEYS_FETCH_TIMEOUT_SECONDS)
            except Exception as error:  # noqa: BLE001 - whatever the endpoint did, keys cannot be had now
                self._fetches += 1
                self._fetch_error = str(error) or type(error).__name__
                if self._verifiers:
                    # Keep verifying with the keys we have, and back off before trying again.
                    self._last_fetch = self._clock()
                    self._keys_expire_at = self._last_fetch + self._refetch_interval
                    return
                raise AuthError(503, f"could not fetch token signing keys: {self._fetch_error}") from error
            self._fetches += 1
            self._fetch_error = None
            self._verifiers = verifiers
            self._last_fetch = self._clock()
            self._keys_expire_at = self._last_fetch + max_age

    def _load_keys(self) -> tuple[dict[str, Any], float]:
        """Fetch the key map and parse every key (in a worker thread); raises if any of it is unusable."""
        from google.auth import crypt  # imported here, off the start-up path

        keys, max_age = self._fetch(self.config.token_certs_url)
        if not keys:
            raise ValueError(f"{self.config.token_certs_url} published no keys")
        verifiers = {}
        for key_id, pem in keys.items():
            try:
                verifiers[key_id] = crypt.RSAVerifier.from_string(pem)  # type: ignore[no-untyped-call]
            except Exception as error:  # noqa: BLE001 - a key that does not parse makes the whole map suspect
                raise ValueError(f"key {key_id!r} is not an RSA public key or certificate in PEM: {error}") from None
        return verifiers, max_age

    def warm_up(self) -> None:
        """Import the verifier's dependencies now (run in a background thread after start-up)."""
        from google.auth import crypt  # noqa: F401
