"""The store contract, run against both stores (SQLite, and Redis on a real server): restarts lose
nothing, guarded transitions are compare-and-set, expiry is decided by the service clock, and a
backend that fails in a way the caller may retry is StoreUnavailable (SQLite here; Redis in
test_redis_store.py)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ciba_service.core.model import (
    CallbackState,
    Enrollment,
    RequestStatus,
)
from ciba_service.core.security import auth_req_id_key
from ciba_service.server.wiring import build_provider
from ciba_service.store import (
    AttemptStore,
    AuditStore,
    CallbackStore,
    EnrollmentStore,
    IntentStore,
    OutboxStore,
    PasskeyStore,
    ReceiptStore,
    RedisStore,
    RefusalStore,
    RequestStore,
    SingleUseStore,
    SQLiteStore,
    Store,
    StoreConflict,
    StoreUnavailable,
    UserCodeStore,
    UserStore,
)
from tests.support.records import NOW, intent, passkey, ping, receipt, request, user
from tests.support.redis import fresh_prefix
from tests.support.service import Env, make_settings, open_env
from tests.support.store_calls import CALLS, DELETES, READS, WRITES, seed

STORES = ["sqlite", "redis"]
# What each store raises when a write breaks a uniqueness or reference rule.
CONFLICT = (sqlite3.IntegrityError, StoreConflict)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "ciba.sqlite3")
    else:
        opened = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=fresh_prefix(), clock=lambda: NOW)
    yield opened
    opened.close()


def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings overrides selecting the parametrized store."""
    if request.param == "sqlite":
        return {}
    return {"store": "redis", "redis_url": request.getfixturevalue("redis_url"), "redis_prefix": fresh_prefix()}


@pytest.fixture(params=STORES)
def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    with open_env(make_settings(tmp_path, **store_settings(request, tmp_path))) as env:
        yield env


# through the provider ---------------------------------------------------------------------------
def test_restart_loses_nothing(any_env: Env) -> None:
    env = any_env
    pending_id = env.bc_authorize().json()["auth_req_id"]
    approved_id = env.bc_authorize().json()["auth_req_id"]
    receipt_id = env.approve(approved_id)["receipt"]
    env.provider.store.close()

    reopened = build_provider(env.settings, notifier=env.notifier, clock=env.clock)
    store = reopened.store
    alice = store.find_user("alice")
    assert alice is not None and len(store.passkeys_for(alice.user_id)) == 1
    pending = store.find_request_by_auth_req_id(auth_req_id_key(pending_id))
    approved = store.find_request_by_auth_req_id(auth_req_id_key(approved_id))
    assert pending is not None and pending.status is RequestStatus.PENDING
    assert approved is not None and approved.status is RequestStatus.APPROVED
    assert approved.receipt_id == receipt_id
    assert reopened.verify_receipt(receipt_id)["valid"] is True
    # the signing key survives too: same kid
    assert reopened.signing_key.kid == env.provider.signing_key.kid
    reopened.store.close()


def test_decide_and_issue_are_single_shot(any_env: Env) -> None:
    auth_req_id = any_env.bc_authorize().json()["auth_req_id"]
    request = any_env.request_for(auth_req_id)
    store = any_env.provider.store
    now = int(any_env.clock())
    assert store.decide(request.request_id, status=RequestStatus.DENIED, now=now) is True
    assert store.decide(request.request_id, status=RequestStatus.APPROVED, now=now) is False
    assert store.mark_issued(request.request_id, jti="j1") is False  # denied is not approved


def test_sign_count_compare_and_set(any_env: Env) -> None:
    store = any_env.provider.store
    alice = store.find_user("alice")
    assert alice is not None
    [key] = store.passkeys_for(alice.user_id)
    assert store.update_sign_count(key.credential_id, old=key.sign_count, new=key.sign_count + 5)
    assert not store.update_sign_count(key.credential_id, old=key.sign_count, new=key.sign_count + 6)


