"""The resource-server verifier: usable on its own, without the service running.

``TokenVerifier.verify(token, action)`` checks, in order: size and structure, header (alg
allow-list, ``typ``, no key-carrying headers), signature against the issuer's JWKS (cached,
refreshed on unknown ``kid``), ``iss``, ``aud``, ``exp``/``nbf``/``iat`` with a small leeway,
then that the exact action the server is about to perform is covered by one
``authorization_details`` entry, and finally single use of ``jti``.

Errors follow RFC 6750 section 3 and render their own ``WWW-Authenticate`` header.
"""

from __future__ import annotations

import binascii
import json
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .security import b64url_decode

__all__ = [
    "InMemoryReplayCache",
    "InsufficientAuthorization",
    "InvalidToken",
    "JwksCache",
    "ReplayCache",
    "RequestedAction",
    "ResourceError",
    "StaticKeys",
    "TokenVerifier",
    "VerificationKey",
    "VerifiedToken",
    "action_matches",
    "normalize_uri",
]


# errors ---------------------------------------------------------------------------------
class ResourceError(Exception):
    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str, *, realm: str = "api") -> None:
        super().__init__(description)
        self.description = description
        self.realm = realm

    def www_authenticate(self) -> str:
        # RFC 6750 3: quoted-string values; quotes and backslashes in the description escaped.
        desc = self.description.replace("\\", "\\\\").replace('"', '\\"')
        return f'Bearer realm="{self.realm}", error="{self.error}", error_description="{desc}"'

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


class MissingToken(ResourceError):
    """No credentials: RFC 6750 3.1 says the challenge then carries no error code."""

    error = ""
    status_code = 401

    def www_authenticate(self) -> str:
        return f'Bearer realm="{self.realm}"'

    def body(self) -> dict[str, Any]:
        return {"error": "invalid_token", "error_description": self.description}


class InvalidToken(ResourceError):
    error = "invalid_token"
    status_code = 401


class InsufficientAuthorization(ResourceError):
    """The token is valid but does not cover the action (RFC 6750 ``insufficient_scope``)."""

    error = "insufficient_scope"
    status_code = 403

    def __init__(self, description: str, *, required: dict[str, Any], realm: str = "api") -> None:
        super().__init__(description, realm=realm)
        self.required = required

    def body(self) -> dict[str, Any]:
        # Tells the agent which authorization_details to request so it need not guess.
        return {**super().body(), "authorization_details": [self.required]}


