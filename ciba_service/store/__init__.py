"""State behind one interface (see :class:`Store`)."""

from .base import (
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
from .redis import RedisStore, StoreConflict, StoreMisconfigured
from .sqlite import SQLiteStore

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
