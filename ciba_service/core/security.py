"""Named security primitives: identifiers, base64url, constant-time comparison, secret hashing."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

__all__ = [
    "MIN_ID_BYTES",
    "auth_req_id_key",
    "b64url_decode",
    "b64url_decode_lenient",
    "b64url_encode",
    "constant_time_eq",
    "digest_secret",
    "hash_secret",
    "is_slow_hash",
    "new_id",
    "sha256_b64url",
    "time_prefix",
    "verify_secret",
]

# CIBA 7.3 asks for auth_req_id to be unguessable; we take 128 bits as the floor for every
# bearer-like identifier (auth_req_id, approval page id, enrollment token, jti).
MIN_ID_BYTES = 16


def new_id(nbytes: int = 32) -> str:
    """A random URL-safe identifier of ``nbytes`` bytes of entropy (at least 128 bits)."""
    if nbytes < MIN_ID_BYTES:
        raise ValueError(f"identifiers need at least {MIN_ID_BYTES} bytes of entropy")
    return secrets.token_urlsafe(nbytes)


def new_ids(*sizes: int) -> list[str]:
    """As many :func:`new_id` as ``sizes`` says (bytes of entropy each), from one read of the
    system's random source instead of one per identifier. Each is as random and as long as
    ``new_id(size)`` gives."""
    if any(size < MIN_ID_BYTES for size in sizes):
        raise ValueError(f"identifiers need at least {MIN_ID_BYTES} bytes of entropy")
    raw = secrets.token_bytes(sum(sizes))
    ids, start = [], 0
    for size in sizes:
        ids.append(base64.urlsafe_b64encode(raw[start : start + size]).rstrip(b"=").decode("ascii"))
        start += size
    return ids


# Identifiers a store indexes start with their creation time: 12 lowercase hex digits of
# milliseconds since the epoch (until the year 10889), then the random part. A B-tree index on
# random keys takes every insert somewhere else, into a page of its own (~6 index pages written
# and cached per request); on time-ordered keys the inserts go to the end of the index, into the
# same few pages (README "Performance"). The prefix is not secret and adds no entropy: an id's
# creation time is no secret from whoever holds it; the random part alone is the bearer value's
# strength (MIN_ID_BYTES and up).
_TIME_DIGITS = 12
_HEX = frozenset("0123456789abcdef")


def time_prefix() -> str:
    """The creation-time prefix of an identifier made now: 12 hex digits of milliseconds."""
    return f"{time.time_ns() // 1_000_000:0{_TIME_DIGITS}x}"


def auth_req_id_key(auth_req_id: str) -> str:
    """The store's key for an ``auth_req_id``, which it keeps only as a digest (a copy of the
    store holds no redeemable id): SHA-256 of the whole id, behind the id's creation-time prefix
    when it has one (:func:`time_prefix` and 32 random bytes: 12 + 43 characters), so the index
    of keys grows at one end. An id without one (made before ids had it) is keyed by its
    digest alone; the two forms have different lengths, so neither can stand for the other."""
    prefix = auth_req_id[:_TIME_DIGITS]
    if len(auth_req_id) == _TIME_DIGITS + 43 and _HEX.issuperset(prefix):
        return prefix + sha256_b64url(auth_req_id)
    return sha256_b64url(auth_req_id)


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# base64url to the standard alphabet in one pass; the standard alphabet's own "+", "/" and "="
# become "!", which strict decoding refuses (see b64url_decode).
_TO_STANDARD_ALPHABET = bytes.maketrans(b"-_+/=", b"+/!!!")
_PADDING = (b"", None, b"==", b"=")
# The last character of an unpadded encoding carries unused low bits (4 when the length is
# 2 mod 4, 2 when it is 3 mod 4) that a canonical encoding sets to zero; these are the
# characters whose unused bits are zero, per length mod 4.
_CANONICAL_LAST = ("", "", "AQgw", "AEIMQUYcgkosw048")


def b64url_decode(part: str) -> bytes:
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


def b64url_decode_lenient(data: str) -> bytes:
    """Lenient base64url: padding optional, a final character with non-zero unused bits
    accepted, and characters outside the alphabet skipped (``base64.urlsafe_b64decode``).

    For values whose spelling carries no meaning: JWK members, DPoP proof segments (checked
    against the base64url alphabet first), the softauthn key file, stored secret hashes. A
    value whose exact string matters (a token compared or cached as a string) is decoded with
    :func:`b64url_decode`, which refuses every spelling but the canonical one."""
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def sha256_b64url(data: bytes | str) -> str:
    # surrogatepass, as in constant_time_eq: UTF-8 for every valid string, and no exception
    # (a 500) for a hostile one holding a lone surrogate.
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return b64url_encode(hashlib.sha256(raw).digest())


def constant_time_eq(a: bytes | str, b: bytes | str) -> bool:
    """Compare secrets without leaking the length of the common prefix through timing.

    Never raises for a ``str``: a lone UTF-16 surrogate (which a lenient JSON parser lets
    through from ``"\\ud800"``) is encoded with ``surrogatepass``. That encoding is
    one-to-one and agrees with UTF-8 on every valid string, so the answer is unchanged for
    valid input, and hostile input is simply unequal instead of an exception (a 500)."""
    ab = a.encode("utf-8", "surrogatepass") if isinstance(a, str) else a
    bb = b.encode("utf-8", "surrogatepass") if isinstance(b, str) else b
    return hmac.compare_digest(ab, bb)


# scrypt parameters (RFC 7914): N=2**14, r=8, p=1 is the interactive-login recommendation;
# client secrets are high-entropy, so the cost mainly protects a leaked configuration file.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """Hash a client secret for storage: ``scrypt$N$r$p$salt$hash`` (base64url parts)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64url_encode(salt)}${b64url_encode(digest)}"


# Secrets this service generates carry 256 bits of entropy: no dictionary or brute force can
# reach them, so a slow KDF adds nothing but ~70 ms of CPU to every authenticated request (and
# lets anyone who knows a client id burn it). One SHA-256 is as safe for them, and ~10,000x
# cheaper; Keycloak and node-oidc-provider do not stretch client secrets either. scrypt stays
# for secrets a person chose (user_code, a client secret an operator typed).
_DIGEST_SCHEME = "sha256"


def digest_secret(secret: str) -> str:
    """Store a generated, high-entropy secret: ``sha256$<base64url SHA-256>``."""
    return f"{_DIGEST_SCHEME}${sha256_b64url(secret)}"


def is_slow_hash(stored: str) -> bool:
    """Whether checking against ``stored`` runs the KDF (an operator-chosen secret's hash)."""
    return stored.startswith("scrypt$")


def verify_secret(secret: str, stored: str) -> bool:
    """Check ``secret`` against a :func:`digest_secret` or :func:`hash_secret` string in
    constant time."""
    scheme, _, expected_digest = stored.partition("$")
    if scheme == _DIGEST_SCHEME:
        return constant_time_eq(sha256_b64url(secret), expected_digest)
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            secret.encode("utf-8"),
            salt=b64url_decode_lenient(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=32,
        )
    except ValueError:
        return False
    return constant_time_eq(digest, b64url_decode_lenient(expected))
