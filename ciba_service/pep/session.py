"""MCP over HTTP: the session's own access token and RFC 9728 protected-resource metadata.

- :class:`SessionTokenVerifier` is the SDK's ``TokenVerifier`` for ``MCPServer(auth=...,
  token_verifier=...)``: an RFC 9068 JWT from the trusted issuer, for this server's audience,
  unexpired; its user (``preferred_username``, else ``sub``) is the subject approvals are asked
  of. The SDK then answers a request without a valid token with ``401`` and
  ``WWW-Authenticate: Bearer ..., resource_metadata="..."`` (MCP authorization, RFC 9728 5.1).
- :func:`with_resource_metadata` serves the metadata document with what this server accepts,
  including ``authorization_details_types_supported`` (RFC 9728 section 2).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.provider import AccessToken

from ciba_service.rs import ResourceError, TokenVerifier

__all__ = ["SessionTokenVerifier", "protected_resource_metadata", "with_resource_metadata"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SessionTokenVerifier:
    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        subject_claims: Sequence[str] = ("preferred_username", "sub"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The resource-server verifier's signature and header checks (JWKS, alg allow-list,
        # typ at+jwt, no key-carrying headers) are reused; the claims are checked here, since
        # a session token carries no authorization_details.
        self.verifier = verifier
        self.subject_claims = tuple(subject_claims)
        self.clock = clock

    def check(self, token: str) -> AccessToken | None:
        try:
            claims = self.verifier.verify_signature(token)
        except ResourceError:
            return None
        now = self.clock()
        leeway = self.verifier.leeway
        aud = claims.get("aud")
        exp: Any = claims.get("exp")
        iat: Any = claims.get("iat")
        if claims.get("iss") != self.verifier.issuer:
            return None  # another issuer's token (mix-up)
        if not (aud == self.verifier.audience or (isinstance(aud, list) and self.verifier.audience in aud)):
            return None  # a token for another resource, replayed here (confused deputy)
        if not _number(exp) or not _number(iat) or now >= exp + leeway or iat > now + leeway:
            return None  # expired or from the future
        nbf = claims.get("nbf")
        if nbf is not None and (not _number(nbf) or now + leeway < nbf):
            return None
        subject = next((claims[c] for c in self.subject_claims if isinstance(claims.get(c), str) and claims[c]), None)
        if subject is None:
            return None  # no user to ask approvals of
        scope = claims.get("scope")
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or ""),
            scopes=scope.split() if isinstance(scope, str) else [],
            expires_at=int(exp),
            resource=self.verifier.audience,
            subject=subject,
            claims={"iss": claims["iss"]},
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        return self.check(token)


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def protected_resource_metadata(
    *, resource: str, authorization_servers: Sequence[str], authorization_details_types: Sequence[str] = ()
) -> dict[str, Any]:
    """The RFC 9728 document for this MCP server."""
    metadata: dict[str, Any] = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "bearer_methods_supported": ["header"],
    }
    if authorization_details_types:
        metadata["authorization_details_types_supported"] = sorted(set(authorization_details_types))
    return metadata


def with_resource_metadata(app: ASGIApp, metadata: dict[str, Any]) -> ASGIApp:
    """``app`` plus ``GET /.well-known/oauth-protected-resource<path of resource>`` (RFC 9728
    3.1), answered before ``app`` sees the request."""
    path = "/.well-known/oauth-protected-resource" + urlsplit(str(metadata["resource"])).path.rstrip("/")
    body = json.dumps(metadata).encode()

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "http" and scope.get("path") == path and scope.get("method") in ("GET", "HEAD"):
            headers = [(b"content-type", b"application/json"), (b"cache-control", b"max-age=300")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})
            return
        await app(scope, receive, send)

    return wrapped