def test_memory_store_schema_is_created() -> None:
    store = SQLiteStore(":memory:")
    assert store.list_users() == []
    store.close()


# users and passkeys -----------------------------------------------------------------------------
def test_users_round_trip_and_stay_unique(store: Store) -> None:
    alice = user()
    store.add_user(alice)
    store.add_user(user("u0", "bob", created_at=NOW - 10, enabled=False))
    assert store.get_user("u1") == alice
    assert store.find_user("alice") == alice
    assert store.find_user("nobody") is None and store.get_user("nobody") is None
    assert [u.username for u in store.list_users()] == ["bob", "alice"]  # by creation time
    with pytest.raises(CONFLICT):
        store.add_user(user("u1", "carol"))  # user id taken
    with pytest.raises(CONFLICT):
        store.add_user(user("u2", "alice"))  # username taken
    assert store.get_user("u2") is None and len(store.list_users()) == 2


def test_upsert_user_refreshes_mirrored_fields(store: Store) -> None:
    store.upsert_user(user())
    store.upsert_user(user(username="alice2", display_name="A.", enabled=False, user_handle=b"other", created_at=1))
    refreshed = store.get_user("u1")
    assert refreshed == user(username="alice2", display_name="A.", enabled=False)  # handle, created_at kept
    assert store.find_user("alice") is None and store.find_user("alice2") == refreshed
    store.add_user(user("u2", "bob"))
    with pytest.raises(CONFLICT):
        store.upsert_user(user("u1", "bob"))  # another user's name
    assert store.find_user("bob") == user("u2", "bob")


def test_passkeys_round_trip(store: Store) -> None:
    store.add_user(user())
    store.add_passkey(passkey())
    store.add_passkey(passkey(b"second", created_at=NOW + 1))
    assert store.find_passkey(b"\x00cred\xff") == passkey()
    assert [p.credential_id for p in store.passkeys_for("u1")] == [b"\x00cred\xff", b"second"]
    assert store.passkeys_for("nobody") == [] and store.find_passkey(b"nope") is None
    with pytest.raises(CONFLICT):
        store.add_passkey(passkey())  # credential id taken
    with pytest.raises(CONFLICT):
        store.add_passkey(passkey(b"orphan", user_id="nobody"))  # unknown user
    assert store.find_passkey(b"orphan") is None


def test_sign_count_is_compare_and_set(store: Store) -> None:
    store.add_user(user())
    store.add_passkey(passkey(sign_count=7))
    assert not store.update_sign_count(b"\x00cred\xff", old=6, new=8)
    assert store.update_sign_count(b"\x00cred\xff", old=7, new=8)
    assert not store.update_sign_count(b"\x00cred\xff", old=7, new=9)  # the racing second use
    assert not store.update_sign_count(b"unknown", old=0, new=1)
    found = store.find_passkey(b"\x00cred\xff")
    assert found is not None and found.sign_count == 8


def test_upsert_passkey_never_lowers_the_counter(store: Store) -> None:
    store.add_user(user())
    store.add_user(user("u2", "bob"))
    store.upsert_passkey(passkey(sign_count=10))
    store.upsert_passkey(passkey(sign_count=3, public_key=b"new", transports=["usb"]))
    found = store.find_passkey(b"\x00cred\xff")
    assert found == passkey(sign_count=10, public_key=b"new")  # transports are not refreshed
    store.upsert_passkey(passkey(sign_count=50, user_id="u2"))  # another user's credential: ignored
    assert store.find_passkey(b"\x00cred\xff") == found
    with pytest.raises(CONFLICT):
        store.upsert_passkey(passkey(b"orphan", user_id="nobody"))


