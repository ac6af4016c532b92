"""Client authentication at the backchannel and token endpoints (RFC 6749 2.3.1).

Supported: ``client_secret_basic`` and ``client_secret_post`` for clients registered in the
configuration, whose secrets are stored as scrypt hashes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import unquote_plus

from .config import ClientConfig, Settings
from .errors import InvalidClient, InvalidRequest
from .params import Params
from .security import hash_secret, verify_secret

__all__ = ["AuthenticatedClient", "authenticate_client"]

# Verifying against this when the client is unknown keeps the response time the same for
# known and unknown client ids, so timing does not reveal which client ids exist.
_DUMMY_HASH = hash_secret("dummy-secret-for-timing", salt=b"\x00" * 16)


@dataclass(frozen=True, kw_only=True)
class AuthenticatedClient:
    client: ClientConfig
    method: str  # "client_secret_basic" | "client_secret_post"
    # Kept only so keycloak mode can pass the agent's own authentication through.
    client_secret: str


def _parse_basic(header: str) -> tuple[str, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise InvalidClient("unsupported Authorization scheme; use Basic", headers=_basic_challenge())
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials", headers=_basic_challenge()) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials", headers=_basic_challenge())
    # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def _basic_challenge() -> dict[str, str]:
    return {"WWW-Authenticate": 'Basic realm="ciba-service"'}


def authenticate_client(
    *, settings: Settings, params: Params, authorization: str | None
) -> AuthenticatedClient:
    form_id = params.optional("client_id")
    form_secret = params.optional("client_secret")
    if authorization:
        if form_secret is not None:
            # RFC 6749 2.3: "The client MUST NOT use more than one authentication method".
            raise InvalidRequest("more than one client authentication method used")
        client_id, secret = _parse_basic(authorization)
        if form_id is not None and form_id != client_id:
            raise InvalidRequest("client_id parameter differs from the authenticated client")
        method, challenge = "client_secret_basic", _basic_challenge()
    elif form_secret is not None:
        if form_id is None:
            raise InvalidRequest("client_secret given without client_id")
        client_id, secret, method, challenge = form_id, form_secret, "client_secret_post", {}
    else:
        raise InvalidClient("client authentication is required", headers=_basic_challenge())
    client = settings.client(client_id)
    stored = client.client_secret_hash if client else _DUMMY_HASH
    valid = verify_secret(secret, stored)
    if client is None or not valid:
        raise InvalidClient("client authentication failed", headers=challenge)
    return AuthenticatedClient(client=client, method=method, client_secret=secret)
