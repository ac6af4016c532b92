"""The store reads /bc-authorize and the sweep make: the user and whether they can approve in one
call (both stores), the sweep's ping/push query answered from an index on SQLite (O(due rows),
not the table), and SQLite's durability levels."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciba_service.core.model import AuditRecord, RequestStatus
from ciba_service.store import RedisStore, SQLiteStore, Store
from tests.support.records import NOW, passkey, ping, request, user
from tests.support.redis import fresh_prefix


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "s.sqlite3")
    else:
        opened = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=fresh_prefix(), clock=lambda: NOW)
    yield opened
    opened.close()


def test_find_approver_gives_the_user_and_whether_they_hold_a_passkey(store: Store) -> None:
    store.add_user(user("u1", "alice"))
    store.add_user(user("u2", "bob"))
    store.add_passkey(passkey(user_id="u1"))
    assert store.find_approver(username="alice") == (user("u1", "alice"), True)
    assert store.find_approver(user_id="u1") == (user("u1", "alice"), True)
    assert store.find_approver(username="bob") == (user("u2", "bob"), False)
    assert store.find_approver(user_id="u2") == (user("u2", "bob"), False)
    assert store.find_approver(username="carol") is None
    assert store.find_approver(user_id="u1-not") is None
    # A user id is not a username, nor the reverse.
    assert store.find_approver(username="u1") is None
    assert store.find_approver(user_id="alice") is None


def test_pending_notifications_are_the_decided_and_the_expired_ping_push_requests(store: Store) -> None:
    store.add_request(ping("decided"))
    store.decide("decided", status=RequestStatus.DENIED, now=NOW)
    store.add_request(ping("expired", expires_in=10))
    store.add_request(ping("waiting"))
    store.add_request(request("poll-expired", expires_in=10))
    store.add_request(request("poll-denied"))
    store.decide("poll-denied", status=RequestStatus.DENIED, now=NOW)
    store.add_request(ping("delivered"))
    store.decide("delivered", status=RequestStatus.APPROVED, now=NOW)
    assert store.claim_callback("delivered")
    due = {r.request_id for r in store.pending_notifications(now=NOW + 10)}
    assert due == {"decided", "expired"}


def _plan(store: SQLiteStore, sql: str) -> str:
    return " | ".join(str(row[3]) for row in store._db.execute(f"EXPLAIN QUERY PLAN {sql}", (NOW,)))


def test_sqlite_sweeps_search_an_index_instead_of_scanning_the_requests(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    store.pending_notifications(now=NOW)
    store.expired_pending(now=NOW)
    store._db.set_trace_callback(None)
    for sql in seen:
        plan = _plan(store, sql.replace(str(NOW), "?"))
        assert "SCAN requests" not in plan, (sql, plan)
        assert "USING INDEX" in plan, (sql, plan)
    store.close()


def test_sqlite_flushes_decisions_and_token_issues_and_leaves_other_commits_to_the_os(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)
    store.add_request(request("r1"))
    store.record_poll("r1", now=NOW, interval=5)
    assert not any("synchronous=FULL" in s for s in seen)  # NORMAL: survives kill -9, not a power cut
    seen.clear()
    assert store.decide("r1", status=RequestStatus.APPROVED, now=NOW)
    assert seen[0] == "PRAGMA synchronous=FULL" and seen[-1] == "PRAGMA synchronous=NORMAL"
    assert "COMMIT" in seen
    seen.clear()
    assert store.mark_issued("r1", jti="j1")
    assert seen[0] == "PRAGMA synchronous=FULL" and seen[-1] == "PRAGMA synchronous=NORMAL"
    store._db.set_trace_callback(None)
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL between them
    store.close()


def test_sqlite_checkpoints_let_the_wal_start_over(tmp_path: Path) -> None:
    """The background checkpoint completes despite the writes around it, so the WAL is reused
    from its beginning instead of growing until a request has to checkpoint it. (A WAL that
    starts over gets new salts in its header, bytes 16 to 24.)"""
    path = tmp_path / "s.sqlite3"
    store = SQLiteStore(path)

    def salts() -> bytes:
        return path.with_name(path.name + "-wal").read_bytes()[16:24]

    for n in range(200):
        store.add_request(request(f"r{n}"))
    first = salts()
    store.add_request(request("no-checkpoint-yet"))
    assert salts() == first  # the WAL only grows
    checkpointer = store._checkpointer
    assert checkpointer is not None
    with sqlite3.connect(path) as db:
        checkpointer.checkpoint(db)
    store.add_request(request("after"))
    assert salts() != first  # this write started the WAL over
    assert store.get_request("r7") is not None and store.get_request("after") is not None
    store.close()


def test_find_approver_counts_only_a_passkey_that_is_there_and_names_the_user(store: Store) -> None:
    store.add_user(user("u1", "alice"))
    store.add_passkey(passkey(b"k1", user_id="u1"))
    store.add_passkey(passkey(b"k2", user_id="u1"))
    audit = AuditRecord(record_id="a1", at=NOW, actor="op", action="passkey.revoked", subject="u1", detail={})
    assert store.revoke_passkey(b"k1", user_id="u1", audit=audit)
    assert store.find_approver(username="alice") == (user("u1", "alice"), True)
    audit = AuditRecord(record_id="a2", at=NOW, actor="op", action="passkey.revoked", subject="u1", detail={})
    assert store.revoke_passkey(b"k2", user_id="u1", audit=audit)
    # Revoked, the user can no longer approve: /bc-authorize refuses to ask them.
    assert store.find_approver(username="alice") == (user("u1", "alice"), False)
    assert store.find_approver(user_id="u1") == (user("u1", "alice"), False)
