"""Keycloak mode: Keycloak is the OpenID Provider and token issuer; this service is its
companion (DESIGN.md, "Two modes, one API"). The three steps live in their own modules:
:mod:`.forward` (the agent's request to Keycloak), :mod:`.channel` (Keycloak's authentication
channel to us) and :mod:`.callback` (the decision back to Keycloak); :mod:`.admin` reads users
and passkeys from Keycloak."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from ciba_service.core.errors import AssertionRejected, NotOffered
from ciba_service.core.model import BackchannelRequest, User
from ciba_service.core.params import Params
from ciba_service.jose.jwks import JwksCache
from ciba_service.server.context import ServerContext
from ciba_service.server.discovery import common_metadata
from ciba_service.server.issuer import BackchannelResult, ChannelResult, TokenResult
from ciba_service.server.keycloak.admin import KeycloakAdmin, UserMirror
from ciba_service.server.keycloak.callback import Callbacks
from ciba_service.server.keycloak.channel import AuthChannel, Refusals
from ciba_service.server.keycloak.forward import Forwarder

__all__ = ["KeycloakIssuer"]


class KeycloakIssuer:
    mode = "keycloak"

    def __init__(
        self,
        context: ServerContext,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._context = context
        kc = context.settings.keycloak
        self.kc = kc
        # Redirects are never followed: every URL here is configured, a redirect is an error.
        self.http = http or httpx.Client(timeout=kc.timeout, follow_redirects=False)
        self._owns_http = http is None
        self.oidc = f"{kc.issuer}/protocol/openid-connect"
        self.admin = KeycloakAdmin(
            base_url=kc.base_url,
            realm=kc.realm,
            client_id=kc.admin_client_id,
            client_secret=kc.admin_client_secret,
            http=self.http,
            clock=context.clock,
        )
        self.users = UserMirror(context, self.admin, ttl=kc.user_cache_ttl)
        # In the store: the channel call and the forwarding call may reach different instances.
        refusals = Refusals(context)
        self.forwarder = Forwarder(context, http=self.http, oidc=self.oidc, refusals=refusals)
        self.channel_endpoint = AuthChannel(
            context,
            issuer=kc.issuer,
            keys=JwksCache(f"{self.oidc}/certs", client=self.http, timeout=kc.timeout),
            users=self.users,
            refusals=refusals,
        )
        self.callbacks = Callbacks(context, http=self.http, oidc=self.oidc, attempts=kc.callback_attempts, sleep=sleep)

    # discovery: Keycloak issues the tokens, so its issuer, token endpoint and keys are named;
    # only the backchannel endpoint is ours. No introspection endpoint (Keycloak's own serves
    # its tokens), no push (Keycloak delivers poll and ping), no user_code, no signed requests.
    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.kc.issuer,
            **common_metadata(self._context),
            "token_endpoint": f"{self.oidc}/token",
            "jwks_uri": f"{self.oidc}/certs",
            "introspection_endpoint": f"{self.oidc}/token/introspect",
            "backchannel_token_delivery_modes_supported": ["poll", "ping"],
            "backchannel_user_code_parameter_supported": False,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "access_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict[str, Any]:
        raise NotOffered(f"keycloak mode: tokens are signed by Keycloak; its keys are at {self.oidc}/certs")

    def backchannel_authenticate(self, params: Params, authorization: str | None) -> BackchannelResult:
        return self.forwarder.backchannel_authenticate(params, authorization)

    def token(self, params: Params, authorization: str | None, dpop_proofs: list[str]) -> TokenResult:
        return self.forwarder.token(params, authorization)

    def introspect(self, params: Params, authorization: str | None) -> dict[str, Any]:
        raise NotOffered(f"keycloak mode: Keycloak introspects its tokens at {self.oidc}/token/introspect")

    def channel(self, authorization: str | None, body: Mapping[str, Any]) -> ChannelResult:
        return self.channel_endpoint.handle(authorization, body)

    def before_approve(self, request: BackchannelRequest) -> None:
        """Re-read the user and passkeys from Keycloak first (no cache): a user disabled or a
        passkey deleted in Keycloak since the request started must not approve."""
        try:
            self.users.sync(request.user_id, force=True)
        except httpx.HTTPError:
            raise AssertionRejected("cannot confirm the passkey with Keycloak right now; try again") from None

    def after_decision(self, request_id: str) -> None:
        self.callbacks.after_decision(request_id)

    def sweep_expired(self) -> int:
        return self.callbacks.sweep_expired()

    def offers_enrollment(self) -> bool:
        return False  # passkeys are registered in Keycloak (account console or required action)

    def set_user_code(self, user: User, code: str | None) -> None:
        raise NotOffered("keycloak mode: user_code is not supported (Keycloak's CIBA does not check one)")

    def close(self) -> None:
        if self._owns_http:
            self.http.close()
