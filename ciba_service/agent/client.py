"""The agent side: a CIBA client (poll, ping and push), synchronous (:class:`CibaAgent`) and
asynchronous (:class:`AsyncCibaAgent`), on httpx.

The two classes share one protocol core (:class:`_CibaProtocol`: the forms, the client
authentication, reading the answers); they differ only in how they send. They speak httpx
directly rather than through an OAuth library: the requests are three (discovery, the
backchannel request, the CIBA grant), and authlib's httpx integration switches to the
``httpx2`` fork whenever that is installed (langsmith and the MCP SDK pull it in), which breaks
an agent given an httpx transport.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from ciba_service import rfc9449 as dpop
from ciba_service.agent.errors import AgentError, RequestExpired, ServiceUnreachable, agent_error
from ciba_service.agent.inbox import NotificationInbox
from ciba_service.core.protocol import CIBA_GRANT_TYPE

__all__ = ["AsyncCibaAgent", "CibaAgent", "PendingRequest"]

_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
# An answer larger than this is not a token response; refuse to parse it (a hostile or broken
# endpoint must not make the agent hold megabytes).
_MAX_ANSWER = 256 * 1024


@dataclass(frozen=True, kw_only=True)
class PendingRequest:
    auth_req_id: str
    expires_in: int
    interval: int
    started_at: float
    binding_message: str | None
    client_notification_token: str | None = None


OnTick = Callable[[str, float], None]


class _CibaProtocol:
    """Everything but the sending: request forms, client authentication, answers."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        auth_method: str,
        discovery_url: str | None,
        dpop_key: ec.EllipticCurvePrivateKey | None,
    ) -> None:
        if auth_method not in _AUTH_METHODS:
            raise ValueError(
                f"unsupported client authentication method {auth_method!r}; use {' or '.join(_AUTH_METHODS)}"
            )
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._auth_method = auth_method
        self._discovery_url = discovery_url or f"{self.issuer}/.well-known/openid-configuration"
        self._metadata: dict[str, Any] | None = None
        # RFC 9449: with a key, every token request carries a proof and the token is bound to it.
        self.dpop_key = dpop_key

    # client authentication (RFC 6749 2.3.1) ----------------------------------------------
    def _authenticate(self, data: dict[str, str], headers: dict[str, str]) -> None:
        if self._auth_method == "client_secret_post":
            data["client_id"] = self.client_id
            data["client_secret"] = self._client_secret
            return
        # RFC 6749 2.3.1: both parts form-urlencoded before Basic (a ':' in an id stays one).
        pair = f"{quote_plus(self.client_id)}:{quote_plus(self._client_secret)}"
        headers["Authorization"] = "Basic " + b64encode(pair.encode()).decode("ascii")

    # requests ------------------------------------------------------------------------------
    def _backchannel_form(
        self,
        *,
        login_hint: str,
        authorization_details: list[dict[str, Any]],
        scope: str,
        binding_message: str | None,
        requested_expiry: int | None,
        client_notification_token: str | None,
        extra: dict[str, str] | None,
    ) -> tuple[dict[str, str], dict[str, str]]:
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
        headers = {"Accept": "application/json"}
        self._authenticate(data, headers)
        return data, headers

    def _token_form(self, auth_req_id: str, endpoint: str) -> tuple[dict[str, str], dict[str, str]]:
        data = {"grant_type": CIBA_GRANT_TYPE, "auth_req_id": auth_req_id}
        headers = {"Accept": "application/json"}
        if self.dpop_key is not None:
            headers["DPoP"] = dpop.create_proof(self.dpop_key, "POST", endpoint)
        self._authenticate(data, headers)
        return data, headers

    # answers ---------------------------------------------------------------------------------
    @staticmethod
    def _metadata_from(response: httpx.Response) -> dict[str, Any]:
        body = _json(response)
        if response.status_code != 200 or "error" in body:
            raise AgentError("server_error", f"discovery answered HTTP {response.status_code}", response.status_code)
        for name in ("backchannel_authentication_endpoint", "token_endpoint"):
            if not isinstance(body.get(name), str):
                raise AgentError("server_error", f"the discovery document has no {name}", response.status_code)
        return body

    @staticmethod
    def _pending_from(
        response: httpx.Response, *, binding_message: str | None, client_notification_token: str | None
    ) -> PendingRequest:
        body = _json(response)
        if response.status_code != 200:
            raise _error_from(response, body)
        try:
            return PendingRequest(
                auth_req_id=str(body["auth_req_id"]),
                expires_in=int(body["expires_in"]),
                interval=int(body.get("interval", 5)),  # CIBA 7.3: default 5 s when absent
                client_notification_token=client_notification_token,
                started_at=time.monotonic(),
                binding_message=binding_message,
            )
        except (KeyError, TypeError, ValueError):
            raise AgentError("server_error", "the backchannel answer lacks auth_req_id or expires_in", 200) from None

    @staticmethod
    def _token_from(response: httpx.Response) -> dict[str, Any]:
        body = _json(response)
        if response.status_code != 200:
            raise _error_from(response, body)
        if not isinstance(body.get("access_token"), str):
            raise AgentError("server_error", "the token response has no access_token", response.status_code)
        return body

    @staticmethod
    def _next_interval(exc: AgentError, interval: int) -> int:
        """CIBA 11 while waiting: keep polling on ``authorization_pending``, 5 s more on
        ``slow_down`` (RFC 8628 3.5); anything else ends the wait."""
        if exc.error == "authorization_pending":
            return interval
        if exc.error == "slow_down":
            return interval + 5
        raise exc

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


