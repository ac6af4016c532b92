"""Client authentication at the backchannel and token endpoints.

Supported: ``client_secret_basic`` and ``client_secret_post`` (RFC 6749 2.3.1; secrets stored
as scrypt hashes), ``private_key_jwt`` (RFC 7523, keys registered per client, single-use
``jti``) and SPIFFE JWT-SVIDs (``urn:ietf:params:oauth:client-assertion-type:jwt-spiffe``,
signed by a key of the configured trust bundle, SPIFFE ID bound to the client), so agents need
no static secret.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote_plus

import jwt

from ciba_service.config import ClientConfig, Settings
from ciba_service.core.errors import InvalidClient, InvalidRequest
from ciba_service.core.params import Params
from ciba_service.jose.client_assertion import ClientJwtError, SpiffeBundle, verify_client_jwt
from ciba_service.server.client_secrets import ClientSecretVerifier

__all__ = [
    "JWT_BEARER",
    "JWT_SPIFFE",
    "AssertionContext",
    "AuthenticatedClient",
    "authenticate_client",
    "parse_basic",
]

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


@dataclass(frozen=True, kw_only=True)
class AssertionContext:
    """What verifying a client assertion needs from the provider."""

    now: int
    audiences: Iterable[str]
    use_once: Callable[[str, int], bool]
    spiffe: SpiffeBundle | None


# Verifying against this when the client is unknown keeps the response time the same for
# known and unknown client ids, so timing does not reveal which client ids exist.


@dataclass(frozen=True, kw_only=True)
class AuthenticatedClient:
    client: ClientConfig
    method: str  # "client_secret_basic", "client_secret_post", "private_key_jwt", "spiffe_jwt"


def parse_basic(header: str) -> tuple[str, str]:
    """Client id and secret from ``Authorization: Basic``; InvalidClient (which always carries
    the Basic challenge) when the header is not that."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise InvalidClient("unsupported Authorization scheme; use Basic")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials")
    # RFC 6749 2.3.1: id and secret are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


def _assertion_client(*, settings: Settings, params: Params, context: AssertionContext) -> AuthenticatedClient:
    assertion_type = params.required("client_assertion_type")
    assertion = params.required("client_assertion")
    form_id = params.optional("client_id")
    if assertion_type == JWT_BEARER:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidClient("client_assertion is not a well-formed JWT") from None
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or (form_id is not None and form_id != client_id):
            raise InvalidClient("client_assertion 'iss' must be the client_id")
        client = settings.client(client_id)
        if client is None or client.token_endpoint_auth_method != "private_key_jwt" or not client.jwks:
            raise InvalidClient("client is not registered for private_key_jwt")
        try:
            verify_client_jwt(
                assertion,
                jwks=client.jwks,
                audiences=context.audiences,
                now=context.now,
                max_lifetime=settings.max_assertion_lifetime,
                required=("iss", "sub", "aud", "exp", "jti"),
                issuer=client_id,
                subject=client_id,
                # RFC 7523 3: jti single use stops a captured assertion being replayed.
                use_once=lambda jti, exp: context.use_once(f"assertion:{client_id}:{jti}", exp),
            )
        except ClientJwtError as exc:
            raise InvalidClient(exc.description) from None
        return AuthenticatedClient(client=client, method="private_key_jwt")
    if assertion_type == JWT_SPIFFE:
        if form_id is None:
            raise InvalidRequest("client_id is required with a JWT-SVID client assertion")
        client = settings.client(form_id)
        if client is None or client.token_endpoint_auth_method != "spiffe_jwt" or not client.spiffe_id:
            raise InvalidClient("client is not registered for SPIFFE JWT-SVID authentication")
        if context.spiffe is None:
            raise InvalidClient("no SPIFFE trust bundle is configured")
        try:
            claims = verify_client_jwt(
                assertion,
                jwks=context.spiffe.jwks,
                audiences=context.audiences,
                now=context.now,
                max_lifetime=settings.max_assertion_lifetime,
                required=("sub", "aud", "exp"),
                what="JWT-SVID",
                key_uses=context.spiffe.key_uses,
            )
        except ClientJwtError as exc:
            raise InvalidClient(exc.description) from None
        spiffe_id = str(claims.get("sub"))
        # The SVID must be from our trust domain and name exactly this client's workload:
        # another workload's valid SVID must not authenticate as this agent.
        if not spiffe_id.startswith(f"spiffe://{context.spiffe.trust_domain}/"):
            raise InvalidClient("JWT-SVID is not from the configured trust domain")
        if spiffe_id != client.spiffe_id:
            raise InvalidClient("JWT-SVID SPIFFE ID is not bound to this client")
        return AuthenticatedClient(client=client, method="spiffe_jwt")
    raise InvalidClient(f"unsupported client_assertion_type '{assertion_type}'")


def authenticate_client(
    *,
    settings: Settings,
    params: Params,
    authorization: str | None,
    context: AssertionContext | None = None,
    secrets: ClientSecretVerifier,
) -> AuthenticatedClient:
    form_id = params.optional("client_id")
    form_secret = params.optional("client_secret")
    if "client_assertion" in params or "client_assertion_type" in params:
        if authorization or form_secret is not None:
            raise InvalidRequest("more than one client authentication method used")
        if context is None:
            raise InvalidClient("client assertions are not accepted here")
        return _assertion_client(settings=settings, params=params, context=context)
    if authorization:
        if form_secret is not None:
            # RFC 6749 2.3: "The client MUST NOT use more than one authentication method".
            raise InvalidRequest("more than one client authentication method used")
        client_id, secret = parse_basic(authorization)
        if form_id is not None and form_id != client_id:
            raise InvalidRequest("client_id parameter differs from the authenticated client")
        method = "client_secret_basic"
    elif form_secret is not None:
        if form_id is None:
            raise InvalidRequest("client_secret given without client_id")
        client_id, secret, method = form_id, form_secret, "client_secret_post"
    else:
        raise InvalidClient("client authentication is required")
    client = settings.client(client_id)
    uses_secret = client is not None and client.token_endpoint_auth_method in (
        "client_secret_basic",
        "client_secret_post",
    )
    stored = client.client_secret_hash if client is not None and uses_secret else ""
    valid = secrets.verify(client_id, secret, stored)
    if client is None or not uses_secret or not stored or not valid:
        raise InvalidClient("client authentication failed")
    return AuthenticatedClient(client=client, method=method)
