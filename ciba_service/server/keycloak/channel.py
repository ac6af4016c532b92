"""Step 2 of keycloak mode: this service is Keycloak's CIBA HTTP authentication channel
(``ciba-http-auth-channel``). Keycloak POSTs the channel request with a signed bearer token
while it handles the agent's request; we verify the token, bind the call to the stored intent
(client, user and binding message must match), apply the client's policy (now that Keycloak has
authenticated the client), mirror the user's passkeys, answer 201 and run the same approval as
embedded mode."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import jwt

from ciba_service.config import ClientConfig, Settings
from ciba_service.core.errors import (
    ChannelError,
    InvalidAuthorizationDetails,
    InvalidBindingMessage,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnknownUserId,
)
from ciba_service.core.model import BackchannelRequest, ChannelRefusal
from ciba_service.core.security import new_id, sha256_b64url
from ciba_service.jose.jwks import JwksCache, JwksUnavailable
from ciba_service.server.backchannel import check_client_policy
from ciba_service.server.context import ServerContext
from ciba_service.server.issuer import ChannelResult
from ciba_service.server.keycloak.admin import UserMirror
from ciba_service.server.outbox import Outbox
from ciba_service.store import StoreUnavailable

__all__ = ["INTENT_PARAMETER", "AuthChannel", "Refusals", "client_policy"]

log = logging.getLogger("ciba_service.server.keycloak")

# The extra CIBA request parameter that carries our reference through Keycloak. Keycloak
# passes extra parameters of up to 200 characters to the channel as top-level JSON members.
INTENT_PARAMETER = "intent"

# The errors a refusal may carry to the agent, by code; anything else is reported as
# invalid_request (the code is written by this service, never taken from a request).
_AGENT_ERRORS: dict[str, type[OAuthError]] = {
    cls.error: cls
    for cls in (
        InvalidRequest,
        InvalidScope,
        UnauthorizedClient,
        UnknownUserId,
        InvalidAuthorizationDetails,
        InvalidBindingMessage,
    )
}


def client_policy(settings: Settings, client_id: str) -> ClientConfig:
    """What ``client_id`` may request (its ``[[clients]]`` entry); a client registered only in
    Keycloak may use the standard scopes and every authorization_details type."""
    return settings.client(client_id) or ClientConfig(client_id=client_id, scopes=["openid", "profile", "email"])


class Refusals:
    """Why a channel call was refused, kept in the store for the forwarding call: Keycloak answers
    the agent only "503 server_error" when the channel refuses, and the forwarding call turns the
    kept reason into a precise error. In the store (not in one process's memory) because the
    channel call and the forwarding call may reach different instances; each refusal is taken
    once and forgotten after :attr:`LIFETIME` seconds."""

    # The forwarding call takes it within one Keycloak round trip (keycloak.timeout, seconds);
    # minutes leave room for slow Keycloaks and skewed clocks, and keep the store bounded.
    LIFETIME = 300

    def __init__(self, context: ServerContext) -> None:
        self._context = context

    def keep(self, intent_id: str, error: ChannelError) -> None:
        if error.agent_error is not None:
            code, description = error.agent_error.error, error.agent_error.description
        elif error.unknown_user:
            # The user cannot approve (unknown, disabled, or no passkey in Keycloak).
            code, description = UnknownUserId.error, error.description
        else:
            code, description = InvalidRequest.error, f"the approval could not start: {error.description}"
        now = self._context.now()
        refusal = ChannelRefusal(
            intent_id=intent_id, error=code, error_description=description, expires_at=now + self.LIFETIME
        )
        try:
            self._context.store.keep_refusal(refusal, now=now)
        except StoreUnavailable as exc:
            # Keycloak still gets the refusal's own status; the agent then gets a generic error.
            log.error("channel refusal for intent %s not recorded: %s", intent_id, exc)

    def take(self, intent_id: str) -> OAuthError | None:
        """The error the agent gets for a refused channel call for ``intent_id``, once."""
        refusal = self._context.store.take_refusal(intent_id, now=self._context.now())
        if refusal is None:
            return None
        return _AGENT_ERRORS.get(refusal.error, InvalidRequest)(refusal.error_description)


class AuthChannel:
    def __init__(
        self, context: ServerContext, *, issuer: str, keys: JwksCache, users: UserMirror, refusals: Refusals
    ) -> None:
        self._context = context
        self._issuer = issuer
        self._keys = keys
        self._users = users
        self._refusals = refusals
        self._outbox = Outbox(context)

    def verify_token(self, authorization: str | None) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ChannelError(401, "bearer token required")
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.key_for(str(header.get("kid")))
        except (jwt.PyJWTError, JwksUnavailable) as exc:
            raise ChannelError(401, f"channel token not verifiable: {type(exc).__name__}") from None
        if key is None:
            raise ChannelError(401, "channel token signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                # The key verifies the one algorithm the realm published it for.
                algorithms=[key.alg],
                audience=self._issuer,
                issuer=self._issuer,
                # Time is checked below against our clock (one clock for the whole service).
                options={
                    "require": ["exp", "iss", "aud", "sub", "jti", "azp"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise ChannelError(401, f"channel token rejected: {exc}") from None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or self._context.now() >= exp + 5:
            # An expired channel token means Keycloak gave up on the request already.
            raise ChannelError(401, "channel token rejected: expired")
        claims["_raw"] = token
        return claims

    def handle(self, authorization: str | None, body: Mapping[str, Any]) -> ChannelResult:
        """Handle Keycloak's channel POST; raises ChannelError for a non-201 answer."""
        claims = self.verify_token(authorization)
        intent_id = body.get(INTENT_PARAMETER)
        if not isinstance(intent_id, str):
            raise ChannelError(400, "the request carries no intent reference; use this service's /bc-authorize")
        try:
            return self._bind(claims, body, intent_id)
        except ChannelError as exc:
            # Only after Keycloak's token verified (above): nobody else can plant an error that
            # the forwarding call would then report for someone's intent.
            self._refusals.keep(intent_id, exc)
            raise

    def _bind(self, claims: dict[str, Any], body: Mapping[str, Any], intent_id: str) -> ChannelResult:
        context = self._context
        store = context.store
        intent = store.take_intent(intent_id, now=context.now())
        if intent is None:
            raise ChannelError(400, "unknown or expired intent")
        # Binding: the channel call must be for the client and user the intent was made for,
        # so an agent cannot attach another agent's (or user's) approved action to its request.
        if claims["azp"] != intent.client_id:
            raise ChannelError(403, "intent belongs to another client")
        if body.get("login_hint") != intent.login_hint:
            raise ChannelError(403, "intent was made for another login_hint")
        if (body.get("binding_message") or None) != intent.binding_message:
            raise ChannelError(403, "binding_message differs from the intent")
        # The client's policy is applied only here, where Keycloak's signed channel token (azp,
        # checked above) proves the client authenticated: checked in /bc-authorize before
        # forwarding, it would tell a caller with a wrong secret which scopes and
        # authorization_details types a client may request. The agent still gets the exact
        # error (through the refusal the forwarding call reports).
        client = client_policy(context.settings, intent.client_id)
        try:
            check_client_policy(client, scope=intent.scope, authorization_details=intent.authorization_details)
        except OAuthError as exc:
            raise ChannelError(403, exc.description, agent_error=exc) from None
        try:
            user = self._users.sync(str(claims["sub"]))
        except httpx.HTTPError as exc:
            raise ChannelError(503, f"admin API unavailable: {type(exc).__name__}") from None
        if user is None or not user.enabled:
            raise ChannelError(403, "user unknown or disabled", unknown_user=True)
        if user.username.lower() != intent.login_hint.lower():
            raise ChannelError(403, "intent was made for another user")
        if not store.passkeys_for(user.user_id):
            raise ChannelError(403, "the user has no passkey registered in Keycloak", unknown_user=True)
        request = BackchannelRequest(
            # The intent id: bc-authorize can then undo this request if Keycloak fails.
            request_id=intent.intent_id,
            # Keycloak holds the agent's auth_req_id; the channel's auth result id is our key.
            auth_req_id_hash=sha256_b64url(f"kc-channel:{claims['jti']}"),
            approval_id=new_id(32),
            client_id=intent.client_id,
            client_name=client.name or intent.client_id,
            user_id=user.user_id,
            scope=intent.scope,
            binding_message=intent.binding_message,
            authorization_details=intent.authorization_details,
            created_at=context.now(),
            # Never outlive Keycloak's own request (the channel token expires with it).
            expires_at=min(intent.expires_at, int(claims["exp"])),
            interval=context.settings.poll_interval,
            nonce=new_id(16),
            upstream={"channel_token": claims["_raw"], "auth_result_id": claims["jti"]},
        )
        notice = context.notice_for(request, user)
        # With its notice, in one step (server/outbox.py): the user is told even if this
        # process dies right after answering Keycloak.
        store.add_request(request, outbox=self._outbox.entry(request, notice))
        return ChannelResult(request_id=request.request_id, notice=notice)
