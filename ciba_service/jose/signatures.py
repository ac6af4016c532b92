"""JWS signature encodings (RFC 7518 section 3.4).

A JWS carries an ECDSA signature as the raw concatenation R||S (for ES256, two 32-byte
big-endian integers); OpenSSL (and so ``cryptography``) verifies the DER ``Ecdsa-Sig-Value``.
:func:`raw_to_der` is the one conversion, used by the access-token verifier
(``ciba_service.jose.jwks``) and by the DPoP proof check (``ciba_service.rfc9449.proof``).
"""

from __future__ import annotations

__all__ = ["raw_to_der"]

# The DER INTEGER header of a 32-byte half, by the half's first byte: a high bit set needs a
# leading zero (to keep the INTEGER positive), a zero first byte needs the minimal form (the
# general path). On the verify hot path, so by table rather than by loop: half of all
# signatures take the short header on each half, the rest the long one; 1 in 128 goes slow.
_INTEGER_HEADER: tuple[bytes | None, ...] = tuple(
    None if first == 0 else b"\x02\x21\x00" if first & 0x80 else b"\x02\x20" for first in range(256)
)


def _integer(half: bytes) -> bytes:
    value = half.lstrip(b"\0") or b"\0"
    if value[0] & 0x80:
        value = b"\0" + value  # keep the INTEGER positive
    return b"\x02" + bytes((len(value),)) + value


def raw_to_der(raw: bytes) -> bytes:
    """JWS ES256 R||S (RFC 7518 3.4) to the DER SEQUENCE of two INTEGERs OpenSSL verifies."""
    r, s = raw[:32], raw[32:]
    if len(raw) == 64:
        r_header, s_header = _INTEGER_HEADER[r[0]], _INTEGER_HEADER[s[0]]
        if r_header is not None and s_header is not None:
            integers = r_header + r + s_header + s
            return b"\x30" + bytes((len(integers),)) + integers
    integers = _integer(r) + _integer(s)
    return b"\x30" + bytes((len(integers),)) + integers
