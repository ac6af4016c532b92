"""State behind one interface (see :class:`Store`)."""

from .base import (
    ApprovalReceipt,
    BackchannelRequest,
    Enrollment,
    Passkey,
    RequestStatus,
    Store,
    User,
)
from .sqlite import SQLiteStore

__all__ = [
    "ApprovalReceipt",
    "BackchannelRequest",
    "Enrollment",
    "Passkey",
    "RequestStatus",
    "SQLiteStore",
    "Store",
    "User",
]
