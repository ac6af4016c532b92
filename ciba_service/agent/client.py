"""The agent side: a CIBA client (poll, ping and push) built on authlib's OAuth 2.0 client."""

from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# authlib.deprecate installs an "always" filter for its warnings when first imported; import it
# first so the "ignore" below is the newer filter and wins.
import authlib.deprecate  # noqa: F401
import httpx
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI, Request
from fastapi.responses import Response

with warnings.catch_warnings():
    # authlib >= 1.7 prefers the httpx2 fork and warns when it falls back to httpx; we use
    # httpx on purpose (respx, FastAPI's test client and python-keycloak speak httpx).
    warnings.simplefilter("ignore")
    from authlib.integrations.base_client import OAuthError as AuthlibOAuthError
    from authlib.integrations.httpx_client import OAuth2Client

from ciba_service import rfc9449 as dpop
from ciba_service.core.protocol import CIBA_GRANT_TYPE

__all__ = ["AgentError", "CibaAgent", "NotificationInbox", "PendingRequest"]


class AgentError(Exception):
    """The provider answered with an OAuth error."""

    def __init__(self, error: str, description: str | None = None, status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True, kw_only=True)
class PendingRequest:
    auth_req_id: str
    expires_in: int
    interval: int
    started_at: float
    binding_message: str | None
    client_notification_token: str | None = None


class CibaAgent:
    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        auth_method: str = "client_secret_basic",
        transport: httpx.BaseTransport | None = None,
        discovery_url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        dpop_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._discovery_url = discovery_url or f"{self.issuer}/.well-known/openid-configuration"
        self._metadata: dict[str, Any] | None = None
        self._sleep = sleep
        # RFC 9449: with a key, every token request carries a proof and the token is bound to it.
        self.dpop_key = dpop_key
        kwargs: dict[str, Any] = {}
        if transport is not None:
            kwargs["transport"] = transport
        self._oauth = OAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            token_endpoint_auth_method=auth_method,
            timeout=10.0,
            **kwargs,
        )
        self._auth_method = auth_method

    def close(self) -> None:
        self._oauth.close()

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            response = self._oauth.request("GET", self._discovery_url, withhold_token=True)
            response.raise_for_status()
            self._metadata = response.json()
        return self._metadata

    def request(
        self,
        *,
        login_hint: str,
        authorization_details: list[dict[str, Any]],
        scope: str = "openid",
        binding_message: str | None = None,
        requested_expiry: int | None = None,
        client_notification_token: str | None = None,
        extra: dict[str, str] | None = None,
        inbox: NotificationInbox | None = None,
    ) -> PendingRequest:
        """Send the backchannel authentication request (CIBA 7.1).

        For ping and push clients pass the ``inbox`` serving the registered notification
        endpoint: the request then carries a fresh random ``client_notification_token`` (unless
        one is given), expected by the inbox before sending and bound to the answered
        ``auth_req_id`` after, so only this request's notification is accepted for it. Then
        ``inbox.wait(pending.auth_req_id, timeout=...)``."""
        if inbox is not None:
            if client_notification_token is None:
                # 256 bits of URL-safe base64: unguessable, and an RFC 6750 b64token.
                client_notification_token = secrets.token_urlsafe(32)
            inbox.expect(client_notification_token)
        try:
            pending = self._request(
                login_hint=login_hint,
                authorization_details=authorization_details,
                scope=scope,
                binding_message=binding_message,
                requested_expiry=requested_expiry,
                client_notification_token=client_notification_token,
                extra=extra,
            )
        except BaseException:
            if inbox is not None and client_notification_token is not None:
                inbox.forget(client_notification_token)
            raise
        if inbox is not None and client_notification_token is not None:
            inbox.bind(client_notification_token, pending.auth_req_id)
        return pending

    def _request(
        self,
        *,
        login_hint: str,
        authorization_details: list[dict[str, Any]],
        scope: str,
        binding_message: str | None,
        requested_expiry: int | None,
        client_notification_token: str | None,
        extra: dict[str, str] | None,
    ) -> PendingRequest:
        data: dict[str, str] = {
            "scope": scope,
            "login_hint": login_hint,
            "authorization_details": json.dumps(authorization_details, separators=(",", ":")),
        }
        if binding_message is not None:
            data["binding_message"] = binding_message
        if requested_expiry is not None:
            data["requested_expiry"] = str(requested_expiry)
        if client_notification_token is not None:
            data["client_notification_token"] = client_notification_token
        data.update(extra or {})
        response = self._oauth.request(
            "POST",
            self.metadata["backchannel_authentication_endpoint"],
            data=data,
            auth=self._oauth.client_auth(self._auth_method),
            withhold_token=True,
        )
        body = _json(response)
        if response.status_code != 200:
            raise AgentError(
                str(body.get("error", "server_error")), body.get("error_description"), response.status_code
            )
        return PendingRequest(
            auth_req_id=body["auth_req_id"],
            expires_in=int(body["expires_in"]),
            interval=int(body.get("interval", 5)),  # CIBA 7.3: default 5 s when absent
            client_notification_token=client_notification_token,
            started_at=time.monotonic(),
            binding_message=binding_message,
        )

    def poll_once(self, auth_req_id: str) -> dict[str, Any]:
        endpoint = self.metadata["token_endpoint"]
        headers = {}
        if self.dpop_key is not None:
            headers["DPoP"] = dpop.create_proof(self.dpop_key, "POST", endpoint)
        try:
            token: dict[str, Any] = self._oauth.fetch_token(
                endpoint,
                grant_type=CIBA_GRANT_TYPE,
                auth_req_id=auth_req_id,
                headers=headers,
            )
        except AuthlibOAuthError as exc:
            raise AgentError(str(exc.error), exc.description) from None
        return dict(token)

    def resource_headers(
        self, access_token: str, *, method: str, url: str, token_type: str = "Bearer", nonce: str | None = None
    ) -> dict[str, str]:
        """Headers for calling a resource server with ``access_token``: ``Bearer``, or for a
        DPoP-bound token the ``DPoP`` scheme and a fresh proof for this method and URL.
        ``nonce``: the server's last ``DPoP-Nonce`` (RFC 9449 9; on ``use_dpop_nonce``, retry
        once with the nonce of that answer)."""
        if token_type.lower() != "dpop":
            return {"Authorization": f"Bearer {access_token}"}
        if self.dpop_key is None:
            raise ValueError("a DPoP-bound token needs the agent's DPoP key")
        proof = dpop.create_proof(self.dpop_key, method, url, access_token=access_token, nonce=nonce)
        return {"Authorization": f"DPoP {access_token}", "DPoP": proof}

    def wait(
        self,
        pending: PendingRequest,
        *,
        on_tick: Callable[[str, float], None] | None = None,
    ) -> dict[str, Any]:
        """Poll at the provider's interval until a token, a denial or expiry (CIBA 7.3, 11)."""
        interval = pending.interval
        deadline = pending.started_at + pending.expires_in
        while True:
            remaining = deadline - time.monotonic()
            if on_tick:
                on_tick("waiting for approval", max(0.0, remaining))
            try:
                return self.poll_once(pending.auth_req_id)
            except AgentError as exc:
                if exc.error == "authorization_pending":
                    pass
                elif exc.error == "slow_down":
                    interval += 5
                else:
                    raise
            self._sleep(interval)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {"error": "server_error", "error_description": f"HTTP {response.status_code}"}
    return value if isinstance(value, dict) else {"error": "server_error"}