def test_replace_passkeys_deletes_the_others(store: Store) -> None:
    store.add_user(user())
    store.add_passkey(passkey(b"a", sign_count=5))
    store.add_passkey(passkey(b"b"))
    store.replace_passkeys("u1", [passkey(b"a", sign_count=1), passkey(b"c", created_at=NOW + 1)])
    assert [(p.credential_id, p.sign_count) for p in store.passkeys_for("u1")] == [(b"a", 5), (b"c", 0)]
    assert store.find_passkey(b"b") is None  # revoked at the IdP: gone at once
    store.replace_passkeys("u1", [])
    assert store.passkeys_for("u1") == [] and store.find_passkey(b"a") is None


# enrollment -------------------------------------------------------------------------------------
def test_enrollment_is_consumed_once(store: Store) -> None:
    store.add_user(user())
    store.add_enrollment(Enrollment(token_hash="t1", user_id="u1", expires_at=NOW + 60))
    store.set_enrollment_challenge("t1", b"\x00challenge\xff")
    assert store.get_enrollment("t1") == Enrollment(
        token_hash="t1", user_id="u1", expires_at=NOW + 60, challenge=b"\x00challenge\xff"
    )
    assert store.consume_enrollment("t1", now=NOW) is True
    assert store.consume_enrollment("t1", now=NOW) is False
    store.set_enrollment_challenge("t1", b"later")  # a used link takes no new challenge
    found = store.get_enrollment("t1")
    assert found is not None and found.used and found.challenge == b"\x00challenge\xff"
    assert store.get_enrollment("t2") is None and store.consume_enrollment("t2", now=NOW) is False


def test_expired_enrollment_is_not_consumed(store: Store) -> None:
    store.add_user(user())
    store.add_enrollment(Enrollment(token_hash="t1", user_id="u1", expires_at=NOW + 60))
    assert store.consume_enrollment("t1", now=NOW + 60) is False  # the clock says expired
    assert store.consume_enrollment("t1", now=NOW + 59) is True


# requests ---------------------------------------------------------------------------------------
def test_request_round_trip_and_indexes(store: Store) -> None:
    store.add_request(request())
    assert store.get_request("r1") == request()
    assert store.find_request_by_auth_req_id("hash-r1") == request()
    assert store.find_request_by_approval_id("approval-r1") == request()
    for missing in (
        store.get_request("x"),
        store.find_request_by_auth_req_id("x"),
        store.find_request_by_approval_id("x"),
    ):
        assert missing is None
    with pytest.raises(CONFLICT):
        store.add_request(request("r2", approval_id="approval-r1"))
    with pytest.raises(CONFLICT):
        store.add_request(request("r2", auth_req_id_hash="hash-r1"))
    assert store.get_request("r2") is None and store.find_request_by_approval_id("approval-r2") is None


def test_request_updates(store: Store) -> None:
    store.add_request(request())
    store.record_poll("r1", now=NOW * 1000 + 5, interval=7)
    store.set_upstream("r1", {"auth_req_id_hash": "kc", "n": [1, 2]})
    store.set_callback_state("r1", CallbackState.FAILED)
    store.revoke_request("r1")
    assert store.get_request("r1") == request(
        last_poll_at=NOW * 1000 + 5,
        interval=7,
        upstream={"auth_req_id_hash": "kc", "n": [1, 2]},
        callback_state=CallbackState.FAILED,
        revoked=True,
    )
    # updates of an unknown request create nothing
    store.record_poll("gone", now=NOW, interval=2)
    store.revoke_request("gone")
    assert store.get_request("gone") is None


def test_decide_is_once_and_stores_the_receipt(store: Store) -> None:
    store.add_request(request())
    assert store.decide("r1", status=RequestStatus.APPROVED, now=NOW, receipt=receipt()) is True
    assert store.decide("r1", status=RequestStatus.DENIED, now=NOW) is False
    assert store.decide("r1", status=RequestStatus.APPROVED, now=NOW, receipt=receipt("rc2")) is False
    assert store.get_receipt("rc1") == receipt()
    assert store.get_receipt("rc2") is None  # the loser's receipt is not stored
    decided = store.get_request("r1")
    assert decided is not None
    assert (decided.status, decided.decided_at, decided.receipt_id) == (RequestStatus.APPROVED, NOW, "rc1")
    assert store.decide("unknown", status=RequestStatus.DENIED, now=NOW) is False
    with pytest.raises(ValueError, match="cannot decide"):
        store.decide("r1", status=RequestStatus.ISSUED, now=NOW)


