"""SQLite store: the embedded default. WAL journal, one connection guarded by a lock; every
guarded transition is a single ``UPDATE ... WHERE <old state>`` so it is atomic.

Durability (README, "Performance"): every call returns only after its transaction committed, so
whatever the service acknowledged survives ``kill -9`` of the process (a committed WAL frame is in
the operating system's page cache, and the next opening of the file replays it). The WAL is
flushed to the disk (fsync) at the commit of a user's decision (:meth:`SQLiteStore.decide`) and of
a token's issue (:meth:`SQLiteStore.mark_issued`), and of an operator's audited change (a user
disabled, a passkey revoked): those also survive a power cut or an OS crash.
Other writes (new requests and their outbox entries, polls, single-use records, attempt counts)
are flushed with the next of those or at the next checkpoint: a power cut, unlike a process kill,
may roll back the last of them (SQLite's ``synchronous=NORMAL`` in WAL mode). One fsync per
request would cap the service at the disk's fsync rate (a few hundred a second on this kind of
machine) for no protection against the failure a server process actually has: being killed.

The schema is created with ``CREATE ... IF NOT EXISTS`` when a store opens, so a database made by
an earlier version gains the tables added since (``outbox``, ``refusals``) the first time it is
opened; no existing table has changed shape.

A database another connection keeps locked past the busy timeout, a full disk and disk I/O
errors are raised as :class:`StoreUnavailable`, the ``sqlite3.OperationalError`` chained."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import orjson

from ciba_service.core.model import (
    ApprovalReceipt,
    AuditRecord,
    BackchannelRequest,
    CallbackState,
    ChannelRefusal,
    Enrollment,
    Intent,
    OutboxEntry,
    Passkey,
    RequestStatus,
    User,
)
from ciba_service.store.base import Store
from ciba_service.store.errors import unavailable_when

__all__ = ["SQLiteStore", "deferred_requests"]

# Primary result codes (the low byte of an extended code) of the failures a caller may retry:
# another connection holds the lock past the busy timeout (BUSY, LOCKED), the disk fails (IOERR)
# or is full (FULL).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_IOERR = 10
_SQLITE_FULL = 13
_RETRYABLE = frozenset({_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_IOERR, _SQLITE_FULL})


def _dumps(value: Any) -> str:
    """JSON text of a request's columns, with orjson on the hot path (a fifth of the standard
    library's time); the standard library for what orjson refuses (integers past 64 bits)."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        return json.dumps(value)


# New requests held back for a group commit: while a list is set here (in the task of one
# request, by web/hot_path.py), SQLiteStore.add_request appends to it instead of writing, and the
# caller commits what it holds with SQLiteStore.add_requests before answering.
deferred_requests: ContextVar[list[tuple[BackchannelRequest, OutboxEntry | None]] | None] = ContextVar(
    "ciba_deferred_requests", default=None
)


