"""Step 1 of keycloak mode: the agent's ``/bc-authorize`` is checked as in embedded mode as far
as the checks do not depend on who the client is (syntax, the type registry, limits), the intent
(the full ``authorization_details``) is stored, and the request is forwarded to Keycloak's CIBA
endpoint with the agent's own client authentication and a short ``intent`` reference. Keycloak
authenticates the client; the client's own policy (its scopes and authorization_details types)
is applied in the channel step (:mod:`.channel`), and a refusal there reaches the agent as the
same precise error. Keycloak's answer goes back to the agent unchanged otherwise. The token
endpoint is Keycloak's; requests sent to ours are relayed unchanged."""

from __future__ import annotations

import re
from typing import Any

import httpx

from ciba_service.core.errors import (
    InvalidBindingMessage,
    InvalidClient,
    InvalidRequest,
    TemporarilyUnavailable,
    UnsupportedGrantType,
)
from ciba_service.core.model import Intent
from ciba_service.core.params import Params
from ciba_service.core.protocol import CIBA_GRANT_TYPE
from ciba_service.core.security import new_id, sha256_b64url
from ciba_service.server.backchannel import (
    check_authorization_details,
    check_binding_message,
    check_one_hint,
    check_requested_expiry,
    check_scope,
    check_unsupported_parameters,
)
from ciba_service.server.client_auth import parse_basic
from ciba_service.server.context import ServerContext
from ciba_service.server.issuer import BackchannelResult, TokenResult
from ciba_service.server.keycloak.channel import INTENT_PARAMETER, Refusals

__all__ = ["Forwarder", "identify_client"]

# Keycloak 26 BackchannelAuthenticationEndpoint.BINDING_MESSAGE_VALIDATION.
_KEYCLOAK_BINDING_MESSAGE = re.compile(r"[a-zA-Z0-9\-._+/!?#]{1,50}")
# Keycloak's CIBA takes login_hint only, a signed request would hide the authorization_details
# from us, and a user_code would not be checked by anyone: refused rather than half-supported
# (a client relying on a user_code must not believe a protection is in place when it is not).
_UNSUPPORTED = ("login_hint_token", "id_token_hint", "request", "user_code")


def identify_client(params: Params, authorization: str | None) -> tuple[str, dict[str, str], dict[str, str]]:
    """The client id, and the client authentication to pass through unchanged.

    Keycloak verifies the credentials; we only need to know which client claims to speak so we
    can bind the intent (and through it the channel call, where Keycloak's token proves who it
    is) to that client."""
    form_secret = params.optional("client_secret")
    form_id = params.optional("client_id")
    if authorization:
        if form_secret is not None:
            raise InvalidRequest("more than one client authentication method used")
        client_id, _ = parse_basic(authorization)
        if form_id is not None and form_id != client_id:
            raise InvalidRequest("client_id parameter differs from the authenticated client")
        return client_id, {"Authorization": authorization}, {}
    if form_id is None:
        raise InvalidClient("client authentication is required")
    form = {"client_id": form_id}
    if form_secret is not None:
        form["client_secret"] = form_secret
    for name in ("client_assertion", "client_assertion_type"):
        extra = params.optional(name)
        if extra is not None:
            form[name] = extra
    if len(form) == 1:
        raise InvalidClient("client authentication is required")
    return form_id, {}, form


def _unreachable(exc: httpx.HTTPError) -> TemporarilyUnavailable:
    return TemporarilyUnavailable(f"the identity provider is unreachable ({type(exc).__name__}); retry later")