class NotificationInbox:
    """The agent's client notification endpoint for ping and push modes (CIBA 10.2, 10.3).

    ``app`` is an ASGI app to serve at the registered endpoint. Each ``client_notification_token``
    is bound to the one request it was sent with: ``expect(token)`` before sending the request,
    ``bind(token, auth_req_id)`` once /bc-authorize has answered (``CibaAgent.request(inbox=...)``
    does both). A notification counts only if it names a bound ``auth_req_id`` and its bearer is
    the token bound to that ``auth_req_id``, compared in constant time. Anything else is refused
    with 401: a stranger without a token, and also whoever holds the token of *another* request
    (a leaked or reused token must not complete, deny or inject tokens into this one).

    The order problem: the provider notifies only after the user's decision (or the expiry),
    which follows its answer to /bc-authorize, but the agent records the ``auth_req_id`` only
    once that answer has crossed the network, and a fast decision (or an expiry of a second)
    can beat it. So a notification whose bearer is an expected token not yet bound is held
    back, invisible to ``wait``, and answered 204 (the sender must not retry or give up); when
    ``bind`` names the ``auth_req_id`` the held notification is released only if it names the
    same one, and otherwise dropped. Nothing is lost, and nothing unbound is ever accepted.
    """

    # Held-back notifications per expected token; beyond this the endpoint answers 503, which
    # the sender retries, so only someone holding the token could fill it, and nothing is lost.
    MAX_HELD = 8
    # A ping is ~100 bytes and a push (tokens, ID token) a few KiB; a token holder posting more
    # is answered 413 and nothing is stored (stops a bearer holder from filling the agent's memory).
    MAX_BODY = 64 * 1024

    def __init__(self, path: str = "/cb") -> None:
        self.path = path  # where the app listens, e.g. "/ciba/cb" for https://agent/ciba/cb
        self._expected: dict[str, int] = {}  # token -> requests sent with it, not yet bound
        self._held: dict[str, list[tuple[str, dict[str, Any]]]] = {}  # token -> (auth_req_id, body)
        self._bound: dict[str, str] = {}  # auth_req_id -> its client_notification_token
        self._received: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.app = self._build()

    def expect(self, client_notification_token: str) -> None:
        """Register the bearer about to be sent as ``client_notification_token`` (before the
        request is sent); then :meth:`bind` it, or :meth:`forget` it if the request failed."""
        with self._cond:
            self._expected[client_notification_token] = self._expected.get(client_notification_token, 0) + 1

    def bind(self, client_notification_token: str, auth_req_id: str) -> None:
        """Bind an expected token to the ``auth_req_id`` the provider answered: from now on
        only this token completes this request. A notification held back for this token and
        this ``auth_req_id`` is released; one for another ``auth_req_id`` is dropped."""
        with self._cond:
            if self._expected.get(client_notification_token, 0) == 0:
                raise ValueError("bind() needs a token registered with expect() first")
            held = self._held.pop(client_notification_token, [])
            self._take_expectation(client_notification_token)
            self._bound[auth_req_id] = client_notification_token
            keep = []
            for held_id, body in held:
                if held_id == auth_req_id:
                    self._received[auth_req_id] = body
                    self._cond.notify_all()
                elif client_notification_token in self._expected:
                    keep.append((held_id, body))  # may be for another request using this token
            if keep:
                self._held[client_notification_token] = keep

    def forget(self, client_notification_token: str) -> None:
        """Withdraw an expectation whose request was refused (no auth_req_id to bind)."""
        with self._cond:
            self._take_expectation(client_notification_token)

    def _take_expectation(self, token: str) -> None:
        count = self._expected.get(token, 0)
        if count > 1:
            self._expected[token] = count - 1
        elif count == 1:
            del self._expected[token]
            self._held.pop(token, None)  # nobody left to bind what was held for it

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post(self.path)
        async def receive(request: Request) -> Response:
            scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not self._knows(bearer):
                # Before reading the body: a stranger makes us parse nothing.
                return Response(status_code=401)
            raw = await _read_capped(request, self.MAX_BODY)
            if raw is None:
                return Response(status_code=413)
            try:
                body = json.loads(raw)
                auth_req_id = str(body["auth_req_id"])
            except (ValueError, KeyError, TypeError):
                return Response(status_code=400)
            return Response(status_code=self._accept(bearer, auth_req_id, body))

        return app

    def _knows(self, bearer: str) -> bool:
        with self._cond:
            tokens = [*self._expected, *self._bound.values()]
        # every token compared, in constant time, so timing tells nothing about which matched
        return _any_equal(bearer, tokens)

    def _accept(self, bearer: str, auth_req_id: str, body: dict[str, Any]) -> int:
        with self._cond:
            bound = self._bound.get(auth_req_id)
            if bound is not None:
                # CIBA 10.2/10.3: the token authenticates the callback *for this request*;
                # another request's token (leaked by whoever handled that one) is refused.
                if not hmac.compare_digest(bearer.encode(), bound.encode()):
                    return 401
                self._received[auth_req_id] = body
                self._cond.notify_all()
                return 204
            expected = [t for t in self._expected if hmac.compare_digest(bearer.encode(), t.encode())]
            if not expected:
                return 401  # a known token, but not for this auth_req_id, and not awaiting one
            held = self._held.setdefault(expected[0], [])
            if len(held) >= self.MAX_HELD:
                return 503
            held.append((auth_req_id, body))  # released by bind() if the auth_req_id matches
            return 204

    def wait(self, auth_req_id: str, *, timeout: float) -> dict[str, Any]:
        """Block until the notification for ``auth_req_id`` arrives (or TimeoutError).

        A timeout ends the wait for good: the request's token is unbound and a later
        notification for it is refused (401); a ping agent can still poll the token endpoint."""
        with self._cond:
            if not self._cond.wait_for(lambda: auth_req_id in self._received, timeout=timeout):
                # Without this, every timed-out request kept its bound token, and a late
                # notification for it was stored, forever (the inbox grew without bound).
                self._bound.pop(auth_req_id, None)
                self._received.pop(auth_req_id, None)
                raise TimeoutError(f"no notification for the request within {timeout} s")
            self._bound.pop(auth_req_id, None)  # CIBA notifies once; later posts are refused
            return self._received.pop(auth_req_id)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it exceeds ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _any_equal(value: str, candidates: list[str]) -> bool:
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(value.encode(), candidate.encode())
    return found