def _new_notification_token(inbox: NotificationInbox | None, given: str | None) -> str | None:
    if inbox is None or given is not None:
        return given
    # 256 bits of URL-safe base64: unguessable, and an RFC 6750 b64token.
    return secrets.token_urlsafe(32)


def _deadline_passed(pending: PendingRequest, deadline: float) -> RequestExpired:
    return RequestExpired("wait_timeout", f"no decision within {int(deadline - pending.started_at)} s")


class CibaAgent(_CibaProtocol):
    """The synchronous CIBA client."""

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
        timeout: float = 10.0,
    ) -> None:
        super().__init__(
            issuer=issuer,
            client_id=client_id,
            client_secret=client_secret,
            auth_method=auth_method,
            discovery_url=discovery_url,
            dpop_key=dpop_key,
        )
        self._sleep = sleep
        # Redirects are not followed: a redirected token request would carry the client's
        # credentials to wherever the redirect points.
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CibaAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
            response.read()
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(f"{type(exc).__name__}: {exc}") from None
        return response

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = self._metadata_from(self._send("GET", self._discovery_url))
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
        token = _new_notification_token(inbox, client_notification_token)
        if inbox is not None and token is not None:
            inbox.expect(token)
        try:
            data, headers = self._backchannel_form(
                login_hint=login_hint,
                authorization_details=authorization_details,
                scope=scope,
                binding_message=binding_message,
                requested_expiry=requested_expiry,
                client_notification_token=token,
                extra=extra,
            )
            response = self._send(
                "POST", self.metadata["backchannel_authentication_endpoint"], data=data, headers=headers
            )
            pending = self._pending_from(response, binding_message=binding_message, client_notification_token=token)
        except BaseException:
            if inbox is not None and token is not None:
                inbox.forget(token)
            raise
        if inbox is not None and token is not None:
            inbox.bind(token, pending.auth_req_id)
        return pending

    def poll_once(self, auth_req_id: str) -> dict[str, Any]:
        """One CIBA grant request (CIBA 10.1); raises the provider's error as AgentError."""
        endpoint = self.metadata["token_endpoint"]
        data, headers = self._token_form(auth_req_id, endpoint)
        return self._token_from(self._send("POST", endpoint, data=data, headers=headers))

    def wait(
        self,
        pending: PendingRequest,
        *,
        on_tick: OnTick | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll at the provider's interval until a token, a denial or expiry (CIBA 7.3, 11).
        ``timeout`` (seconds from the request) ends the wait sooner with ``wait_timeout``."""
        interval = pending.interval
        deadline = pending.started_at + pending.expires_in
        own = pending.started_at + timeout if timeout is not None else None
        while True:
            now = time.monotonic()
            if own is not None and now >= own:
                raise _deadline_passed(pending, own)
            if on_tick:
                on_tick("waiting for approval", max(0.0, deadline - now))
            try:
                return self.poll_once(pending.auth_req_id)
            except AgentError as exc:
                interval = self._next_interval(exc, interval)
            self._sleep(interval if own is None else max(0.0, min(interval, own - time.monotonic())))


class AsyncCibaAgent(_CibaProtocol):
    """The asynchronous CIBA client: the same requests, awaited."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        auth_method: str = "client_secret_basic",
        transport: httpx.AsyncBaseTransport | None = None,
        discovery_url: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        dpop_key: ec.EllipticCurvePrivateKey | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(
            issuer=issuer,
            client_id=client_id,
            client_secret=client_secret,
            auth_method=auth_method,
            discovery_url=discovery_url,
            dpop_key=dpop_key,
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCibaAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, **kwargs)
            await response.aread()
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(f"{type(exc).__name__}: {exc}") from None
        return response

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = self._metadata_from(await self._send("GET", self._discovery_url))
        return self._metadata

    async def request(
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
        """:meth:`CibaAgent.request`, awaited."""
        token = _new_notification_token(inbox, client_notification_token)
        if inbox is not None and token is not None:
            inbox.expect(token)
        try:
            data, headers = self._backchannel_form(
                login_hint=login_hint,
                authorization_details=authorization_details,
                scope=scope,
                binding_message=binding_message,
                requested_expiry=requested_expiry,
                client_notification_token=token,
                extra=extra,
            )
            endpoint = (await self.metadata())["backchannel_authentication_endpoint"]
            response = await self._send("POST", endpoint, data=data, headers=headers)
            pending = self._pending_from(response, binding_message=binding_message, client_notification_token=token)
        except BaseException:
            if inbox is not None and token is not None:
                inbox.forget(token)
            raise
        if inbox is not None and token is not None:
            inbox.bind(token, pending.auth_req_id)
        return pending

    async def poll_once(self, auth_req_id: str) -> dict[str, Any]:
        endpoint = (await self.metadata())["token_endpoint"]
        data, headers = self._token_form(auth_req_id, endpoint)
        return self._token_from(await self._send("POST", endpoint, data=data, headers=headers))

    async def wait(
        self,
        pending: PendingRequest,
        *,
        on_tick: OnTick | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """:meth:`CibaAgent.wait`, awaited (the event loop runs while the user decides)."""
        interval = pending.interval
        deadline = pending.started_at + pending.expires_in
        own = pending.started_at + timeout if timeout is not None else None
        while True:
            now = time.monotonic()
            if own is not None and now >= own:
                raise _deadline_passed(pending, own)
            if on_tick:
                on_tick("waiting for approval", max(0.0, deadline - now))
            try:
                return await self.poll_once(pending.auth_req_id)
            except AgentError as exc:
                interval = self._next_interval(exc, interval)
            await self._sleep(interval if own is None else max(0.0, min(interval, own - time.monotonic())))


def _json(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, or {} when it is none (not JSON, not an object, too large)."""
    if len(response.content) > _MAX_ANSWER:
        return {}
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_from(response: httpx.Response, body: dict[str, Any]) -> AgentError:
    error = body.get("error")
    description = body.get("error_description")
    if not isinstance(error, str) or not error:
        # An answer, but no OAuth error in it (a proxy's error page, a crash): server_error.
        return AgentError("server_error", f"HTTP {response.status_code} without an OAuth error", response.status_code)
    return agent_error(error, description if isinstance(description, str) else None, response.status_code)