def _unavailable(exc: Exception) -> bool:
    """A failure of the database file the caller may retry, not a bug (a bad statement or schema
    error is an ``OperationalError`` too, with another code)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _RETRYABLE


_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    user_handle BLOB NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS passkeys (
    credential_id BLOB PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(user_id),
    public_key BLOB NOT NULL,
    sign_count INTEGER NOT NULL,
    transports TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS passkeys_user ON passkeys(user_id);
CREATE TABLE IF NOT EXISTS enrollments (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(user_id),
    expires_at INTEGER NOT NULL,
    challenge BLOB,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    auth_req_id_hash TEXT NOT NULL UNIQUE,
    approval_id TEXT NOT NULL UNIQUE,
    client_id TEXT NOT NULL,
    client_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    binding_message TEXT,
    authorization_details TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    interval INTEGER NOT NULL,
    nonce TEXT NOT NULL,
    status TEXT NOT NULL,
    last_poll_at INTEGER,
    decided_at INTEGER,
    receipt_id TEXT,
    token_jti TEXT,
    upstream TEXT NOT NULL DEFAULT '{}',
    callback_state TEXT NOT NULL DEFAULT 'none',
    revoked INTEGER NOT NULL DEFAULT 0
);
-- The issued requests by their token's jti (revocation, introspection): only issued requests are
-- in it, so a new request writes no entry (partial; replaces the full index requests_token_jti).
DROP INDEX IF EXISTS requests_token_jti;
CREATE INDEX IF NOT EXISTS requests_issued_jti ON requests(token_jti) WHERE token_jti IS NOT NULL;
-- The sweep's ping/push deliveries due (pending_notifications): only undelivered ping/push
-- requests are in it, so the sweep reads the rows due, not the table (poll requests never enter).
CREATE INDEX IF NOT EXISTS requests_notifications_due ON requests(status, expires_at)
    WHERE callback_state = 'none' AND json_extract(upstream, '$.delivery') IN ('ping', 'push');
-- Keycloak mode's expiry sweep (expired_pending).
CREATE INDEX IF NOT EXISTS requests_pending_expiry ON requests(expires_at)
    WHERE status = 'pending' AND callback_state = 'none';
CREATE TABLE IF NOT EXISTS used_once (
    key TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT NOT NULL,
    attempt_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (key, attempt_id)
);
CREATE TABLE IF NOT EXISTS user_codes (
    user_id TEXT PRIMARY KEY REFERENCES users(user_id),
    code_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    intent_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    login_hint TEXT NOT NULL,
    scope TEXT NOT NULL,
    binding_message TEXT,
    authorization_details TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
-- The user's notices not yet delivered, one per request, written in the request's transaction;
-- deleted once delivered, and with their request.
CREATE TABLE IF NOT EXISTS outbox (
    request_id TEXT PRIMARY KEY REFERENCES requests(request_id) ON DELETE CASCADE,
    notice TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    claimed_until INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_claimed_until ON outbox(claimed_until);
-- Keycloak mode: why the channel refused an intent, until the forwarding call takes it.
CREATE TABLE IF NOT EXISTS refusals (
    intent_id TEXT PRIMARY KEY,
    error TEXT NOT NULL,
    error_description TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    receipt_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    credential_id BLOB NOT NULL,
    credential_public_key BLOB NOT NULL,
    preimage BLOB NOT NULL,
    challenge TEXT NOT NULL,
    assertion TEXT NOT NULL,
    rp_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""

# Operators' actions on users and passkeys (the audit), kept for good.
_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    record_id TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
"""


# The WAL is checkpointed by _Checkpointer every _CHECKPOINT_EVERY seconds; a commit checkpoints
# it itself only past this many pages (~40 MB: a bound should the thread fall behind, or another
# process load many rows at once; such a commit waits for the disk).
_CHECKPOINT_EVERY = 1.0
_CACHE_KIB = 64 * 1024
_AUTOCHECKPOINT_PAGES = 10_000


class _Checkpointer:
    """A thread with its own connection that checkpoints the WAL once a second, in two steps:

    1. a PASSIVE checkpoint beside the serving connection: the bulk of the copying and the disk
       waits, while requests go on (sqlite3 releases the GIL meanwhile);
    2. another under the store's lock, so no write of this process lands meanwhile: it copies only
       what was written during step 1, and completes, so the next write starts the WAL over from
       its beginning. Without it, a steady stream of writes never lets a checkpoint finish, the
       WAL grows to the automatic checkpoint's threshold, and one request pays for the lot."""

    def __init__(self, path: str, *, busy_timeout: float, lock: threading.RLock) -> None:
        self._path = path
        self._timeout = busy_timeout
        self._lock = lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(_CHECKPOINT_EVERY):
                try:
                    self.checkpoint(db)
                except sqlite3.Error:  # busy (another process checkpoints), or a failing disk: next time
                    continue
        finally:
            db.close()

    def checkpoint(self, db: sqlite3.Connection) -> None:
        """Steps 1 and 2 (above), on ``db``, a connection to the store's file."""
        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        with self._lock:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@unavailable_when(_unavailable)
