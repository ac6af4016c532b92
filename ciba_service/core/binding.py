"""The binding document: what the user approves, and the WebAuthn challenge derived from it.

The challenge is ``SHA-256(JCS(binding document))``. The authenticator therefore signs a
digest of exactly the action the page showed: a server that swapped the
``authorization_details`` after the user looked would produce a different challenge. Both
sides compute it: the service (to ask for the assertion and to verify it) and the user's
device (to refuse a page whose challenge is not the digest of what it shows).
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785

from ciba_service.core.model import BackchannelRequest

__all__ = ["BINDING_VERSION", "binding_document", "canonical_preimage", "challenge_for"]

BINDING_VERSION = 1


def binding_document(*, request: BackchannelRequest, issuer: str) -> dict[str, Any]:
    """What the user approves: every field that decides what the token will allow."""
    return {
        "v": BINDING_VERSION,
        "iss": issuer,
        "client_id": request.client_id,
        "sub": request.user_id,
        "request_id": request.request_id,
        "binding_message": request.binding_message,
        "authorization_details": request.authorization_details,
        "exp": request.expires_at,
        # Fresh per request: two identical actions requested twice get different challenges,
        # so an assertion for one can never be replayed as approval of the other.
        "nonce": request.nonce,
    }


def canonical_preimage(document: dict[str, Any]) -> bytes:
    """RFC 8785 (JCS) serialisation: the same bytes in every implementation."""
    return rfc8785.dumps(document)


def challenge_for(preimage: bytes) -> bytes:
    return hashlib.sha256(preimage).digest()
