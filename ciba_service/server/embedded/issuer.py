"""Embedded mode: this service is the CIBA OpenID Provider and signs the tokens itself."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from ciba_service.core.errors import ChannelError, InvalidGrant, UnknownUserId
from ciba_service.core.model import BackchannelRequest, CallbackState, RequestStatus, User
from ciba_service.core.params import Params
from ciba_service.core.security import auth_req_id_key, new_ids, time_prefix
from ciba_service.jose.client_assertion import ASSERTION_ALGORITHMS
from ciba_service.server.backchannel import Hint, validate_backchannel_request
from ciba_service.server.context import ServerContext
from ciba_service.server.delivery import NotificationSender
from ciba_service.server.discovery import common_metadata
from ciba_service.server.grant import CibaGrant
from ciba_service.server.introspection import introspect
from ciba_service.server.issuer import BackchannelResult, ChannelResult, TokenResult
from ciba_service.server.outbox import Outbox
from ciba_service.server.user_code import UserCodes

__all__ = ["EmbeddedIssuer"]

log = logging.getLogger("ciba_service.server.embedded")


class EmbeddedIssuer:
    mode = "embedded"

    def __init__(self, context: ServerContext) -> None:
        self._context = context
        self.grant = CibaGrant(context)
        self.user_codes = UserCodes(context)
        self.outbox = Outbox(context)
        settings = context.settings
        self.sender = NotificationSender(timeout=settings.notification_timeout, attempts=settings.notification_attempts)
        # Deliveries run on their own threads so the user's Approve answers at once; tests
        # may set this to False and call deliver() themselves.
        self.deliver_in_background = True

    # discovery ----------------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        settings = self._context.settings
        iss = settings.issuer
        return {
            "issuer": iss,
            **common_metadata(self._context),
            "token_endpoint": f"{iss}/token",
            "jwks_uri": f"{iss}/jwks.json",
            "introspection_endpoint": f"{iss}/introspect",
            "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
            "backchannel_user_code_parameter_supported": settings.backchannel_user_code_parameter_supported,
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
            "id_token_signing_alg_values_supported": ["ES256"],
            "access_token_signing_alg_values_supported": ["ES256"],
        }

    def jwks(self) -> dict[str, Any]:
        return dict(self._context.signing_key.jwks())

    # the agent's request (CIBA 7) ------------------------------------------------------
    def resolve_user(self, hint: Hint) -> User:
        # One store read: the user and whether they hold a passkey.
        if hint.kind == "user_id":
            found = self._context.store.find_approver(user_id=hint.value)
            shown = found[0].username if found else hint.value
        else:
            found = self._context.store.find_approver(username=hint.value)
            shown = hint.value
        if found is None:
            raise UnknownUserId(f"no enabled user matches the hint '{shown}'")
        user, has_passkey = found
        if not user.enabled:
            # The client is authenticated; an operator disabled this user (`users disable`).
            raise UnknownUserId(f"user '{shown}' is disabled and cannot be asked to approve")
        if not has_passkey:
            raise UnknownUserId(f"user '{shown}' has no passkey enrolled and cannot approve")
        return user

    def backchannel_authenticate(self, params: Params, authorization: str | None) -> BackchannelResult:
        context = self._context
        client = context.authenticate_client(params, authorization)
        validated = validate_backchannel_request(
            params=params,
            client=client,
            settings=context.settings,
            registry=context.registry,
            context=context.request_context(),
        )
        user = self.resolve_user(validated.hint)
        self.user_codes.check(user, validated.user_code)
        now = context.now()
        # One read of the random source for the four ids: auth_req_id 256 bits (CIBA 7.3 asks
        # for unguessable), request id, approval id (256 bits) and nonce. The three the store
        # indexes start with the time they were made (time_prefix: each index grows at one end).
        auth_req_id, request_id, approval_id, nonce = new_ids(32, 16, 32, 16)
        made = time_prefix()
        auth_req_id, request_id, approval_id = made + auth_req_id, made + request_id, made + approval_id
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
            request_id=request_id,
            auth_req_id_hash=auth_req_id_key(auth_req_id),
            approval_id=approval_id,
            client_id=client.client.client_id,
            client_name=client.client.name or client.client.client_id,
            user_id=user.user_id,
            scope=validated.scope,
            binding_message=validated.binding_message,
            authorization_details=validated.authorization_details,
            created_at=now,
            expires_at=now + validated.expires_in,
            interval=context.settings.poll_interval,
            nonce=nonce,
            upstream=upstream,
        )
        notice = None
        if self.outbox.needed:
            notice = context.notice_for(request, user)
            # The notice goes into the store with the request, in one step: once the agent has
            # its auth_req_id, the user is sure to be told, even if this process dies right after.
            context.store.add_request(request, outbox=self.outbox.entry(request, notice))
        else:
            # The notifier tells nobody (``none``): no notice to write, send or delete.
            context.store.add_request(request)
        response: dict[str, Any] = {"auth_req_id": auth_req_id, "expires_in": validated.expires_in}
        if mode != "push":  # CIBA 7.3: interval only where the client polls
            response["interval"] = request.interval
        return BackchannelResult(response=response, notice=notice, request=request)

    # token endpoint and introspection ---------------------------------------------------
    def token(self, params: Params, authorization: str | None, dpop_proofs: list[str]) -> TokenResult:
        return TokenResult(body=self.grant.token(params, authorization, dpop_proofs))

    def introspect(self, params: Params, authorization: str | None) -> dict[str, Any]:
        return introspect(self._context, params, authorization)

    def channel(self, authorization: str | None, body: Mapping[str, Any]) -> ChannelResult:
        raise ChannelError(404, "this service runs in embedded mode: it has no Keycloak authentication channel")

    # after the user's decision ------------------------------------------------------------
    def before_approve(self, request: BackchannelRequest) -> None:
        return None  # users and passkeys are this service's own: nothing to refresh

    def after_decision(self, request_id: str) -> None:
        """Tell the client about the decision at once in ping and push modes."""
        request = self._context.store.get_request(request_id)
        if request is None or request.upstream.get("delivery") not in ("ping", "push"):
            return
        if self.deliver_in_background:
            threading.Thread(target=self.deliver, args=(request_id,), daemon=True).start()
        else:
            self.deliver(request_id)

    def deliver(self, request_id: str) -> bool:
        """Ping (``{auth_req_id}``) or push (the token response) to the client, once."""
        store = self._context.store
        request = store.get_request(request_id)
        if request is None or not store.claim_callback(request_id):
            return False
        upstream = request.upstream
        auth_req_id = str(upstream.get("auth_req_id"))
        payload: dict[str, Any] = {"auth_req_id": auth_req_id}
        if upstream.get("delivery") == "push":
            if request.status is RequestStatus.APPROVED:
                try:
                    payload.update(self.grant.issue_tokens(request, auth_req_id))
                except InvalidGrant:
                    payload.update(error="transaction_failed", error_description="token already issued")
            elif request.status is RequestStatus.DENIED:
                payload.update(error="access_denied", error_description="the user denied the request")
            else:
                payload.update(error="expired_token", error_description="the authentication request has expired")
        elif request.status not in (RequestStatus.APPROVED, RequestStatus.DENIED):
            # Ping mode on expiry: nothing to fetch; the client's own expires_in tells it.
            store.set_callback_state(request_id, CallbackState.SENT)
            return False
        result = self.sender.send(
            str(upstream.get("endpoint")), bearer=str(upstream.get("notification_token")), payload=payload
        )
        store.set_callback_state(request_id, CallbackState.SENT if result.delivered else CallbackState.FAILED)
        self._context.events.delivery(
            str(upstream.get("delivery")), delivered=result.delivered, attempts=result.attempts
        )
        if not result.delivered:
            log.warning("%s delivery for %s failed: %s", upstream.get("delivery"), request_id, result.reason)
        return result.delivered

    def sweep_expired(self) -> int:
        """Deliver what is due: decisions not yet delivered (e.g. after a restart) and push
        notifications of expiry. Returns how many deliveries succeeded."""
        context = self._context
        return sum(1 for r in context.store.pending_notifications(now=context.now()) if self.deliver(r.request_id))

    def offers_enrollment(self) -> bool:
        return True

    def set_user_code(self, user: User, code: str | None) -> None:
        self.user_codes.set(user, code)

    def close(self) -> None:
        return None
