"""The decoupled device, scripted: what the approval page does, over HTTP, with any
authenticator object offering ``get(options, origin=...)`` (the development
:class:`~ciba_service.agent.softauthn.SoftAuthenticator` in the demo and tests)."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

from ciba_service.core.binding import canonical_preimage, challenge_for
from ciba_service.core.security import b64url_encode, constant_time_eq

__all__ = ["Authenticator", "ChallengeMismatch", "approve", "check_challenge", "deny", "enroll", "fetch_view"]


class Authenticator(Protocol):
    def get(self, options: dict[str, Any], *, origin: str) -> dict[str, Any]: ...

    def create(self, options: dict[str, Any], *, origin: str) -> dict[str, Any]: ...


class ChallengeMismatch(Exception):
    """The server asked to sign something other than the document it showed."""


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    port = f":{parsed.port}" if parsed.port and parsed.port != default else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def fetch_view(http: httpx.Client, approval_url: str) -> dict[str, Any]:
    response = http.get(f"{approval_url}/details")
    response.raise_for_status()
    view: dict[str, Any] = response.json()
    return view


def check_challenge(view: dict[str, Any]) -> None:
    """Like the page: sign only if the challenge is the digest of the document shown (stops a
    service that shows one action from having the key sign another)."""
    try:
        digest = b64url_encode(challenge_for(canonical_preimage(view["binding_document"])))
        challenge = view["publicKey"]["challenge"]
    except (KeyError, TypeError, ValueError):
        raise ChallengeMismatch("no binding document or challenge to compare") from None
    if not isinstance(challenge, str) or not constant_time_eq(digest, challenge):
        raise ChallengeMismatch("challenge is not SHA-256(JCS(binding document))")


def approve(http: httpx.Client, approval_url: str, authenticator: Authenticator) -> dict[str, Any]:
    view = fetch_view(http, approval_url)
    if view["status"] != "pending":
        raise RuntimeError(f"request is {view['status']}")
    check_challenge(view)
    credential = authenticator.get(view["publicKey"], origin=_origin(approval_url))
    response = http.post(f"{approval_url}/approve", json={"credential": credential})
    result: dict[str, Any] = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"approval refused: {result}")
    return result


def deny(http: httpx.Client, approval_url: str) -> dict[str, Any]:
    response = http.post(f"{approval_url}/deny", json={})
    result: dict[str, Any] = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"deny refused: {result}")
    return result


def enroll(http: httpx.Client, enrollment_url: str, authenticator: Authenticator) -> dict[str, Any]:
    options = http.post(f"{enrollment_url}/options", json={})
    options.raise_for_status()
    credential = authenticator.create(options.json(), origin=_origin(enrollment_url))
    response = http.post(f"{enrollment_url}/complete", json={"credential": credential})
    result: dict[str, Any] = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"enrollment refused: {result}")
    return result
