"""JWS signature encodings (RFC 7518 section 3.4).

A JWS carries an ECDSA signature as the raw concatenation R||S (for ES256, two 32-byte
big-endian integers); OpenSSL (and so ``cryptography``) verifies the DER ``Ecdsa-Sig-Value``.
:func:`raw_to_der` is the one conversion, used by the access-token verifier
(``ciba_service.jose.jwks``) and by the DPoP proof check (``ciba_service.rfc9449.proof``).
"""

from __future__ import annotations

__all__ = ["raw_to_der"]


def raw_to_der(raw: bytes) -> bytes:
    """JWS ES256 R||S (RFC 7518 3.4) to the DER SEQUENCE of two INTEGERs OpenSSL verifies."""
    integers = b""
    for half in (raw[:32], raw[32:]):
        value = half.lstrip(b"\0") or b"\0"
        if value[0] & 0x80:
            value = b"\0" + value  # keep the INTEGER positive
        integers += b"\x02" + bytes((len(value),)) + value
    return b"\x30" + bytes((len(integers),)) + integers
