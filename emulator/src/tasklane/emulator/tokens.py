"""OIDC tokens for dispatched tasks, signed with a key the emulator publishes so handlers can verify them.

Claims as Google's service-account ID tokens carry them (§8.3): `iss` (the emulator's issuer URL),
`aud` (the task's audience, else its URL), `azp` and `sub` (a stable numeric ID for the account),
`email`, `email_verified`, `iat` and `exp` one hour later. Tokens are minted at dispatch (a task
scheduled days ahead does not carry a stale token) and reused for a minute per account and audience,
which keeps RS256 signing off the hot path. The key persists in the state file, so tokens verify the
same after a restart.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as google_jwt

from tasklane.emulator.clock import Clock
from tasklane.emulator.store import Store

TOKEN_LIFETIME_SECONDS = 3600
TOKEN_REUSE_SECONDS = 60
_KEY_SETTING = "signing_key_pem"


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def subject_id(email: str) -> str:
    """A stable 21-digit numeric ID for an account, like a service account's unique ID."""
    return "1" + str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:20]


class TokenIssuer:
    def __init__(self, store: Store, clock: Clock, issuer: str) -> None:
        self.clock = clock
        self.issuer = issuer
        pem = store.setting(_KEY_SETTING)
        if pem is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
            store.put_setting(_KEY_SETTING, pem)
        private_key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise ValueError("the stored signing key is not an RSA key")
        self._private_key = private_key
        public_numbers = private_key.public_key().public_numbers()
        self.key_id = hashlib.sha256(str(public_numbers.n).encode()).hexdigest()[:40]
        self._signer = crypt.RSASigner.from_string(pem, key_id=self.key_id)  # type: ignore[no-untyped-call]
        self._public_numbers = public_numbers
        self._certificate_pem = self._self_signed_certificate()
        self._recent: dict[tuple[str, str], tuple[float, str]] = {}

    def _self_signed_certificate(self) -> str:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tasklane-emulator")])
        start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                       .public_key(self._private_key.public_key())
                       .serial_number(int(self.key_id[:16], 16)).not_valid_before(start)
                       .not_valid_after(start + datetime.timedelta(days=3650 * 4))
                       .sign(self._private_key, hashes.SHA256()))
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    def token_for(self, email: str, audience: str) -> str:
        now = self.clock.now()
        cached = self._recent.get((email, audience))
        if cached is not None and now - cached[0] < TOKEN_REUSE_SECONDS:
            return cached[1]
        issued = int(now)
        subject = subject_id(email)
        claims = {"iss": self.issuer, "aud": audience, "azp": subject, "sub": subject, "email": email,
                  "email_verified": True, "iat": issued, "exp": issued + TOKEN_LIFETIME_SECONDS}
        token: str = google_jwt.encode(self._signer, claims).decode()  # type: ignore[no-untyped-call]
        self._recent[(email, audience)] = (now, token)
        return token

    def prune(self) -> None:
        """Forget tokens too old to be reused (one per account and audience ever seen otherwise)."""
        now = self.clock.now()
        self._recent = {key: value for key, value in self._recent.items() if now - value[0] < TOKEN_REUSE_SECONDS}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.key_id,
                          "n": _b64url_uint(self._public_numbers.n), "e": _b64url_uint(self._public_numbers.e)}]}

    def pem_certificates(self) -> dict[str, str]:
        """Google's v1 format: {kid: PEM certificate}."""
        return {self.key_id: self._certificate_pem}

    def discovery(self, base_url: str) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": f"{base_url}/oauth2/v3/certs",
                "id_token_signing_alg_values_supported": ["RS256"], "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "claims_supported": ["aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub"]}


def decode_unverified(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
