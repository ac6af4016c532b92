"""The resource-server verifier: usable on its own, without the service running.

``TokenVerifier.verify(token, action)`` checks, in order:

1. size and compact-JWS structure;
2. header: ``alg`` on the allow-list, ``typ`` ``at+jwt`` (RFC 9068), no key-carrying headers;
3. signature against the issuer's JWKS (cached, refreshed on unknown ``kid``);
4. ``iss``, ``aud``, ``exp``/``nbf``/``iat`` with a small leeway, ``jti``;
5. sender constraint: a token with ``cnf.jkt`` needs a DPoP proof by that key (RFC 9449),
   carrying a nonce this server handed out when ``dpop_nonces`` is set (RFC 9449 section 9);
6. optionally the authentication level (RFC 9470: ``acr``, ``auth_time``);
7. the exact action about to be performed, against ``authorization_details`` (RFC 9396),
   each entry within its execution window (``not_before``/``not_after``);
8. optionally that the issuer still calls the token active (RFC 7662 introspection);
9. consumption: each entry at most ``max_uses`` times (default once), per (``jti``, entry),
   so one token carries a multi-step plan that can be run step by step but never repeated.

Matching (:func:`action_matches`) is specified in ``RESOURCE_SERVER.md``: the action is
covered only when it is inside the approval on every dimension the approval restricts.

Errors render their own ``WWW-Authenticate`` challenges (RFC 6750 section 3, RFC 9449
section 7.1, RFC 9470 section 3), carrying the ``authorization_details`` the call needs::

    ResourceError
    ├── MissingToken                     401, no error code (RFC 6750 3.1)
    ├── InvalidToken                     401 invalid_token
    ├── InvalidDPoPProof                 401 invalid_dpop_proof (DPoP scheme)
    │   └── UseDPoPNonce                 401 use_dpop_nonce, with a ``DPoP-Nonce`` header
    ├── InsufficientUserAuthentication   401 insufficient_user_authentication (RFC 9470)
    ├── InsufficientAuthorization        403 insufficient_scope
    └── ResourceUnavailable              503, a store or the introspection endpoint is down
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any, ClassVar, cast
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ciba_service.core.replay import InMemoryReplayCache, ReplayCache, ReplayStoreUnavailable
from ciba_service.core.security import b64url_decode, b64url_encode, constant_time_eq
from ciba_service.rfc9449 import dpop
from ciba_service.rfc9449.dpop import DPOP_ALGORITHMS, DPoPNonces, DPoPProofError, verify_proof

__all__ = [
    "COMMON_FIELDS",
    "PLAN_FIELDS",
    "Comparator",
    "DPoPNonces",
    "FieldRule",
    "InMemoryReplayCache",
    "InsufficientAuthorization",
    "InsufficientUserAuthentication",
    "InvalidDPoPProof",
    "InvalidToken",
    "JwksCache",
    "MissingToken",
    "ReplayCache",
    "RequestedAction",
    "ResourceError",
    "ResourceUnavailable",
    "StaticKeys",
    "TokenIntrospection",
    "TokenVerifier",
    "UseDPoPNonce",
    "VerificationKey",
    "VerifiedToken",
    "action_matches",
    "normalize_uri",
]


# errors ---------------------------------------------------------------------------------
_UNSAFE_IN_QUOTED = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def _quoted(value: str) -> str:
    # RFC 6750 3: error_description is %x20-21 / %x23-5B / %x5D-7E, so no quote, no
    # backslash, nothing outside printable ASCII (values may echo a token's header).
    return '"' + _UNSAFE_IN_QUOTED.sub("?", value) + '"'


def _encode_details(details: list[dict[str, Any]]) -> str:
    # default=str: a resource server's own values (a Decimal amount) must not break the answer.
    text = json.dumps(details, separators=(",", ":"), ensure_ascii=True, default=str)
    return b64url_encode(text.encode("ascii"))


class ResourceError(Exception):
    """An error the resource server answers with; renders its body and headers.

    ``scheme`` is the challenge's authentication scheme (``Bearer``, or ``DPoP`` when the
    token is DPoP-bound or was presented with that scheme); ``required`` is the
    ``authorization_details`` entry the call needs, told to the agent in the body and in the
    challenge's ``authorization_details`` parameter (base64url of the JSON array).
    """

    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(
        self,
        description: str,
        *,
        realm: str = "api",
        scheme: str = "Bearer",
        required: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.realm = realm
        self.scheme = scheme
        self.required: dict[str, Any] | None = dict(required) if required is not None else None

    def challenge_params(self) -> list[tuple[str, str]]:
        """Extra auth-params a subclass adds (RFC 9470 ``acr_values``, ``max_age``)."""
        return []

    def _challenge(self, scheme: str, *, with_error: bool) -> str:
        params = [("realm", _quoted(self.realm))]
        if with_error and self.error:
            params += [("error", _quoted(self.error)), ("error_description", _quoted(self.description[:300]))]
        params += [(name, _quoted(value)) for name, value in self.challenge_params()]
        if scheme == "DPoP":
            params.append(("algs", _quoted(" ".join(DPOP_ALGORITHMS))))
        if self.required is not None:
            params.append(("authorization_details", _quoted(_encode_details([self.required]))))
        return f"{scheme} " + ", ".join(f"{name}={value}" for name, value in params)

    def www_authenticate(self) -> str | None:
        return self._challenge(self.scheme, with_error=True)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "error_description": self.description}
        if self.required is not None:
            # Tells the agent which authorization_details to request so it need not guess.
            body["authorization_details"] = [self.required]
        return body

    def headers(self) -> dict[str, str]:
        headers = {"Cache-Control": "no-store"}
        challenge = self.www_authenticate()
        if challenge is not None:
            headers["WWW-Authenticate"] = challenge
        return headers


class MissingToken(ResourceError):
    """No credentials: RFC 6750 3.1 says the challenge then carries no error code. Both schemes
    are offered (RFC 9449 7.1), ``DPoP`` with the algorithms a proof may use."""

    error = ""
    status_code = 401

    def __init__(
        self,
        description: str,
        *,
        realm: str = "api",
        required: Mapping[str, Any] | None = None,
        offer_bearer: bool = True,
    ) -> None:
        super().__init__(description, realm=realm, required=required)
        self.offer_bearer = offer_bearer

    def www_authenticate(self) -> str:
        challenges = [self._challenge("Bearer", with_error=False)] if self.offer_bearer else []
        challenges.append(self._challenge("DPoP", with_error=False))
        return ", ".join(challenges)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "error": "invalid_token"}


class InvalidToken(ResourceError):
    error = "invalid_token"
    status_code = 401


class InvalidDPoPProof(ResourceError):
    """The DPoP proof failed RFC 9449 4.3 (missing, malformed, reused, wrong request or key)."""

    error = "invalid_dpop_proof"
    status_code = 401

    def __init__(self, description: str, *, realm: str = "api", required: Mapping[str, Any] | None = None) -> None:
        super().__init__(description, realm=realm, scheme="DPoP", required=required)


class UseDPoPNonce(InvalidDPoPProof):
    """RFC 9449 section 9: this resource server requires a nonce it issued in every proof,
    and the proof had none, or a stale or unknown one. The answer carries the nonce to use
    (``DPoP-Nonce``); the agent retries once with a new proof that includes it."""

    error = "use_dpop_nonce"

    def __init__(
        self, description: str, *, nonce: str, realm: str = "api", required: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(description, realm=realm, required=required)
        self.nonce = nonce

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "DPoP-Nonce": self.nonce}


class InsufficientUserAuthentication(ResourceError):
    """RFC 9470: the user's authentication is weaker or older than this resource requires."""

    error = "insufficient_user_authentication"
    status_code = 401

    def __init__(
        self,
        description: str,
        *,
        acr_values: Sequence[str] = (),
        max_age: int | None = None,
        realm: str = "api",
        required: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(description, realm=realm, required=required)
        self.acr_values = tuple(acr_values)
        self.max_age = max_age

    def challenge_params(self) -> list[tuple[str, str]]:
        params = [("acr_values", " ".join(self.acr_values))] if self.acr_values else []
        if self.max_age is not None:
            params.append(("max_age", str(self.max_age)))
        return params


class InsufficientAuthorization(ResourceError):
    """The token is valid but does not cover the action (RFC 6750 ``insufficient_scope``)."""

    error = "insufficient_scope"
    status_code = 403

    def __init__(
        self, description: str, *, required: Mapping[str, Any], realm: str = "api", scheme: str = "Bearer"
    ) -> None:
        super().__init__(description, realm=realm, scheme=scheme, required=required)


class ResourceUnavailable(ResourceError):
    """A dependency (replay store, introspection endpoint) could not answer: fail closed."""

    error = "temporarily_unavailable"
    status_code = 503

    def www_authenticate(self) -> None:
        return None

    def headers(self) -> dict[str, str]:
        return {**super().headers(), "Retry-After": "1"}


# the action -----------------------------------------------------------------------------
# RFC 9396 2.2: the common data fields, matched by their own rules below.
COMMON_FIELDS = frozenset({"type", "actions", "locations", "identifier", "datatypes", "privileges"})
# Entry fields the verifier itself enforces for approved plans: how often an entry may be
# used and when (epoch seconds). They are never compared as type-specific fields.
PLAN_FIELDS = frozenset({"max_uses", "not_before", "not_after"})
_RESERVED = COMMON_FIELDS | PLAN_FIELDS


@dataclass(frozen=True, kw_only=True)
class RequestedAction:
    """What the resource server is about to do, in ``authorization_details`` terms.

    ``fields`` are the type-specific fields of the operation (``{"instructedAmount":
    {"currency": "EUR", "amount": "7.50"}}``), compared with the approved entry's fields
    exactly or by the verifier's :class:`FieldRule` for the type.
    """

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


# URI normalisation (RFC 3986 section 6.2.2 and 6.2.3) --------------------------------------
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# Everything a URI may carry literally (RFC 3986 2.2, 2.3) plus "%" (existing escapes stay).
_URI_SAFE = "!#$&'()*+,/:;=?@[]~-._%"


def _fix_escape(match: re.Match[str]) -> str:
    # 6.2.2.1: hex digits of escapes in upper case; 6.2.2.2: unreserved characters decoded.
    char = chr(int(match.group(1), 16))
    if (char.isalnum() and char.isascii()) or char in "-._~":
        return char
    return "%" + match.group(1).upper()


def _normalize_component(text: str) -> str:
    # IRI characters (RFC 3987 3.1) and characters a URI cannot hold are percent-encoded as
    # UTF-8 first, so "/ü" and "/%C3%BC" name the same resource.
    return _ESCAPE.sub(_fix_escape, quote(text, safe=_URI_SAFE))


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
    """RFC 3986 6.2.2 syntax-based and 6.2.3 scheme-based normalisation: case of scheme and
    host, percent-encoding, dot segments, default port, empty path. The fragment is dropped.
    Locations (and DPoP ``htu``) are then compared exactly: no prefix matching, so
    ``https://h/a`` covers neither ``https://h/ab`` nor ``https://h/a/b``.

    Raises ``ValueError`` for a URI that cannot be parsed (a bad port, a broken IPv6 host).
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    port = parts.port  # ValueError for a port that is not a number in range
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at:
        netloc = f"{_normalize_component(userinfo)}@{netloc}"
    path = _normalize_component(parts.path) or "/"
    query = _normalize_component(parts.query)
    return urlunsplit((scheme, netloc, _remove_dot_segments(path), query, ""))


@lru_cache(maxsize=2048)
def _normalized_str(uri: str) -> str | None:
    try:
        return normalize_uri(uri)
    except ValueError:
        return None


def _normalized(uri: Any) -> str | None:
    """Cached :func:`normalize_uri`; None for a value that is not a valid URI string (a token
    may carry any JSON there, and lists or objects cannot even be cache keys)."""
    return _normalized_str(uri) if isinstance(uri, str) else None


# type-specific fields: comparison rules ----------------------------------------------------
Comparator = Callable[[Any, Any], bool]
"""A custom field comparison: ``(approved, requested) -> covered``. It must answer False for
anything it does not understand; an exception counts as not covered."""


class FieldRule(enum.StrEnum):
    """How a type-specific field of the action is compared with the approved value.

    Declared per type and dotted path on the verifier, e.g.
    ``field_rules={"payment_initiation": {"instructedAmount.amount": FieldRule.MAX}}``.
    Fields without a rule are compared ``EXACT``.
    """

    EXACT = "exact"  # the same JSON value, type included (true is not 1, 1 is not 1.0)
    MAX = "max"  # a quantity from 0 up to the approved one (numbers, or decimal strings)
    MIN = "min"  # a quantity at least the approved one
    SUBSET = "subset"  # an array whose members are all in the approved array
    IGNORE = "ignore"  # display-only (a reason, a note): the RS knowingly does not act on it


# Every integer up to 2**53 has an exact double (RFC 7493 2.2); beyond it doubles are rounded.
_EXACT_DOUBLE = float(2**53)
_DECIMAL = re.compile(r"-?\d{1,30}(\.\d{1,30})?")


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # Beyond 2**53 a double no longer holds every integer (RFC 7493 2.2): the value the
        # issuer signed may have been rounded, up as well as down, by a JSON parser, so a
        # bound read from it could be wider than the one approved. Not a quantity.
        return Decimal(value) if abs(value) <= _EXACT_DOUBLE else None  # NaN, inf: False
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return Decimal(value)
    return None


def _same_kind(a: Any, b: Any) -> bool:
    # "10.00" (a string, as RFC 9396's examples write amounts) is not compared with 10.
    return isinstance(a, str) == isinstance(b, str)


def _at_most(approved: Any, requested: Any) -> bool:
    limit, value = _quantity(approved), _quantity(requested)
    return limit is not None and value is not None and _same_kind(approved, requested) and 0 <= value <= limit


def _at_least(approved: Any, requested: Any) -> bool:
    limit, value = _quantity(approved), _quantity(requested)
    return limit is not None and value is not None and _same_kind(approved, requested) and value >= limit


def _subset_of(approved: Any, requested: Any) -> bool:
    if not isinstance(approved, list) or not isinstance(requested, list):
        return False
    return all(any(_same_json(item, allowed) for allowed in approved) for item in requested)


def _same_json(a: Any, b: Any) -> bool:
    """Structural JSON equality that keeps types apart: Python's ``True == 1 == 1.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float and not abs(a) <= _EXACT_DOUBLE:
        # Possibly rounded from what the issuer signed (an integer beyond 64 bits reads as a
        # double): equal after rounding is not proof of equal as approved. NaN lands here too.
        return False
    return bool(a == b)


_IGNORE = object()
_RULES: dict[FieldRule, Comparator] = {
    FieldRule.EXACT: _same_json,
    FieldRule.MAX: _at_most,
    FieldRule.MIN: _at_least,
    FieldRule.SUBSET: _subset_of,
}

FieldRules = Mapping[str, Mapping[str, FieldRule | str | Comparator]]
"""``{type: {dotted.path: rule}}`` as given to :class:`TokenVerifier`."""


@dataclass(frozen=True)
class _TypeRules:
    """One type's rules, compiled once: path tuple -> comparator (or ignore)."""

    by_path: dict[tuple[str, ...], Any]
    prefixes: frozenset[tuple[str, ...]]  # paths with a rule somewhere below them

    @classmethod
    def compile(cls, rules: Mapping[str, FieldRule | str | Comparator]) -> _TypeRules:
        by_path: dict[tuple[str, ...], Any] = {}
        for dotted, rule in rules.items():
            path = tuple(dotted.split("."))
            if not all(path) or path[0] in _RESERVED:
                raise ValueError(f"field rule path {dotted!r} does not name a type-specific field")
            if callable(rule) and not isinstance(rule, str):
                by_path[path] = rule
                continue
            named = FieldRule(rule)  # ValueError for an unknown rule name
            by_path[path] = _IGNORE if named is FieldRule.IGNORE else _RULES[named]
        prefixes = frozenset(path[:i] for path in by_path for i in range(1, len(path)))
        return cls(by_path=by_path, prefixes=prefixes)


_NO_RULES = _TypeRules(by_path={}, prefixes=frozenset())


def _apply(rule: Any, approved: Any, requested: Any) -> bool:
    if rule is _IGNORE:
        return True
    try:
        return bool(rule(approved, requested))
    except Exception:  # a custom comparator that chokes on a value does not cover it
        return False


def _covers(approved: Any, requested: Any, path: tuple[str, ...], rules: _TypeRules) -> bool:
    rule = rules.by_path.get(path)
    if rule is not None:
        return _apply(rule, approved, requested)
    if path in rules.prefixes:
        # An object with a rule deeper inside: compare member by member.
        if not isinstance(approved, dict) or not isinstance(requested, dict):
            return False
        return _members_covered(approved, requested, path, rules)
    return _same_json(approved, requested)


def _members_covered(
    approved: Mapping[str, Any], requested: Mapping[str, Any], path: tuple[str, ...], rules: _TypeRules
) -> bool:
    # Every member the action names must be approved; every approved member must be named,
    # unless declared IGNORE: a restriction the action does not address is not satisfied.
    for name in requested:
        if name not in approved:
            return False
    for name, value in approved.items():
        sub = (*path, name)
        if name in requested:
            if not _covers(value, requested[name], sub, rules):
                return False
        elif rules.by_path.get(sub) is not _IGNORE:
            return False
    return True


def _within(requested: Sequence[str], approved: Any) -> bool:
    """``requested`` is a non-empty subset of the approved JSON array (plain string equality)."""
    if not requested or not isinstance(approved, list):
        return False
    for item in requested:  # noqa: SIM110 - a loop, not all(): short lists, hot path
        if item not in approved:
            return False
    return True


def _restricted(entry: Mapping[str, Any], name: str, requested: Sequence[str]) -> bool:
    """``datatypes``/``privileges``: when the approval names some, the action must name a
    non-empty subset; when it names none, the action may name none either."""
    if name in entry:
        return _within(requested, entry[name])
    return not requested


def _locations_covered(entry: Mapping[str, Any], requested: Sequence[str]) -> bool:
    """Exact URIs after normalisation. An approval that names locations covers only actions
    that say where they happen; one that names none covers none that do."""
    if "locations" not in entry:
        return not requested
    approved = entry["locations"]
    if not requested or not isinstance(approved, list):
        return False
    for uri in requested:
        wanted = _normalized(uri)  # cached per URI string, as are the approved ones
        if wanted is None or wanted not in map(_normalized, approved):
            return False
    return True


def _entry_covers(entry: Mapping[str, Any], action: RequestedAction, rules: _TypeRules) -> bool:
    if entry.get("type") != action.type:
        return False
    if not _within(action.actions, entry.get("actions")):
        return False
    if not _locations_covered(entry, action.locations):
        return False
    # identifier: equal, including absent on both sides.
    identifier = entry.get("identifier")
    if identifier != action.identifier or (identifier is not None and not isinstance(identifier, str)):
        return False
    if ("datatypes" in entry or action.datatypes) and not _restricted(entry, "datatypes", action.datatypes):
        return False
    if ("privileges" in entry or action.privileges) and not _restricted(entry, "privileges", action.privileges):
        return False
    # type-specific fields, both ways. A field the token carries that the action does not name
    # (unknown to this resource server) is a restriction nobody enforces: not covered.
    fields = action.fields
    for name in fields:
        if name in _RESERVED or name not in entry:
            return False
    for name, approved in entry.items():
        if name in _RESERVED:
            continue
        if name in fields:
            if not _covers(approved, fields[name], (name,), rules):
                return False
        elif rules.by_path.get((name,)) is not _IGNORE:
            return False
    return True


def action_matches(
    entry: Mapping[str, Any],
    action: RequestedAction,
    *,
    rules: Mapping[str, FieldRule | str | Comparator] | None = None,
) -> bool:
    """Does one approved ``authorization_details`` entry cover ``action``?

    - ``type`` equal;
    - ``actions``: the action's are a non-empty subset of the approved ones;
    - ``locations``: each of the action's equals an approved one after RFC 3986
      normalisation; an entry with locations needs an action with at least one, an entry
      without covers no action that names one;
    - ``identifier`` equal (absent on both sides counts as equal);
    - ``datatypes``, ``privileges``: as locations, subsets, by plain string equality;
    - type-specific fields: every field the action names is in the entry and covered (exact
      JSON value, or the ``rules`` for this type, dotted paths); every type-specific field of
      the entry is named by the action unless its rule is ``FieldRule.IGNORE``;
    - ``max_uses``, ``not_before``, ``not_after`` are plan fields, enforced by the verifier.

    ``rules`` are this type's field rules (``{"instructedAmount.amount": "max"}``).
    """
    compiled = _TypeRules.compile(rules) if rules else _NO_RULES
    return _entry_covers(entry, action, compiled)


# keys -----------------------------------------------------------------------------------
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

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        try:
            # alg, not isinstance (an ABC check costs more than the rest of this method's Python):
            # the key type goes with alg, as parsed from the JWKS.
            if self.alg == "ES256":
                if len(signature) != 64:
                    return False
                cast(ec.EllipticCurvePublicKey, self.key).verify(
                    _der_signature(signature), signing_input, _ECDSA_SHA256
                )
            else:
                cast(rsa.RSAPublicKey, self.key).verify(signature, signing_input, _PKCS1V15, _SHA256)
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


# revocation: RFC 7662 introspection ----------------------------------------------------------
class TokenIntrospection:
    """Asks the issuer's RFC 7662 introspection endpoint whether a token is still active.

    ``POST introspection_url`` with the form ``token=...&token_type_hint=access_token`` and
    ``client_secret_basic`` authentication (RFC 6749 2.3.1: id and secret form-urlencoded,
    then Basic). Anything but ``200`` with a JSON object whose ``active`` is ``true`` means
    not active; an unreachable endpoint raises :class:`ResourceUnavailable` (fail closed).
    """

    def __init__(
        self,
        introspection_url: str,
        *,
        client_id: str,
        client_secret: str,
        client: httpx.Client | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.introspection_url = introspection_url
        credentials = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
        self._authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
        # A given client keeps its own settings (timeout included); ours gets ``timeout``.
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(follow_redirects=False, timeout=timeout)

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def is_active(self, token: str) -> bool:
        try:
            response = self._client.post(
                self.introspection_url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self._authorization, "Accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise ResourceUnavailable(f"token status could not be checked: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ResourceUnavailable(f"token status could not be checked: HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise ResourceUnavailable("token status could not be checked: not JSON") from None
        return isinstance(answer, dict) and answer.get("active") is True


# the verifier -----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class VerifiedToken:
    claims: dict[str, Any]
    entry: dict[str, Any]  # the authorization_details entry that covered the action
    entry_index: int = 0  # its position in the token's authorization_details
    jkt: str | None = None  # the DPoP key the call was proven with, for bound tokens
    # A fresh nonce to send back in a DPoP-Nonce header (RFC 9449 9): set when the proof's
    # nonce was the previous bucket's, so the agent's next proof carries the current one.
    dpop_nonce: str | None = None

    @property
    def subject(self) -> str:
        return str(self.claims.get("sub"))


_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
# base64url to the standard alphabet in one pass; the standard alphabet's own "+", "/" and "="
# become "!", which strict decoding refuses (see _b64url).
_TO_STANDARD_ALPHABET = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = (b"", None, b"==", b"=")
# The last character of an unpadded encoding carries unused low bits (4 when the length is
# 2 mod 4, 2 when it is 3 mod 4) that a canonical encoding sets to zero; these are the
# characters whose unused bits are zero, per length mod 4.
_CANONICAL_LAST = ("", "", "AQgw", "AEIMQUYcgkosw048")


def _b64url(part: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 2): raises ValueError for anything else.

    Characters of the standard alphabet and padding are mapped to "!" by the same translation
    that maps the URL-safe alphabet to the standard one, so binascii in strict mode refuses
    them along with every other character outside the alphabet (a lenient decoder skips them,
    so "a.b" and "a!.b" would otherwise decode alike). Non-zero unused bits in the last
    character are refused too: otherwise "QQ" and "QR" both decode to "A", and one signature
    has many spellings (a token that is "the same" but a different string)."""
    remainder = len(part) % 4
    padding = _PADDING[remainder]
    if padding is None:
        raise ValueError("impossible base64 length")
    if remainder and part[-1] not in _CANONICAL_LAST[remainder]:
        raise ValueError("non-canonical base64url")
    return binascii.a2b_base64(part.encode("ascii").translate(_TO_STANDARD_ALPHABET) + padding, strict_mode=True)


def _der_signature(raw: bytes) -> bytes:
    """JWS ES256 R||S (RFC 7518 3.4) to the DER SEQUENCE of two INTEGERs OpenSSL verifies."""
    integers = b""
    for half in (raw[:32], raw[32:]):
        value = half.lstrip(b"\0") or b"\0"
        if value[0] & 0x80:
            value = b"\0" + value  # keep the INTEGER positive
        integers += b"\x02" + bytes((len(value),)) + value
    return b"\x30" + bytes((len(integers),)) + integers


_HEADER_CACHE_SIZE = 64


class _NonceCheck:
    """One proof's nonce check, given to ``verify_proof`` as ``expected_nonce`` (which calls
    it after the signature and before the proof's ``jti`` is consumed). The clock is read
    once, so the nonce handed back and the nonces accepted belong to the same bucket."""

    __slots__ = ("current", "fresh", "nonces", "now")

    def __init__(self, nonces: DPoPNonces) -> None:
        self.nonces = nonces
        self.now = nonces.clock()
        self.current = nonces.current(self.now)
        self.fresh: str | None = None  # set when the agent should switch to ``current``

    def __call__(self, nonce: str) -> bool:
        valid = self.nonces.is_valid(nonce, self.now)
        if valid and not constant_time_eq(nonce, self.current):
            self.fresh = self.current  # the previous bucket's nonce: still accepted, renewed
        return valid


def _is_number(value: Any) -> bool:
    kind = type(value)  # bool is an int subclass but not a JSON number
    return kind is int or (kind is float and math.isfinite(value))


def _shown(value: Any) -> str:
    # Header values echoed in descriptions: bounded.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class TokenVerifier:
    """Verifies an access token for one exact action (see the module docstring for the order).

    ``field_rules``: per type, how type-specific fields compare (:class:`FieldRule`).
    ``max_uses``: per type, how often one entry may be used (default 1); an entry's own
    ``max_uses`` field may lower that, never raise it. ``introspection``: ask the issuer
    whether the token was revoked. ``require_dpop``: accept only DPoP-bound tokens.
    ``required_acr``/``max_auth_age``: RFC 9470 step-up requirements. ``dpop_nonces``:
    require a nonce from this server in every DPoP proof (:class:`DPoPNonces`, RFC 9449 9).
    """

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
        field_rules: FieldRules | None = None,
        max_uses: Mapping[str, int] | None = None,
        introspection: TokenIntrospection | None = None,
        require_dpop: bool = False,
        dpop_max_age: int = 60,
        dpop_nonces: DPoPNonces | None = None,
        required_acr: Sequence[str] | None = None,
        max_auth_age: int | None = None,
    ) -> None:
        unsupported = set(algorithms) - {"ES256", "RS256"}
        if unsupported:
            raise ValueError(f"unsupported algorithms: {sorted(unsupported)}")
        if any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in (max_uses or {}).values()):
            raise ValueError("max_uses must be positive integers")
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
        self.field_rules = {t: _TypeRules.compile(r) for t, r in (field_rules or {}).items()}
        self.max_uses = dict(max_uses or {})
        self.introspection = introspection
        self.require_dpop = require_dpop
        self.dpop_max_age = dpop_max_age
        self.dpop_nonces = dpop_nonces
        self.required_acr = tuple(required_acr) if required_acr is not None else None
        self.max_auth_age = max_auth_age
        self._step_up = required_acr is not None or max_auth_age is not None
        self._clock = clock
        # Consumption keys carry the issuer (length-prefixed), so verifiers of different
        # issuers may share one store.
        self._key_prefix = f"at|{len(issuer)}:{issuer}|"
        # Checked headers by their encoded form: one issuer key signs every token with the
        # same header, so it is decoded and checked once. Bounded.
        self._headers: dict[str, tuple[str, str]] = {}

    # -- errors
    def _invalid(self, description: str) -> InvalidToken:
        return InvalidToken(description, realm=self.realm)

    # -- 1-3: structure, header, signature
    def _decode_part(self, part: str, what: str) -> bytes:
        try:
            return _b64url(part)
        except (ValueError, binascii.Error):  # UnicodeEncodeError is a ValueError
            raise self._invalid(f"malformed token {what}") from None

    def _json(self, raw: bytes, what: str) -> dict[str, Any]:
        # orjson, not the standard library, on this hot path: half the parse time (README,
        # "Dependencies"). Strict RFC 8259: NaN, Infinity and numbers that overflow a double
        # are refused (a NaN nbf would compare false with everything), as are invalid UTF-8,
        # lone surrogates, trailing data and nesting deeper than 1024.
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:  # a ValueError
            raise self._invalid(f"token {what} is not JSON") from None
        if not isinstance(value, dict):
            raise self._invalid(f"token {what} is not a JSON object")
        return value

    def _check_header(self, encoded: str) -> tuple[str, str]:
        header = self._json(self._decode_part(encoded, "header"), "header")
        alg = header.get("alg")
        # An allow-list, not a deny-list: stops "alg: none" and HS256-with-the-public-key.
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise self._invalid(f"algorithm {_shown(alg)} is not allowed")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in self.accepted_typ:
            # RFC 9068 4: stops an ID token or other JWT of the same issuer being replayed
            # as an access token.
            raise self._invalid(f"token type {_shown(typ)} is not an access token")
        for name in _FORBIDDEN_HEADERS:
            if name in header:
                # Keys come from the issuer's JWKS only; a key named by the token itself
                # would let anyone sign.
                raise self._invalid(f"header '{name}' is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise self._invalid("token has no kid")
        return str(alg), kid

    def verify_signature(self, token: str) -> dict[str, Any]:
        """Structure, header and signature; returns the claims (not yet checked)."""
        if len(token) > self.max_token_bytes:
            raise self._invalid("token is too large")
        parts = token.split(".")
        if len(parts) != 3:
            raise self._invalid("token is not a compact JWS")
        header, payload, signature = parts
        checked = self._headers.get(header)
        alg, kid = checked if checked is not None else self._check_header(header)
        key = self.keys.key_for(kid)
        if key is None:
            raise self._invalid("token signed by an unknown key")
        if key.alg != alg:
            raise self._invalid(f"key {_shown(kid)} does not sign with {alg}")
        # Decoded (so checked to be base64url, hence ASCII) before the signature, parsed after.
        claims_json = self._decode_part(payload, "payload")
        if not key.verify(f"{header}.{payload}".encode("ascii"), self._decode_part(signature, "signature")):
            raise self._invalid("signature verification failed")
        # Only headers that signed a valid token are remembered, so forged tokens cannot
        # crowd the issuer's header out of the cache.
        if checked is None and len(self._headers) < _HEADER_CACHE_SIZE:
            self._headers[header] = (alg, kid)
        return self._json(claims_json, "payload")

    # -- 4: claims
    def check_claims(self, claims: Mapping[str, Any], *, now: float | None = None) -> None:
        if now is None:
            now = self._clock()
        if claims.get("iss") != self.issuer:
            raise self._invalid("token issuer is not trusted here")
        aud = claims.get("aud")
        if not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
            raise self._invalid("token is not intended for this resource server")
        exp: Any = claims.get("exp")
        iat: Any = claims.get("iat")
        nbf: Any = claims.get("nbf")
        if not _is_number(exp) or not _is_number(iat):
            raise self._invalid("token lacks exp or iat")
        if now >= exp + self.leeway:
            raise self._invalid("token has expired")
        if nbf is not None and (not _is_number(nbf) or now + self.leeway < nbf):
            raise self._invalid("token is not yet valid")
        if iat > now + self.leeway:
            raise self._invalid("token was issued in the future")
        if exp - iat > self.max_lifetime:
            raise self._invalid("token lifetime is longer than accepted")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise self._invalid("token has no jti")
        if not isinstance(claims.get("authorization_details"), list):
            raise self._invalid("token carries no authorization_details")

    # -- 5: sender constraint (RFC 9449 section 7)
    def _check_binding(
        self,
        claims: Mapping[str, Any],
        token: str,
        *,
        scheme: str | None,
        method: str | None,
        url: str | None,
        dpop_proof: str | None,
    ) -> tuple[str | None, str | None]:
        """The proof key's ``jkt`` (None for an unbound token) and a fresh nonce to send back."""
        cnf = claims.get("cnf")
        presented_as_dpop = scheme is not None and scheme.lower() == "dpop"
        if cnf is None:
            if presented_as_dpop:
                raise self._invalid("the token is not DPoP-bound; present it with the Bearer scheme")
            if self.require_dpop:
                raise self._invalid("only DPoP-bound tokens are accepted here")
            return None, None
        # Only cnf.jkt is understood; a token bound some other way (mTLS x5t#S256) is refused
        # rather than accepted as a bearer token.
        if not isinstance(cnf, dict) or cnf.keys() != {"jkt"} or not isinstance(cnf["jkt"], str):
            raise self._invalid("token is bound by an unsupported cnf confirmation method")
        if scheme is not None and not presented_as_dpop:
            # RFC 9449 7.2: a DPoP-bound token presented as a bearer token is refused.
            raise self._invalid("a DPoP-bound token must be presented with the DPoP scheme")
        if not dpop_proof:
            raise InvalidDPoPProof("a DPoP proof is required with this token", realm=self.realm)
        if method is None or url is None:
            raise InvalidDPoPProof(
                "DPoP-bound tokens need the request method and URL, which were not supplied",
                realm=self.realm,
            )
        nonce_check = _NonceCheck(self.dpop_nonces) if self.dpop_nonces is not None else None
        try:
            jkt = verify_proof(
                dpop_proof,
                method=method,
                url=url,
                replay=self.replay,
                access_token=token,
                expected_jkt=cnf["jkt"],
                expected_nonce=nonce_check,
                max_age=self.dpop_max_age,
                leeway=self.leeway,
                now=self._clock(),
            )
        except DPoPProofError as exc:
            if isinstance(exc, dpop.UseDPoPNonce) and nonce_check is not None:
                raise UseDPoPNonce(exc.description, nonce=nonce_check.current, realm=self.realm) from None
            raise InvalidDPoPProof(exc.description, realm=self.realm) from None
        return jkt, nonce_check.fresh if nonce_check is not None else None

    # -- 6: authentication level (RFC 9470)
    def _check_authentication(self, claims: Mapping[str, Any]) -> None:
        if self.required_acr is not None and claims.get("acr") not in self.required_acr:
            raise InsufficientUserAuthentication(
                "a stronger user authentication is required",
                acr_values=self.required_acr,
                max_age=self.max_auth_age,
                realm=self.realm,
            )
        if self.max_auth_age is not None:
            auth_time: Any = claims.get("auth_time")
            if not _is_number(auth_time) or self._clock() - auth_time > self.max_auth_age + self.leeway:
                raise InsufficientUserAuthentication(
                    "a more recent user authentication is required",
                    acr_values=self.required_acr or (),
                    max_age=self.max_auth_age,
                    realm=self.realm,
                )

    # -- 7: the action and the plan's windows
    def _window_problem(self, entry: Mapping[str, Any], index: int, now: float) -> str | None:
        not_before, not_after = entry.get("not_before"), entry.get("not_after")
        for name, value in (("not_before", not_before), ("not_after", not_after)):
            if value is not None and not _is_number(value):
                raise self._invalid(f"authorization_details[{index}] has an invalid {name}")
        # No leeway: the window is the user's decision, not a clock-skew allowance.
        if not_before is not None and now < not_before:
            return f"the approval for this action is valid from {int(not_before)} (epoch seconds)"
        if not_after is not None and now >= not_after:
            return f"the approval for this action ended at {int(not_after)} (epoch seconds)"
        return None

    def match(
        self, claims: Mapping[str, Any], action: RequestedAction, *, now: float | None = None
    ) -> list[tuple[int, dict[str, Any]]]:
        """The entries that cover ``action`` now, in token order; at least one, or raises."""
        rules = self.field_rules.get(action.type, _NO_RULES)
        if now is None:
            now = self._clock()
        usable: list[tuple[int, dict[str, Any]]] = []
        outside: str | None = None
        for index, entry in enumerate(claims["authorization_details"]):
            if isinstance(entry, dict) and _entry_covers(entry, action, rules):
                has_window = "not_before" in entry or "not_after" in entry
                problem = self._window_problem(entry, index, now) if has_window else None
                if problem is None:
                    usable.append((index, entry))
                else:
                    outside = problem
        if not usable:
            raise InsufficientAuthorization(
                outside or "the token's approval does not cover this action",
                required=action.as_authorization_details(),
                realm=self.realm,
            )
        return usable

    # -- 9: consumption
    def _limit(self, entry: Mapping[str, Any], index: int) -> int:
        asked = entry.get("max_uses")
        ceiling = self.max_uses.get(str(entry.get("type")), 1)
        if asked is None:
            return ceiling
        if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
            raise self._invalid(f"authorization_details[{index}] has an invalid max_uses")
        return min(asked, ceiling)

    def _consume(
        self, claims: Mapping[str, Any], usable: list[tuple[int, dict[str, Any]]]
    ) -> tuple[int, dict[str, Any]]:
        expires_at = math.ceil(claims["exp"]) + self.leeway
        jti = claims["jti"]
        for index, entry in usable:
            limit = 1 if not self.max_uses and "max_uses" not in entry else self._limit(entry, index)
            if self.replay.consume(f"{self._key_prefix}{jti}#{index}", expires_at=expires_at, limit=limit):
                return index, entry
        if len(claims["authorization_details"]) == 1:
            raise self._invalid("token has already been used")
        raise self._invalid("this step of the approved plan has already been used")

    # -- the pipeline
    def verify(
        self,
        token: str,
        action: RequestedAction,
        *,
        scheme: str | None = None,
        method: str | None = None,
        url: str | None = None,
        dpop_proof: str | None = None,
    ) -> VerifiedToken:
        """Verify ``token`` for ``action`` and consume one use of the entry that covers it.

        ``scheme`` is the Authorization scheme it came with (``Bearer``/``DPoP``; None when
        not over HTTP); ``method``, ``url`` and ``dpop_proof`` (the ``DPoP`` header) are
        needed for DPoP-bound tokens.
        """
        dpop_scheme = scheme is not None and scheme.lower() == "dpop"
        try:
            claims = self.verify_signature(token)
            dpop_scheme = dpop_scheme or "cnf" in claims  # a bound token is answered in DPoP terms
            now = self._clock()
            self.check_claims(claims, now=now)
            jkt = dpop_nonce = None
            if dpop_scheme or self.require_dpop:
                jkt, dpop_nonce = self._check_binding(
                    claims, token, scheme=scheme, method=method, url=url, dpop_proof=dpop_proof
                )
            if self._step_up:
                self._check_authentication(claims)
            usable = self.match(claims, action, now=now)
            # Checked after the cheap local refusals, before a use is recorded: a revoked
            # token does not burn a step.
            if self.introspection is not None and not self.introspection.is_active(token):
                raise self._invalid("token has been revoked")
            # Consumed last, so a call the token does not cover doesn't burn it.
            index, entry = self._consume(claims, usable)
        except ReplayStoreUnavailable as exc:
            raise ResourceUnavailable(str(exc), realm=self.realm) from None
        except ResourceError as exc:
            exc.realm = self.realm
            if exc.required is None:
                exc.required = action.as_authorization_details()
            if dpop_scheme and exc.scheme == "Bearer":
                exc.scheme = "DPoP"
            raise
        return VerifiedToken(claims=claims, entry=entry, entry_index=index, jkt=jkt, dpop_nonce=dpop_nonce)

    def verify_request(
        self,
        action: RequestedAction,
        *,
        authorization: str | None,
        method: str,
        url: str,
        dpop: str | Sequence[str] | None = None,
    ) -> VerifiedToken:
        """Framework-free HTTP entry point: the ``Authorization`` header, the request method
        and URL, and the ``DPoP`` header value(s)."""
        if not authorization:
            raise MissingToken(
                "an access token approved for this action is required",
                realm=self.realm,
                required=action.as_authorization_details(),
                offer_bearer=not self.require_dpop,
            )
        scheme, _, credentials = authorization.strip().partition(" ")
        token = credentials.strip()
        if scheme.lower() not in ("bearer", "dpop") or not token:
            raise MissingToken(
                "use the Bearer or DPoP authentication scheme",
                realm=self.realm,
                required=action.as_authorization_details(),
                offer_bearer=not self.require_dpop,
            )
        proofs = [dpop] if isinstance(dpop, str) else list(dpop or [])
        if len(proofs) > 1:
            # RFC 9449 4.3 step 1: exactly one DPoP header.
            raise InvalidDPoPProof(
                "more than one DPoP header", realm=self.realm, required=action.as_authorization_details()
            )
        return self.verify(
            token,
            action,
            scheme="DPoP" if scheme.lower() == "dpop" else "Bearer",
            method=method,
            url=url,
            dpop_proof=proofs[0] if proofs else None,
        )
