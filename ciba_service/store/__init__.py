"""State behind one interface (see :class:`Store`, and its parts by concern in
:mod:`ciba_service.store.base`): SQLite for one instance, Redis for many. Both raise
:class:`StoreUnavailable` when the backend fails in a way the caller may retry."""

from ciba_service.store.base import (
    AttemptStore,
    AuditStore,
    CallbackStore,
    EnrollmentStore,
    IntentStore,
    OutboxStore,
    PasskeyStore,
    ReceiptStore,
    RefusalStore,
    RequestStore,
    SingleUseStore,
    Store,
    UserCodeStore,
    UserStore,
)
from ciba_service.store.errors import StoreConflict, StoreMisconfigured, StoreUnavailable
from ciba_service.store.redis import RedisStore
from ciba_service.store.sqlite import SQLiteStore

__all__ = [
    "AttemptStore",
    "AuditStore",
    "CallbackStore",
    "EnrollmentStore",
    "IntentStore",
    "OutboxStore",
    "PasskeyStore",
    "ReceiptStore",
    "RedisStore",
    "RefusalStore",
    "RequestStore",
    "SQLiteStore",
    "SingleUseStore",
    "Store",
    "StoreConflict",
    "StoreMisconfigured",
    "StoreUnavailable",
    "UserCodeStore",
    "UserStore",
]
