"""The resource-server verifier: usable on its own, without the service running.

``TokenVerifier.verify(token, action)`` checks, in order:

1. size and compact-JWS structure;
2. header: ``alg`` on the allow-list, ``typ`` ``at+jwt`` (RFC 9068), no key-carrying headers;
3. signature against the issuer's JWKS (cached, refreshed on unknown ``kid``);
4. the RFC 9068 claims with their JSON types: ``iss``, ``aud``, ``sub``, ``client_id``,
   ``exp``/``iat`` (and ``nbf`` if present) with a small leeway, ``jti``; a lifetime of at
   most ``max_lifetime`` (300 s by default, the most the service issues);
5. sender constraint: a token with ``cnf.jkt`` needs a DPoP proof by that key (RFC 9449),
   carrying a nonce this server handed out when ``dpop_nonces`` is set (RFC 9449 section 9);
   every check of the proof but its single use;
6. optionally the authentication level (RFC 9470: ``acr``, ``auth_time``);
7. the exact action about to be performed, against ``authorization_details`` (RFC 9396),
   each entry within its execution window (``not_before``/``not_after``);
8. optionally that the issuer still calls the token active (RFC 7662 introspection);
9. the DPoP proof's ``jti`` is spent, if a use of the token is left;
10. consumption: each entry at most ``max_uses`` times (default once), per (``jti``, entry),
    so one token carries a multi-step plan that can be run step by step but never repeated.

Matching (:func:`~ciba_service.rs.matching.action_matches`) is specified in
``RESOURCE_SERVER.md``: the action is covered only when it is inside the approval on every
dimension the approval restricts. Refusals are the errors of :mod:`ciba_service.rs.errors`,
which render their own ``WWW-Authenticate`` challenges.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ciba_service import rfc9449 as dpop
from ciba_service.core.replay import InMemoryReplayCache, ReplayCache, ReplayStoreUnavailable
from ciba_service.core.security import b64url_decode, constant_time_eq
from ciba_service.jose.jwks import JwksUnavailable, KeySource
from ciba_service.rfc9449 import MAX_JTI_LENGTH, CheckedProof, DPoPNonces, DPoPProofError, check_proof
from ciba_service.rs.errors import (
    InsufficientAuthorization,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    InvalidToken,
    MissingToken,
    ResourceError,
    ResourceUnavailable,
    UseDPoPNonce,
)
from ciba_service.rs.introspection import TokenIntrospection
from ciba_service.rs.matching import _NO_RULES, FieldRules, RequestedAction, _entry_covers, _TypeRules

__all__ = ["TokenVerifier", "VerifiedToken"]


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
        """The user who approved (``sub``): checked to be a non-empty string, never "None"."""
        subject = self.claims["sub"]
        if not isinstance(subject, str):  # only if built by hand, not by the verifier
            raise TypeError("the token's sub is not a string")
        return subject

    @property
    def client_id(self) -> str:
        """The agent the token was issued to (RFC 9068 ``client_id``)."""
        client_id = self.claims["client_id"]
        if not isinstance(client_id, str):
            raise TypeError("the token's client_id is not a string")
        return client_id


_FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
_HEADER_CACHE_SIZE = 64


class _NonceCheck:
    """One proof's nonce check, given to ``check_proof`` as ``expected_nonce`` (which calls
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


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


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
        max_lifetime: int = 300,
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
            return b64url_decode(part)
        except ValueError:  # binascii.Error and UnicodeEncodeError are ValueErrors
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
        try:
            key = self.keys.key_for(kid)
        except JwksUnavailable as exc:
            raise self._invalid(str(exc)) from None
        if key is None:
            raise self._invalid("token signed by an unknown key")
        if key.alg != alg:
            raise self._invalid(f"key {_shown(kid)} does not sign with {alg}")
        # Decoded (so checked to be base64url, hence ASCII) before the signature, parsed after.
        claims_json = self._decode_part(payload, "payload")
        # The signing input is the token up to its last dot (RFC 7515 5.2), sliced rather
        # than joined again.
        signing_input = token[: len(token) - len(signature) - 1].encode("ascii")
        if not key.verify(signing_input, self._decode_part(signature, "signature")):
            raise self._invalid("signature verification failed")
        # Only headers that signed a valid token are remembered, so forged tokens cannot
        # crowd the issuer's header out of the cache.
        if checked is None and len(self._headers) < _HEADER_CACHE_SIZE:
            self._headers[header] = (alg, kid)
        return self._json(claims_json, "payload")

    # -- 4: claims
    def check_claims(self, claims: Mapping[str, Any], *, now: float | None = None) -> None:
        """RFC 9068 2.2: the required claims, each with its JSON type. A member present with
        the value null is not read as absent: ``nbf: null`` is refused like any non-number."""
        if now is None:
            now = self._clock()
        iss = claims.get("iss")
        if not isinstance(iss, str) or iss != self.issuer:
            raise self._invalid("token issuer is not trusted here")
        # RFC 7519 4.1.3: a string or an array of strings; anything else is no audience.
        aud = claims.get("aud")
        if isinstance(aud, list):
            intended = all(isinstance(a, str) for a in aud) and self.audience in aud
        else:
            intended = isinstance(aud, str) and aud == self.audience
        if not intended:
            raise self._invalid("token is not intended for this resource server")
        # RFC 9068 2.2 requires sub and client_id: a token without a subject must not be
        # accepted as the approval of a user (VerifiedToken.subject was the string "None").
        if not _is_text(claims.get("sub")):
            raise self._invalid("token has no sub")
        if not _is_text(claims.get("client_id")):
            raise self._invalid("token has no client_id")
        exp: Any = claims.get("exp")
        iat: Any = claims.get("iat")
        if not _is_number(exp) or not _is_number(iat):
            raise self._invalid("token lacks exp or iat")
        if now >= exp + self.leeway:
            raise self._invalid("token has expired")
        if "nbf" in claims:
            nbf: Any = claims["nbf"]
            if not _is_number(nbf) or now + self.leeway < nbf:
                raise self._invalid("token is not yet valid")
        if iat > now + self.leeway:
            raise self._invalid("token was issued in the future")
        # The issuer promises at most max_lifetime (300 s): a longer-lived token is not one it
        # minted, or a stolen one would stay useful longer than promised.
        if exp - iat > self.max_lifetime:
            raise self._invalid("token lifetime is longer than accepted")
        # Bounded like a DPoP proof's jti: it becomes part of the replay store's keys.
        jti: Any = claims.get("jti")
        if not _is_text(jti) or len(jti) > MAX_JTI_LENGTH:
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
    ) -> tuple[CheckedProof | None, str | None]:
        """The checked, not yet spent, proof (None for an unbound token) and a fresh nonce to
        send back."""
        presented_as_dpop = scheme is not None and scheme.lower() == "dpop"
        # "cnf": null is not "absent": a binding the issuer wrote but we cannot read is
        # refused below, never taken for a bearer token.
        if "cnf" not in claims:
            if presented_as_dpop:
                raise self._invalid("the token is not DPoP-bound; present it with the Bearer scheme")
            if self.require_dpop:
                raise self._invalid("only DPoP-bound tokens are accepted here")
            return None, None
        cnf = claims["cnf"]
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
            # Every check but single use: the jti is spent only once the token is known to
            # cover the call (_spend_proof), so refused calls take no room in the store.
            proof = check_proof(
                dpop_proof,
                method=method,
                url=url,
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
        return proof, nonce_check.fresh if nonce_check is not None else None

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
        for name in ("not_before", "not_after"):
            # Present means a number: "not_after": null read as absent would make a bounded
            # approval unbounded.
            if name in entry and not _is_number(entry[name]):
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
        ceiling = self.max_uses.get(str(entry.get("type")), 1)
        if "max_uses" not in entry:
            return ceiling
        asked = entry["max_uses"]
        # "max_uses": null is refused, not read as absent: absent means the type's ceiling,
        # so null would grant more uses than an entry that says anything at all.
        if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
            raise self._invalid(f"authorization_details[{index}] has an invalid max_uses")
        return min(asked, ceiling)

    def _entry_limit(self, entry: Mapping[str, Any], index: int) -> int:
        return 1 if not self.max_uses and "max_uses" not in entry else self._limit(entry, index)

    def _used_up(self, claims: Mapping[str, Any]) -> InvalidToken:
        if len(claims["authorization_details"]) == 1:
            return self._invalid("token has already been used")
        return self._invalid("this step of the approved plan has already been used")

    def _spend_proof(
        self, claims: Mapping[str, Any], usable: list[tuple[int, dict[str, Any]]], proof: CheckedProof
    ) -> None:
        # Stops one bound token filling the replay store (after which the in-memory store
        # fails closed, 503 for every user): a proof's jti is recorded only for a call the
        # token covers (matched before this) and only while a use of a covering entry is left
        # (asked without recording, when the store can tell). Calls refused for either reason
        # record nothing, so one token adds at most about one record per approved use.
        jti = claims["jti"]
        left = False
        for index, entry in usable:
            used = self.replay.uses(f"{self._key_prefix}{jti}#{index}")
            if used is None or used < self._entry_limit(entry, index):
                left = True
                break
        if not left:
            if self.replay.uses(proof.replay_key):  # a replayed request: said as before
                raise InvalidDPoPProof("DPoP proof has already been used", realm=self.realm)
            raise self._used_up(claims)
        try:
            proof.spend(self.replay)  # RFC 9449 11.1: a proof works once
        except DPoPProofError as exc:
            raise InvalidDPoPProof(exc.description, realm=self.realm) from None

    def _consume(
        self, claims: Mapping[str, Any], usable: list[tuple[int, dict[str, Any]]]
    ) -> tuple[int, dict[str, Any]]:
        expires_at = math.ceil(claims["exp"]) + self.leeway
        jti = claims["jti"]
        for index, entry in usable:
            limit = self._entry_limit(entry, index)
            if self.replay.consume(f"{self._key_prefix}{jti}#{index}", expires_at=expires_at, limit=limit):
                return index, entry
        raise self._used_up(claims)

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
            proof = dpop_nonce = None
            if dpop_scheme or self.require_dpop:
                proof, dpop_nonce = self._check_binding(
                    claims, token, scheme=scheme, method=method, url=url, dpop_proof=dpop_proof
                )
            if self._step_up:
                self._check_authentication(claims)
            usable = self.match(claims, action, now=now)
            # Checked after the cheap local refusals, before anything is recorded: a revoked
            # token does not burn a step (nor a proof).
            if self.introspection is not None and not self.introspection.is_active(token):
                raise self._invalid("token has been revoked")
            # The proof's jti is spent before the use, so a replayed proof burns no step.
            if proof is not None:
                self._spend_proof(claims, usable, proof)
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
        jkt = proof.jkt if proof is not None else None
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
