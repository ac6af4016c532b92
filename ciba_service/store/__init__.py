"""State behind one interface (see :class:`Store`)."""

from ciba_service.store.base import (
    ApprovalReceipt,
    BackchannelRequest,
    CallbackState,
    Enrollment,
    Intent,
    Passkey,
    RequestStatus,
    Store,
    User,
)
from ciba_service.store.redis import RedisStore, StoreConflict, StoreMisconfigured
from ciba_service.store.sqlite import SQLiteStore

__all__ = [
    "ApprovalReceipt",
    "BackchannelRequest",
    "CallbackState",
    "Enrollment",
    "Intent",
    "Passkey",
    "RedisStore",
    "RequestStatus",
    "SQLiteStore",
    "Store",
    "StoreConflict",
    "StoreMisconfigured",
    "User",
]
