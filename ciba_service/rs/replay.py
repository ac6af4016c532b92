"""Consumption state shared by every resource-server instance: :class:`RedisReplayCache`, a
:class:`~ciba_service.core.replay.ReplayCache` in Redis. One Lua script makes the
check-and-count atomic, and each key expires with the token (or proof) it protects.

A Redis server that cannot answer raises :class:`~ciba_service.core.replay.ReplayStoreUnavailable`;
the verifier then refuses the call (fail closed) rather than accept a use it could not record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from ciba_service.core.replay import ReplayCache, ReplayStoreUnavailable

__all__ = ["RedisClient", "RedisReplayCache"]


# KEYS[1] the counter; ARGV[1] the limit; ARGV[2] seconds to keep it. GET, compare and INCR run
# as one script, so concurrent verifiers cannot both see "used limit-1 times" and both pass.
_CONSUME_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used >= tonumber(ARGV[1]) then
  return 0
end
redis.call('INCR', KEYS[1])
if used == 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 1
"""


class _Script(Protocol):
    def __call__(self, keys: list[bytes], args: list[int]) -> Any: ...


class RedisClient(Protocol):
    """What :class:`RedisReplayCache` needs of a client: ``redis.Redis`` satisfies it."""

    def register_script(self, script: str) -> Any: ...

    def get(self, name: bytes) -> Any: ...


class RedisReplayCache(ReplayCache):
    """Counters in Redis, shared by every verifier instance that uses the same server.

    Keys are ``prefix + key`` and expire when the token (or proof) they protect expires. The
    expiry is computed with this process's clock and sent as a relative TTL, so a Redis server
    whose clock is off cannot shorten it.
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "ciba:rs:used:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._script: _Script = client.register_script(_CONSUME_LUA)
        self._prefix = prefix
        self._clock = clock
        try:
            import redis

            self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        except ImportError:  # pragma: no cover - a duck-typed client without redis-py
            self._errors = (OSError,)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "ciba:rs:used:") -> RedisReplayCache:
        """``redis://host:port/db`` (needs the ``redis`` package)."""
        import redis

        return cls(redis.Redis.from_url(url), prefix=prefix)

    def consume(self, key: str, *, expires_at: int, limit: int = 1) -> bool:
        if limit < 1:
            return False
        ttl = max(1, math.ceil(expires_at - self._clock()))
        try:
            return bool(self._script(keys=[self._name(key)], args=[limit, ttl]))
        except self._errors as exc:
            raise ReplayStoreUnavailable(f"replay store unavailable: {type(exc).__name__}") from None

    def uses(self, key: str) -> int:
        try:
            value = self._client.get(self._name(key))
        except self._errors as exc:
            raise ReplayStoreUnavailable(f"replay store unavailable: {type(exc).__name__}") from None
        try:
            return int(value) if value is not None else 0
        except (TypeError, ValueError):  # not a counter of ours: fail closed
            raise ReplayStoreUnavailable("replay store holds an unexpected value") from None

    def _name(self, key: str) -> bytes:
        # The key is encoded here, not by redis-py, which encodes strictly: a lone surrogate
        # in a key (from a value a caller did not check) raised UnicodeEncodeError, a 500
        # that also escaped the fail-closed 503. "surrogatepass" is one-to-one and equal to
        # UTF-8 for every valid string, so existing keys are unchanged.
        return (self._prefix + key).encode("utf-8", "surrogatepass")