class Forwarder:
    def __init__(self, context: ServerContext, *, http: httpx.Client, oidc: str, refusals: Refusals) -> None:
        self._context = context
        self._http = http
        self._oidc = oidc
        self._refusals = refusals

    def backchannel_authenticate(self, params: Params, authorization: str | None) -> BackchannelResult:
        context = self._context
        store = context.store
        client_id, auth_headers, auth_form = identify_client(params, authorization)
        for unsupported in _UNSUPPORTED:
            if unsupported in params:
                hint = "; use login_hint" if unsupported.endswith("hint") or unsupported == "request" else ""
                raise InvalidRequest(f"'{unsupported}' is not supported in keycloak mode{hint}")
        # Only checks that do not depend on who the client is, since Keycloak has not
        # authenticated it yet: its policy (scopes, authorization_details types) is applied in
        # the channel step, so a caller with a wrong secret learns nothing about it.
        check_unsupported_parameters(params, settings=context.settings)
        scope = check_scope(params, None)
        check_one_hint(params)  # login_hint: the others were refused above
        login_hint = params.required("login_hint")
        binding_message = check_binding_message(params, max_length=context.settings.binding_message_max_length)
        expires_in = check_requested_expiry(
            params, default=context.settings.request_expiry_default, maximum=context.settings.request_expiry_max
        )
        details = check_authorization_details(params, None, registry=context.registry, settings=context.settings)
        if binding_message is not None and not _KEYCLOAK_BINDING_MESSAGE.fullmatch(binding_message):
            # Keycloak refuses the whole request otherwise; saying so here is more precise.
            raise InvalidBindingMessage(
                "in keycloak mode binding_message must be 1-50 characters of letters, digits and -._+/!?# "
                "(no spaces), as Keycloak requires"
            )
        now = context.now()
        intent = Intent(
            intent_id=new_id(16),
            client_id=client_id,
            login_hint=login_hint,
            scope=scope,
            binding_message=binding_message,
            authorization_details=details,
            created_at=now,
            expires_at=now + expires_in,
        )
        # Stored before forwarding: Keycloak calls the channel while it handles the request.
        store.add_intent(intent)
        form = {
            "scope": scope,
            "login_hint": login_hint,
            INTENT_PARAMETER: intent.intent_id,
            **auth_form,
        }
        if binding_message is not None:
            form["binding_message"] = binding_message
        if params.optional("requested_expiry") is not None:
            form["requested_expiry"] = str(expires_in)
        for name in ("acr_values", "client_notification_token"):
            value = params.optional(name)
            if value is not None:
                form[name] = value
        try:
            response = self._http.post(f"{self._oidc}/ext/ciba/auth", data=form, headers=auth_headers)
        except httpx.HTTPError as exc:
            # Nothing half-done is left behind: the intent (and any approval the channel
            # already started under its id) goes; the agent may simply retry.
            self._discard(intent.intent_id)
            raise _unreachable(exc) from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        # Taken whatever Keycloak answered (it is recorded only when the channel refused).
        refusal = self._refusals.take(intent.intent_id)
        if response.status_code >= 500 or not isinstance(body, dict) or not body:
            self._discard(intent.intent_id)
            if refusal is not None:
                # The channel refused (on whichever instance Keycloak called): the precise
                # error instead of Keycloak's "503 server_error". Only reached once Keycloak has
                # authenticated the client, since Keycloak calls the channel only then.
                raise refusal
            raise TemporarilyUnavailable(f"the identity provider failed (HTTP {response.status_code}); retry later")
        if response.status_code != 200:
            self._discard(intent.intent_id)
        elif "auth_req_id" in body:
            request = store.get_request(intent.intent_id)
            if request is not None:
                # Keycloak's auth_req_id, hashed: lets audits join our receipt to its request.
                upstream = {**request.upstream, "auth_req_id_hash": sha256_b64url(str(body["auth_req_id"]))}
                store.set_upstream(request.request_id, upstream)
        # Keycloak's answer goes back unchanged; the channel call already notified the user.
        return BackchannelResult(
            response=body, notice=None, request=None, status_code=response.status_code, relayed=True
        )

    def _discard(self, intent_id: str) -> None:
        self._context.store.delete_intent(intent_id)
        self._context.store.delete_request(intent_id)

    def token(self, params: Params, authorization: str | None) -> TokenResult:
        """Relay a token request to Keycloak's token endpoint (the one discovery names)."""
        grant_type = params.optional("grant_type")
        if grant_type != CIBA_GRANT_TYPE:
            raise UnsupportedGrantType(f"grant_type '{grant_type}' is not supported here")
        headers = {"Authorization": authorization} if authorization else {}
        try:
            response = self._http.post(f"{self._oidc}/token", data=dict(params.items()), headers=headers)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise TemporarilyUnavailable(f"identity provider answered {response.status_code}") from None
        return TokenResult(body=body, status_code=response.status_code, relayed=True)
