"""Consumption state for the resource server: how often a key (a token's plan step, a DPoP
proof's ``jti``) has been used, behind one atomic operation.

``ReplayCache.consume(key, expires_at=..., limit=n)`` records one use of ``key`` and answers
whether that use is within ``limit``; the record is kept until ``expires_at`` (epoch seconds),
after which the token or proof it protects is refused on its own time claims anyway.

Here, the interface and the standard-library implementation:

- :class:`InMemoryReplayCache`: one process; bounded, pruned as records expire.

The resource server's shared implementation, ``ciba_service.rs.replay.RedisReplayCache``, keeps
the counts in Redis for every verifier instance pointed at the same server (it lives with the
resource server, not here: core needs no database client).

A store that cannot answer raises :class:`ReplayStoreUnavailable`; the verifier refuses the
call (fail closed) rather than accept a use it could not record.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = [
    "InMemoryReplayCache",
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

    def uses(self, key: str) -> int | None:
        """How often ``key`` has been used so far (0 if never, or if its record expired),
        without recording anything; None when this store cannot tell (the default).

        Advisory, not atomic with :meth:`consume`: the resource server asks it before it
        records a DPoP proof's ``jti`` for a token whose uses are all spent, so that such
        calls add no record (see ``TokenVerifier``). A store that answers None still works;
        it only loses that protection.
        """
        return None


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

    def uses(self, key: str) -> int:
        now = self._clock()
        with self._lock:
            record = self._uses.get(key)
            return 0 if record is None or record[1] <= now else record[0]

    def __len__(self) -> int:
        return len(self._uses)