# the action -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class RequestedAction:
    """What the resource server is about to do, in ``authorization_details`` terms."""

    type: str
    actions: Sequence[str]
    locations: Sequence[str] = ()
    identifier: str | None = None
    datatypes: Sequence[str] = ()
    privileges: Sequence[str] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)

    def as_authorization_details(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": self.type, "actions": list(self.actions)}
        if self.locations:
            entry["locations"] = list(self.locations)
        if self.identifier is not None:
            entry["identifier"] = self.identifier
        if self.datatypes:
            entry["datatypes"] = list(self.datatypes)
        if self.privileges:
            entry["privileges"] = list(self.privileges)
        entry.update(self.fields)
        return entry


_UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4
    output: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(output) > 1:
                output.pop()
        elif segment != ".":
            output.append(segment)
    result = "/".join(output)
    if path.endswith(("/.", "/..")):
        result += "/"
    return result or "/"


def normalize_uri(uri: str) -> str:
    """RFC 3986 6.2.2 syntax-based normalisation: case, percent-encoding, dot segments,
    default port. Locations are then compared exactly (no prefix matching)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    if parts.username is not None:
        netloc = f"{parts.username}@{netloc}"

    def fix_escape(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        if (char.isalnum() and char.isascii()) or char in "-._~":
            return char
        return "%" + match.group(1).upper()

    path = _UNRESERVED.sub(fix_escape, parts.path) or "/"
    query = _UNRESERVED.sub(fix_escape, parts.query)
    return urlunsplit((scheme, netloc, _remove_dot_segments(path), query, ""))


def _subset(requested: Sequence[str], approved: Any) -> bool:
    if not requested:
        return True
    return isinstance(approved, list) and set(requested) <= set(approved)


_COMMON = frozenset({"type", "actions", "locations", "identifier", "datatypes", "privileges"})


def action_matches(entry: Mapping[str, Any], action: RequestedAction) -> bool:
    """Does one approved ``authorization_details`` entry cover ``action``?

    type equal; actions, datatypes and privileges subsets of the approved ones; every
    requested location equal (after normalisation) to an approved one; identifier equal,
    where an approval without identifier covers only actions without one; every
    type-specific field the action names equal to the approved value. Fields of the entry
    the action does not name never widen anything: they are simply not consulted.
    """
    if entry.get("type") != action.type:
        return False
    if not action.actions or not _subset(action.actions, entry.get("actions")):
        return False
    if not _subset(action.datatypes, entry.get("datatypes")):
        return False
    if not _subset(action.privileges, entry.get("privileges")):
        return False
    if action.locations:
        approved = entry.get("locations")
        if not isinstance(approved, list):
            return False
        approved_norm = {normalize_uri(u) for u in approved if isinstance(u, str)}
        if not all(normalize_uri(u) in approved_norm for u in action.locations):
            return False
    if entry.get("identifier") != action.identifier:
        return False
    for name, value in action.fields.items():
        if name in _COMMON or name not in entry or entry[name] != value:
            return False
        # bool is an int in Python: True must not match 1.
        if type(entry[name]) is not type(value):
            return False
    return True


# keys -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class VerificationKey:
    """A public key parsed once from the JWKS, bound to the one algorithm it may verify:
    a token cannot pick another algorithm for the same key (algorithm confusion)."""

    kid: str
    alg: str
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                if len(signature) != 64:
                    return False
                der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
                self.key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            else:
                self.key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
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
            x = int.from_bytes(b64url_decode(str(jwk["x"])), "big")
            y = int.from_bytes(b64url_decode(str(jwk["y"])), "big")
            key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            return VerificationKey(kid=kid, alg="ES256", key=key)
        if jwk.get("kty") == "RSA" and jwk.get("alg", "RS256") == "RS256":
            n = int.from_bytes(b64url_decode(str(jwk["n"])), "big")
            e = int.from_bytes(b64url_decode(str(jwk["e"])), "big")
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
    """

    def __init__(
        self,
        jwks_uri: str,
        *,
        ttl: float = 300.0,
        min_refresh_interval: float = 10.0,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uri = jwks_uri
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
                response = self._client.get(self._uri, timeout=5.0)
            else:
                response = httpx.get(self._uri, timeout=5.0, follow_redirects=False)
            response.raise_for_status()
            self._keys = parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            raise InvalidToken(f"issuer keys unavailable: {type(exc).__name__}") from None
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


# replay ---------------------------------------------------------------------------------
class ReplayCache(ABC):
    @abstractmethod
    def consume(self, jti: str, *, expires_at: int) -> bool:
        """Record ``jti`` as used until ``expires_at``; False if it was used already."""


class InMemoryReplayCache(ReplayCache):
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self._next_prune = 0.0

    def consume(self, jti: str, *, expires_at: int) -> bool:
        now = self._clock()
        with self._lock:
            if now >= self._next_prune:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
                self._next_prune = now + 30
            if jti in self._seen:
                return False
            self._seen[jti] = expires_at
            return True


# the verifier -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class VerifiedToken:
    claims: dict[str, Any]
    entry: dict[str, Any]  # the authorization_details entry that covered the action

    @property
    def subject(self) -> str:
        return str(self.claims.get("sub"))


_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        keys: KeySource,
        replay: ReplayCache | None = None,
        algorithms: Sequence[str] = ("ES256",),
        accepted_typ: Sequence[str] = ("at+jwt", "application/at+jwt"),
        leeway: int = 30,
        max_lifetime: int = 3600,
        max_token_bytes: int = 16_384,
        realm: str = "api",
        clock: Callable[[], float] = time.time,
    ) -> None:
        unsupported = set(algorithms) - {"ES256", "RS256"}
        if unsupported:
            raise ValueError(f"unsupported algorithms: {sorted(unsupported)}")
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.replay = replay if replay is not None else InMemoryReplayCache(clock)
        self.algorithms = frozenset(algorithms)
        self.accepted_typ = frozenset(t.lower() for t in accepted_typ)
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.max_token_bytes = max_token_bytes
        self.realm = realm
        self._clock = clock

    def _invalid(self, description: str) -> InvalidToken:
        return InvalidToken(description, realm=self.realm)

    def _decode_part(self, part: str, what: str) -> bytes:
        try:
            if not re.fullmatch(r"[A-Za-z0-9_-]*", part):
                raise ValueError
            return b64url_decode(part)
        except (ValueError, binascii.Error):
            raise self._invalid(f"malformed token {what}") from None

    def _json(self, raw: bytes, what: str) -> dict[str, Any]:
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise self._invalid(f"token {what} is not JSON") from None
        if not isinstance(value, dict):
            raise self._invalid(f"token {what} is not a JSON object")
        return value

    def verify_signature(self, token: str) -> dict[str, Any]:
        """Structure, header and signature; returns the claims (not yet checked)."""
        if len(token) > self.max_token_bytes:
            raise self._invalid("token is too large")
        parts = token.split(".")
        if len(parts) != 3:
            raise self._invalid("token is not a compact JWS")
        header = self._json(self._decode_part(parts[0], "header"), "header")
        alg = header.get("alg")
        # An allow-list, not a deny-list: stops "alg: none" and HS256-with-the-public-key.
        if alg not in self.algorithms:
            raise self._invalid(f"algorithm {alg!r} is not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self.accepted_typ:
            # RFC 9068 4: stops an ID token or other JWT of the same issuer being replayed
            # as an access token.
            raise self._invalid(f"token type {typ!r} is not an access token")
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                # Keys come from the issuer's JWKS only; a key named by the token itself
                # would let anyone sign.
                raise self._invalid(f"header '{name}' is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise self._invalid("token has no kid")
        key = self.keys.key_for(kid)
        if key is None:
            raise self._invalid("token signed by an unknown key")
        if key.alg != alg:
            raise self._invalid(f"key '{kid}' does not sign with {alg}")
        signature = self._decode_part(parts[2], "signature")
        if not key.verify(f"{parts[0]}.{parts[1]}".encode("ascii"), signature):
            raise self._invalid("signature verification failed")
        return self._json(self._decode_part(parts[1], "payload"), "payload")

    def check_claims(self, claims: Mapping[str, Any]) -> None:
        now = self._clock()
        if claims.get("iss") != self.issuer:
            raise self._invalid("token issuer is not trusted here")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences:
            raise self._invalid("token is not intended for this resource server")
        exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
        if not _is_number(exp) or not _is_number(iat):
            raise self._invalid("token lacks exp or iat")
        assert isinstance(exp, int | float) and isinstance(iat, int | float)
        if now >= exp + self.leeway:
            raise self._invalid("token has expired")
        if nbf is not None and (not _is_number(nbf) or now + self.leeway < nbf):
            raise self._invalid("token is not yet valid")
        if iat > now + self.leeway:
            raise self._invalid("token was issued in the future")
        if exp - iat > self.max_lifetime:
            raise self._invalid("token lifetime is longer than accepted")
        if not isinstance(claims.get("jti"), str) or not claims["jti"]:
            raise self._invalid("token has no jti")
        if not isinstance(claims.get("authorization_details"), list):
            raise self._invalid("token carries no authorization_details")

    def match(self, claims: Mapping[str, Any], action: RequestedAction) -> dict[str, Any]:
        for entry in claims["authorization_details"]:
            if isinstance(entry, dict) and action_matches(entry, action):
                return entry
        raise InsufficientAuthorization(
            "the token's approval does not cover this action",
            required=action.as_authorization_details(),
            realm=self.realm,
        )

    def verify(self, token: str, action: RequestedAction) -> VerifiedToken:
        claims = self.verify_signature(token)
        self.check_claims(claims)
        entry = self.match(claims, action)
        # Single use, checked last so a call the token does not cover doesn't burn it.
        if not self.replay.consume(str(claims["jti"]), expires_at=int(claims["exp"]) + self.leeway):
            raise self._invalid("token has already been used")
        return VerifiedToken(claims=claims, entry=entry)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
