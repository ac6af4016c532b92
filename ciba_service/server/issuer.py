"""The issuer strategy: who mints the token, and everything that follows from it.

The web layer calls :class:`~ciba_service.server.provider.Provider` for every endpoint in both
modes; the provider hands the mode-dependent steps to one :class:`Issuer`:

- ``embedded`` (:class:`~ciba_service.server.embedded.EmbeddedIssuer`): this service is the
  OpenID Provider; it keeps the request, runs the CIBA grant, mints and introspects tokens,
  and delivers ping/push notifications.
- ``keycloak`` (:class:`~ciba_service.server.keycloak.KeycloakIssuer`): Keycloak is the
  OpenID Provider; this service forwards the request, is Keycloak's authentication channel
  and sends the decision callback.

A mode that does not offer an endpoint says so in its discovery document and answers that
endpoint with :class:`~ciba_service.core.errors.NotOffered`, never with the other mode's
behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ciba_service.core.model import BackchannelRequest, User
from ciba_service.core.params import Params
from ciba_service.server.notify import ApprovalNotice

__all__ = ["BackchannelResult", "ChannelResult", "Issuer", "TokenResult"]


@dataclass(frozen=True, kw_only=True)
class BackchannelResult:
    response: dict[str, Any]
    # The notice to send the request's user (already in the store's outbox, leased to this
    # instance); None when nothing is to be sent from here (keycloak mode: the channel sends; a
    # notifier that tells nobody: nothing is sent at all).
    notice: ApprovalNotice | None
    request: BackchannelRequest | None
    status_code: int = 200
    # The answer was relayed from the identity provider (keycloak mode), not made here.
    relayed: bool = False


@dataclass(frozen=True, kw_only=True)
class ChannelResult:
    """An accepted authentication-channel call (keycloak mode): the request it created, and the
    notice to send its user (already in the store's outbox, leased to this instance)."""

    request_id: str
    notice: ApprovalNotice


@dataclass(frozen=True, kw_only=True)
class TokenResult:
    body: dict[str, Any]
    status_code: int = 200
    relayed: bool = False


class Issuer(Protocol):
    """The mode-dependent half of the authorization server."""

    mode: str

    def discovery(self) -> dict[str, Any]:
        """The discovery document, naming only the endpoints this mode serves."""

    def jwks(self) -> dict[str, Any]:
        """The keys that verify this mode's tokens, or NotOffered."""

    def backchannel_authenticate(self, params: Params, authorization: str | None) -> BackchannelResult: ...

    def token(self, params: Params, authorization: str | None, dpop_proofs: list[str]) -> TokenResult: ...

    def introspect(self, params: Params, authorization: str | None) -> dict[str, Any]: ...

    def channel(self, authorization: str | None, body: Mapping[str, Any]) -> ChannelResult:
        """Keycloak's HTTP authentication channel; ChannelError for a refusal."""

    def before_approve(self, request: BackchannelRequest) -> None:
        """Refresh what the approval relies on (the user and their passkeys)."""

    def after_decision(self, request_id: str) -> None:
        """Tell whoever waits (the agent, or Keycloak) about the decision."""

    def sweep_expired(self) -> int:
        """Periodic work: expiry and deliveries a restart interrupted."""

    def offers_enrollment(self) -> bool: ...

    def set_user_code(self, user: User, code: str | None) -> None:
        """CIBA 7.1 user_code for ``user`` (None removes it), or NotOffered."""

    def close(self) -> None: ...
