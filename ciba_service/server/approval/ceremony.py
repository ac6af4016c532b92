"""The approval, precisely (DESIGN.md): the binding document, the challenge derived from it,
the WebAuthn ceremonies and the re-verifiable receipt.

The WebAuthn challenge is ``SHA-256(JCS(binding document))``. The authenticator therefore
signs a digest of exactly the action the page showed: a server that swapped the
``authorization_details`` after the user looked would produce a different challenge, and the
receipt lets anyone holding the user's public key check this later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authentication_credential_json
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidJSONStructure,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ciba_service.core.binding import binding_document, canonical_preimage, challenge_for
from ciba_service.core.errors import AssertionRejected, EnrollmentError
from ciba_service.core.model import ApprovalReceipt, BackchannelRequest, Passkey, User
from ciba_service.core.security import b64url_encode, constant_time_eq, new_id

__all__ = [
    "VerifiedApproval",
    "authentication_options",
    "registration_options",
    "reverify_receipt",
    "verify_approval",
    "verify_enrollment",
]


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
    expected_origin: str,
    now: int,
) -> VerifiedApproval:
    """Verify an assertion for ``request`` and build its receipt. Raises AssertionRejected."""
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
            expected_origin=expected_origin,
            credential_public_key=passkey.public_key,
            # py_webauthn refuses a counter that did not grow (cloned authenticator).
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=True,
        )
    except InvalidAuthenticationResponse as exc:
        raise AssertionRejected(str(exc)) from None
    if not verified.user_verified:  # defence in depth; py_webauthn already checked
        raise AssertionRejected("user verification flag not set")
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
        origin=expected_origin,
        created_at=now,
    )
    return VerifiedApproval(receipt=receipt, passkey=passkey, new_sign_count=verified.new_sign_count)


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


def registration_options(
    *, user: User, rp_id: str, rp_name: str, challenge: bytes, existing: list[Passkey]
) -> dict[str, Any]:
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_name=user.username,
        user_id=user.user_handle,
        user_display_name=user.display_name,
        challenge=challenge,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=p.credential_id) for p in existing],
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def verify_enrollment(
    *,
    user: User,
    credential: dict[str, Any],
    challenge: bytes,
    expected_rp_id: str,
    expected_origin: str,
    now: int,
) -> Passkey:
    try:
        verified = verify_registration_response(
            credential=json.dumps(credential),
            expected_challenge=challenge,
            expected_rp_id=expected_rp_id,
            expected_origin=expected_origin,
            require_user_verification=True,
        )
    except (InvalidRegistrationResponse, InvalidJSONStructure, ValueError, TypeError) as exc:
        raise EnrollmentError(f"registration rejected: {exc}") from None
    transports = credential.get("response", {}).get("transports", [])
    return Passkey(
        credential_id=verified.credential_id,
        user_id=user.user_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=[t for t in transports if isinstance(t, str)],
        created_at=now,
    )