def test_decide_compares_expiry_with_the_service_clock(store: Store) -> None:
    store.add_request(request(expires_in=10))
    assert store.decide("r1", status=RequestStatus.APPROVED, now=NOW + 10, receipt=receipt()) is False
    assert store.get_receipt("rc1") is None
    assert store.decide("r1", status=RequestStatus.APPROVED, now=NOW + 9, receipt=receipt()) is True


def test_a_claimed_callback_excludes_a_late_decision(store: Store) -> None:
    # An instance whose clock runs ahead swept the request as expired (claimed its callback
    # slot); an instance whose clock runs behind must not decide it afterwards, or the user's
    # decision would never reach Keycloak.
    store.add_request(request())
    assert store.claim_callback("r1") is True
    assert store.decide("r1", status=RequestStatus.APPROVED, now=NOW, receipt=receipt()) is False
    assert store.get_receipt("rc1") is None


def test_mark_issued_is_once(store: Store) -> None:
    store.add_request(request())
    assert store.mark_issued("r1", jti="j0") is False  # pending is not approved
    store.decide("r1", status=RequestStatus.APPROVED, now=NOW, receipt=receipt())
    assert store.mark_issued("r1", jti="j1") is True
    assert store.mark_issued("r1", jti="j2") is False  # a second token for one approval
    issued = store.find_request_by_jti("j1")
    assert issued is not None and issued.status is RequestStatus.ISSUED and issued.token_jti == "j1"
    assert store.find_request_by_jti("j2") is None


def test_delete_request_removes_it_and_its_indexes(store: Store) -> None:
    store.add_request(ping("r1"))
    store.delete_request("r1")
    assert store.get_request("r1") is None
    assert store.find_request_by_auth_req_id("hash-r1") is None
    assert store.find_request_by_approval_id("approval-r1") is None
    assert store.expired_pending(now=NOW + 999) == [] and store.pending_notifications(now=NOW + 999) == []
    store.add_request(request("r1"))  # the ids are free again


def test_claim_callback_is_once(store: Store) -> None:
    store.add_request(request())
    assert store.claim_callback("r1") is True
    assert store.claim_callback("r1") is False
    store.set_callback_state("r1", CallbackState.SENT)
    assert store.claim_callback("r1") is False
    assert store.claim_callback("unknown") is False


def test_expired_pending(store: Store) -> None:
    store.add_request(request("soon", expires_in=10))
    store.add_request(request("later", expires_in=100))
    store.add_request(request("decided", expires_in=10))
    store.decide("decided", status=RequestStatus.DENIED, now=NOW)
    assert store.expired_pending(now=NOW + 9) == []
    assert [r.request_id for r in store.expired_pending(now=NOW + 10)] == ["soon"]
    assert sorted(r.request_id for r in store.expired_pending(now=NOW + 100)) == ["later", "soon"]
    assert store.claim_callback("soon")
    assert [r.request_id for r in store.expired_pending(now=NOW + 100)] == ["later"]


def test_count_pending_counts_undecided_unexpired_requests(store: Store) -> None:
    assert store.count_pending(now=NOW) == 0
    store.add_request(request("soon", expires_in=10))
    store.add_request(request("later", expires_in=100))
    store.add_request(request("decided", expires_in=100))
    store.decide("decided", status=RequestStatus.APPROVED, now=NOW)
    assert store.count_pending(now=NOW) == 2
    assert store.count_pending(now=NOW + 10) == 1  # expiry is judged by the clock given
    store.delete_request("later")
    assert store.count_pending(now=NOW) == 1
    assert store.count_pending(now=NOW + 100) == 0


