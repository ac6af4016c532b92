"""The errors a resource server answers with. Each renders its own body and headers, with the
``WWW-Authenticate`` challenge of RFC 6750 section 3, RFC 9449 section 7.1 or RFC 9470
section 3, carrying the ``authorization_details`` the call needs::

    ResourceError
    ├── InvalidRequest                   400 invalid_request (the call cannot be described as an action)
    ├── MissingToken                     401, no error code (RFC 6750 3.1)
    ├── InvalidToken                     401 invalid_token
    ├── InvalidDPoPProof                 401 invalid_dpop_proof (DPoP scheme)
    │   └── UseDPoPNonce                 401 use_dpop_nonce, with a ``DPoP-Nonce`` header
    ├── InsufficientUserAuthentication   401 insufficient_user_authentication (RFC 9470)
    ├── InsufficientAuthorization        403 insufficient_scope
    └── ResourceUnavailable              503, a store or the introspection endpoint is down

Every refusal renders: the ``authorization_details`` it echoes is kept as a plain-JSON copy
(left out if it is not JSON), the challenge carries it only up to :data:`MAX_CHALLENGE_DETAILS`
characters and the body up to :data:`MAX_BODY_DETAILS` bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ciba_service.core.security import b64url_encode
from ciba_service.rfc9449.proof import DPOP_ALGORITHMS

__all__ = [
    "MAX_BODY_DETAILS",
    "MAX_CHALLENGE_DETAILS",
    "InsufficientAuthorization",
    "InsufficientUserAuthentication",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "MissingToken",
    "ResourceError",
    "ResourceUnavailable",
    "UseDPoPNonce",
]

_UNSAFE_IN_QUOTED = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")
# The authorization_details auth-param (base64url) is left out of WWW-Authenticate beyond
# this many characters: a 200 KB request field made a 533 KB header, which proxies answer with
# 502 (nginx's default limit for all response headers is 4 to 8 KB). The body keeps its copy
# up to MAX_BODY_DETAILS bytes of JSON.
MAX_CHALLENGE_DETAILS = 4096
MAX_BODY_DETAILS = 16_384


def _quoted(value: str) -> str:
    # RFC 6750 3: error_description is %x20-21 / %x23-5B / %x5D-7E, so no quote, no
    # backslash, nothing outside printable ASCII (values may echo a token's header).
    return '"' + _UNSAFE_IN_QUOTED.sub("?", value) + '"'


def _plain_json(value: Mapping[str, Any]) -> dict[str, Any] | None:
    """A plain-JSON copy of ``value``, or None when it is not JSON (NaN, Decimal, bytes, a
    lone surrogate, a cycle, ...). Strict, as Starlette's JSONResponse is (allow_nan=False,
    UTF-8): a value that copies here renders there, so a refusal never becomes a 500."""
    try:
        text = json.dumps(dict(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        text.encode("utf-8")
        copy: dict[str, Any] = json.loads(text)
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return None
    return copy


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
        # Lone surrogates (from a hostile value quoted in a message) would fail the body's
        # UTF-8 encoding: replaced, so the refusal still renders.
        self.description = description.encode("utf-8", "replace").decode("utf-8")
        self.realm = realm
        self.scheme = scheme
        self.required = required

    @property
    def required(self) -> dict[str, Any] | None:
        return self._required

    @required.setter
    def required(self, value: Mapping[str, Any] | None) -> None:
        # Copied as plain JSON when set (or left out if it is not JSON), so rendering the
        # refusal cannot fail, whoever built the value.
        self._required = _plain_json(value) if value is not None else None
        self._challenge_details: str | None = None
        self._body_details: list[dict[str, Any]] | None = None
        if self._required is not None:
            compact = json.dumps([self._required], separators=(",", ":"), ensure_ascii=True)
            if len(compact) <= MAX_BODY_DETAILS:  # ASCII: characters are bytes
                self._body_details = [self._required]
            if len(compact) <= MAX_CHALLENGE_DETAILS:  # else its encoding, longer, is too long
                encoded = b64url_encode(compact.encode("ascii"))
                if len(encoded) <= MAX_CHALLENGE_DETAILS:
                    self._challenge_details = encoded

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
        if self._challenge_details is not None:
            params.append(("authorization_details", _quoted(self._challenge_details)))
        return f"{scheme} " + ", ".join(f"{name}={value}" for name, value in params)

    def www_authenticate(self) -> str | None:
        return self._challenge(self.scheme, with_error=True)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "error_description": self.description}
        if self._body_details is not None:
            # Tells the agent which authorization_details to request so it need not guess.
            body["authorization_details"] = self._body_details
        return body

    def headers(self) -> dict[str, str]:
        headers = {"Cache-Control": "no-store"}
        challenge = self.www_authenticate()
        if challenge is not None:
            headers["WWW-Authenticate"] = challenge
        return headers


class InvalidRequest(ResourceError):
    """RFC 6750 3.1 ``invalid_request``: the call cannot be checked against an approval (the
    resource server could not describe it as an ``authorization_details`` entry, e.g. the
    request body held a value JSON cannot carry)."""

    error = "invalid_request"
    status_code = 400


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
