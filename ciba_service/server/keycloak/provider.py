"""Keycloak mode: Keycloak is the OpenID Provider and token issuer; this service is its
companion (DESIGN.md, "Two modes, one API").

1. ``/bc-authorize`` validates the agent's request exactly as in embedded mode, stores the
   intent (the full ``authorization_details``) and forwards the request to Keycloak's CIBA
   endpoint with the agent's own client authentication and a short ``intent`` reference.
   Keycloak's answer goes back to the agent unchanged.
2. Keycloak calls the HTTP authentication channel (``POST /keycloak/auth-channel``) while it
   handles that request. We verify its bearer token, bind the call to the stored intent
   (client and user must match), mirror the user's passkeys from the admin API, answer 201 and
   run the same approval as embedded mode.
3. After the decision we call ``/ext/ciba/auth/callback`` exactly once: ``SUCCEED`` with the
   approved ``authorization_details`` and the approval reference as extra parameters (the
   ``ciba-session-note-json-mapper`` extension copies them into the access token),
   ``UNAUTHORIZED`` on denial. Nothing on expiry: Keycloak expires the request itself and the
   agent gets ``expired_token`` (a ``CANCELLED`` callback would turn that into ``access_denied``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt

from ciba_service.config import ClientConfig, Settings
from ciba_service.core.errors import (
    AssertionRejected,
    InvalidBindingMessage,
    InvalidClient,
    InvalidRequest,
    TemporarilyUnavailable,
    UnknownUserId,
    UnsupportedGrantType,
)
from ciba_service.core.model import BackchannelRequest, CallbackState, Intent, Passkey, RequestStatus, User
from ciba_service.core.params import Params
from ciba_service.core.protocol import CIBA_GRANT_TYPE
from ciba_service.core.security import new_id, sha256_b64url
from ciba_service.jose.jwks import JwksCache, JwksUnavailable
from ciba_service.server.backchannel import validate_backchannel_request
from ciba_service.server.client_auth import AuthenticatedClient, parse_basic
from ciba_service.server.notify import ApprovalNotice, Notifier
from ciba_service.server.provider import BackchannelResult, Provider
from ciba_service.server.tokens import SigningKey
from ciba_service.store.base import Store

__all__ = [
    "ChannelError",
    "KeycloakAdmin",
    "KeycloakProvider",
    "passkey_from_keycloak",
]

log = logging.getLogger("ciba_service.server.keycloak.provider")

# The extra CIBA request parameter that carries our reference through Keycloak. Keycloak
# passes extra parameters of up to 200 characters to the channel as top-level JSON members.
INTENT_PARAMETER = "intent"
# Callback parameter names; Keycloak stores them as client-session notes
# `ciba_callback_response_param_<name>`, which the mapper turns into claims.
CALLBACK_AUTHORIZATION_DETAILS = "authorization_details"
CALLBACK_APPROVAL = "approval"
PASSKEY_CREDENTIAL_TYPE = "webauthn-passwordless"
# Keycloak 26 BackchannelAuthenticationEndpoint.BINDING_MESSAGE_VALIDATION.
_KEYCLOAK_BINDING_MESSAGE = re.compile(r"[a-zA-Z0-9\-._+/!?#]{1,50}")


class ChannelError(Exception):
    """A refused authentication-channel call; Keycloak sees the status code."""

    def __init__(self, status_code: int, description: str, *, unknown_user: bool = False) -> None:
        super().__init__(description)
        self.status_code = status_code
        self.description = description
        # The refusal means the user cannot approve: the agent is told unknown_user_id.
        self.unknown_user = unknown_user


def _b64_any(value: str) -> bytes:
    """Keycloak stores ``credentialId`` in standard base64 and the COSE key in base64url."""
    padded = value + "=" * (-len(value) % 4)
    if "-" in value or "_" in value:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded)


def passkey_from_keycloak(credential: Mapping[str, Any], *, user_id: str) -> Passkey | None:
    """Convert one admin-API credential representation; None if it is not a usable passkey."""
    if credential.get("type") != PASSKEY_CREDENTIAL_TYPE:
        return None
    try:
        data = json.loads(str(credential.get("credentialData") or "{}"))
        return Passkey(
            credential_id=_b64_any(str(data["credentialId"])),
            user_id=user_id,
            public_key=_b64_any(str(data["credentialPublicKey"])),
            sign_count=int(data.get("counter", 0)),
            transports=[],
            created_at=int(credential.get("createdDate", 0)) // 1000,
        )
    except (KeyError, ValueError, TypeError, binascii.Error):
        log.warning("unreadable WebAuthn credential %s of user %s", credential.get("id"), user_id)
        return None


class KeycloakAdmin:
    """The two admin-API reads we need, as the companion's service account.

    We talk to the admin API with httpx rather than python-keycloak: python-keycloak's
    synchronous client is built on ``requests`` (a second HTTP stack that respx cannot stub)
    and its asynchronous one would pull the protocol core onto asyncio, for two GETs.
    """

    def __init__(
        self,
        *,
        base_url: str,
        realm: str,
        client_id: str,
        client_secret: str,
        http: httpx.Client,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = base_url
        self._realm = realm
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = http
        self._clock = clock
        self._token: str | None = None
        self._token_exp = 0.0
        self._lock = threading.Lock()

    def _access_token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() > self._token_exp - 30:
                response = self._http.post(
                    f"{self._base}/realms/{self._realm}/protocol/openid-connect/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self._client_id, self._client_secret),
                )
                if response.status_code != 200:
                    raise httpx.HTTPStatusError(
                        f"service-account token refused: {response.status_code}",
                        request=response.request,
                        response=response,
                    )
                body = response.json()
                self._token = str(body["access_token"])
                self._token_exp = self._clock() + int(body.get("expires_in", 60))
            return self._token

    def _get(self, path: str) -> httpx.Response:
        url = f"{self._base}/admin/realms/{self._realm}{path}"
        response = self._http.get(url, headers={"Authorization": f"Bearer {self._access_token()}"})
        if response.status_code == 401:  # token revoked or expired early: one fresh try
            with self._lock:
                self._token = None
            response = self._http.get(url, headers={"Authorization": f"Bearer {self._access_token()}"})
        return response

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        response = self._get(f"/users/{user_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        user: dict[str, Any] = response.json()
        return user

    def get_credentials(self, user_id: str) -> list[dict[str, Any]]:
        response = self._get(f"/users/{user_id}/credentials")
        response.raise_for_status()
        credentials: list[dict[str, Any]] = response.json()
        return credentials


def identify_client(params: Params, authorization: str | None) -> tuple[str, dict[str, str], dict[str, str]]:
    """The client id, and the client authentication to pass through unchanged.

    Keycloak verifies the credentials; we only need to know which client speaks so we can
    apply its authorization_details policy and bind the channel call to it."""
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


class KeycloakProvider(Provider):
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        signing_key: SigningKey,
        notifier: Notifier,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(settings=settings, store=store, signing_key=signing_key, notifier=notifier, clock=clock)
        kc = settings.keycloak
        self.kc = kc
        # Redirects are never followed: every URL here is configured, a redirect is an error.
        self.http = http or httpx.Client(timeout=kc.timeout, follow_redirects=False)
        self.admin = KeycloakAdmin(
            base_url=kc.base_url,
            realm=kc.realm,
            client_id=kc.admin_client_id,
            client_secret=kc.admin_client_secret,
            http=self.http,
            clock=clock,
        )
        self.oidc = f"{kc.issuer}/protocol/openid-connect"
        self._jwks = JwksCache(f"{self.oidc}/certs", client=self.http, timeout=kc.timeout)
        self._synced: dict[str, float] = {}
        self._refusals: dict[str, ChannelError] = {}
        self._lock = threading.Lock()
        self._sleep = sleep

    # discovery: Keycloak issues the tokens, so its issuer, token endpoint and keys are named.
    def discovery(self) -> dict[str, Any]:
        document = super().discovery()
        document.update(
            issuer=self.kc.issuer,
            token_endpoint=f"{self.oidc}/token",
            jwks_uri=f"{self.oidc}/certs",
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
            id_token_signing_alg_values_supported=["RS256"],
            access_token_signing_alg_values_supported=["RS256"],
        )
        return document

    # 1. the agent's request -------------------------------------------------------------
    def backchannel_authenticate(self, params: Params, authorization: str | None) -> BackchannelResult:
        client_id, auth_headers, auth_form = identify_client(params, authorization)
        for unsupported in ("login_hint_token", "id_token_hint", "request"):
            if unsupported in params:
                # Keycloak's CIBA takes login_hint only, and a signed request would hide the
                # authorization_details from us; refused rather than half-supported.
                raise InvalidRequest(f"'{unsupported}' is not supported in keycloak mode; use login_hint")
        policy = self.settings.client(client_id) or ClientConfig(
            client_id=client_id, scopes=["openid", "profile", "email"]
        )
        validated = validate_backchannel_request(
            params=params,
            client=AuthenticatedClient(client=policy, method="passthrough"),
            settings=self.settings,
            registry=self.registry,
            context=self.request_context(),
        )
        if validated.binding_message is not None and not _KEYCLOAK_BINDING_MESSAGE.fullmatch(validated.binding_message):
            # Keycloak refuses the whole request otherwise; saying so here is more precise.
            raise InvalidBindingMessage(
                "in keycloak mode binding_message must be 1-50 characters of letters, digits and -._+/!?# "
                "(no spaces), as Keycloak requires"
            )
        now = self.now()
        intent = Intent(
            intent_id=new_id(16),
            client_id=client_id,
            login_hint=validated.login_hint,
            scope=validated.scope,
            binding_message=validated.binding_message,
            authorization_details=validated.authorization_details,
            created_at=now,
            expires_at=now + validated.expires_in,
        )
        # Stored before forwarding: Keycloak calls the channel while it handles the request.
        self.store.add_intent(intent)
        form = {
            "scope": validated.scope,
            "login_hint": validated.login_hint,
            INTENT_PARAMETER: intent.intent_id,
            **auth_form,
        }
        if validated.binding_message is not None:
            form["binding_message"] = validated.binding_message
        if params.optional("requested_expiry") is not None:
            form["requested_expiry"] = str(validated.expires_in)
        for name in ("acr_values", "client_notification_token"):
            value = params.optional(name)
            if value is not None:
                form[name] = value
        try:
            response = self.http.post(f"{self.oidc}/ext/ciba/auth", data=form, headers=auth_headers)
        except httpx.HTTPError as exc:
            # Nothing half-done is left behind: the intent (and any approval the channel
            # already started under its id) goes; the agent may simply retry.
            self._discard(intent.intent_id)
            raise TemporarilyUnavailable(
                f"the identity provider is unreachable ({type(exc).__name__}); retry later"
            ) from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {}
        with self._lock:
            refusal = self._refusals.pop(intent.intent_id, None)
        if response.status_code >= 500 or not isinstance(body, dict) or not body:
            self._discard(intent.intent_id)
            if refusal is not None and refusal.unknown_user:
                # The user cannot approve (unknown, disabled, or no passkey in Keycloak).
                raise UnknownUserId(refusal.description)
            if refusal is not None:
                raise InvalidRequest(f"the approval could not start: {refusal.description}")
            raise TemporarilyUnavailable(f"the identity provider failed (HTTP {response.status_code}); retry later")
        if response.status_code != 200:
            self._discard(intent.intent_id)
        elif "auth_req_id" in body:
            request = self.store.get_request(intent.intent_id)
            if request is not None:
                # Keycloak's auth_req_id, hashed: lets audits join our receipt to its request.
                upstream = {**request.upstream, "auth_req_id_hash": sha256_b64url(str(body["auth_req_id"]))}
                self.store.set_upstream(request.request_id, upstream)
        # Keycloak's answer goes back unchanged; the channel call already notified the user.
        return BackchannelResult(response=body, notice=None, request=None, status_code=response.status_code)

    def _discard(self, intent_id: str) -> None:
        self.store.delete_intent(intent_id)
        self.store.delete_request(intent_id)

    # 2. Keycloak's authentication channel ----------------------------------------------------
    def verify_channel_token(self, authorization: str | None) -> dict[str, Any]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ChannelError(401, "bearer token required")
        try:
            header = jwt.get_unverified_header(token)
            key = self._jwks.key_for(str(header.get("kid")))
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
                audience=self.kc.issuer,
                issuer=self.kc.issuer,
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
        if not isinstance(exp, int | float) or isinstance(exp, bool) or self.now() >= exp + 5:
            # An expired channel token means Keycloak gave up on the request already.
            raise ChannelError(401, "channel token rejected: expired")
        claims["_raw"] = token
        return claims

    def sync_user(self, user_id: str, *, force: bool = False) -> User | None:
        """Mirror a Keycloak user and their passkeys into the local store (short TTL)."""
        now = self._clock()
        if not force and now - self._synced.get(user_id, -1e18) < self.kc.user_cache_ttl:
            return self.store.get_user(user_id)
        representation = self.admin.get_user(user_id)
        if representation is None:
            return None
        user = User(
            user_id=user_id,
            username=str(representation.get("username", "")),
            display_name=" ".join(p for p in (representation.get("firstName"), representation.get("lastName")) if p)
            or str(representation.get("username", "")),
            # Keycloak's WebAuthn user handle is the UTF-8 bytes of the user id.
            user_handle=user_id.encode("utf-8"),
            enabled=bool(representation.get("enabled", False)),
            created_at=int(representation.get("createdTimestamp", 0)) // 1000,
        )
        self.store.upsert_user(user)
        passkeys = [
            p
            for p in (passkey_from_keycloak(c, user_id=user_id) for c in self.admin.get_credentials(user_id))
            if p is not None
        ]
        # Exactly Keycloak's set: a passkey deleted there (lost device) stops approving here.
        self.store.replace_passkeys(user_id, passkeys)
        self._synced[user_id] = now
        return user

    def channel(self, authorization: str | None, body: Mapping[str, Any]) -> ApprovalNotice:
        """Handle Keycloak's channel POST; raises ChannelError for a non-201 answer."""
        claims = self.verify_channel_token(authorization)
        intent_id = body.get(INTENT_PARAMETER)
        if not isinstance(intent_id, str):
            raise ChannelError(400, "the request carries no intent reference; use this service's /bc-authorize")
        try:
            return self._bind_channel(claims, body, intent_id)
        except ChannelError as exc:
            # Keycloak answers the agent only "503 server_error" when the channel refuses; the
            # forwarding call (usually in this process) turns this into a precise error.
            with self._lock:
                self._refusals[intent_id] = exc
                while len(self._refusals) > 1000:
                    self._refusals.pop(next(iter(self._refusals)))
            raise

    def _bind_channel(self, claims: dict[str, Any], body: Mapping[str, Any], intent_id: str) -> ApprovalNotice:
        intent = self.store.take_intent(intent_id, now=self.now())
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
        try:
            user = self.sync_user(str(claims["sub"]))
        except httpx.HTTPError as exc:
            raise ChannelError(503, f"admin API unavailable: {type(exc).__name__}") from None
        if user is None or not user.enabled:
            raise ChannelError(403, "user unknown or disabled", unknown_user=True)
        if user.username.lower() != intent.login_hint.lower():
            raise ChannelError(403, "intent was made for another user")
        if not self.store.passkeys_for(user.user_id):
            raise ChannelError(403, "the user has no passkey registered in Keycloak", unknown_user=True)
        client = self.settings.client(intent.client_id)
        request = BackchannelRequest(
            # The intent id: bc-authorize can then undo this request if Keycloak fails.
            request_id=intent.intent_id,
            # Keycloak holds the agent's auth_req_id; the channel's auth result id is our key.
            auth_req_id_hash=sha256_b64url(f"kc-channel:{claims['jti']}"),
            approval_id=new_id(32),
            client_id=intent.client_id,
            client_name=(client.name if client and client.name else intent.client_id),
            user_id=user.user_id,
            scope=intent.scope,
            binding_message=intent.binding_message,
            authorization_details=intent.authorization_details,
            created_at=self.now(),
            # Never outlive Keycloak's own request (the channel token expires with it).
            expires_at=min(intent.expires_at, int(claims["exp"])),
            interval=self.settings.poll_interval,
            nonce=new_id(16),
            upstream={"channel_token": claims["_raw"], "auth_result_id": claims["jti"]},
        )
        self.store.add_request(request)
        return self.notice_for(request, user)

    def approve(self, approval_id: str, credential: dict[str, Any]) -> dict[str, Any]:
        """Re-read the user and passkeys from Keycloak first (no cache): a user disabled or a
        passkey deleted in Keycloak since the request started must not approve."""
        request = self.store.find_request_by_approval_id(approval_id)
        if request is not None:
            try:
                self.sync_user(request.user_id, force=True)
            except httpx.HTTPError:
                raise AssertionRejected("cannot confirm the passkey with Keycloak right now; try again") from None
        return super().approve(approval_id, credential)

    # 3. the decision callback ------------------------------------------------------------------
    def after_decision(self, request_id: str) -> None:
        request = self.store.get_request(request_id)
        if request is None:
            return
        if request.status is RequestStatus.APPROVED:
            receipt = self.store.get_receipt(request.receipt_id or "")
            approval = {
                "receipt": request.receipt_id,
                "challenge": receipt.challenge if receipt else None,
                "approved_at": receipt.created_at if receipt else None,
                "service": self.settings.issuer,
            }
            payload = {
                "status": "SUCCEED",
                CALLBACK_AUTHORIZATION_DETAILS: json.dumps(request.authorization_details, separators=(",", ":")),
                CALLBACK_APPROVAL: json.dumps(approval, separators=(",", ":")),
            }
        elif request.status is RequestStatus.DENIED:
            payload = {"status": "UNAUTHORIZED"}
        else:
            return
        self.send_callback(request, payload)

    def sweep_expired(self) -> int:
        """Close requests that expired undecided, without a callback. Returns how many.

        Our expiry is never later than Keycloak's (``expires_at`` is bounded by the channel
        token's ``exp``) and usually a little earlier (the intent is stored before Keycloak sees
        the request). Keycloak treats ``CANCELLED`` exactly like a denial, so a callback sent at
        our expiry would reach Keycloak while its request is still pending and the agent would be
        told ``access_denied`` instead of ``expired_token`` (CIBA section 11): the agent would
        think the user refused. Keycloak expires its side itself; we only claim the callback
        slot so that nothing can be sent for this request afterwards."""
        count = 0
        for request in self.store.expired_pending(now=self.now()):
            if self.store.claim_callback(request.request_id):
                self.store.set_callback_state(request.request_id, CallbackState.WITHHELD)
                count += 1
        return count

    def send_callback(self, request: BackchannelRequest, payload: dict[str, str]) -> bool:
        """POST the decision once. Keycloak deletes a request on a second callback, so a
        retry is made only when the previous attempt provably never reached Keycloak
        (connection refused or connect timeout); any other failure is final."""
        if not self.store.claim_callback(request.request_id):
            return False
        token = request.upstream.get("channel_token", "")
        delay = 0.5
        for attempt in range(1, self.kc.callback_attempts + 1):
            try:
                response = self.http.post(
                    f"{self.oidc}/ext/ciba/auth/callback",
                    json=payload,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                log.warning("callback attempt %d for %s not delivered: %s", attempt, request.request_id, exc)
                if attempt < self.kc.callback_attempts:
                    self._sleep(delay)
                    delay *= 2
                continue
            except httpx.HTTPError as exc:
                # Sent but no answer: Keycloak may have processed it. Re-sending could delete
                # the approved request, so the outcome stays unknown and nothing is re-sent.
                log.error("callback for %s: outcome unknown (%s); not retried", request.request_id, exc)
                self.store.set_callback_state(request.request_id, CallbackState.FAILED)
                return False
            if 200 <= response.status_code < 300:
                self.store.set_callback_state(request.request_id, CallbackState.SENT)
                return True
            log.error(
                "callback for %s refused: %s %s",
                request.request_id,
                response.status_code,
                response.text[:200],
            )
            self.store.set_callback_state(request.request_id, CallbackState.FAILED)
            return False
        self.store.set_callback_state(request.request_id, CallbackState.FAILED)
        return False

    # the token endpoint is Keycloak's; ours passes requests through unchanged.
    def token(self, params: Params, authorization: str | None, dpop_proofs: list[str] | None = None) -> dict[str, Any]:
        raise InvalidRequest(f"use the identity provider's token endpoint: {self.oidc}/token")

    def passthrough_token(self, params: Params, authorization: str | None) -> tuple[int, dict[str, Any]]:
        grant_type = params.optional("grant_type")
        if grant_type != CIBA_GRANT_TYPE:
            raise UnsupportedGrantType(f"grant_type '{grant_type}' is not supported here")
        headers = {"Authorization": authorization} if authorization else {}
        try:
            response = self.http.post(f"{self.oidc}/token", data=dict(params.items()), headers=headers)
        except httpx.HTTPError as exc:
            raise TemporarilyUnavailable(
                f"the identity provider is unreachable ({type(exc).__name__}); retry later"
            ) from None
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            raise TemporarilyUnavailable(f"identity provider answered {response.status_code}") from None
        return response.status_code, body