def test_pending_notifications(store: Store) -> None:
    store.add_request(ping("approved", expires_in=100))
    store.add_request(ping("expiring", expires_in=10))
    store.add_request(ping("issued", expires_in=50))
    store.add_request(request("poll", expires_in=10))
    store.add_request(request("late-upstream", expires_in=100))
    store.decide("approved", status=RequestStatus.APPROVED, now=NOW, receipt=receipt("rc-a", "approved"))
    store.decide("issued", status=RequestStatus.APPROVED, now=NOW, receipt=receipt("rc-i", "issued"))
    store.mark_issued("issued", jti="j")  # redeemed before the ping went out
    store.decide("late-upstream", status=RequestStatus.DENIED, now=NOW)

    def due(now: int) -> list[str]:
        return sorted(r.request_id for r in store.pending_notifications(now=now))

    assert due(NOW) == ["approved"]
    store.set_upstream("late-upstream", {"delivery": "push"})  # the delivery mode is read from upstream
    assert due(NOW) == ["approved", "late-upstream"]
    assert due(NOW + 10) == ["approved", "expiring", "late-upstream"]
    assert due(NOW + 50) == ["approved", "expiring", "issued", "late-upstream"]
    assert store.claim_callback("approved")
    store.set_callback_state("expiring", CallbackState.SENT)
    assert due(NOW + 50) == ["issued", "late-upstream"]
    store.set_callback_state("expiring", CallbackState.NONE)  # back in the queue
    assert due(NOW + 50) == ["expiring", "issued", "late-upstream"]


# single use, intents, user codes ----------------------------------------------------------------
def test_use_once(store: Store) -> None:
    assert store.use_once("jti-1", expires_at=NOW + 60, now=NOW) is True
    assert store.use_once("jti-1", expires_at=NOW + 60, now=NOW + 59) is False  # a replay
    assert store.use_once("jti-2", expires_at=NOW + 60, now=NOW) is True
    assert store.use_once("jti-1", expires_at=NOW + 120, now=NOW + 60) is True  # expired: free again
    assert store.use_once("jti-1", expires_at=NOW + 120, now=NOW + 61) is False


def test_attempts_are_limited_in_a_sliding_window(store: Store) -> None:
    def reserve(attempt_id: str, now: int, key: str = "user_code:u1") -> bool:
        return store.reserve_attempt(key, attempt_id=attempt_id, now=now, window=900, limit=3)

    assert [reserve(f"a{n}", NOW + n) for n in range(4)] == [True, True, True, False]
    assert reserve("other", NOW, key="user_code:u2") is True  # per key
    store.cancel_attempt("user_code:u1", attempt_id="a1")  # a success is forgotten
    assert reserve("a4", NOW + 10) is True
    assert reserve("a5", NOW + 10) is False
    assert reserve("a6", NOW + 899) is False  # a0 (at NOW) is still inside the window
    assert reserve("a7", NOW + 900) is True  # ... and out of it now
    assert reserve("a8", NOW + 900) is False
    store.cancel_attempt("user_code:u1", attempt_id="never-recorded")  # harmless


def test_intent_is_taken_once(store: Store) -> None:
    store.add_intent(intent())
    assert store.take_intent("i1", now=NOW) == intent()
    assert store.take_intent("i1", now=NOW) is None
    store.add_intent(intent("i2", expires_in=5))
    assert store.take_intent("i2", now=NOW + 5) is None  # expired by the service clock
    store.delete_intent("i2")
    store.add_intent(intent("i2"))  # deleted: the id is free again
    with pytest.raises(CONFLICT):
        store.add_intent(intent("i2"))


def test_user_codes(store: Store) -> None:
    store.add_user(user())
    assert store.get_user_code("u1") is None
    store.set_user_code("u1", "scrypt$1")
    store.set_user_code("u1", "scrypt$2")
    assert store.get_user_code("u1") == "scrypt$2"
    store.set_user_code("u1", None)
    assert store.get_user_code("u1") is None


