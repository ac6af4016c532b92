"""Revocation: RFC 7662 token introspection, the resource server asking the issuer whether a
token is still active."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import httpx

from ciba_service.rs.errors import ResourceUnavailable

__all__ = ["TokenIntrospection"]


class TokenIntrospection:
    """Asks the issuer's RFC 7662 introspection endpoint whether a token is still active.

    ``POST introspection_url`` with the form ``token=...&token_type_hint=access_token`` and
    ``client_secret_basic`` authentication (RFC 6749 2.3.1: id and secret form-urlencoded,
    then Basic). Anything but ``200`` with a JSON object whose ``active`` is ``true`` means
    not active; an unreachable endpoint raises :class:`ResourceUnavailable` (fail closed).
    """

    def __init__(
        self,
        introspection_url: str,
        *,
        client_id: str,
        client_secret: str,
        client: httpx.Client | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.introspection_url = introspection_url
        credentials = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        self._authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        # A given client keeps its own settings (timeout included); ours gets ``timeout``.
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(follow_redirects=False, timeout=timeout)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def is_active(self, token: str) -> bool:
        try:
            response = self._client.post(
                self.introspection_url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self._authorization, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise ResourceUnavailable(f"token status could not be checked: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ResourceUnavailable(f"token status could not be checked: HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise ResourceUnavailable("token status could not be checked: not JSON") from None
        return isinstance(answer, dict) and answer.get("active") is True
