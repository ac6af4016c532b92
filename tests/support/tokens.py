"""Builders for resource-server tests: access tokens as the service mints them, a verifier
that trusts their issuer, the action they approve, and an agent's DPoP key."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from ciba_service.core.security import b64url_decode
from ciba_service.demo.example_api import IAM_LOCATION
from ciba_service.jose.jwk import jwk_thumbprint, public_jwk
from ciba_service.rs import RequestedAction, StaticKeys, TokenVerifier
from ciba_service.server.tokens import SigningKey, mint_access_token

__all__ = [
    "ACTION",
    "AGENT",
    "AGENT_JKT",
    "AUD",
    "ENTRY",
    "ISS",
    "act",
    "decode_challenge_details",
    "mint",
    "verifier",
]

ISS, AUD = "https://issuer.example.test", "resource-api"
ENTRY: dict[str, Any] = {
    "type": "iam_policy",
    "actions": ["update"],
    "identifier": "policy-42",
    "locations": [IAM_LOCATION],
}
ACTION = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[IAM_LOCATION])

# The agent's DPoP key (P-256) and its RFC 7638 thumbprint, the value of a bound token's cnf.jkt.
AGENT = ec.generate_private_key(ec.SECP256R1())
AGENT_JKT = jwk_thumbprint(public_jwk(AGENT.public_key()))


def mint(
    key: SigningKey,
    *,
    now: int | None = None,
    lifetime: int = 120,
    entries: list[dict[str, Any]] | None = None,
    header: dict[str, Any] | None = None,
    **override: Any,
) -> str:
    """A token as the service mints it; ``override`` replaces claims (None removes one)."""
    now = int(time.time()) if now is None else now
    _, claims = mint_access_token(
        key=key,
        issuer=ISS,
        subject="user-1",
        audience=AUD,
        client_id="agent-1",
        scope="openid",
        authorization_details=[ENTRY] if entries is None else entries,
        approval={"receipt": "r"},
        auth_time=now,
        now=now,
        lifetime=lifetime,
    )
    claims.update(override)
    claims = {k: v for k, v in claims.items() if v is not None}
    headers = {"kid": key.kid, "typ": "at+jwt", **(header or {})}
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers=headers)


def verifier(key: SigningKey, **kwargs: Any) -> TokenVerifier:
    return TokenVerifier(issuer=ISS, audience=AUD, keys=StaticKeys(key.jwks()), **kwargs)


def act(entry: dict[str, Any]) -> RequestedAction:
    """The action an ``authorization_details`` entry names (type, actions, identifier, locations)."""
    return RequestedAction(
        type=entry["type"], actions=entry["actions"], identifier=entry["identifier"], locations=entry["locations"]
    )


def decode_challenge_details(challenge: str) -> list[dict[str, Any]]:
    """The ``authorization_details`` auth-param of a WWW-Authenticate challenge."""
    value = challenge.split('authorization_details="', 1)[1].split('"', 1)[0]
    decoded: list[dict[str, Any]] = json.loads(b64url_decode(value))
    return decoded
