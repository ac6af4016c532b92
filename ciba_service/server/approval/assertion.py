"""Step 4 of the approval (DESIGN.md): the WebAuthn assertion over the binding document's
digest, verified (origin, RP ID, UV, sign count, challenge), and the receipt built from it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webauthn import generate_authentication_options, options_to_json, verify_authentication_response
from webauthn.helpers import parse_authentication_credential_json, parse_client_data_json
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidJSONStructure
from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

from ciba_service.core.binding import binding_document, canonical_preimage, challenge_for
from ciba_service.core.errors import AssertionRejected
from ciba_service.core.model import ApprovalReceipt, BackchannelRequest, Passkey, User
from ciba_service.core.security import b64url_encode, constant_time_eq, new_id

__all__ = ["VerifiedApproval", "authentication_options", "verify_approval"]


def authentication_options(*, challenge: bytes, rp_id: str, passkeys: list[Passkey], timeout_ms: int) -> dict[str, Any]:
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=timeout_ms,
        allow_credentials=[PublicKeyCredentialDescriptor(id=p.credential_id) for p in passkeys],
        # UV required: possession of the device alone must not approve an action.
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


@dataclass(frozen=True, kw_only=True)
class VerifiedApproval:
    receipt: ApprovalReceipt
    passkey: Passkey
    new_sign_count: int


def verify_approval(
    *,
    request: BackchannelRequest,
    user: User,
    passkeys: list[Passkey],
    credential: dict[str, Any],
    issuer: str,
    expected_rp_id: str,
    expected_origins: Sequence[str],
    now: int,
) -> VerifiedApproval:
    """Verify an assertion for ``request`` and build its receipt. Raises AssertionRejected.

    ``expected_origins``: the approval page's origin and the configured native approvers'
    (``approval_origins``), compared as exact strings; the receipt records the one used."""
    try:
        parsed = parse_authentication_credential_json(json.dumps(credential))
    except (InvalidJSONStructure, InvalidAuthenticationResponse, ValueError, TypeError) as exc:
        raise AssertionRejected(f"malformed credential: {exc}") from None
    # allowCredentials is only a hint to the browser: the server must itself refuse a
    # credential of another user, or any enrolled user could approve anyone's request.
    passkey = next((p for p in passkeys if constant_time_eq(p.credential_id, parsed.raw_id)), None)
    if passkey is None or passkey.user_id != user.user_id:
        raise AssertionRejected("credential is not a passkey of the requested user")
    user_handle = parsed.response.user_handle
    if user_handle and not constant_time_eq(user_handle, user.user_handle):
        raise AssertionRejected("userHandle does not match the requested user")
    preimage = canonical_preimage(binding_document(request=request, issuer=issuer))
    challenge = challenge_for(preimage)
    try:
        verified = verify_authentication_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=expected_rp_id,
            # Exact strings, never a pattern: an assertion made for any other origin (a phishing
            # page, a native client nobody declared) is refused.
            expected_origin=_one_or_list(expected_origins),
            credential_public_key=passkey.public_key,
            # py_webauthn refuses a counter that did not grow (cloned authenticator).
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=True,
        )
    except InvalidAuthenticationResponse as exc:
        raise AssertionRejected(str(exc)) from None
    if not verified.user_verified:  # defence in depth; py_webauthn already checked
        raise AssertionRejected("user verification flag not set")
    # The origin py_webauthn found among the expected ones: the receipt names it, so a later
    # re-verification checks the signature against exactly what the authenticator signed.
    origin = parse_client_data_json(parsed.response.client_data_json).origin
    receipt = ApprovalReceipt(
        receipt_id=new_id(16),
        request_id=request.request_id,
        user_id=user.user_id,
        credential_id=passkey.credential_id,
        credential_public_key=passkey.public_key,
        preimage=preimage,
        challenge=b64url_encode(challenge),
        assertion=credential,
        rp_id=expected_rp_id,
        origin=origin,
        created_at=now,
    )
    return VerifiedApproval(receipt=receipt, passkey=passkey, new_sign_count=verified.new_sign_count)


def _one_or_list(origins: Sequence[str]) -> str | list[str]:
    # py_webauthn's message names a single expected origin plainly, several as a list.
    return origins[0] if len(origins) == 1 else list(origins)
