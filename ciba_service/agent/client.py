"""The agent side: a CIBA client (poll, ping and push) on plain httpx.

Client authentication is the two RFC 6749 2.3.1 methods the service and Keycloak accept for
secrets: ``client_secret_basic`` (both parts form-urlencoded before Base64, as the RFC requires)
and ``client_secret_post``. No OAuth client library: the grant is two form posts, and authlib's
client switches to the ``httpx2`` fork whenever that is installed (the MCP SDK pulls it in),
which would change the HTTP stack under callers' transports."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from ciba_service import rfc9449 as dpop
from ciba_service.agent.inbox import NotificationInbox
from ciba_service.core.protocol import CIBA_GRANT_TYPE

__all__ = ["AgentError", "CibaAgent", "PendingRequest"]


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
        if auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ValueError(f"unsupported client authentication method {auth_method!r}")
        self._client_id = client_id
        self._client_secret = client_secret
        self._auth_method = auth_method
        # Redirects are never followed: the endpoints come from discovery; a redirect is an error.
        self._http = httpx.Client(timeout=10.0, transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def _post(self, url: str, data: dict[str, str], headers: dict[str, str] | None = None) -> httpx.Response:
        """A form POST authenticated as this client (RFC 6749 2.3.1)."""
        sent = dict(headers or {})
        form = dict(data)
        if self._auth_method == "client_secret_basic":
            # RFC 6749 2.3.1: id and secret are form-urlencoded, then joined and Base64-encoded.
            credentials = f"{quote_plus(self._client_id)}:{quote_plus(self._client_secret)}"
            sent["Authorization"] = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        else:
            form.update(client_id=self._client_id, client_secret=self._client_secret)
        return self._http.post(url, data=form, headers=sent)

    @property
    def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            response = self._http.get(self._discovery_url)
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
        response = self._post(self.metadata["backchannel_authentication_endpoint"], data)
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
        response = self._post(endpoint, {"grant_type": CIBA_GRANT_TYPE, "auth_req_id": auth_req_id}, headers)
        body = _json(response)
        if response.status_code != 200 or "error" in body:
            raise AgentError(
                str(body.get("error", "server_error")), body.get("error_description"), response.status_code
            )
        if not isinstance(body.get("access_token"), str):
            raise AgentError("server_error", "the token response has no access_token", response.status_code)
        return body

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
