"""The errors a resource server answers with. Each renders its own body and headers, with the
``WWW-Authenticate`` challenge of RFC 6750 section 3, RFC 9449 section 7.1 or RFC 9470
section 3, carrying the ``authorization_details`` the call needs::

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

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ciba_service.core.security import b64url_encode
from ciba_service.rfc9449.proof import DPOP_ALGORITHMS

__all__ = [
    "InsufficientAuthorization",
    "InsufficientUserAuthentication",
    "InvalidDPoPProof",
    "InvalidToken",
    "MissingToken",
    "ResourceError",
    "ResourceUnavailable",
    "UseDPoPNonce",
]

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
