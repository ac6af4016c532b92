"""The authorization server as the web layer sees it: one method per endpoint, the same in
both modes. What differs between modes is the :class:`~ciba_service.server.issuer.Issuer`
strategy it holds (embedded or keycloak); the approval itself (the page, the passkey
assertion, the receipt) is shared.

The web layer (``ciba_service.web``) only turns HTTP into calls to :class:`Provider` and its
results or :class:`~ciba_service.core.errors.OAuthError` back into HTTP; it never asks which
mode it is in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ciba_service.config import Settings
from ciba_service.core.errors import ApprovalNotFound
from ciba_service.core.model import User
from ciba_service.core.params import Params
from ciba_service.core.security import is_slow_hash
from ciba_service.rfc9396 import TypeRegistry
from ciba_service.server.approval import Approvals, Enrollments
from ciba_service.server.context import ServerContext
from ciba_service.server.issuer import BackchannelResult, ChannelResult, Issuer, TokenResult
from ciba_service.server.notify import ApprovalNotice, Notifier
from ciba_service.server.outbox import Outbox
from ciba_service.server.tokens import SigningKey
from ciba_service.store.base import Store

__all__ = ["Provider"]


class Provider:
    def __init__(self, *, context: ServerContext, issuer: Issuer) -> None:
        self.context = context
        self.issuer = issuer
        self.approvals = Approvals(context, before_approve=issuer.before_approve, after_decision=issuer.after_decision)
        self.enrollments = Enrollments(context)
        self.outbox = Outbox(context)
        # Seconds between background sweeps (expiry, undelivered notifications); 0 disables.
        self.sweep_interval = 2.0

    # what callers (CLI, tests, the web layer's lifespan) reach for -----------------------
    @property
    def mode(self) -> str:
        return self.issuer.mode

    @property
    def settings(self) -> Settings:
        return self.context.settings

    @property
    def store(self) -> Store:
        return self.context.store

    @property
    def signing_key(self) -> SigningKey:
        return self.context.signing_key

    @property
    def notifier(self) -> Notifier:
        return self.context.notifier

    @property
    def registry(self) -> TypeRegistry:
        return self.context.registry

    def now(self) -> int:
        return self.context.now()

    @property
    def serves_inline(self) -> bool:
        """Whether the endpoint calls finish without waiting on a network or a slow KDF (embedded
        mode on a local store: CPU and SQLite statements of microseconds), so the web layer may
        make them on its event loop instead of hopping to a thread per request. Keycloak mode
        (HTTP to Keycloak) and a Redis store keep the hop, and so does a client with a legacy
        ``scrypt$`` secret (its first check takes ~70 ms, which would stall every request)."""
        return (
            self.issuer.mode == "embedded"
            and self.store.serves_inline
            and not any(is_slow_hash(c.client_secret_hash or "") for c in self.settings.clients)
        )

    # the OAuth endpoints -------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        return self.issuer.discovery()

    def jwks(self) -> dict[str, Any]:
        return self.issuer.jwks()

    def backchannel_authenticate(self, params: Params, authorization: str | None) -> BackchannelResult:
        return self.issuer.backchannel_authenticate(params, authorization)

    def token(self, params: Params, authorization: str | None, dpop_proofs: list[str] | None = None) -> TokenResult:
        return self.issuer.token(params, authorization, dpop_proofs or [])

    def introspect(self, params: Params, authorization: str | None) -> dict[str, Any]:
        return self.issuer.introspect(params, authorization)

    def channel(self, authorization: str | None, body: Mapping[str, Any]) -> ChannelResult:
        return self.issuer.channel(authorization, body)

    # the user's notice --------------------------------------------------------------------
    def send_notice(self, request_id: str, notice: ApprovalNotice) -> None:
        """Send the notice of a request this instance just created (off the request path, after
        answering); its outbox entry is deleted once the notifier confirms delivery."""
        self.outbox.send(request_id, notice)

    # the user's side ----------------------------------------------------------------------
    def approval_view(self, approval_id: str) -> dict[str, Any]:
        return self.approvals.view(approval_id)

    def approve(self, approval_id: str, credential: dict[str, Any]) -> dict[str, Any]:
        return self.approvals.approve(approval_id, credential)

    def deny(self, approval_id: str) -> dict[str, Any]:
        return self.approvals.deny(approval_id)

    def verify_receipt(self, receipt_id: str) -> dict[str, Any]:
        return self.approvals.verify_receipt(receipt_id)

    # users and enrollment (embedded mode) ---------------------------------------------------
    def _enrollments(self) -> Enrollments:
        if not self.issuer.offers_enrollment():
            # Keycloak mode: passkeys are registered in Keycloak and mirrored from there.
            raise ApprovalNotFound("enrollment is Keycloak's in keycloak mode: register the passkey in Keycloak")
        return self.enrollments

    def add_user(self, *, username: str, display_name: str | None = None) -> tuple[User, str]:
        return self._enrollments().add_user(username=username, display_name=display_name)

    def new_enrollment_link(self, user: User) -> str:
        return self._enrollments().new_link(user)

    def enrollment_view(self, token: str) -> dict[str, Any]:
        return self._enrollments().view(token)

    def enrollment_options(self, token: str) -> dict[str, Any]:
        return self._enrollments().options(token)

    def complete_enrollment(self, token: str, credential: dict[str, Any]) -> dict[str, Any]:
        return self._enrollments().complete(token, credential)

    def set_user_code(self, user: User, code: str | None) -> None:
        self.issuer.set_user_code(user, code)

    # housekeeping ---------------------------------------------------------------------------
    def sweep_expired(self) -> int:
        """The periodic sweep: the issuer's (expiry, interrupted deliveries), then the users'
        notices left undelivered (see :meth:`sweep_notices`). Returns how many things it did."""
        return self.issuer.sweep_expired() + self.sweep_notices()

    def sweep_notices(self) -> int:
        """Send the notices whose lease ran out undelivered (a crashed instance's, a failed
        delivery's), on behalf of any instance sharing the store; drop those of requests no
        longer pending. Returns how many were sent again."""
        return self.outbox.sweep()

    def close(self) -> None:
        """Release what the issuer holds (keycloak: its HTTP client); the store is the caller's."""
        self.issuer.close()
