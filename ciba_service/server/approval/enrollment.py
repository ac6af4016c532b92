"""Passkey enrollment (embedded mode): a one-time link, the WebAuthn registration ceremony,
and the passkey stored for the user. In keycloak mode users register passkeys in Keycloak."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from webauthn import generate_registration_options, options_to_json, verify_registration_response
from webauthn.helpers.exceptions import InvalidJSONStructure, InvalidRegistrationResponse
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ciba_service.core.errors import ApprovalAlreadyDecided, ApprovalExpired, ApprovalNotFound, EnrollmentError
from ciba_service.core.model import AuditRecord, Enrollment, Passkey, User
from ciba_service.core.security import b64url_encode, new_id, sha256_b64url
from ciba_service.server.approval.branding import service_branding
from ciba_service.server.context import ServerContext

__all__ = ["Enrollments", "registration_options", "verify_enrollment"]

audit_log = logging.getLogger("ciba_service.audit")


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
    expected_origins: Sequence[str],
    now: int,
) -> Passkey:
    try:
        verified = verify_registration_response(
            credential=json.dumps(credential),
            expected_challenge=challenge,
            expected_rp_id=expected_rp_id,
            # The page's origin and the declared native approvers' only (approval_origins).
            expected_origin=_one_or_list(expected_origins),
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


class Enrollments:
    """Users and their enrollment links; the registration ceremony behind ``/enroll/{token}``."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    def add_user(self, *, username: str, display_name: str | None = None) -> tuple[User, str]:
        """Create a user and return it with a one-time enrollment link."""
        store = self._context.store
        if not username or len(username) > 128 or not username.isprintable():
            raise EnrollmentError("username must be 1-128 printable characters")
        if store.find_user(username) is not None:
            raise EnrollmentError(f"user '{username}' already exists")
        user = User(
            user_id=new_id(16),
            username=username,
            display_name=display_name or username,
            user_handle=new_id(32).encode("ascii")[:64],
            created_at=self._context.now(),
        )
        store.add_user(user)
        return user, self.new_link(user)

    def new_link(self, user: User) -> str:
        context = self._context
        token = new_id(32)
        context.store.add_enrollment(
            Enrollment(
                token_hash=sha256_b64url(token),
                user_id=user.user_id,
                expires_at=context.now() + context.settings.enrollment_ttl,
            )
        )
        return f"{context.settings.public_base_url}/enroll/{token}"

    def _live(self, token: str) -> tuple[Enrollment, User]:
        store = self._context.store
        enrollment = store.get_enrollment(sha256_b64url(token))
        if enrollment is None:
            raise ApprovalNotFound("unknown enrollment link")
        if enrollment.used:
            raise ApprovalAlreadyDecided("this enrollment link has been used")
        if enrollment.expires_at <= self._context.now():
            raise ApprovalExpired("this enrollment link has expired")
        user = store.get_user(enrollment.user_id)
        if user is None:
            raise ApprovalNotFound("unknown user")
        return enrollment, user

    def view(self, token: str) -> dict[str, Any]:
        _, user = self._live(token)
        return {
            "username": user.username,
            "display_name": user.display_name,
            "service": service_branding(self._context.settings),
        }

    def options(self, token: str) -> dict[str, Any]:
        context = self._context
        enrollment, user = self._live(token)
        challenge = new_id(32).encode("ascii")
        context.store.set_enrollment_challenge(enrollment.token_hash, challenge)
        return registration_options(
            user=user,
            rp_id=context.settings.webauthn_rp_id,
            rp_name=context.settings.rp_name,
            challenge=challenge,
            existing=context.store.passkeys_for(user.user_id),
        )

    def complete(self, token: str, credential: dict[str, Any]) -> dict[str, Any]:
        context = self._context
        store = context.store
        enrollment, user = self._live(token)
        if enrollment.challenge is None:
            raise EnrollmentError("ask for registration options first")
        passkey = verify_enrollment(
            user=user,
            credential=credential,
            challenge=enrollment.challenge,
            expected_rp_id=context.settings.webauthn_rp_id,
            expected_origins=context.settings.accepted_origins,
            now=context.now(),
        )
        # WebAuthn L3 7.1 step 26: a credential id registered already (to anyone) is refused.
        if store.find_passkey(passkey.credential_id) is not None:
            raise EnrollmentError("registration rejected: credential is already registered")
        # Consumed only after a valid registration, and atomically: a link works once.
        if not store.consume_enrollment(enrollment.token_hash, now=context.now()):
            raise ApprovalAlreadyDecided("this enrollment link has been used")
        store.add_passkey(passkey)
        # In the audit beside the operators' changes: a passkey that appears on an account is a
        # credential that can approve from now on, so who added it (the holder of the one-time
        # link, which an operator handed out: `user.enrollment_link`) and when must be on record,
        # as its revocation is.
        record = AuditRecord(
            record_id=new_id(16),
            at=context.now(),
            actor=f"{user.username} (enrollment link)",
            action="passkey.enrolled",
            subject=user.user_id,
            detail={"username": user.username, "credential_id": b64url_encode(passkey.credential_id)},
        )
        store.add_audit(record)
        audit_log.info("%s by %s: %s %s", record.action, record.actor, record.subject, record.detail)
        return {"status": "enrolled", "username": user.username}


def _one_or_list(origins: Sequence[str]) -> str | list[str]:
    # py_webauthn's message names a single expected origin plainly, several as a list.
    return origins[0] if len(origins) == 1 else list(origins)
