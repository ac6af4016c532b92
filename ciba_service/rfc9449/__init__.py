"""RFC 9449 DPoP: proofs of possession for sender-constrained access tokens.

Framework-free; used by the resource-server verifier (``ciba_service.rs``), by the token
endpoint that binds tokens to the agent's key (``cnf.jkt``), and by agents that make proofs:

- :mod:`~ciba_service.rfc9449.proof`: :func:`create_proof` and :func:`verify_proof`
  (section 4.3), :func:`check_proof` (the same without spending the ``jti``, which the
  returned :class:`CheckedProof` spends later), :class:`DPoPProofError`,
  :class:`UseDPoPNonce`, :func:`access_token_hash`.
- :mod:`~ciba_service.rfc9449.nonce`: :class:`DPoPNonces`, stateless server-provided nonces
  (sections 8 and 9).

:func:`public_jwk` and :func:`jwk_thumbprint` (RFC 7517, RFC 7638: the ``jkt`` of section 6)
live in :mod:`ciba_service.jose.jwk` and are named here too, as an agent needs them with
:func:`create_proof`.
"""

from ciba_service.jose.jwk import jwk_thumbprint, public_jwk
from ciba_service.rfc9449.nonce import MIN_NONCE_KEY_BYTES, DPoPNonces
from ciba_service.rfc9449.proof import (
    DPOP_ALGORITHMS,
    DPOP_TYP,
    MAX_JTI_LENGTH,
    MAX_PROOF_BYTES,
    CheckedProof,
    DPoPProofError,
    UseDPoPNonce,
    access_token_hash,
    check_proof,
    create_proof,
    verify_proof,
)

__all__ = [
    "DPOP_ALGORITHMS",
    "DPOP_TYP",
    "MAX_JTI_LENGTH",
    "MAX_PROOF_BYTES",
    "MIN_NONCE_KEY_BYTES",
    "CheckedProof",
    "DPoPNonces",
    "DPoPProofError",
    "UseDPoPNonce",
    "access_token_hash",
    "check_proof",
    "create_proof",
    "jwk_thumbprint",
    "public_jwk",
    "verify_proof",
]