class SQLiteStore(Store):
    """State in one SQLite file. ``busy_timeout`` is how many seconds a statement waits for a
    lock another connection holds before it fails with :class:`StoreUnavailable` (5, sqlite3's
    own default)."""

    serves_inline = True

    def __init__(self, path: Path | str, *, busy_timeout: float = 5.0) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(path), timeout=busy_timeout, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a process kill, not always a power cut; the decisions and
        # token issues are flushed to the disk themselves (_transaction(durable=True); the module's docstring).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        # A page cache of up to 64 MiB (SQLite's default is 2 MiB), filled only as pages are read:
        # a /token poll reads its request's pages wherever the pending requests are (each agent
        # polls its own); with the default, 20,000 pending requests (~25 MB) no longer fit and each
        # poll copies its pages again from the operating system (bench_backchannel: ~10% of /token).
        self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        self._db.executescript(_SCHEMA)
        self._db.executescript(_AUDIT_SCHEMA)
        self._checkpointer: _Checkpointer | None = None
        if str(path) != ":memory:":
            # Checkpoints (copying the WAL into the database file, with an fsync of each) run on
            # a thread of their own, not inside whichever request's commit crossed the WAL's
            # size threshold: that commit would wait for the disk. The automatic checkpoint stays
            # as a bound on the WAL should that thread fall behind.
            self._db.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            self._checkpointer = _Checkpointer(str(path), busy_timeout=busy_timeout, lock=self._lock)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _transaction(self, *, durable: bool = False) -> Iterator[None]:
        """One write transaction: ``BEGIN IMMEDIATE`` (the write lock first, so another process on
        the file cannot write between our reads and our writes), committed when the block ends,
        a ``return`` included, rolled back if it raises. ``durable``: its commit is flushed to the
        disk (``synchronous=FULL``; see the module docstring). Under the store's lock."""
        with self._lock:
            if durable:
                self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            finally:
                if durable:
                    self._db.execute("PRAGMA synchronous=NORMAL")

    def _one(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, params).fetchone()
            return row

    def _exec(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    # users and passkeys -------------------------------------------------------------
    def add_user(self, user: User) -> None:
        self._exec(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
            (
                user.user_id,
                user.username,
                user.display_name,
                user.user_handle,
                int(user.enabled),
                user.created_at,
            ),
        )

    @staticmethod
    def _user(row: sqlite3.Row | None) -> User | None:
        if row is None:
            return None
        return User(
            user_id=row["user_id"],
            username=row["username"],
            display_name=row["display_name"],
            user_handle=bytes(row["user_handle"]),
            enabled=bool(row["enabled"]),
            created_at=row["created_at"],
        )

    def get_user(self, user_id: str) -> User | None:
        return self._user(self._one("SELECT * FROM users WHERE user_id = ?", (user_id,)))

    def find_user(self, username: str) -> User | None:
        return self._user(self._one("SELECT * FROM users WHERE username = ?", (username,)))

    def find_approver(self, *, user_id: str | None = None, username: str | None = None) -> tuple[User, bool] | None:
        # One indexed query for the user and whether they hold a passkey (the hot path of
        # /bc-authorize), instead of a user read and a list of passkeys.
        column, value = ("user_id", user_id) if user_id is not None else ("username", username)
        row = self._one(
            f"SELECT *, EXISTS (SELECT 1 FROM passkeys p WHERE p.user_id = users.user_id) AS has_passkey "  # noqa: S608 - fixed column names
            f"FROM users WHERE {column} = ?",
            (value,),
        )
        user = self._user(row)
        return None if user is None or row is None else (user, bool(row["has_passkey"]))

    def list_users(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM users ORDER BY created_at").fetchall()
        return [u for u in (self._user(r) for r in rows) if u is not None]

    def add_passkey(self, passkey: Passkey) -> None:
        self._exec(
            "INSERT INTO passkeys VALUES (?, ?, ?, ?, ?, ?)",
            (
                passkey.credential_id,
                passkey.user_id,
                passkey.public_key,
                passkey.sign_count,
                json.dumps(passkey.transports),
                passkey.created_at,
            ),
        )

    def passkeys_for(self, user_id: str) -> list[Passkey]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM passkeys WHERE user_id = ? ORDER BY created_at", (user_id,)
            ).fetchall()
        return [
            Passkey(
                credential_id=bytes(r["credential_id"]),
                user_id=r["user_id"],
                public_key=bytes(r["public_key"]),
                sign_count=r["sign_count"],
                transports=json.loads(r["transports"]),
                created_at=r["created_at"],
            )
            for r in rows
        ]

    def find_passkey(self, credential_id: bytes) -> Passkey | None:
        row = self._one("SELECT user_id FROM passkeys WHERE credential_id = ?", (credential_id,))
        if row is None:
            return None
        return next((p for p in self.passkeys_for(row["user_id"]) if p.credential_id == credential_id), None)

    def update_sign_count(self, credential_id: bytes, *, old: int, new: int) -> bool:
        return (
            self._exec(
                "UPDATE passkeys SET sign_count = ? WHERE credential_id = ? AND sign_count = ?",
                (new, credential_id, old),
            )
            == 1
        )

    # enrollment ---------------------------------------------------------------------
    def add_enrollment(self, enrollment: Enrollment) -> None:
        self._exec(
            "INSERT INTO enrollments VALUES (?, ?, ?, ?, ?)",
            (
                enrollment.token_hash,
                enrollment.user_id,
                enrollment.expires_at,
                enrollment.challenge,
                int(enrollment.used),
            ),
        )

    def get_enrollment(self, token_hash: str) -> Enrollment | None:
        row = self._one("SELECT * FROM enrollments WHERE token_hash = ?", (token_hash,))
        if row is None:
            return None
        return Enrollment(
            token_hash=row["token_hash"],
            user_id=row["user_id"],
            expires_at=row["expires_at"],
            challenge=bytes(row["challenge"]) if row["challenge"] is not None else None,
            used=bool(row["used"]),
        )

    def set_enrollment_challenge(self, token_hash: str, challenge: bytes) -> None:
        self._exec(
            "UPDATE enrollments SET challenge = ? WHERE token_hash = ? AND used = 0",
            (challenge, token_hash),
        )

    def consume_enrollment(self, token_hash: str, *, now: int) -> bool:
        return (
            self._exec(
                "UPDATE enrollments SET used = 1 WHERE token_hash = ? AND used = 0 AND expires_at > ?",
                (token_hash, now),
            )
            == 1
        )

    # requests -------------------------------------------------------------------------
    def add_request(self, request: BackchannelRequest, *, outbox: OutboxEntry | None = None) -> None:
        if outbox is not None and outbox.request_id != request.request_id:
            raise ValueError("the outbox entry belongs to another request")
        held = deferred_requests.get()
        if held is not None:
            # A group commit is collecting (web/hot_path.py): it commits this with the others
            # of the moment, in add_requests, before anyone is answered.
            held.append((request, outbox))
            return
        self.add_requests([(request, outbox)])

    def add_requests(self, items: Sequence[tuple[BackchannelRequest, OutboxEntry | None]]) -> None:
        """New requests, each with its outbox entry if any, in one transaction: all or none."""
        for request, outbox in items:
            if outbox is not None and outbox.request_id != request.request_id:
                raise ValueError("the outbox entry belongs to another request")
        with self._lock:
            if len(items) == 1 and items[0][1] is None:
                # One statement is its own transaction (autocommit): no BEGIN and COMMIT to run.
                self._insert_request(items[0][0])
                return
            with self._transaction():
                for request, outbox in items:
                    self._insert_request(request)
                    if outbox is not None:
                        o = outbox
                        self._db.execute(
                            "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?)",
                            (o.request_id, _dumps(o.notice), o.created_at, o.expires_at, o.claimed_until, o.attempts),
                        )

    def _insert_request(self, request: BackchannelRequest) -> None:
        r = request
        self._db.execute(
            "INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                r.request_id,
                r.auth_req_id_hash,
                r.approval_id,
                r.client_id,
                r.client_name,
                r.user_id,
                r.scope,
                r.binding_message,
                _dumps(r.authorization_details),
                r.created_at,
                r.expires_at,
                r.interval,
                r.nonce,
                r.status.value,
                r.last_poll_at,
                r.decided_at,
                r.receipt_id,
                r.token_jti,
                _dumps(r.upstream),
                r.callback_state.value,
                int(r.revoked),
            ),
        )

    @staticmethod
    def _request(row: sqlite3.Row | None) -> BackchannelRequest | None:
        if row is None:
            return None
        return BackchannelRequest(
            request_id=row["request_id"],
            auth_req_id_hash=row["auth_req_id_hash"],
            approval_id=row["approval_id"],
            client_id=row["client_id"],
            client_name=row["client_name"],
            user_id=row["user_id"],
            scope=row["scope"],
            binding_message=row["binding_message"],
            authorization_details=json.loads(row["authorization_details"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            interval=row["interval"],
            nonce=row["nonce"],
            status=RequestStatus(row["status"]),
            last_poll_at=row["last_poll_at"],
            decided_at=row["decided_at"],
            receipt_id=row["receipt_id"],
            token_jti=row["token_jti"],
            upstream=json.loads(row["upstream"]),
            callback_state=CallbackState(row["callback_state"]),
            revoked=bool(row["revoked"]),
        )

    def get_request(self, request_id: str) -> BackchannelRequest | None:
        return self._request(self._one("SELECT * FROM requests WHERE request_id = ?", (request_id,)))

    def find_request_by_auth_req_id(self, auth_req_id_hash: str) -> BackchannelRequest | None:
        return self._request(self._one("SELECT * FROM requests WHERE auth_req_id_hash = ?", (auth_req_id_hash,)))

    def find_request_by_approval_id(self, approval_id: str) -> BackchannelRequest | None:
        return self._request(self._one("SELECT * FROM requests WHERE approval_id = ?", (approval_id,)))

    def record_poll(self, request_id: str, *, now: int, interval: int) -> None:
        self._exec(
            "UPDATE requests SET last_poll_at = ?, interval = ? WHERE request_id = ?",
            (now, interval, request_id),
        )

    def decide(
        self,
        request_id: str,
        *,
        status: RequestStatus,
        now: int,
        receipt: ApprovalReceipt | None = None,
    ) -> bool:
        if status not in (RequestStatus.APPROVED, RequestStatus.DENIED):
            raise ValueError(f"cannot decide a request as {status}")
        # The user's decision is flushed to the disk at its commit (see the module docstring).
        with self._transaction(durable=True):
            changed = self._db.execute(
                "UPDATE requests SET status = ?, decided_at = ?, receipt_id = ? "
                # callback_state: an expiry sweep (on an instance whose clock runs ahead)
                # that closed the request excludes a late decision, atomically.
                "WHERE request_id = ? AND status = 'pending' AND expires_at > ? AND callback_state = 'none'",
                (status.value, now, receipt.receipt_id if receipt else None, request_id, now),
            ).rowcount
            if changed == 1 and receipt is not None:
                rc = receipt
                self._db.execute(
                    "INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rc.receipt_id,
                        rc.request_id,
                        rc.user_id,
                        rc.credential_id,
                        rc.credential_public_key,
                        rc.preimage,
                        rc.challenge,
                        json.dumps(rc.assertion),
                        rc.rp_id,
                        rc.origin,
                        rc.created_at,
                    ),
                )
        return changed == 1

    def mark_issued(self, request_id: str, *, jti: str) -> bool:
        # Flushed to the disk: after a power cut the request must not be redeemable again.
        with self._transaction(durable=True):
            changed: int = self._db.execute(
                "UPDATE requests SET status = 'issued', token_jti = ? WHERE request_id = ? AND status = 'approved'",
                (jti, request_id),
            ).rowcount
        return changed == 1

    def set_upstream(self, request_id: str, upstream: dict[str, Any]) -> None:
        self._exec(
            "UPDATE requests SET upstream = ? WHERE request_id = ?",
            (json.dumps(upstream), request_id),
        )

    def delete_request(self, request_id: str) -> None:
        # Its outbox entry goes with it (ON DELETE CASCADE).
        self._exec("DELETE FROM requests WHERE request_id = ?", (request_id,))

    # the outbox -----------------------------------------------------------------------------
    @staticmethod
    def _outbox(row: sqlite3.Row) -> OutboxEntry:
        return OutboxEntry(
            request_id=row["request_id"],
            notice=json.loads(row["notice"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            claimed_until=row["claimed_until"],
            attempts=row["attempts"],
        )

    def claim_outbox(self, request_id: str, *, now: int, lease: int) -> OutboxEntry | None:
        # IMMEDIATE: the write lock first, so two instances on one file cannot both read an
        # expired lease and both send.
        with self._transaction():
            row = self._db.execute(
                "SELECT o.claimed_until, r.status, r.expires_at FROM outbox o "
                "LEFT JOIN requests r ON r.request_id = o.request_id WHERE o.request_id = ?",
                (request_id,),
            ).fetchone()
            claimed = None
            if row is None:
                pass
            elif row["status"] != "pending" or row["expires_at"] is None or row["expires_at"] <= now:
                # Decided, expired or gone: the link is no use to the user any more.
                self._db.execute("DELETE FROM outbox WHERE request_id = ?", (request_id,))
            elif row["claimed_until"] <= now:
                claimed = self._db.execute(
                    "UPDATE outbox SET claimed_until = ?, attempts = attempts + 1 WHERE request_id = ? RETURNING *",
                    (now + lease, request_id),
                ).fetchone()
        return None if claimed is None else self._outbox(claimed)

    def mark_outbox_delivered(self, request_id: str) -> None:
        self._exec("DELETE FROM outbox WHERE request_id = ?", (request_id,))

    def outbox_due(self, *, now: int, limit: int) -> list[OutboxEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM outbox WHERE claimed_until <= ? ORDER BY claimed_until, request_id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [self._outbox(row) for row in rows]

    def get_receipt(self, receipt_id: str) -> ApprovalReceipt | None:
        row = self._one("SELECT * FROM receipts WHERE receipt_id = ?", (receipt_id,))
        if row is None:
            return None
        return ApprovalReceipt(
            receipt_id=row["receipt_id"],
            request_id=row["request_id"],
            user_id=row["user_id"],
            credential_id=bytes(row["credential_id"]),
            credential_public_key=bytes(row["credential_public_key"]),
            preimage=bytes(row["preimage"]),
            challenge=row["challenge"],
            assertion=json.loads(row["assertion"]),
            rp_id=row["rp_id"],
            origin=row["origin"],
            created_at=row["created_at"],
        )

    # keycloak mode ----------------------------------------------------------------------
    def upsert_user(self, user: User) -> None:
        self._exec(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(user_id) DO UPDATE SET "
            "username = excluded.username, display_name = excluded.display_name, "
            "enabled = excluded.enabled",
            (
                user.user_id,
                user.username,
                user.display_name,
                user.user_handle,
                int(user.enabled),
                user.created_at,
            ),
        )

    def upsert_passkey(self, passkey: Passkey) -> None:
        self._exec(
            "INSERT INTO passkeys VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(credential_id) DO UPDATE SET "
            "public_key = excluded.public_key, sign_count = MAX(sign_count, excluded.sign_count) "
            "WHERE user_id = excluded.user_id",
            (
                passkey.credential_id,
                passkey.user_id,
                passkey.public_key,
                passkey.sign_count,
                json.dumps(passkey.transports),
                passkey.created_at,
            ),
        )

    def replace_passkeys(self, user_id: str, passkeys: list[Passkey]) -> None:
        with self._transaction():
            keep = [p.credential_id for p in passkeys]
            marks = ",".join("?" * len(keep))
            self._db.execute(
                f"DELETE FROM passkeys WHERE user_id = ? AND credential_id NOT IN ({marks})"  # noqa: S608 - placeholders only
                if keep
                else "DELETE FROM passkeys WHERE user_id = ?",
                (user_id, *keep),
            )
            for passkey in passkeys:
                self.upsert_passkey(passkey)

    def add_intent(self, intent: Intent) -> None:
        self._exec(
            "INSERT INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                intent.intent_id,
                intent.client_id,
                intent.login_hint,
                intent.scope,
                intent.binding_message,
                json.dumps(intent.authorization_details),
                intent.created_at,
                intent.expires_at,
            ),
        )

    def take_intent(self, intent_id: str, *, now: int) -> Intent | None:
        with self._lock:
            row = self._db.execute(
                "DELETE FROM intents WHERE intent_id = ? AND expires_at > ? RETURNING *",
                (intent_id, now),
            ).fetchone()
        if row is None:
            return None
        return Intent(
            intent_id=row["intent_id"],
            client_id=row["client_id"],
            login_hint=row["login_hint"],
            scope=row["scope"],
            binding_message=row["binding_message"],
            authorization_details=json.loads(row["authorization_details"]),
            created_at=row["created_at"],
            expires_at=row["expires_at"],
        )

    def delete_intent(self, intent_id: str) -> None:
        self._exec("DELETE FROM intents WHERE intent_id = ?", (intent_id,))

    def keep_refusal(self, refusal: ChannelRefusal, *, now: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM refusals WHERE expires_at <= ?", (now,))  # bounded: old ones go
            self._db.execute(
                "INSERT INTO refusals VALUES (?, ?, ?, ?) ON CONFLICT(intent_id) DO UPDATE SET "
                "error = excluded.error, error_description = excluded.error_description, "
                "expires_at = excluded.expires_at",
                (refusal.intent_id, refusal.error, refusal.error_description, refusal.expires_at),
            )

    def take_refusal(self, intent_id: str, *, now: int) -> ChannelRefusal | None:
        with self._lock:
            row = self._db.execute("DELETE FROM refusals WHERE intent_id = ? RETURNING *", (intent_id,)).fetchone()
        if row is None or row["expires_at"] <= now:
            return None
        return ChannelRefusal(
            intent_id=row["intent_id"],
            error=row["error"],
            error_description=row["error_description"],
            expires_at=row["expires_at"],
        )

    def claim_callback(self, request_id: str) -> bool:
        return (
            self._exec(
                "UPDATE requests SET callback_state = 'sending' WHERE request_id = ? AND callback_state = 'none'",
                (request_id,),
            )
            == 1
        )

    def set_callback_state(self, request_id: str, state: CallbackState) -> None:
        self._exec("UPDATE requests SET callback_state = ? WHERE request_id = ?", (state.value, request_id))

    def expired_pending(self, *, now: int) -> list[BackchannelRequest]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM requests WHERE status = 'pending' AND expires_at <= ? AND callback_state = 'none'",
                (now,),
            ).fetchall()
        return [r for r in (self._request(row) for row in rows) if r is not None]

    def count_pending(self, *, now: int) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM requests WHERE status = 'pending' AND expires_at > ?", (now,)
            ).fetchone()
        return int(row[0])

    # single use, user codes, revocation, notifications ------------------------------------
    def use_once(self, key: str, *, expires_at: int, now: int) -> bool:
        with self._lock:
            self._db.execute("DELETE FROM used_once WHERE expires_at <= ?", (now,))
            try:
                self._db.execute("INSERT INTO used_once VALUES (?, ?)", (key, expires_at))
            except sqlite3.IntegrityError:
                return False
        return True

    def reserve_attempt(self, key: str, *, attempt_id: str, now: int, window: int, limit: int) -> bool:
        # BEGIN IMMEDIATE takes the write lock first: another process on the same file
        # cannot count between our count and our insert.
        with self._transaction():
            self._db.execute("DELETE FROM attempts WHERE key = ? AND at <= ?", (key, now - window))
            (count,) = self._db.execute("SELECT COUNT(*) FROM attempts WHERE key = ?", (key,)).fetchone()
            if count >= limit:
                return False  # the expired attempts' deletion is committed all the same
            self._db.execute("INSERT INTO attempts VALUES (?, ?, ?)", (key, attempt_id, now))
        return True

    def cancel_attempt(self, key: str, *, attempt_id: str) -> None:
        self._exec("DELETE FROM attempts WHERE key = ? AND attempt_id = ?", (key, attempt_id))

    def set_user_code(self, user_id: str, code_hash: str | None) -> None:
        if code_hash is None:
            self._exec("DELETE FROM user_codes WHERE user_id = ?", (user_id,))
        else:
            self._exec(
                "INSERT INTO user_codes VALUES (?, ?) ON CONFLICT(user_id) DO UPDATE SET "
                "code_hash = excluded.code_hash",
                (user_id, code_hash),
            )

    def get_user_code(self, user_id: str) -> str | None:
        row = self._one("SELECT code_hash FROM user_codes WHERE user_id = ?", (user_id,))
        return None if row is None else str(row["code_hash"])

    def revoke_request(self, request_id: str) -> None:
        self._exec("UPDATE requests SET revoked = 1 WHERE request_id = ?", (request_id,))

    def find_request_by_jti(self, jti: str) -> BackchannelRequest | None:
        return self._request(self._one("SELECT * FROM requests WHERE token_jti = ?", (jti,)))

    def pending_notifications(self, *, now: int) -> list[BackchannelRequest]:
        with self._lock:
            # Two seeks in the partial index requests_notifications_due (its WHERE repeated word
            # for word, so the planner may use it): the decided rows, then the expired ones.
            rows = self._db.execute(
                "SELECT * FROM requests WHERE callback_state = 'none' "
                "AND json_extract(upstream, '$.delivery') IN ('ping', 'push') AND status IN ('approved', 'denied') "
                "UNION ALL SELECT * FROM requests WHERE callback_state = 'none' "
                "AND json_extract(upstream, '$.delivery') IN ('ping', 'push') AND status IN ('pending', 'issued') "
                "AND expires_at <= ?",
                (now,),
            ).fetchall()
        return [r for r in (self._request(row) for row in rows) if r is not None]

    # operators' actions: enable/disable a user, revoke a passkey, the audit ------------------
    def _insert_audit(self, record: AuditRecord) -> None:
        self._db.execute(
            "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?)",
            (record.record_id, record.at, record.actor, record.action, record.subject, json.dumps(record.detail)),
        )

    def _audited(self, sql: str, params: tuple[Any, ...], audit: AuditRecord) -> bool:
        """Run one change and, if it changed a row, record ``audit``: one transaction, flushed to
        the disk like a decision: a passkey revoked or a user disabled must not come back after
        a power cut (nor lose the record of who did it)."""
        with self._transaction(durable=True):
            changed = self._db.execute(sql, params).rowcount
            if changed:
                self._insert_audit(audit)
        return bool(changed)

    def set_user_enabled(self, user_id: str, *, enabled: bool, audit: AuditRecord) -> bool:
        return self._audited("UPDATE users SET enabled = ? WHERE user_id = ?", (int(enabled), user_id), audit)

    def revoke_passkey(self, credential_id: bytes, *, user_id: str, audit: AuditRecord) -> bool:
        return self._audited(
            "DELETE FROM passkeys WHERE credential_id = ? AND user_id = ?", (credential_id, user_id), audit
        )

    def add_audit(self, record: AuditRecord) -> None:
        with self._lock:
            self._insert_audit(record)

    def audit_records(self, *, limit: int, subject: str | None = None) -> list[AuditRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM audit WHERE ? IS NULL OR subject = ? ORDER BY at DESC, rowid DESC LIMIT ?",
                (subject, subject, limit),
            ).fetchall()
        return [
            AuditRecord(
                record_id=r["record_id"],
                at=r["at"],
                actor=r["actor"],
                action=r["action"],
                subject=r["subject"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]
