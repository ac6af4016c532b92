"""JWTs that clients sign: client assertions (RFC 7523 ``private_key_jwt`` and SPIFFE
JWT-SVIDs), signed authentication requests (CIBA 7.1.1) and ``login_hint_token``.

Every check names the attack it stops. Failures raise :class:`ClientJwtError`, mapped to a
protocol error code by the caller (``invalid_client``, ``invalid_request``, ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

__all__ = [
    "ASSERTION_ALGORITHMS",
    "ClientJwtError",
    "ExpiredJwt",
    "SpiffeBundle",
    "verify_client_jwt",
]

# Asymmetric only: "none" and HMAC (with a public key as the secret) are never accepted, and,
# as FAPI-CIBA requires, no RSASSA-PKCS1-v1_5 (RS256): ES256 or PS256.
ASSERTION_ALGORITHMS = ("ES256", "PS256")


class ClientJwtError(Exception):
    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class ExpiredJwt(ClientJwtError):
    pass


def _keys(jwks: Mapping[str, Any], uses: tuple[str, ...] = ("sig",)) -> dict[str | None, jwt.PyJWK]:
    keys: dict[str | None, jwt.PyJWK] = {}
    for jwk in jwks.get("keys", []):
        if not isinstance(jwk, dict) or jwk.get("use", uses[0]) not in uses:
            continue
        if any(part in jwk for part in ("d", "p", "q", "k")):
            continue  # a private or symmetric key in a registered JWKS is a misconfiguration
        try:
            keys[jwk.get("kid")] = jwt.PyJWK(jwk)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue
    return keys


@dataclass(frozen=True, kw_only=True)
class SpiffeBundle:
    """A SPIFFE trust bundle for one trust domain (JWKS form, as bundle endpoints serve it)."""

    trust_domain: str
    jwks: Mapping[str, Any]
    # SPIFFE Trust Domain and Bundle 4.2.2: JWT-SVID keys carry "use": "jwt-svid".
    key_uses: tuple[str, ...] = ("jwt-svid",)

    @classmethod
    def load(cls, path: Path, *, trust_domain: str) -> SpiffeBundle:
        return cls(trust_domain=trust_domain, jwks=json.loads(path.read_text()))


def _time_claim(claims: Mapping[str, Any], name: str, what: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    # NaN and infinities compare false with everything and would disable every time check.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ClientJwtError(f"{what} '{name}' is not a number")
    return float(value)


def verify_client_jwt(
    token: str,
    *,
    jwks: Mapping[str, Any],
    audiences: Iterable[str],
    now: int,
    max_lifetime: int,
    required: Iterable[str],
    issuer: str | None = None,
    subject: str | None = None,
    use_once: Callable[[str, int], bool] | None = None,
    what: str = "client assertion",
    leeway: int = 5,
    key_uses: tuple[str, ...] = ("sig",),
    max_age_from_nbf: int | None = None,
) -> dict[str, Any]:
    """Verify a client-signed JWT and return its claims."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise ClientJwtError(f"{what} is not a well-formed JWT") from None
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise ClientJwtError(f"{what} algorithm {alg!r} is not allowed")
    for name in ("jku", "x5u", "jwk", "x5c"):
        if name in header:
            # The key must come from the registration, never from the token itself.
            raise ClientJwtError(f"{what} header '{name}' is not accepted")
    keys = _keys(jwks, key_uses)
    kid = header.get("kid")
    key = keys.get(kid) if kid is not None else (next(iter(keys.values())) if len(keys) == 1 else None)
    if key is None:
        raise ClientJwtError(f"{what} is signed by an unregistered key")
    if key.algorithm_name != alg and not (key.key_type == "RSA" and alg == "PS256"):
        raise ClientJwtError(f"{what} algorithm does not match the registered key")
    if key.key_type == "RSA" and key.algorithm_name != alg:
        # An RSA JWK without "alg" defaults to RS256 in PyJWT; PS256 uses the same key material.
        key = jwt.PyJWK(dict(key._jwk_data, alg=alg))
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            # Times are checked below with the service's clock.
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False},
        )
    except jwt.PyJWTError as exc:
        raise ClientJwtError(f"{what} signature is invalid ({exc})") from None
    for claim in required:
        if claim not in claims:
            raise ClientJwtError(f"{what} lacks the '{claim}' claim")
    if issuer is not None and claims.get("iss") != issuer:
        raise ClientJwtError(f"{what} 'iss' must be the client_id")
    if subject is not None and claims.get("sub") != subject:
        raise ClientJwtError(f"{what} 'sub' must be {subject!r}")
    aud = claims.get("aud")
    aud_values = [a for a in (aud if isinstance(aud, list) else [aud]) if isinstance(a, str)]
    if not set(aud_values) & set(audiences):
        # Stops an assertion made for another server being replayed here.
        raise ClientJwtError(f"{what} 'aud' does not name this provider")
    exp = _time_claim(claims, "exp", what)
    iat = _time_claim(claims, "iat", what)
    nbf = _time_claim(claims, "nbf", what)
    if exp is not None and now > exp + leeway:
        raise ExpiredJwt(f"{what} has expired")
    if iat is not None and iat > now + leeway:
        raise ClientJwtError(f"{what} was issued in the future")
    if nbf is not None and nbf > now + leeway:
        raise ClientJwtError(f"{what} is not yet valid")
    start = iat if iat is not None else (nbf if nbf is not None else now)
    if exp is not None and exp - start > max_lifetime:
        # A long-lived assertion is a standing credential; the replay window stays short.
        raise ClientJwtError(f"{what} lifetime exceeds {max_lifetime} seconds")
    # FAPI-CIBA 5.2.2: a request object is usable for at most 60 minutes from nbf.
    if (
        max_age_from_nbf is not None
        and nbf is not None
        and (now - nbf > max_age_from_nbf or (exp is not None and exp - nbf > max_age_from_nbf))
    ):
        raise ClientJwtError(f"{what} is valid for more than {max_age_from_nbf // 60} minutes from nbf")
    if use_once is not None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise ClientJwtError(f"{what} lacks the 'jti' claim")
        # Remembered until the JWT can no longer pass (exp plus the leeway above): forgetting
        # it at exp would reopen a replay window of `leeway` seconds.
        until = math.ceil(exp if exp is not None else now + max_lifetime) + leeway + 1
        if not use_once(jti, until):
            raise ClientJwtError(f"{what} 'jti' has been used before")
    return claims