def test_records_are_returned_equal(store: Store) -> None:
    """Every field survives, including floats, empty containers and bytes of any value."""
    store.add_request(replace(request(), binding_message=None, last_poll_at=3, token_jti=None))
    assert store.get_request("r1") == replace(request(), binding_message=None, last_poll_at=3)


def test_the_failure_tests_call_every_method() -> None:
    assert set(CALLS) == Store.__abstractmethods__


CONCERNS = [
    UserStore,
    PasskeyStore,
    EnrollmentStore,
    RequestStore,
    CallbackStore,
    OutboxStore,
    ReceiptStore,
    IntentStore,
    RefusalStore,
    SingleUseStore,
    AttemptStore,
    UserCodeStore,
    AuditStore,
]


def test_store_is_its_concerns_together(store: Store) -> None:
    """Each method of the store belongs to one small interface; a store is each of them."""
    owners: dict[str, list[str]] = {}
    for concern in CONCERNS:
        assert issubclass(Store, concern) and isinstance(store, concern)
        for name in concern.__abstractmethods__:
            owners.setdefault(name, []).append(concern.__name__)
    assert set(owners) == Store.__abstractmethods__
    assert {name: where for name, where in owners.items() if len(where) > 1} == {}


# SQLite failures: retryable ones are StoreUnavailable, bugs are not ------------------------------
def dump(path: Path) -> list[str]:
    """Everything in the database file, read by a connection of its own."""
    db = sqlite3.connect(path)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def test_sqlite_locked_is_unavailable_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ciba.sqlite3"
    store = SQLiteStore(path, busy_timeout=0.05)
    seed(store)
    before = dump(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holding the write lock past our timeout
    try:
        for name, call in {**WRITES, **DELETES}.items():
            with pytest.raises(StoreUnavailable) as caught:
                call(store)
            cause = caught.value.__cause__
            assert isinstance(cause, sqlite3.OperationalError), name
            assert cause.sqlite_errorname == "SQLITE_BUSY", name
        for call in READS.values():  # WAL: readers are not blocked by a writer
            call(store)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert dump(path) == before
    store.add_user(user("u2", "bob"))  # the lock is gone: the same store works again
    assert store.get_user("u2") is not None
    store.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to break the file under SQLite")
def test_sqlite_disk_io_error_is_unavailable_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ciba.sqlite3"
    store = SQLiteStore(path)
    seed(store)
    before = dump(path)
    checkpoint = sqlite3.connect(path)  # every page in the main file: the log is only written to now
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    # Swap the write-ahead log's descriptor of this store for a read-only one: its next write
    # fails in the kernel (EBADF), as on a failing disk.
    wal = next(
        int(fd)
        for fd in os.listdir("/proc/self/fd")
        if os.path.realpath(f"/proc/self/fd/{fd}") == os.path.realpath(f"{path}-wal")
    )
    read_only = os.open(path, os.O_RDONLY)
    try:
        os.dup2(read_only, wal)
        with pytest.raises(StoreUnavailable) as caught:
            store.set_user_code("u1", "scrypt$1")
        cause = caught.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError)
        assert cause.sqlite_errorname.startswith("SQLITE_IOERR")
    finally:
        os.close(read_only)
        store.close()
    assert dump(path) == before


def test_sqlite_bugs_are_not_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "ciba.sqlite3"
    store = SQLiteStore(path)
    with pytest.raises(CONFLICT):
        store.add_passkey(passkey())  # unknown user: a conflict, as always
    other = sqlite3.connect(path)
    other.execute("DROP TABLE intents")
    other.close()
    with pytest.raises(sqlite3.OperationalError, match="no such table") as caught:
        store.add_intent(intent())
    assert not isinstance(caught.value, StoreUnavailable)
    store.close()
