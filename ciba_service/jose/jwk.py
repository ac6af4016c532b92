"""JSON Web Keys: a P-256 public key as a JWK (RFC 7517, RFC 7518 section 6.2) and the
RFC 7638 thumbprint, the ``jkt`` that binds a DPoP token to its key (RFC 9449 section 6)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ciba_service.core.security import b64url_encode

__all__ = ["jwk_thumbprint", "public_jwk"]

# RFC 7638 3.2: the required members, by key type, that the thumbprint covers.
_THUMBPRINT_MEMBERS: dict[str, tuple[str, ...]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK (RFC 7518 6.2) of a P-256 key."""
    if key.curve.name != "secp256r1":
        raise ValueError("DPoP keys are P-256 (ES256)")
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint with SHA-256, base64url: the ``jkt`` of RFC 9449 section 6.

    Only the required members of the key type are hashed, in lexicographic order, as JSON
    without whitespace; ``kid``, ``alg`` and the like do not change the thumbprint.
    """
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None:
        raise ValueError(f"unsupported key type {jwk.get('kty')!r}")
    if not all(isinstance(jwk.get(name), str) for name in members):
        raise ValueError("JWK lacks a required member")
    canonical = json.dumps(
        {name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())
