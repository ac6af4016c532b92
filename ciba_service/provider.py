"""The embedded CIBA OpenID Provider: the protocol core, free of any web framework.

The web layer (``ciba_service.web``) only turns HTTP into calls to :class:`Provider` and its
results or :class:`~ciba_service.errors.OAuthError` back into HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import approval as approval_mod
from .backchannel import CIBA_GRANT_TYPE, check_client_may_use_ciba, validate_backchannel_request
from .client_auth import AuthenticatedClient, authenticate_client
from .config import Settings
from .errors import (
    AccessDenied,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    AssertionRejected,
    AuthorizationPending,
    EnrollmentError,
    ExpiredToken,
    InvalidGrant,
    InvalidRequest,
    SlowDown,
    UnknownUserId,
    UnsupportedGrantType,
)
from .notify import ApprovalNotice, Notifier
from .params import Params
from .rar import TypeRegistry, describe_entry
from .security import new_id, sha256_b64url
from .store.base import BackchannelRequest, Enrollment, RequestStatus, Store, User
from .tokens import SigningKey, mint_access_token, mint_id_token

__all__ = ["Provider", "SLOW_DOWN_INCREMENT"]

# CIBA 11 / RFC 8628 3.5: after slow_down "the interval MUST be increased by 5 seconds for
# this and all subsequent requests".
SLOW_DOWN_INCREMENT = 5
# Network jitter allowance when deciding that a poll came too early.
_POLL_SLACK_MS = 250


@dataclass(frozen=True, kw_only=True)
class BackchannelResult:
    response: dict[str, Any]
    notice: ApprovalNotice | None
    request: BackchannelRequest | None
    status_code: int = 200


class Provider:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        signing_key: SigningKey,
        notifier: Notifier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.signing_key = signing_key
        self.notifier = notifier
        self.registry = TypeRegistry.from_config(settings.authorization_details_types)
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # discovery ----------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        iss = self.settings.issuer
        return {
            "issuer": iss,
            "backchannel_authentication_endpoint": f"{iss}/bc-authorize",
            "token_endpoint": f"{iss}/token",
            "jwks_uri": f"{iss}/jwks.json",
            "grant_types_supported": [CIBA_GRANT_TYPE],
            "backchannel_token_delivery_modes_supported": ["poll"],
            "backchannel_user_code_parameter_supported": False,
            "backchannel_authentication_request_signing_alg_values_supported": [],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid"],
            "response_types_supported": [],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "access_token_signing_alg_values_supported": ["ES256"],
            "acr_values_supported": ["phr"],
            "authorization_details_types_supported": sorted(self.registry.types),
        }

    # users and enrollment --------------------------------------------------------------
    def add_user(self, *, username: str, display_name: str | None = None) -> tuple[User, str]:
        """Create a user and return it with a one-time enrollment link."""
        if not username or len(username) > 128 or not username.isprintable():
            raise EnrollmentError("username must be 1-128 printable characters")
        if self.store.find_user(username) is not None:
            raise EnrollmentError(f"user '{username}' already exists")
        user = User(
            user_id=new_id(16),
            username=username,
            display_name=display_name or username,
            user_handle=new_id(32).encode("ascii")[:64],
            created_at=self.now(),
        )
        self.store.add_user(user)
        return user, self.new_enrollment_link(user)

    def new_enrollment_link(self, user: User) -> str:
        token = new_id(32)
        self.store.add_enrollment(
            Enrollment(
                token_hash=sha256_b64url(token),
                user_id=user.user_id,
                expires_at=self.now() + self.settings.enrollment_ttl,
            )
        )
        return f"{self.settings.public_base_url}/enroll/{token}"

    def _live_enrollment(self, token: str) -> tuple[Enrollment, User]:
        enrollment = self.store.get_enrollment(sha256_b64url(token))
        if enrollment is None:
            raise ApprovalNotFound("unknown enrollment link")
        if enrollment.used:
            raise ApprovalAlreadyDecided("this enrollment link has been used")
        if enrollment.expires_at <= self.now():
            raise ApprovalExpired("this enrollment link has expired")
        user = self.store.get_user(enrollment.user_id)
        if user is None:
            raise ApprovalNotFound("unknown user")
        return enrollment, user

    def enrollment_view(self, token: str) -> dict[str, Any]:
        _, user = self._live_enrollment(token)
        return {"username": user.username, "display_name": user.display_name}

    def enrollment_options(self, token: str) -> dict[str, Any]:
        enrollment, user = self._live_enrollment(token)
        challenge = new_id(32).encode("ascii")
        self.store.set_enrollment_challenge(enrollment.token_hash, challenge)
        return approval_mod.registration_options(
            user=user,
            rp_id=self.settings.webauthn_rp_id,
            rp_name=self.settings.rp_name,
            challenge=challenge,
            existing=self.store.passkeys_for(user.user_id),
        )

    def complete_enrollment(self, token: str, credential: dict[str, Any]) -> dict[str, Any]:
        enrollment, user = self._live_enrollment(token)
        if enrollment.challenge is None:
            raise EnrollmentError("ask for registration options first")
        passkey = approval_mod.verify_enrollment(
            user=user,
            credential=credential,
            challenge=enrollment.challenge,
            expected_rp_id=self.settings.webauthn_rp_id,
            expected_origin=self.settings.expected_origin,
            now=self.now(),
        )
        # Consumed only after a valid registration, and atomically: a link works once.
        if not self.store.consume_enrollment(enrollment.token_hash, now=self.now()):
            raise ApprovalAlreadyDecided("this enrollment link has been used")
        self.store.add_passkey(passkey)
        return {"status": "enrolled", "username": user.username}

    # backchannel authentication ---------------------------------------------------------
    def authenticate_client(self, params: Params, authorization: str | None) -> AuthenticatedClient:
        return authenticate_client(settings=self.settings, params=params, authorization=authorization)

    def resolve_user(self, login_hint: str) -> User:
        user = self.store.find_user(login_hint)
        if user is None or not user.enabled:
            raise UnknownUserId(f"no enabled user matches login_hint '{login_hint}'")
        if not self.store.passkeys_for(user.user_id):
            raise UnknownUserId(f"user '{login_hint}' has no passkey enrolled and cannot approve")
        return user

    def backchannel_authenticate(self, params: Params, authorization: str | None) -> BackchannelResult:
        client = self.authenticate_client(params, authorization)
        validated = validate_backchannel_request(
            params=params, client=client, settings=self.settings, registry=self.registry
        )
        user = self.resolve_user(validated.login_hint)
        now = self.now()
        auth_req_id = new_id(32)  # 256 bits; CIBA 7.3 asks for unguessable
        request = BackchannelRequest(
            request_id=new_id(16),
            auth_req_id_hash=sha256_b64url(auth_req_id),
            approval_id=new_id(32),
            client_id=client.client.client_id,
            client_name=client.client.name or client.client.client_id,
            user_id=user.user_id,
            scope=validated.scope,
            binding_message=validated.binding_message,
            authorization_details=validated.authorization_details,
            created_at=now,
            expires_at=now + validated.expires_in,
            interval=self.settings.poll_interval,
            nonce=new_id(16),
        )
        self.store.add_request(request)
        response = {
            "auth_req_id": auth_req_id,
            "expires_in": validated.expires_in,
            "interval": request.interval,
        }
        return BackchannelResult(response=response, notice=self.notice_for(request, user), request=request)

    def notice_for(self, request: BackchannelRequest, user: User) -> ApprovalNotice:
        return ApprovalNotice(
            username=user.username,
            client_id=request.client_id,
            client_name=request.client_name,
            binding_message=request.binding_message,
            actions=[describe_entry(e, registry=self.registry) for e in request.authorization_details],
            approval_url=f"{self.settings.public_base_url}/approve/{request.approval_id}",
            expires_at=request.expires_at,
        )

    # token endpoint -------------------------------------------------------------------------
    def token(self, params: Params, authorization: str | None) -> dict[str, Any]:
        grant_type = params.optional("grant_type")
        if grant_type is None:
            raise InvalidRequest("missing required parameter 'grant_type'")
        if grant_type != CIBA_GRANT_TYPE:
            raise UnsupportedGrantType(f"grant_type '{grant_type}' is not supported")
        client = self.authenticate_client(params, authorization)
        check_client_may_use_ciba(client)
        auth_req_id = params.required("auth_req_id")
        request = self.store.find_request_by_auth_req_id(sha256_b64url(auth_req_id))
        if request is None:
            raise InvalidGrant("auth_req_id is unknown")
        if request.client_id != client.client.client_id:
            # CIBA 11: the auth_req_id was issued to another client; indistinguishable in
            # wording from unknown would also be fine, but the code is what matters.
            raise InvalidGrant("auth_req_id was not issued to this client")
        return self._redeem(request, auth_req_id)

    def _redeem(self, request: BackchannelRequest, auth_req_id: str) -> dict[str, Any]:
        now_ms = self.now_ms()
        now = now_ms // 1000
        if request.status is RequestStatus.ISSUED:
            raise InvalidGrant("auth_req_id has already been used")
        if request.status is RequestStatus.DENIED:
            raise AccessDenied("the user denied the request")
        if now >= request.expires_at:
            raise ExpiredToken("the authentication request has expired")
        if request.status is RequestStatus.PENDING:
            interval = request.interval
            if (
                request.last_poll_at is not None
                and now_ms - request.last_poll_at < interval * 1000 - _POLL_SLACK_MS
            ):
                interval += SLOW_DOWN_INCREMENT
                self.store.record_poll(request.request_id, now=now_ms, interval=interval)
                raise SlowDown(f"polling too fast; wait at least {interval} seconds between requests")
            self.store.record_poll(request.request_id, now=now_ms, interval=interval)
            raise AuthorizationPending("the user has not yet decided")
        return self.issue_tokens(request, auth_req_id)

    def issue_tokens(self, request: BackchannelRequest, auth_req_id: str) -> dict[str, Any]:
        now = self.now()
        receipt = self.store.get_receipt(request.receipt_id or "")
        if receipt is None:
            raise InvalidGrant("approval receipt missing")
        client = self.settings.client(request.client_id)
        audience = (client.audience if client else None) or self.settings.default_audience
        approval_claim = {
            "receipt": receipt.receipt_id,
            "challenge": receipt.challenge,
            "approved_at": receipt.created_at,
        }
        lifetime = self.settings.access_token_lifetime
        access_token, claims = mint_access_token(
            key=self.signing_key,
            issuer=self.settings.issuer,
            subject=request.user_id,
            audience=audience,
            client_id=request.client_id,
            scope=request.scope,
            authorization_details=request.authorization_details,
            approval=approval_claim,
            auth_time=receipt.created_at,
            now=now,
            lifetime=lifetime,
        )
        # A token is issued once per request: the compare-and-set makes a racing second
        # redemption fail even if both passed the status check above.
        if not self.store.mark_issued(request.request_id, jti=claims["jti"]):
            raise InvalidGrant("auth_req_id has already been used")
        id_token = mint_id_token(
            key=self.signing_key,
            issuer=self.settings.issuer,
            subject=request.user_id,
            client_id=request.client_id,
            auth_req_id=auth_req_id,
            auth_time=receipt.created_at,
            now=now,
            lifetime=lifetime,
        )
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "id_token": id_token,
            "scope": request.scope,
            "authorization_details": request.authorization_details,
        }

    # the user's side ------------------------------------------------------------------
    def _request_for_approval(self, approval_id: str) -> BackchannelRequest:
        request = self.store.find_request_by_approval_id(approval_id)
        if request is None:
            raise ApprovalNotFound("unknown approval request")
        return request

    def _require_pending(self, request: BackchannelRequest) -> None:
        if request.status is not RequestStatus.PENDING:
            raise ApprovalAlreadyDecided(f"this request was already decided ({request.status.value})")
        if self.now() >= request.expires_at:
            raise ApprovalExpired("this request has expired")

    def approval_view(self, approval_id: str) -> dict[str, Any]:
        """Everything the approval page shows, and the WebAuthn options it needs."""
        request = self._request_for_approval(approval_id)
        user = self.store.get_user(request.user_id)
        if user is None:
            raise ApprovalNotFound("unknown user")
        status = request.status.value
        if request.status is RequestStatus.PENDING and self.now() >= request.expires_at:
            status = "expired"
        document = approval_mod.binding_document(request=request, issuer=self.settings.issuer)
        preimage = approval_mod.canonical_preimage(document)
        challenge = approval_mod.challenge_for(preimage)
        view: dict[str, Any] = {
            "status": status,
            "client_id": request.client_id,
            "client_name": request.client_name,
            "username": user.username,
            "binding_message": request.binding_message,
            "entries": [
                {"text": describe_entry(e, registry=self.registry), "detail": e}
                for e in request.authorization_details
            ],
            "expires_at": request.expires_at,
            "binding_document": document,
        }
        if status == "pending":
            remaining_ms = max(1000, (request.expires_at - self.now()) * 1000)
            view["publicKey"] = approval_mod.authentication_options(
                challenge=challenge,
                rp_id=self.settings.webauthn_rp_id,
                passkeys=self.store.passkeys_for(user.user_id),
                timeout_ms=min(remaining_ms, 300_000),
            )
        return view

    def approve(self, approval_id: str, credential: dict[str, Any]) -> dict[str, Any]:
        request = self._request_for_approval(approval_id)
        self._require_pending(request)
        user = self.store.get_user(request.user_id)
        if user is None or not user.enabled:
            raise AssertionRejected("the user is not enabled")
        verified = approval_mod.verify_approval(
            request=request,
            user=user,
            passkeys=self.store.passkeys_for(user.user_id),
            credential=credential,
            issuer=self.settings.issuer,
            expected_rp_id=self.settings.webauthn_rp_id,
            expected_origin=self.settings.expected_origin,
            now=self.now(),
        )
        # Counter first, as a compare-and-set: two assertions racing with the same counter
        # value (a cloned authenticator) cannot both pass.
        if not self.store.update_sign_count(
            verified.passkey.credential_id, old=verified.passkey.sign_count, new=verified.new_sign_count
        ):
            raise AssertionRejected("signature counter changed concurrently; try again")
        if not self.store.decide(
            request.request_id, status=RequestStatus.APPROVED, now=self.now(), receipt=verified.receipt
        ):
            raise ApprovalAlreadyDecided("this request was already decided")
        self.after_decision(request.request_id)
        return {"status": "approved", "receipt": verified.receipt.receipt_id}

    def deny(self, approval_id: str) -> dict[str, Any]:
        request = self._request_for_approval(approval_id)
        self._require_pending(request)
        if not self.store.decide(request.request_id, status=RequestStatus.DENIED, now=self.now()):
            raise ApprovalAlreadyDecided("this request was already decided")
        self.after_decision(request.request_id)
        return {"status": "denied"}

    def after_decision(self, request_id: str) -> None:
        """Hook for modes that must tell someone about the decision (keycloak mode)."""

    def verify_receipt(self, receipt_id: str) -> dict[str, Any]:
        receipt = self.store.get_receipt(receipt_id)
        if receipt is None:
            raise ApprovalNotFound("unknown receipt")
        document = approval_mod.reverify_receipt(receipt)
        return {"receipt": receipt_id, "valid": True, "binding_document": document}
