"""How far the handler checks a task's OIDC token: a setting both the handler and the stack (which sets it on the
Cloud Run service) read, so it lives here, where `pulumi up` finds it without the handler's dependencies."""

from __future__ import annotations

from enum import StrEnum


class TokenCheck(StrEnum):
    OFF = "off"
    """No check in the handler (local runs without an emulator; Cloud Run IAM still checks in the cloud)."""
    CLAIMS = "claims"
    """Check expiry, audience, issuer, email and email_verified; not the signature, which Cloud Run has
    already verified at the edge and may replace with SIGNATURE_REMOVED_BY_GOOGLE."""
    FULL = "full"
    """Everything in CLAIMS plus the RS256 signature against the published keys."""
