"""Checking client secrets without a per-request KDF.

Secrets the service generates are stored as one SHA-256 (:func:`~ciba_service.core.security.digest_secret`)
and checked in constant time at no noticeable cost. A client whose operator chose its secret
may still have a slow ``scrypt$`` hash; for those:

- a successful check is remembered per (client, stored hash, digest of the presented secret)
  for a bounded time, so a polling agent pays the KDF once, not on every poll;
- failures are counted per client in a sliding window; past the limit a slow check is not run
  at all (answered as a failure), so a caller who knows a client id but not its secret cannot
  keep a core busy with scrypt. A secret remembered as good still passes during a lockout, so
  the real agent keeps working while someone guesses at its id.

A wrong secret therefore never costs more CPU than a right one: both cost at most one KDF run,
and wrong ones stop costing anything once the client's failure budget is spent.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from ciba_service.core.security import digest_secret, is_slow_hash, sha256_b64url, verify_secret

__all__ = ["ClientSecretVerifier"]

# Unknown clients are checked against this, so "no such client" costs what a wrong secret of a
# fast-hashed client costs (no timing oracle for client ids, and no KDF to burn).
_DUMMY = digest_secret("dummy-secret-for-timing")


class ClientSecretVerifier:
    def __init__(
        self,
        *,
        success_ttl: float = 300.0,
        max_cached: int = 10_000,
        failure_limit: int = 10,
        failure_window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._success_ttl = success_ttl
        self._max_cached = max_cached
        self._failure_limit = failure_limit
        self._failure_window = failure_window
        self._clock = clock
        self._good: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def verify(self, client_id: str, secret: str, stored: str | None) -> bool:
        """Whether ``secret`` is the secret of ``client_id`` (``stored``: its configured hash,
        None or empty for an unknown client or one without a secret)."""
        if not stored:
            verify_secret(secret, _DUMMY)
            return False
        if not is_slow_hash(stored):
            return verify_secret(secret, stored)
        key = (client_id, stored, sha256_b64url(secret))
        now = self._clock()
        with self._lock:
            expires = self._good.get(key)
            if expires is not None and expires > now:
                self._good.move_to_end(key)
                return True
            if self._locked_out(client_id, now):
                # No KDF for a client whose failure budget is spent (CPU exhaustion).
                return False
        valid = verify_secret(secret, stored)
        with self._lock:
            if valid:
                self._good[key] = now + self._success_ttl
                self._good.move_to_end(key)
                while len(self._good) > self._max_cached:
                    self._good.popitem(last=False)
            else:
                self._failures.setdefault(client_id, deque()).append(now)
                # Bounded: one deque per configured client at most (unknown ids never get here).
        return valid

    def _locked_out(self, client_id: str, now: float) -> bool:
        failures = self._failures.get(client_id)
        if not failures:
            return False
        while failures and failures[0] <= now - self._failure_window:
            failures.popleft()
        return len(failures) >= self._failure_limit
