"""The CIBA grant at the token endpoint (CIBA Core 10 and 11), embedded mode.

The rules, in the order they are checked for a known ``auth_req_id`` of the calling client:
redeemed already (``invalid_grant``, and the token issued is revoked), denied
(``access_denied``), expired (``expired_token``), still pending (``authorization_pending``, or
``slow_down`` when the client polls faster than its interval), approved (the tokens, once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ciba_service import rfc9449 as dpop
from ciba_service.core.errors import (
    AccessDenied,
    AuthorizationPending,
    ExpiredToken,
    InvalidDPoPProof,
    InvalidGrant,
    InvalidRequest,
    SlowDown,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from ciba_service.core.model import BackchannelRequest, RequestStatus
from ciba_service.core.params import Params
from ciba_service.core.protocol import CIBA_GRANT_TYPE
from ciba_service.core.replay import ReplayCache
from ciba_service.core.security import auth_req_id_key
from ciba_service.server.backchannel import check_client_may_use_ciba
from ciba_service.server.context import ServerContext
from ciba_service.server.tokens import approval_claim, mint_access_token, mint_id_token
from ciba_service.store.base import Store

__all__ = ["SLOW_DOWN_INCREMENT", "CibaGrant"]

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


def check_slow_down(request: BackchannelRequest, *, now_ms: int) -> int | None:
    """CIBA 11 ``slow_down``: the client polled before its interval had passed. Returns the
    increased interval (seconds) the client must keep from now on, or None."""
    if request.last_poll_at is not None and now_ms - request.last_poll_at < request.interval * 1000 - _POLL_SLACK_MS:
        return request.interval + SLOW_DOWN_INCREMENT
    return None


class CibaGrant:
    """``grant_type=urn:openid:params:grant-type:ciba`` (CIBA 10.1) and the minting of the
    tokens for an approved request."""

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    def check_dpop(self, proofs: list[str]) -> str | None:
        """RFC 9449 5: a DPoP proof at the token endpoint binds the token to its key."""
        if not proofs:
            return None
        if len(proofs) > 1:
            raise InvalidDPoPProof("more than one DPoP header")
        context = self._context
        try:
            return dpop.verify_proof(
                proofs[0],
                method="POST",
                url=f"{context.settings.issuer}/token",
                replay=_StoreReplay(context.store, context.now),
                now=context.now(),
            )
        except dpop.DPoPProofError as exc:
            raise InvalidDPoPProof(exc.description) from None

    def token(self, params: Params, authorization: str | None, dpop_proofs: list[str]) -> dict[str, Any]:
        context = self._context
        grant_type = params.optional("grant_type")
        if grant_type is None:
            raise InvalidRequest("missing required parameter 'grant_type'")
        if grant_type != CIBA_GRANT_TYPE:
            raise UnsupportedGrantType(f"grant_type '{grant_type}' is not supported")
        client = context.authenticate_client(params, authorization)
        check_client_may_use_ciba(client)
        jkt = self.check_dpop(dpop_proofs)
        if client.client.backchannel_token_delivery_mode == "push":
            # CIBA 10.3: a push client receives its tokens at its notification endpoint only.
            raise UnauthorizedClient("this client is registered for push delivery; tokens are pushed")
        auth_req_id = params.required("auth_req_id")
        request = context.store.find_request_by_auth_req_id(auth_req_id_key(auth_req_id))
        if request is None:
            raise InvalidGrant("auth_req_id is unknown")
        if request.client_id != client.client.client_id:
            # CIBA 11: the auth_req_id was issued to another client; indistinguishable in
            # wording from unknown would also be fine, but the code is what matters.
            raise InvalidGrant("auth_req_id was not issued to this client")
        return self.redeem(request, auth_req_id, jkt)

    def redeem(self, request: BackchannelRequest, auth_req_id: str, jkt: str | None = None) -> dict[str, Any]:
        store = self._context.store
        now_ms = self._context.now_ms()
        now = now_ms // 1000
        if request.status is RequestStatus.ISSUED:
            # A second redemption means the auth_req_id leaked or the client is confused:
            # the token already issued for it is revoked (visible through introspection).
            store.revoke_request(request.request_id)
            raise InvalidGrant("auth_req_id has already been used")
        if request.status is RequestStatus.DENIED:
            raise AccessDenied("the user denied the request")
        if now >= request.expires_at:
            raise ExpiredToken("the authentication request has expired")
        if request.status is RequestStatus.PENDING:
            slower = check_slow_down(request, now_ms=now_ms)
            store.record_poll(request.request_id, now=now_ms, interval=slower or request.interval)
            if slower is not None:
                raise SlowDown(f"polling too fast; wait at least {slower} seconds between requests")
            raise AuthorizationPending("the user has not yet decided")
        return self.issue_tokens(request, auth_req_id, jkt)

    def issue_tokens(self, request: BackchannelRequest, auth_req_id: str, jkt: str | None = None) -> dict[str, Any]:
        """Mint the tokens for an approved request (once)."""
        context = self._context
        settings = context.settings
        now = context.now()
        receipt = context.store.get_receipt(request.receipt_id or "")
        if receipt is None:
            raise InvalidGrant("approval receipt missing")
        client = settings.client(request.client_id)
        audience = (client.audience if client else None) or settings.default_audience
        lifetime = settings.access_token_lifetime
        user_claims = self._user_claims(request)
        access_token, claims = mint_access_token(
            key=context.signing_key,
            issuer=settings.issuer,
            subject=request.user_id,
            audience=audience,
            client_id=request.client_id,
            scope=request.scope,
            authorization_details=request.authorization_details,
            approval=approval_claim(receipt),
            auth_time=receipt.created_at,
            now=now,
            lifetime=lifetime,
            jkt=jkt,
            user_claims=user_claims,
        )
        # A token is issued once per request: the compare-and-set makes a racing second
        # redemption fail even if both passed the status check above.
        if not context.store.mark_issued(request.request_id, jti=claims["jti"]):
            raise InvalidGrant("auth_req_id has already been used")
        id_token = mint_id_token(
            key=context.signing_key,
            issuer=settings.issuer,
            subject=request.user_id,
            client_id=request.client_id,
            auth_req_id=auth_req_id,
            auth_time=receipt.created_at,
            now=now,
            lifetime=lifetime,
            # CIBA 10.3.1: a pushed ID token binds the access token it travels with.
            access_token=access_token,
            user_claims=user_claims,
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

    def _user_claims(self, request: BackchannelRequest) -> dict[str, Any]:
        """The opt-in ``token_username_claim``: the user's username for resource servers' audit
        logs (a privacy choice: by default tokens name the user only by the opaque ``sub``)."""
        name = self._context.settings.token_username_claim
        if not name:
            return {}
        user = self._context.store.get_user(request.user_id)
        return {name: user.username} if user is not None else {}
