"""JOSE building blocks shared by the service, the resource-server library and the agent side.

- :mod:`~ciba_service.jose.jwk`: a P-256 public key as a JWK, and its RFC 7638 thumbprint.
- :mod:`~ciba_service.jose.jwks`: key sets parsed into algorithm-bound verification keys, and
  the one JWKS cache (refresh on unknown ``kid``, rate-limited).
- :mod:`~ciba_service.jose.signatures`: the JWS ECDSA R||S to DER conversion.
- :mod:`~ciba_service.jose.client_assertion`: JWTs that clients sign (RFC 7523, SPIFFE
  JWT-SVIDs, signed authentication requests), verified with PyJWT.

The resource server and the agent side verify and make their JWTs without PyJWT; so the names
of ``client_assertion`` (which imports it) are loaded on first use rather than when this
package is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ciba_service.core.lazy import load_on_use
from ciba_service.jose.jwk import jwk_thumbprint, public_jwk
from ciba_service.jose.jwks import JwksCache, JwksUnavailable, KeySource, StaticKeys, VerificationKey, parse_jwks
from ciba_service.jose.signatures import raw_to_der

if TYPE_CHECKING:
    from ciba_service.jose.client_assertion import (
        ASSERTION_ALGORITHMS,
        ClientJwtError,
        ExpiredJwt,
        SpiffeBundle,
        verify_client_jwt,
    )

__all__ = [
    "ASSERTION_ALGORITHMS",
    "ClientJwtError",
    "ExpiredJwt",
    "JwksCache",
    "JwksUnavailable",
    "KeySource",
    "SpiffeBundle",
    "StaticKeys",
    "VerificationKey",
    "jwk_thumbprint",
    "parse_jwks",
    "public_jwk",
    "raw_to_der",
    "verify_client_jwt",
]

__getattr__ = load_on_use(
    __name__,
    globals(),
    {
        "ASSERTION_ALGORITHMS": "client_assertion",
        "ClientJwtError": "client_assertion",
        "ExpiredJwt": "client_assertion",
        "SpiffeBundle": "client_assertion",
        "verify_client_jwt": "client_assertion",
    },
)
