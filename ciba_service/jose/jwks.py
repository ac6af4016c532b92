"""JSON Web Key Sets (RFC 7517 section 5): the issuer's public keys, each parsed once into a
:class:`VerificationKey` bound to the one algorithm it may verify, from a fixed document
(:class:`StaticKeys`) or fetched over HTTP and cached (:class:`JwksCache`).

Only signature keys (``use`` absent or ``sig``) with a ``kid`` are kept, and only for the
two algorithms :class:`VerificationKey` verifies: ES256 on P-256, and RS256 with at least
2048 bits.
Anything else in the set (encryption keys, other algorithms, short RSA keys, malformed
members) is skipped, not an error: a key that cannot be used is as good as absent.
"""

from __future__ import annotations

import binascii
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ciba_service.core.security import b64url_decode_lenient
from ciba_service.jose.signatures import raw_to_der

__all__ = [
    "JwksCache",
    "JwksUnavailable",
    "KeySource",
    "StaticKeys",
    "VerificationKey",
    "parse_jwks",
]


class JwksUnavailable(Exception):
    """The key set could not be fetched or read (network error, HTTP error, not JSON)."""


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


@dataclass(frozen=True, kw_only=True)
class VerificationKey:
    """A public key parsed once from the JWKS, bound to the one algorithm it may verify:
    a token cannot pick another algorithm for the same key (algorithm confusion)."""

    kid: str
    alg: str
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey
    # The key by its type, checked once here rather than per token (an ABC isinstance check
    # costs more than the rest of ``verify``'s Python): exactly one is set, the one ``alg`` names.
    _ecdsa: ec.EllipticCurvePublicKey | None = field(init=False, repr=False, compare=False, default=None)
    _rsa: rsa.RSAPublicKey | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.alg == "ES256" and isinstance(self.key, ec.EllipticCurvePublicKey):
            object.__setattr__(self, "_ecdsa", self.key)
        elif self.alg == "RS256" and isinstance(self.key, rsa.RSAPublicKey):
            object.__setattr__(self, "_rsa", self.key)
        else:
            raise ValueError(f"a {type(self.key).__name__} cannot verify {self.alg}")

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        ecdsa = self._ecdsa
        try:
            if ecdsa is not None:
                # RFC 7518 3.4: R||S, 32 bytes each; any other length is no ES256 signature.
                if len(signature) != 64:
                    return False
                ecdsa.verify(raw_to_der(signature), signing_input, _ECDSA_SHA256)
            else:
                cast(rsa.RSAPublicKey, self._rsa).verify(signature, signing_input, _PKCS1V15, _SHA256)
        except InvalidSignature:
            return False
        return True


class KeySource(ABC):
    @abstractmethod
    def key_for(self, kid: str) -> VerificationKey | None: ...


def _key_from_jwk(jwk: Mapping[str, Any]) -> VerificationKey | None:
    if jwk.get("use", "sig") != "sig" or not isinstance(jwk.get("kid"), str):
        return None
    kid = str(jwk["kid"])
    try:
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256" and jwk.get("alg", "ES256") == "ES256":
            x = int.from_bytes(b64url_decode_lenient(str(jwk["x"])), "big")
            y = int.from_bytes(b64url_decode_lenient(str(jwk["y"])), "big")
            key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            return VerificationKey(kid=kid, alg="ES256", key=key)
        if jwk.get("kty") == "RSA" and jwk.get("alg", "RS256") == "RS256":
            n = int.from_bytes(b64url_decode_lenient(str(jwk["n"])), "big")
            e = int.from_bytes(b64url_decode_lenient(str(jwk["e"])), "big")
            if n.bit_length() < 2048:  # NIST SP 800-131A: shorter RSA keys are not acceptable
                return None
            return VerificationKey(kid=kid, alg="RS256", key=rsa.RSAPublicNumbers(e, n).public_key())
    except (KeyError, ValueError, binascii.Error):
        return None
    return None


def parse_jwks(document: Mapping[str, Any]) -> dict[str, VerificationKey]:
    keys: dict[str, VerificationKey] = {}
    for jwk in document.get("keys", []):
        if isinstance(jwk, dict):
            key = _key_from_jwk(jwk)
            if key is not None:
                keys[key.kid] = key
    return keys


class StaticKeys(KeySource):
    def __init__(self, jwks: Mapping[str, Any]) -> None:
        self._keys = parse_jwks(jwks)

    def key_for(self, kid: str) -> VerificationKey | None:
        return self._keys.get(kid)


class JwksCache(KeySource):
    """The issuer's JWKS, fetched over HTTP, parsed once per ``kid`` and cached.

    An unknown ``kid`` triggers a refresh (key rotation), but at most once per
    ``min_refresh_interval``: tokens with random ``kid`` values cannot make us hammer the IdP.
    A known ``kid`` is served from the cache for ``ttl`` seconds, then refreshed the same way.
    Thread-safe: refreshes happen under a lock. A JWKS that cannot be fetched or read raises
    :class:`JwksUnavailable` (the keys already held are kept); ``timeout`` bounds each fetch.
    """

    def __init__(
        self,
        jwks_uri: str,
        *,
        ttl: float = 300.0,
        min_refresh_interval: float = 10.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        self._uri = jwks_uri
        self._timeout = timeout
        self._ttl = ttl
        self._min_refresh = min_refresh_interval
        self._client = client
        self._clock = clock
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _refresh(self) -> None:
        try:
            if self._client is not None:
                response = self._client.get(self._uri, timeout=self._timeout)
            else:
                response = httpx.get(self._uri, timeout=self._timeout, follow_redirects=False)
            response.raise_for_status()
            self._keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise JwksUnavailable(f"issuer keys unavailable: {type(exc).__name__}") from None
        finally:
            self._fetched_at = self._clock()

    def key_for(self, kid: str) -> VerificationKey | None:
        key = self._keys.get(kid)
        now = self._clock()
        fresh = self._fetched_at is not None and now - self._fetched_at < self._ttl
        if key is not None and fresh:
            return key
        with self._lock:
            key = self._keys.get(kid)
            since = None if self._fetched_at is None else now - self._fetched_at
            if key is not None and since is not None and since < self._ttl:
                return key
            if since is None or since >= self._min_refresh:
                self._refresh()
            return self._keys.get(kid)
