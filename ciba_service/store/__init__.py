"""State behind one interface (see :class:`Store`): SQLite for one instance, Redis for many."""

from ciba_service.store.base import Store
from ciba_service.store.redis import RedisStore, StoreConflict, StoreMisconfigured
from ciba_service.store.sqlite import SQLiteStore

__all__ = ["RedisStore", "SQLiteStore", "Store", "StoreConflict", "StoreMisconfigured"]
