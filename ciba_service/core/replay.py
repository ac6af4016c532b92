"""Consumption state for the resource server: how often a key (a token's plan step, a DPoP
proof's ``jti``) has been used, behind one atomic operation.

``ReplayCache.consume(key, expires_at=..., limit=n)`` records one use of ``key`` and answers
whether that use is within ``limit``; the record is kept until ``expires_at`` (epoch seconds),
after which the token or proof it protects is refused on its own time claims anyway.

Two implementations:

- :class:`InMemoryReplayCache`: one process; bounded, pruned as records expire.
- :class:`RedisReplayCache`: shared by every verifier instance pointed at the same Redis; one
  Lua script makes the check-and-count atomic, and each key expires with its token.

A store that cannot answer raises :class:`ReplayStoreUnavailable`; the verifier refuses the
call (fail closed) rather than accept a use it could not record.
"""

from __future__ import annotations

import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "InMemoryReplayCache",
    "RedisReplayCache",
    "ReplayCache",
    "ReplayStoreUnavailable",
]


class ReplayStoreUnavailable(Exception):
    """The consumption store could not record a use (Redis down, memory bound reached)."""


class ReplayCache(ABC):
    """Atomic, expiring use counters."""

    @abstractmethod
    def consume(self, key: str, *, expires_at: int, limit: int = 1) -> bool:
        """Record one use of ``key``, kept until ``expires_at`` (epoch seconds).

        True when this use is within ``limit`` (the first ``limit`` calls for a key); False
        once the key has been used ``limit`` times. A refused call records nothing. Atomic:
        of any number of concurrent calls for one key, exactly ``limit`` succeed.
        """


class InMemoryReplayCache(ReplayCache):
    """Counters in a dict under a lock. ``max_entries`` bounds memory: when that many records
    are still live, further consumption fails closed with :class:`ReplayStoreUnavailable`."""

    def __init__(self, clock: Callable[[], float] = time.time, *, max_entries: int = 1_000_000) -> None:
        self._uses: dict[str, list[int]] = {}  # key -> [uses, expires_at]
        self._lock = threading.Lock()
        self._clock = clock
        self._max_entries = max_entries
        self._next_prune = 0.0

    def _prune(self, now: float) -> None:
        self._uses = {k: v for k, v in self._uses.items() if v[1] > now}
        self._next_prune = now + 30

    def consume(self, key: str, *, expires_at: int, limit: int = 1) -> bool:
        now = self._clock()
        with self._lock:
            if now >= self._next_prune:
                self._prune(now)
            record = self._uses.get(key)
            if record is None or record[1] <= now:  # unseen, or expired and not yet pruned
                if limit < 1:
                    return False
                if len(self._uses) >= self._max_entries:
                    self._prune(now)
                    if len(self._uses) >= self._max_entries:
                        raise ReplayStoreUnavailable("replay cache is full")
                # A record lives at least a second: a caller passing an expiry in the past
                # must not get a key that is fresh again on the next call.
                self._uses[key] = [1, expires_at if expires_at > now else int(now) + 1]
                return True
            if record[0] >= limit:
                return False
            record[0] += 1
            return True

    def __len__(self) -> int:
        return len(self._uses)


# Redis --------------------------------------------------------------------------------------
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
    def __call__(self, keys: list[str], args: list[int]) -> Any: ...


class RedisClient(Protocol):
    """What :class:`RedisReplayCache` needs of a client: ``redis.Redis`` satisfies it."""

    def register_script(self, script: str) -> Any: ...


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
            return bool(self._script(keys=[self._prefix + key], args=[limit, ttl]))
        except self._errors as exc:
            raise ReplayStoreUnavailable(f"replay store unavailable: {type(exc).__name__}") from None
