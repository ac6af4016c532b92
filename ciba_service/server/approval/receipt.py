"""Approval receipts: anyone holding the user's public key can re-verify one later."""

from __future__ import annotations

import json
from typing import Any

from webauthn import verify_authentication_response
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidJSONStructure

from ciba_service.core.binding import challenge_for
from ciba_service.core.errors import AssertionRejected
from ciba_service.core.model import ApprovalReceipt
from ciba_service.core.security import b64url_encode, constant_time_eq

__all__ = ["reverify_receipt"]


def reverify_receipt(receipt: ApprovalReceipt) -> dict[str, Any]:
    """Re-check a stored receipt offline: the challenge is the digest of the preimage and the
    assertion is a valid UV signature by the credential over it. Returns the binding document."""
    challenge = challenge_for(receipt.preimage)
    if not constant_time_eq(b64url_encode(challenge), receipt.challenge):
        raise AssertionRejected("receipt challenge is not the SHA-256 of its preimage")
    try:
        verify_authentication_response(
            credential=json.dumps(receipt.assertion),
            expected_challenge=challenge,
            expected_rp_id=receipt.rp_id,
            expected_origin=receipt.origin,
            credential_public_key=receipt.credential_public_key,
            credential_current_sign_count=0,
            require_user_verification=True,
        )
    except (InvalidAuthenticationResponse, InvalidJSONStructure) as exc:
        raise AssertionRejected(f"receipt does not verify: {exc}") from None
    document: dict[str, Any] = json.loads(receipt.preimage)
    return document
