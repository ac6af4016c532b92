"""CIBA 7.1 ``user_code``: a secret the user gave the agent, and the limit on guessing it."""

from __future__ import annotations

from ciba_service.core.errors import InvalidUserCode, MissingUserCode
from ciba_service.core.model import User
from ciba_service.core.security import hash_secret, new_id, verify_secret
from ciba_service.server.context import ServerContext
from ciba_service.store.base import Store

__all__ = ["AttemptLimiter", "UserCodes"]


class AttemptLimiter:
    """Failed attempts per key within a sliding window, kept in the store, so every instance
    sharing the store enforces one limit together: the user_code guessing limit.

    An attempt is recorded *before* the secret is checked (``acquire``) and forgotten after
    if it succeeded (``release``), so concurrent guesses (scrypt takes a while) cannot all
    pass the check and overshoot the limit, and a process dying mid-check leaves a counted
    failure (fails closed)."""

    def __init__(self, store: Store, *, limit: int, window: int, namespace: str) -> None:
        self._store = store
        self._limit = limit
        self._window = window
        self._namespace = namespace

    def acquire(self, key: str, *, now: int) -> str | None:
        """Record one attempt; its id, or None while ``key`` has used up its attempts."""
        attempt_id = new_id(16)
        reserved = self._store.reserve_attempt(
            f"{self._namespace}:{key}", attempt_id=attempt_id, now=now, window=self._window, limit=self._limit
        )
        return attempt_id if reserved else None

    def release(self, key: str, attempt_id: str, *, failed: bool) -> None:
        """Settle an attempt: a failure stays counted, a success is forgotten."""
        if not failed:
            self._store.cancel_attempt(f"{self._namespace}:{key}", attempt_id=attempt_id)


class UserCodes:
    def __init__(self, context: ServerContext) -> None:
        self._context = context
        settings = context.settings
        self.attempts = AttemptLimiter(
            context.store,
            limit=settings.user_code_max_failures,
            window=settings.user_code_failure_window,
            namespace="user_code",
        )

    def check(self, user: User, user_code: str | None) -> None:
        """CIBA 7.1 user_code: a secret the user gave the agent, stopping an agent that only
        knows a username from spamming that user with requests."""
        context = self._context
        if not context.settings.backchannel_user_code_parameter_supported:
            return
        stored = context.store.get_user_code(user.user_id)
        if stored is None:
            return
        if user_code is None:
            raise MissingUserCode("this user requires a user_code")
        # Online guessing: an agent that knows a username could try codes until one works (only
        # scrypt's cost slows it). After user_code_max_failures wrong codes in the window the
        # user's requests are refused *without checking the code*, so a blocked guess learns
        # nothing, not even when it is right. Per user, not per client: a guesser with several
        # clients gets no more tries. The price: a client can lock a user's requests for the
        # window by guessing wrong on purpose; a success neither counts nor resets the count (a
        # reset would hand a guesser a fresh budget whenever the real agent succeeds).
        attempt = self.attempts.acquire(user.user_id, now=context.now())
        if attempt is None:
            raise InvalidUserCode("too many failed user_code attempts for this user; attempts are temporarily blocked")
        valid = False
        try:
            valid = verify_secret(user_code, stored)
        finally:
            self.attempts.release(user.user_id, attempt, failed=not valid)
        if not valid:
            raise InvalidUserCode("user_code is not valid for this user")

    def set(self, user: User, code: str | None) -> None:
        self._context.store.set_user_code(user.user_id, hash_secret(code) if code else None)
