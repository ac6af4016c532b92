"""The embedded CIBA OpenID Provider: the protocol core, free of any web framework.

The web layer (``ciba_service.web``) only turns HTTP into calls to :class:`Provider` and its
results or :class:`~ciba_service.core.errors.OAuthError` back into HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from ciba_service import rfc9449 as dpop
from ciba_service.config import Settings
from ciba_service.core.binding import binding_document, canonical_preimage, challenge_for
from ciba_service.core.errors import (
    AccessDenied,
    ApprovalAlreadyDecided,
    ApprovalExpired,
    ApprovalNotFound,
    AssertionRejected,
    AuthorizationPending,
    EnrollmentError,
    ExpiredToken,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    InvalidUserCode,
    MissingUserCode,
    SlowDown,
    UnauthorizedClient,
    UnknownUserId,
    UnsupportedGrantType,
)
from ciba_service.core.model import BackchannelRequest, CallbackState, Enrollment, RequestStatus, User
from ciba_service.core.params import Params
from ciba_service.core.protocol import CIBA_GRANT_TYPE
from ciba_service.core.replay import ReplayCache
from ciba_service.core.security import hash_secret, new_id, sha256_b64url, verify_secret
from ciba_service.jose.client_assertion import ASSERTION_ALGORITHMS, SpiffeBundle
from ciba_service.rfc9396 import TypeRegistry, describe_entry
from ciba_service.server.approval import ceremony as approval_mod
from ciba_service.server.backchannel import (
    Hint,
    RequestContext,
    check_client_may_use_ciba,
    validate_backchannel_request,
)
from ciba_service.server.client_auth import AssertionContext, AuthenticatedClient, authenticate_client
from ciba_service.server.delivery import NotificationSender
from ciba_service.server.notify import ApprovalNotice, Notifier
from ciba_service.server.tokens import SigningKey, mint_access_token, mint_id_token
from ciba_service.store.base import Store

log = logging.getLogger("ciba_service.server.provider")

__all__ = ["SLOW_DOWN_INCREMENT", "AttemptLimiter", "Provider"]

# CIBA 11 / RFC 8628 3.5: after slow_down "the interval MUST be increased by 5 seconds for
# this and all subsequent requests".
SLOW_DOWN_INCREMENT = 5
# Network jitter allowance when deciding that a poll came too early.
_POLL_SLACK_MS = 250


class _StoreReplay(ReplayCache):
    """DPoP proof ``jti`` single use in the service's store (shared by every instance that
    shares the store)."""

    def __init__(self, store: Store, now: Callable[[], int]) -> None:
        self._store = store
        self._now = now

    def consume(self, key: str, *, expires_at: int, limit: int = 1) -> bool:
        if limit != 1:
            raise ValueError("the store records single use only")
        return self._store.use_once(f"dpop:{key}", expires_at=expires_at, now=self._now())


class AttemptLimiter:
    """Failed attempts per key within a sliding window, kept in the store, so every instance
    sharing the store enforces one limit together: the user_code guessing limit.

    An attempt is recorded *before* the secret is checked (``acquire``) and forgotten after
    if it succeeded (``release``), so concurrent guesses (scrypt takes a while) cannot all
    pass the check and overshoot the limit, and a process dying mid-check leaves a counted
    failure (fails closed)."""

    def __init__(self, store: Store, *, limit: int, window: int, namespace: str) -> None:
        self._store = store
        self._limit = limit
        self._window = window
        self._namespace = namespace

    def acquire(self, key: str, *, now: int) -> str | None:
        """Record one attempt; its id, or None while ``key`` has used up its attempts."""
        attempt_id = new_id(16)
        reserved = self._store.reserve_attempt(
            f"{self._namespace}:{key}", attempt_id=attempt_id, now=now, window=self._window, limit=self._limit
        )
        return attempt_id if reserved else None

    def release(self, key: str, attempt_id: str, *, failed: bool) -> None:
        """Settle an attempt: a failure stays counted, a success is forgotten."""
        if not failed:
            self._store.cancel_attempt(f"{self._namespace}:{key}", attempt_id=attempt_id)


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
        self.registry = TypeRegistry.from_config(
            settings.authorization_details_types, include_defaults=settings.include_default_types
        )
        for client in settings.clients:
            unknown = [t for t in client.authorization_details_types if t not in self.registry.types]
            if unknown:
                # A typo here would silently leave the agent unable to request anything.
                raise ValueError(f"client {client.client_id} lists unknown authorization_details types {unknown}")
        self._clock = clock
        self.spiffe = (
            SpiffeBundle.load(settings.spiffe_bundle_path, trust_domain=settings.spiffe_trust_domain)
            if settings.spiffe_bundle_path
            else None
        )
        self.user_code_attempts = AttemptLimiter(
            self.store,
            limit=settings.user_code_max_failures,
            window=settings.user_code_failure_window,
            namespace="user_code",
        )
        self.sender = NotificationSender(timeout=settings.notification_timeout, attempts=settings.notification_attempts)
        # Deliveries run on their own threads so the user's Approve answers at once; tests
        # may set this to False and call deliver() themselves.
        self.deliver_in_background = True
        # Seconds between background sweeps (expiry, undelivered notifications); 0 disables.
        self.sweep_interval = 2.0

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
            "introspection_endpoint": f"{iss}/introspect",
            "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
            "backchannel_user_code_parameter_supported": self.settings.backchannel_user_code_parameter_supported,
            "backchannel_authentication_request_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "spiffe_jwt",
            ],
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "client_assertion_types_supported": [
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
            ],
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
        # WebAuthn L3 7.1 step 26: a credential id registered already (to anyone) is refused.
        if self.store.find_passkey(passkey.credential_id) is not None:
            raise EnrollmentError("registration rejected: credential is already registered")
        # Consumed only after a valid registration, and atomically: a link works once.
        if not self.store.consume_enrollment(enrollment.token_hash, now=self.now()):
            raise ApprovalAlreadyDecided("this enrollment link has been used")
        self.store.add_passkey(passkey)
        return {"status": "enrolled", "username": user.username}

    # backchannel authentication ---------------------------------------------------------
    def audiences(self) -> tuple[str, ...]:
        # RFC 7523 3 / CIBA 7.1.1: the issuer identifier, or the endpoint the JWT is sent to.
        iss = self.settings.issuer
        return (iss, f"{iss}/token", f"{iss}/bc-authorize")

    def _use_once(self, key: str, expires_at: int) -> bool:
        return self.store.use_once(key, expires_at=expires_at, now=self.now())

    def authenticate_client(self, params: Params, authorization: str | None) -> AuthenticatedClient:
        context = AssertionContext(
            now=self.now(), audiences=self.audiences(), use_once=self._use_once, spiffe=self.spiffe
        )
        return authenticate_client(settings=self.settings, params=params, authorization=authorization, context=context)

    def request_context(self) -> RequestContext:
        return RequestContext(
            issuer=self.settings.issuer,
            audiences=self.audiences(),
            now=self.now(),
            use_once=self._use_once,
            decode_id_token=self.decode_id_token,
        )

    def decode_own(self, token: str, *, typ: str, require: list[str], what: str) -> dict[str, Any]:
        """A JWT this service signed, of the given ``typ`` (so an ID token never passes as an
        access token or the reverse). Time claims are left to the caller, who judges them by
        the service's clock, not the host's."""
        if jwt.get_unverified_header(token).get("typ", "JWT") != typ:
            raise jwt.InvalidTokenError(f"not {what}")
        claims: dict[str, Any] = jwt.decode(
            token,
            self.signing_key.private_key.public_key(),
            algorithms=["ES256"],
            issuer=self.settings.issuer,
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
                "require": ["iss", *require],
            },
        )
        return claims

    def decode_id_token(self, token: str) -> dict[str, Any]:
        # Any age is fine for a hint (OpenID Connect Core 3.1.2.1).
        return self.decode_own(token, typ="JWT", require=["sub", "aud"], what="an ID token")

    def resolve_user(self, hint: Hint | str) -> User:
        if isinstance(hint, str):
            hint = Hint(kind="username", value=hint)
        if hint.kind == "user_id":
            user = self.store.get_user(hint.value)
            shown = user.username if user else hint.value
        else:
            user = self.store.find_user(hint.value)
            shown = hint.value
        if user is None or not user.enabled:
            raise UnknownUserId(f"no enabled user matches the hint '{shown}'")
        if not self.store.passkeys_for(user.user_id):
            raise UnknownUserId(f"user '{shown}' has no passkey enrolled and cannot approve")
        return user

    def check_user_code(self, user: User, user_code: str | None) -> None:
        """CIBA 7.1 user_code: a secret the user gave the agent, stopping an agent that only
        knows a username from spamming that user with requests."""
        if not self.settings.backchannel_user_code_parameter_supported:
            return
        stored = self.store.get_user_code(user.user_id)
        if stored is None:
            return
        if user_code is None:
            raise MissingUserCode("this user requires a user_code")
        # Online guessing: an agent that knows a username could try codes until one works (only
        # scrypt's cost slows it). After user_code_max_failures wrong codes in the window the
        # user's requests are refused *without checking the code*, so a blocked guess learns
        # nothing, not even when it is right. Per user, not per client: a guesser with several
        # clients gets no more tries. The price: a client can lock a user's requests for the
        # window by guessing wrong on purpose; a success neither counts nor resets the count (a
        # reset would hand a guesser a fresh budget whenever the real agent succeeds).
        now = self.now()
        attempt = self.user_code_attempts.acquire(user.user_id, now=now)
        if attempt is None:
            raise InvalidUserCode("too many failed user_code attempts for this user; attempts are temporarily blocked")
        valid = False
        try:
            valid = verify_secret(user_code, stored)
        finally:
            self.user_code_attempts.release(user.user_id, attempt, failed=not valid)
        if not valid:
            raise InvalidUserCode("user_code is not valid for this user")

    def set_user_code(self, user: User, code: str | None) -> None:
        self.store.set_user_code(user.user_id, hash_secret(code) if code else None)

    def backchannel_authenticate(self, params: Params, authorization: str | None) -> BackchannelResult:
        client = self.authenticate_client(params, authorization)
        validated = validate_backchannel_request(
            params=params,
            client=client,
            settings=self.settings,
            registry=self.registry,
            context=self.request_context(),
        )
        user = self.resolve_user(validated.hint)
        self.check_user_code(user, validated.user_code)
        now = self.now()
        auth_req_id = new_id(32)  # 256 bits; CIBA 7.3 asks for unguessable
        mode = client.client.backchannel_token_delivery_mode
        upstream: dict[str, Any] = {}
        if mode != "poll":
            # Ping and push must name the auth_req_id to the client later, so it is kept
            # (with the client's bearer for its endpoint); poll keeps only the hash.
            upstream = {
                "delivery": mode,
                "endpoint": client.client.backchannel_client_notification_endpoint,
                "notification_token": validated.client_notification_token,
                "auth_req_id": auth_req_id,
            }
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
            upstream=upstream,
        )
        self.store.add_request(request)
        response: dict[str, Any] = {"auth_req_id": auth_req_id, "expires_in": validated.expires_in}
        if mode != "push":  # CIBA 7.3: interval only where the client polls
            response["interval"] = request.interval
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
    def check_dpop(self, proofs: list[str]) -> str | None:
        """RFC 9449 5: a DPoP proof at the token endpoint binds the token to its key."""
        if not proofs:
            return None
        if len(proofs) > 1:
            raise InvalidDPoPProof("more than one DPoP header")
        try:
            return dpop.verify_proof(
                proofs[0],
                method="POST",
                url=f"{self.settings.issuer}/token",
                replay=_StoreReplay(self.store, self.now),
                now=self.now(),
            )
        except dpop.DPoPProofError as exc:
            raise InvalidDPoPProof(exc.description) from None

    def token(self, params: Params, authorization: str | None, dpop_proofs: list[str] | None = None) -> dict[str, Any]:
        grant_type = params.optional("grant_type")
        if grant_type is None:
            raise InvalidRequest("missing required parameter 'grant_type'")
        if grant_type != CIBA_GRANT_TYPE:
            raise UnsupportedGrantType(f"grant_type '{grant_type}' is not supported")
        client = self.authenticate_client(params, authorization)
        check_client_may_use_ciba(client)
        jkt = self.check_dpop(dpop_proofs or [])
        if client.client.backchannel_token_delivery_mode == "push":
            # CIBA 10.3: a push client receives its tokens at its notification endpoint only.
            raise UnauthorizedClient("this client is registered for push delivery; tokens are pushed")
        auth_req_id = params.required("auth_req_id")
        request = self.store.find_request_by_auth_req_id(sha256_b64url(auth_req_id))
        if request is None:
            raise InvalidGrant("auth_req_id is unknown")
        if request.client_id != client.client.client_id:
            # CIBA 11: the auth_req_id was issued to another client; indistinguishable in
            # wording from unknown would also be fine, but the code is what matters.
            raise InvalidGrant("auth_req_id was not issued to this client")
        return self._redeem(request, auth_req_id, jkt)

    def _redeem(self, request: BackchannelRequest, auth_req_id: str, jkt: str | None = None) -> dict[str, Any]:
        now_ms = self.now_ms()
        now = now_ms // 1000
        if request.status is RequestStatus.ISSUED:
            # A second redemption means the auth_req_id leaked or the client is confused:
            # the token already issued for it is revoked (visible through introspection).
            self.store.revoke_request(request.request_id)
            raise InvalidGrant("auth_req_id has already been used")
        if request.status is RequestStatus.DENIED:
            raise AccessDenied("the user denied the request")
        if now >= request.expires_at:
            raise ExpiredToken("the authentication request has expired")
        if request.status is RequestStatus.PENDING:
            interval = request.interval
            if request.last_poll_at is not None and now_ms - request.last_poll_at < interval * 1000 - _POLL_SLACK_MS:
                interval += SLOW_DOWN_INCREMENT
                self.store.record_poll(request.request_id, now=now_ms, interval=interval)
                raise SlowDown(f"polling too fast; wait at least {interval} seconds between requests")
            self.store.record_poll(request.request_id, now=now_ms, interval=interval)
            raise AuthorizationPending("the user has not yet decided")
        return self.issue_tokens(request, auth_req_id, jkt)

    def issue_tokens(self, request: BackchannelRequest, auth_req_id: str, jkt: str | None = None) -> dict[str, Any]:
        """Mint the tokens for an approved request (once)."""
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
            jkt=jkt,
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
            # CIBA 10.3.1: a pushed ID token binds the access token it travels with.
            access_token=access_token,
        )
        return {
            "access_token": access_token,
            # RFC 9449 5: a key-bound token says so, and must be presented as DPoP.
            "token_type": "DPoP" if jkt else "Bearer",
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
        document = binding_document(request=request, issuer=self.settings.issuer)
        preimage = canonical_preimage(document)
        challenge = challenge_for(preimage)
        view: dict[str, Any] = {
            "status": status,
            "client_id": request.client_id,
            "client_name": request.client_name,
            "username": user.username,
            "binding_message": request.binding_message,
            "entries": [
                {"text": describe_entry(e, registry=self.registry), "detail": e} for e in request.authorization_details
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
        """Tell the client about the decision at once in ping and push modes."""
        request = self.store.get_request(request_id)
        if request is None or request.upstream.get("delivery") not in ("ping", "push"):
            return
        if self.deliver_in_background:
            threading.Thread(target=self.deliver, args=(request_id,), daemon=True).start()
        else:
            self.deliver(request_id)

    def deliver(self, request_id: str) -> bool:
        """Ping (``{auth_req_id}``) or push (the token response) to the client, once."""
        request = self.store.get_request(request_id)
        if request is None or not self.store.claim_callback(request_id):
            return False
        upstream = request.upstream
        auth_req_id = str(upstream.get("auth_req_id"))
        payload: dict[str, Any] = {"auth_req_id": auth_req_id}
        if upstream.get("delivery") == "push":
            if request.status is RequestStatus.APPROVED:
                try:
                    payload.update(self.issue_tokens(request, auth_req_id))
                except InvalidGrant:
                    payload.update(error="transaction_failed", error_description="token already issued")
            elif request.status is RequestStatus.DENIED:
                payload.update(error="access_denied", error_description="the user denied the request")
            else:
                payload.update(error="expired_token", error_description="the authentication request has expired")
        elif request.status not in (RequestStatus.APPROVED, RequestStatus.DENIED):
            # Ping mode on expiry: nothing to fetch; the client's own expires_in tells it.
            self.store.set_callback_state(request_id, CallbackState.SENT)
            return False
        result = self.sender.send(
            str(upstream.get("endpoint")), bearer=str(upstream.get("notification_token")), payload=payload
        )
        self.store.set_callback_state(request_id, CallbackState.SENT if result.delivered else CallbackState.FAILED)
        if not result.delivered:
            log.warning("%s delivery for %s failed: %s", upstream.get("delivery"), request_id, result.reason)
        return result.delivered

    def sweep_expired(self) -> int:
        """Deliver what is due: decisions not yet delivered (e.g. after a restart) and push
        notifications of expiry. Returns how many deliveries succeeded."""
        return sum(1 for r in self.store.pending_notifications(now=self.now()) if self.deliver(r.request_id))

    # introspection (RFC 7662) ----------------------------------------------------------
    def introspect(self, params: Params, authorization: str | None) -> dict[str, Any]:
        caller = self.authenticate_client(params, authorization)
        if not caller.client.introspection:
            raise UnauthorizedClient("this client may not introspect tokens")
        token = params.required("token")
        try:
            claims = self.decode_own(token, typ="at+jwt", require=["exp", "jti"], what="an access token")
        except jwt.PyJWTError:
            return {"active": False}
        if not isinstance(claims["exp"], int | float) or self.now() >= claims["exp"]:
            return {"active": False}  # judged by the service's clock, like everything else
        request = self.store.find_request_by_jti(str(claims["jti"]))
        if request is None or request.revoked:
            return {"active": False}
        return {"active": True, "token_type": "Bearer", **claims}

    def verify_receipt(self, receipt_id: str) -> dict[str, Any]:
        receipt = self.store.get_receipt(receipt_id)
        if receipt is None:
            raise ApprovalNotFound("unknown receipt")
        document = approval_mod.reverify_receipt(receipt)
        return {"receipt": receipt_id, "valid": True, "binding_document": document}
