"""The service's signing key and the tokens it mints (embedded mode).

Access tokens are RFC 9068 JWTs (``typ: at+jwt``) signed ES256. The key lives on disk
(PKCS#8 PEM, mode 0600) and is published in the JWKS under its RFC 7638 thumbprint.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ciba_service.core.model import ApprovalReceipt
from ciba_service.core.security import b64url_encode, new_id
from ciba_service.jose.jwk import jwk_thumbprint, public_jwk

__all__ = ["ACR_PASSKEY", "AMR_PASSKEY", "SigningKey", "approval_claim", "mint_access_token", "mint_id_token"]

# OpenID "EAP ACR Values 1.0": phishing-resistant authentication. A WebAuthn assertion with
# the UV flag is origin-bound (phishing resistant) and multi-factor (possession + UV).
ACR_PASSKEY = "phr"
# RFC 8176: proof of possession of a key ("pop"), user presence/verification ("user"), and
# multiple factors ("mfa"; UV adds a knowledge or biometric factor to the device key).
AMR_PASSKEY = ["pop", "user", "mfa"]


@dataclass(frozen=True, kw_only=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey
    kid: str

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """Load the PEM at ``path``, creating a new P-256 key there on first start."""
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
                raise ValueError(f"{path} is not a P-256 private key")
            key = loaded
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # O_EXCL + 0600: never overwrite a key, never let other local users read it.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        return cls(private_key=key, kid=jwk_thumbprint(public_jwk(key.public_key())))

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        jwk = public_jwk(self.private_key.public_key())
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "ES256"}]}

    def sign(self, claims: dict[str, Any], *, typ: str) -> str:
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers={"kid": self.kid, "typ": typ})


def mint_access_token(
    *,
    key: SigningKey,
    issuer: str,
    subject: str,
    audience: str,
    client_id: str,
    scope: str,
    authorization_details: list[dict[str, Any]],
    approval: dict[str, Any],
    auth_time: int,
    now: int,
    lifetime: int,
    jkt: str | None = None,
    user_claims: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """An RFC 9068 access token carrying the approved ``authorization_details``; with ``jkt``
    it is bound to the agent's DPoP key (RFC 9449 6.1, ``cnf.jkt``). ``user_claims`` (the
    opt-in ``token_username_claim``) are added as they are; they never replace a claim above."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "client_id": client_id,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "jti": new_id(16),
        "scope": scope,
        "auth_time": auth_time,
        "acr": ACR_PASSKEY,
        "amr": AMR_PASSKEY,
        "authorization_details": authorization_details,
        "approval": approval,
    }
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    for name, value in (user_claims or {}).items():
        claims.setdefault(name, value)
    return key.sign(claims, typ="at+jwt"), claims


def mint_id_token(
    *,
    key: SigningKey,
    issuer: str,
    subject: str,
    client_id: str,
    auth_req_id: str,
    auth_time: int,
    now: int,
    lifetime: int,
    access_token: str | None = None,
    user_claims: dict[str, Any] | None = None,
) -> str:
    """The OpenID ID token CIBA 10.1.1 returns beside the access token (with ``user_claims``
    as for :func:`mint_access_token`)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": client_id,
        "iat": now,
        "exp": now + lifetime,
        "auth_time": auth_time,
        "acr": ACR_PASSKEY,
        "amr": AMR_PASSKEY,
        # CIBA 10.3.1: binds the ID token to the request it answers.
        "urn:openid:params:jwt:claim:auth_req_id": auth_req_id,
    }
    if access_token is not None:
        # OpenID Connect Core 3.2.2.9: left half of SHA-256 of the access token.
        claims["at_hash"] = b64url_encode(hashlib.sha256(access_token.encode("ascii")).digest()[:16])
    for name, value in (user_claims or {}).items():
        claims.setdefault(name, value)
    return key.sign(claims, typ="JWT")


def approval_claim(receipt: ApprovalReceipt, *, service: str | None = None) -> dict[str, Any]:
    """The ``approval`` claim: which receipt proves the user's passkey approval and the digest
    the passkey signed, so a resource server or auditor can fetch and re-verify it. In keycloak
    mode Keycloak mints the token and ``service`` names where the receipt lives."""
    claim: dict[str, Any] = {
        "receipt": receipt.receipt_id,
        "challenge": receipt.challenge,
        "approved_at": receipt.created_at,
    }
    if service is not None:
        claim["service"] = service
    return claim
