"""What every part of the authorization server shares: settings, store, signing key, the
notifier, the authorization_details registry and one clock.

Both issuer strategies (``embedded`` and ``keycloak``) and the approval flow take a
:class:`ServerContext`; nothing here depends on the mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt

from ciba_service.config import Settings
from ciba_service.core.model import BackchannelRequest, User
from ciba_service.core.params import Params
from ciba_service.jose.client_assertion import SpiffeBundle
from ciba_service.rfc9396 import TypeRegistry, describe_entry
from ciba_service.server.backchannel import RequestContext
from ciba_service.server.client_auth import AssertionContext, AuthenticatedClient, authenticate_client
from ciba_service.server.client_secrets import ClientSecretVerifier
from ciba_service.server.events import Events, NoEvents
from ciba_service.server.notify import ApprovalNotice, Notifier
from ciba_service.server.tokens import SigningKey
from ciba_service.store.base import Store

__all__ = ["ServerContext"]


@dataclass(kw_only=True)
class ServerContext:
    settings: Settings
    store: Store
    signing_key: SigningKey
    notifier: Notifier
    clock: Callable[[], float] = time.time
    # Client secret checks: fast digests, and a cache and failure limit for legacy scrypt hashes.
    client_secrets: ClientSecretVerifier = field(default_factory=ClientSecretVerifier)
    # Decisions and deliveries, for metrics (the web layer plugs in Prometheus counters).
    events: Events = field(default_factory=NoEvents)
    registry: TypeRegistry = field(init=False)
    spiffe: SpiffeBundle | None = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.registry = TypeRegistry.from_config(
            settings.authorization_details_types, include_defaults=settings.include_default_types
        )
        for client in settings.clients:
            unknown = [t for t in client.authorization_details_types if t not in self.registry.types]
            if unknown:
                # A typo here would silently leave the agent unable to request anything.
                raise ValueError(f"client {client.client_id} lists unknown authorization_details types {unknown}")
        self.spiffe = (
            SpiffeBundle.load(settings.spiffe_bundle_path, trust_domain=settings.spiffe_trust_domain)
            if settings.spiffe_bundle_path
            else None
        )

    def now(self) -> int:
        return int(self.clock())

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def audiences(self) -> tuple[str, ...]:
        # RFC 7523 3 / CIBA 7.1.1: the issuer identifier, or the endpoint the JWT is sent to.
        iss = self.settings.issuer
        return (iss, f"{iss}/token", f"{iss}/bc-authorize")

    def use_once(self, key: str, expires_at: int) -> bool:
        return self.store.use_once(key, expires_at=expires_at, now=self.now())

    def authenticate_client(self, params: Params, authorization: str | None) -> AuthenticatedClient:
        context = AssertionContext(
            now=self.now(), audiences=self.audiences(), use_once=self.use_once, spiffe=self.spiffe
        )
        return authenticate_client(
            settings=self.settings,
            params=params,
            authorization=authorization,
            context=context,
            secrets=self.client_secrets,
        )

    def request_context(self) -> RequestContext:
        return RequestContext(
            issuer=self.settings.issuer,
            audiences=self.audiences(),
            now=self.now(),
            use_once=self.use_once,
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

    def notice_for(self, request: BackchannelRequest, user: User) -> ApprovalNotice:
        """What the user is told on their decoupled device: the link and the action in words."""
        return ApprovalNotice(
            username=user.username,
            client_id=request.client_id,
            client_name=request.client_name,
            binding_message=request.binding_message,
            actions=[describe_entry(e, registry=self.registry) for e in request.authorization_details],
            approval_url=f"{self.settings.public_base_url}/approve/{request.approval_id}",
            expires_at=request.expires_at,
        )
