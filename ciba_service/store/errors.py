"""What the stores raise besides the domain results: the same classes whatever the backend, so a
caller never needs to import redis or sqlite3 to tell a retryable outage from a bug."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["StoreConflict", "StoreMisconfigured", "StoreUnavailable", "unavailable_when"]


class StoreUnavailable(Exception):
    """The store cannot serve the call now, for a reason outside the service: the backend is
    unreachable or too slow, out of memory, read-only after a failover, or locked or failing
    on disk. The caller may retry later (an HTTP front end answers 503). The backend's own
    exception is chained as ``__cause__``.

    A timeout can strike after the backend did the step and only its reply was lost, so a retry
    may find the step done. Every guarded step is atomic in both stores: never half done."""


class StoreMisconfigured(Exception):
    """The Redis server is configured in a way that breaks the store's guarantees."""


class StoreConflict(Exception):
    """A write would break a uniqueness or reference rule (an id taken, an unknown user): what
    SQLite reports as an ``IntegrityError``. Nothing was written."""


_C = TypeVar("_C", bound=type)


def unavailable_when(is_unavailable: Callable[[Exception], bool]) -> Callable[[_C], _C]:
    """Class decorator: every public method the class defines raises :class:`StoreUnavailable`
    (the original exception chained) for an exception ``is_unavailable`` accepts, and lets
    every other exception through unchanged. The one place where a store says which of its
    backend's failures are outages."""

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except StoreUnavailable:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
                raise

        return call

    def decorate(cls: _C) -> _C:
        for name, member in list(vars(cls).items()):
            if not name.startswith("_") and inspect.isfunction(member):
                setattr(cls, name, wrap(member))
        return cls

    return decorate
