"""RFC 9449 sections 8 and 9: server-provided DPoP nonces, stateless. The nonce of a time
bucket is an HMAC over the bucket number, so several instances of a server agree on them
without shared state."""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable

from ciba_service.core.security import b64url_encode, constant_time_eq

__all__ = ["MIN_NONCE_KEY_BYTES", "DPoPNonces"]

MIN_NONCE_KEY_BYTES = 32
_NONCE_CONTEXT = b"ciba-service DPoP-Nonce v1|"


class DPoPNonces:
    """Server-provided DPoP nonces (RFC 9449 section 9), stateless: the nonce of a time bucket
    is base64url(HMAC-SHA256(key, bucket number)), so every instance holding ``key`` hands out
    and accepts the same nonces without a shared store.

    Why: without a nonce a proof's freshness rests on its ``iat``, which the signer chooses.
    An attacker who gets at the agent's key for a moment (or at software that signs with it)
    can mint proofs dated in the future and use them later, after losing access (RFC 9449
    section 11.2, pre-generated proofs). A nonce is a value from the server the proof must
    sign, so a proof is valid only in a window the server chose: between one and two
    ``bucket_seconds`` (the current bucket's nonce and the previous one's are accepted).

    ``key``: at least 32 random bytes from the operator, the same on every instance; rotating
    it invalidates outstanding nonces (agents then retry once). ``clock``: injectable.
    """

    def __init__(self, key: bytes, *, bucket_seconds: int = 300, clock: Callable[[], float] = time.time) -> None:
        if not isinstance(key, bytes) or len(key) < MIN_NONCE_KEY_BYTES:
            raise ValueError(f"the DPoP nonce key must be at least {MIN_NONCE_KEY_BYTES} bytes")
        if not isinstance(bucket_seconds, int) or isinstance(bucket_seconds, bool) or bucket_seconds < 1:
            raise ValueError("bucket_seconds must be a positive integer")
        self._key = key
        self.bucket_seconds = bucket_seconds
        self.clock = clock
        # The last few (bucket, nonce) pairs: one HMAC per bucket, not per request. Replaced
        # as a whole (one assignment), so concurrent readers see a consistent tuple.
        self._cache: tuple[tuple[int, str], ...] = ()

    def _bucket(self, now: float | None) -> int:
        return math.floor((self.clock() if now is None else now) / self.bucket_seconds)

    def _nonce(self, bucket: int) -> str:
        cache = self._cache
        for cached_bucket, nonce in cache:
            if cached_bucket == bucket:
                return nonce
        mac = hmac.new(self._key, _NONCE_CONTEXT + bucket.to_bytes(8, "big", signed=True), hashlib.sha256)
        nonce = b64url_encode(mac.digest())
        self._cache = ((bucket, nonce), *cache[:3])
        return nonce

    def current(self, now: float | None = None) -> str:
        """The nonce to hand out now (the ``DPoP-Nonce`` header)."""
        return self._nonce(self._bucket(now))

    def is_valid(self, nonce: str, now: float | None = None) -> bool:
        """True for the current bucket's nonce or the previous bucket's, compared in constant
        time; anything else (older, forged, another key's) is refused."""
        bucket = self._bucket(now)
        current = constant_time_eq(nonce, self._nonce(bucket))
        previous = constant_time_eq(nonce, self._nonce(bucket - 1))  # both compared, always
        return current | previous
