"""The Redis store on a real server: what expires and what never does, compare-and-set under
racing threads and processes, two service instances sharing one Redis end to end, and a server
that is unreachable, too slow, out of memory or read-only raising StoreUnavailable.

The contract both stores share is in test_store.py."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError
from redis.backoff import NoBackoff
from redis.retry import Retry

from ciba_service.config import Settings
from ciba_service.core.model import BackchannelRequest, CallbackState, Enrollment, OutboxEntry, RequestStatus
from ciba_service.server.wiring import build_store
from ciba_service.store import RedisStore, Store, StoreConflict, StoreMisconfigured, StoreUnavailable
from ciba_service.store import redis as redis_store
from tests.support.records import NOW, intent, passkey, ping, receipt, request, user
from tests.support.redis import free_port, fresh_prefix, running_redis
from tests.support.service import Clock, make_settings, open_env
from tests.support.store_calls import CALLS, READS, WRITES, seed

RETAIN = 3600


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url, decode_responses=True)
    yield connection
    connection.close()


@pytest.fixture
def prefix() -> str:
    return fresh_prefix()


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(redis_url, prefix=prefix, clock=lambda: NOW, retain_after_expiry=RETAIN)
    yield opened
    opened.close()


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait for Redis to do something by itself (expire a key); fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# configuration ----------------------------------------------------------------------------------
def test_redis_store_needs_a_url(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="store = 'redis' needs redis_url"):
        make_settings(tmp_path, store="redis")
    settings = Settings(store="redis", redis_url="redis://:hunter2@localhost:6379/0")
    assert settings.redis_prefix == "ciba:"
    assert "hunter2" not in repr(settings)  # the URL may carry the Redis password


def test_client_must_decode_responses(redis_url: str) -> None:
    with pytest.raises(ValueError, match="decode_responses=True"):
        RedisStore(redis.Redis.from_url(redis_url))


def test_prefixes_isolate_stores(redis_url: str, store: RedisStore) -> None:
    store.add_user(user())
    other = RedisStore.from_url(redis_url, prefix=fresh_prefix(), clock=lambda: NOW)
    assert other.find_user("alice") is None and other.list_users() == []
    other.add_user(user())  # no conflict: another namespace
    other.close()


def test_every_lua_script_is_used_and_documented() -> None:
    """The scripts are package data (lua/<name>.lua): each one is registered, and its header says
    what it is for and which KEYS and ARGV it takes."""
    scripts = {f.name.removesuffix(".lua"): f for f in (files("ciba_service.store") / "lua").iterdir()}
    assert set(scripts) == {"prelude", *redis_store._SCRIPTS}
    for name, script in scripts.items():
        lines = script.read_text(encoding="utf-8").splitlines()
        header = "\n".join(lines[: lines.index("")])
        assert header.startswith(f"-- {name}.lua: ") and all(line.startswith("--") for line in header.splitlines())
        assert "ARGV[1]" in header and "KEYS[1]" in header, name
        if name != "prelude":
            assert redis_store._SCRIPTS[name].endswith("\n".join(lines) + "\n")


# lifetimes ----------------------------------------------------------------------------------------
def test_pending_request_expires_after_expiry_plus_retention(
    store: RedisStore, client: redis.Redis, prefix: str
) -> None:
    store.add_request(request(expires_in=300))
    expected_ms = (300 + RETAIN) * 1000
    for key in ("request:r1", "auth_req_id:hash-r1", "approval:approval-r1"):
        assert expected_ms - 5000 < client.pttl(prefix + key) <= expected_ms
    assert client.zscore(prefix + "pending", "r1") == NOW + 300


def test_decided_request_and_receipt_are_durable(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    store.add_request(request())
    store.decide("r1", status=RequestStatus.APPROVED, now=NOW, receipt=receipt())
    store.mark_issued("r1", jti="j1")
    for key in ("request:r1", "auth_req_id:hash-r1", "approval:approval-r1", "jti:j1", "receipt:rc1"):
        assert client.ttl(prefix + key) == -1, key  # exists, no expiry
    assert client.zscore(prefix + "pending", "r1") is None


def test_users_passkeys_and_codes_are_durable(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    store.add_user(user())
    store.add_passkey(passkey(b"c"))
    store.set_user_code("u1", "h")
    for key in ("user:u1", "username:alice", "users", "passkey:Yw", "passkeys:u1", "user_code:u1"):
        assert client.ttl(prefix + key) == -1, key


def test_expiring_records_get_ttls(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    store.add_user(user())
    store.add_enrollment(Enrollment(token_hash="t", user_id="u1", expires_at=NOW + 900))
    store.add_intent(intent(expires_in=60))
    store.use_once("k", expires_at=NOW + 30, now=NOW)
    assert 0 < client.pttl(prefix + "enrollment:t") <= (900 + RETAIN) * 1000
    assert 0 < client.pttl(prefix + "intent:i1") <= (60 + RETAIN) * 1000
    assert 300_000 < client.pttl(prefix + "once:k") <= 330_000  # expiry + clock skew allowance
    store.reserve_attempt("user_code:u1", attempt_id="a", now=NOW, window=900, limit=5)
    assert 900_000 < client.pttl(prefix + "attempts:user_code:u1") <= 1_200_000  # window + skew


def test_redis_deletes_an_expired_pending_request(redis_url: str, client: redis.Redis, prefix: str) -> None:
    """With no retention the record goes soon after its expiry; the sorted sets the sweeps read
    drop it the next time they look."""
    expires_at = NOW + 300
    # The service clock stands 0.2 s before the expiry: the TTL is relative to it.
    store = RedisStore.from_url(redis_url, prefix=prefix, clock=lambda: expires_at - 0.2, retain_after_expiry=0)
    store.add_request(ping("r1", expires_in=300))
    assert client.pttl(prefix + "request:r1") <= 200
    wait_until(lambda: client.exists(prefix + "request:r1", prefix + "auth_req_id:hash-r1") == 0)
    assert store.get_request("r1") is None and store.find_request_by_approval_id("approval-r1") is None
    assert store.expired_pending(now=expires_at) == [] and store.pending_notifications(now=expires_at) == []
    assert client.zcard(prefix + "pending") == 0 and client.zcard(prefix + "notify") == 0
    store.close()


def test_expiry_is_the_service_clock_not_the_ttl(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    """Redis still holds the record (its TTL is a garbage-collection bound); the service clock
    alone says it has expired."""
    store.add_request(request(expires_in=10))
    assert client.pttl(prefix + "request:r1") > 0
    assert store.decide("r1", status=RequestStatus.APPROVED, now=NOW + 10) is False
    assert [r.request_id for r in store.expired_pending(now=NOW + 10)] == ["r1"]


def test_a_failed_write_leaves_nothing(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    store.add_request(request())
    before = sorted(client.keys(prefix + "*"))
    with pytest.raises(StoreConflict, match=r"^request, auth_req_id or approval id already stored$"):
        store.add_request(request("r2", approval_id="approval-r1"))
    with pytest.raises(StoreConflict, match=r"^unknown user$"):
        store.replace_passkeys("nobody", [passkey(b"x", user_id="nobody")])
    assert sorted(client.keys(prefix + "*")) == before


# the stored form of a request ---------------------------------------------------------------------
def test_a_request_is_one_string_without_its_defaults(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    """One string, not a hash: a hash holding authorization_details (over 64 bytes) leaves
    Redis's compact encoding. Fields at their default are not written."""
    store.add_request(request())
    key = prefix + "request:r1"
    assert client.type(key) == "string"
    names = [line.partition("=")[0] for line in client.get(key).split("\n")]
    assert "status" not in names and "decided_at" not in names and "upstream" not in names
    assert "authorization_details" in names and "expires_at" in names
    assert store.get_request("r1") == request()


def test_scripts_change_a_request_without_re_encoding_it(store: RedisStore) -> None:
    """Every field a script changes is replaced whole; the JSON the service wrote (a float, an
    empty list, an empty object) comes back as it was, after every transition."""
    store.add_request(ping("r1"))
    store.record_poll("r1", now=NOW + 1, interval=7)
    store.set_upstream("r1", {"delivery": "ping", "list": [], "object": {}, "big": 12345678901234567})
    assert store.decide("r1", status=RequestStatus.APPROVED, now=NOW + 2, receipt=receipt())
    assert store.mark_issued("r1", jti="j1")
    assert store.claim_callback("r1")
    got = store.get_request("r1")
    assert got is not None
    assert got.authorization_details == request().authorization_details
    assert got.upstream == {"delivery": "ping", "list": [], "object": {}, "big": 12345678901234567}
    assert (got.status, got.last_poll_at, got.interval, got.decided_at, got.receipt_id, got.token_jti) == (
        RequestStatus.ISSUED,
        NOW + 1,
        7,
        NOW + 2,
        "rc1",
        "j1",
    )
    assert got.callback_state is CallbackState.SENDING
    assert store.find_request_by_jti("j1") == got


def _store_in_previous_format(client: redis.Redis, prefix: str, stored: BackchannelRequest, ttl_ms: int) -> None:
    """What the previous version wrote for add_request: a hash, every field's JSON, plus the
    index keys and the pending set."""
    key = f"{prefix}request:{stored.request_id}"
    client.hset(key, mapping=redis_store._fields(stored))
    client.set(f"{prefix}auth_req_id:{stored.auth_req_id_hash}", stored.request_id)
    client.set(f"{prefix}approval:{stored.approval_id}", stored.request_id)
    for index in (key, f"{prefix}auth_req_id:{stored.auth_req_id_hash}", f"{prefix}approval:{stored.approval_id}"):
        client.pexpire(index, ttl_ms)
    client.zadd(f"{prefix}pending", {stored.request_id: stored.expires_at})


def test_a_request_of_the_previous_format_is_read_and_rewritten(
    store: RedisStore, client: redis.Redis, prefix: str
) -> None:
    """Requests stored as hashes before the upgrade are read as they are; the first script that
    changes one rewrites it as a string and keeps its TTL."""
    ttl_ms = (300 + RETAIN) * 1000
    _store_in_previous_format(client, prefix, request("old1"), ttl_ms)
    _store_in_previous_format(client, prefix, request("old2", expires_in=10), ttl_ms)
    store.add_request(request("new1", expires_in=10))
    key = prefix + "request:old1"
    assert client.type(key) == "hash"
    assert store.get_request("old1") == request("old1")
    assert store.find_request_by_auth_req_id("hash-old1") == request("old1")
    assert store.find_request_by_approval_id("approval-old1") == request("old1")
    assert {r.request_id for r in store.expired_pending(now=NOW + 10)} == {"old2", "new1"}  # both forms
    store.record_poll("old1", now=NOW + 1, interval=5)
    assert client.type(key) == "string"
    assert ttl_ms - 5000 < client.pttl(key) <= ttl_ms
    assert store.get_request("old1") == request("old1", last_poll_at=NOW + 1, interval=5)
    # every transition works on a record of either form
    assert store.decide("old2", status=RequestStatus.DENIED, now=NOW + 1)
    assert client.type(prefix + "request:old2") == "string" and client.ttl(prefix + "request:old2") == -1
    store.delete_request("old1")
    assert client.exists(key, prefix + "auth_req_id:hash-old1", prefix + "approval:approval-old1") == 0


def _notice(request_id: str) -> OutboxEntry:
    notice = {"username": "alice", "approval_url": f"https://ciba.example.test/approve/{request_id}", "actions": []}
    return OutboxEntry(request_id=request_id, notice=notice, created_at=NOW, expires_at=NOW + 300, claimed_until=NOW)


def test_an_outbox_entry_of_either_format_is_claimed_once(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    """A notice is stored as a string beside its request; one stored as a hash before the
    upgrade is listed and claimed the same way, and rewritten as a string with its TTL."""
    store.add_request(request("new1"), outbox=_notice("new1"))
    assert client.type(prefix + "outbox:new1") == "string"
    ttl_ms = (300 + RETAIN) * 1000
    _store_in_previous_format(client, prefix, request("old1"), ttl_ms)
    old_key = prefix + "outbox:old1"
    client.hset(old_key, mapping=redis_store._fields(_notice("old1")))
    client.pexpire(old_key, ttl_ms)
    client.zadd(prefix + "outbox", {"old1": NOW})
    assert {e.request_id for e in store.outbox_due(now=NOW, limit=10)} == {"new1", "old1"}
    for request_id in ("new1", "old1"):
        claimed = store.claim_outbox(request_id, now=NOW, lease=30)
        assert claimed == replace(_notice(request_id), claimed_until=NOW + 30, attempts=1)
        assert store.claim_outbox(request_id, now=NOW + 1, lease=30) is None  # leased to the first
    assert client.type(old_key) == "string" and ttl_ms - 5000 < client.pttl(old_key) <= ttl_ms
    assert store.outbox_due(now=NOW + 29, limit=10) == []
    store.mark_outbox_delivered("old1")
    assert [e.request_id for e in store.outbox_due(now=NOW + 30, limit=10)] == ["new1"]


# races --------------------------------------------------------------------------------------------
# Each compare-and-set, prepared once, then attempted by many instances at the same moment.
def _prepare(store: Store) -> None:
    store.add_user(user())
    store.add_passkey(passkey(b"cred", sign_count=0))
    store.add_enrollment(Enrollment(token_hash="t", user_id="u1", expires_at=NOW + 60))
    store.add_intent(intent())
    store.add_request(request("pending"))
    store.add_request(request("approved"))
    store.decide("approved", status=RequestStatus.APPROVED, now=NOW, receipt=receipt("rc0", "approved"))


def _attempt(store: Store, op: str, n: int) -> bool:
    if op == "decide":
        return store.decide("pending", status=RequestStatus.APPROVED, now=NOW, receipt=receipt(f"rc{n + 1}", "pending"))
    if op == "mark_issued":
        return store.mark_issued("approved", jti=f"j{n}")
    if op == "update_sign_count":
        return store.update_sign_count(b"cred", old=0, new=n + 1)
    if op == "consume_enrollment":
        return store.consume_enrollment("t", now=NOW)
    if op == "claim_callback":
        return store.claim_callback("pending")
    if op == "take_intent":
        return store.take_intent("i1", now=NOW) is not None
    if op == "use_once":
        return store.use_once("jti", expires_at=NOW + 60, now=NOW)
    if op == "reserve_attempt":  # the last guess left: one instance gets it
        return store.reserve_attempt("user_code:u1", attempt_id=f"a{n}", now=NOW, window=900, limit=1)
    raise AssertionError(op)


def _check_winner(store: Store, op: str, winner: int, attempts: int) -> None:
    """The stored state is the winner's, not a mix."""
    if op == "decide":
        decided = store.get_request("pending")
        assert decided is not None and decided.receipt_id == f"rc{winner + 1}"
        stored = [n for n in range(attempts) if store.get_receipt(f"rc{n + 1}") is not None]
        assert stored == [winner]  # the losers' receipts were never written
    elif op == "mark_issued":
        assert store.find_request_by_jti(f"j{winner}") is not None
    elif op == "update_sign_count":
        found = store.find_passkey(b"cred")
        assert found is not None and found.sign_count == winner + 1


OPS = [
    "decide",
    "mark_issued",
    "update_sign_count",
    "consume_enrollment",
    "claim_callback",
    "take_intent",
    "use_once",
    "reserve_attempt",
]


@pytest.mark.parametrize("op", OPS)
def test_racing_threads_exactly_one_wins(redis_url: str, store: RedisStore, prefix: str, op: str) -> None:
    _prepare(store)
    instances = [RedisStore.from_url(redis_url, prefix=prefix, clock=lambda: NOW) for _ in range(4)]
    barrier = threading.Barrier(24)

    def attempt(n: int) -> bool:
        barrier.wait()
        return _attempt(instances[n % 4], op, n)

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(attempt, range(24)))
    assert results.count(True) == 1
    _check_winner(store, op, results.index(True), len(results))
    for instance in instances:
        instance.close()


def _attempt_in_process(redis_url: str, prefix: str, op: str, n: int) -> bool:
    """One process, its own connection: report ready, wait for the start signal, attempt."""
    signals = redis.Redis.from_url(redis_url, decode_responses=True)
    instance = RedisStore.from_url(redis_url, prefix=prefix, clock=lambda: NOW)
    signals.rpush(prefix + "ready", n)
    assert signals.blpop([prefix + "go"], timeout=30) is not None
    try:
        return _attempt(instance, op, n)
    finally:
        instance.close()
        signals.close()


@pytest.mark.parametrize("op", OPS)
def test_racing_processes_exactly_one_wins(redis_url: str, store: RedisStore, prefix: str, op: str) -> None:
    _prepare(store)
    workers = 6
    signals = redis.Redis.from_url(redis_url, decode_responses=True)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_attempt_in_process, redis_url, prefix, op, n) for n in range(workers)]
        for _ in range(workers):  # every process is connected and waiting
            assert signals.blpop([prefix + "ready"], timeout=30) is not None
        signals.rpush(prefix + "go", *["go"] * workers)
        results = [f.result(timeout=30) for f in futures]
    signals.close()
    assert results.count(True) == 1
    _check_winner(store, op, results.index(True), len(results))


# two instances, one Redis -----------------------------------------------------------------------
def test_two_instances_share_one_redis(redis_url: str, tmp_path: Path) -> None:
    """The agent asks instance A, the user approves on instance B, A issues the token, B refuses
    the second redemption; then both restart and nothing decided is lost."""
    # One data_dir: both instances load the same signing key from it.
    settings = make_settings(tmp_path, store="redis", redis_url=redis_url, redis_prefix=fresh_prefix())
    clock = Clock()
    with open_env(settings, clock=clock) as a, open_env(settings, clock=clock, username=None) as b:
        assert a.provider.signing_key.kid == b.provider.signing_key.kid
        b.authenticator = a.authenticator  # the user's one phone, enrolled through A
        auth_req_id = a.bc_authorize().json()["auth_req_id"]
        assert b.token(auth_req_id).json()["error"] == "authorization_pending"
        receipt_id = b.approve(auth_req_id)["receipt"]
        clock.advance(settings.poll_interval)

        issued = a.token(auth_req_id)
        assert issued.status_code == 200, issued.text
        second = b.token(auth_req_id)
        assert second.status_code == 400
        assert second.json() == {"error": "invalid_grant", "error_description": "auth_req_id has already been used"}
        kid = a.provider.signing_key.kid

    with open_env(settings, clock=clock, username=None) as a2, open_env(settings, clock=clock, username=None) as b2:
        restored = a2.request_for(auth_req_id)
        assert restored.status is RequestStatus.ISSUED and restored.receipt_id == receipt_id
        assert restored.revoked  # the second redemption revoked the token, for every instance
        assert b2.provider.store.find_request_by_jti(str(restored.token_jti)) == restored
        assert b2.provider.verify_receipt(receipt_id)["valid"] is True
        alice = b2.provider.store.find_user("alice")
        assert alice is not None and len(b2.provider.store.passkeys_for(alice.user_id)) == 1
        assert a2.provider.signing_key.kid == kid
        assert b2.token(auth_req_id).json()["error"] == "invalid_grant"
        # The restarted B still knows the user's passkey (and its counter): she approves there.
        b2.authenticator = a.authenticator
        again = b2.bc_authorize().json()["auth_req_id"]
        b2.approve(again)
        assert a2.token(again).status_code == 200


def test_decision_on_one_instance_is_delivered_by_one(redis_url: str, store: RedisStore, prefix: str) -> None:
    """A ping request decided through one instance is due on every instance, and whichever
    claims it first is the only one to deliver it."""
    other = RedisStore.from_url(redis_url, prefix=prefix, clock=lambda: NOW)
    store.add_request(ping("r1"))
    assert other.pending_notifications(now=NOW) == []
    other.decide("r1", status=RequestStatus.DENIED, now=NOW)
    assert [r.request_id for r in store.pending_notifications(now=NOW)] == ["r1"]
    assert other.claim_callback("r1") is True
    assert store.claim_callback("r1") is False
    assert store.pending_notifications(now=NOW) == [] and other.pending_notifications(now=NOW) == []
    other.set_callback_state("r1", CallbackState.SENT)
    found = store.get_request("r1")
    assert found is not None and found.callback_state is CallbackState.SENT
    other.close()


def test_redis_down_is_503_temporarily_unavailable_and_nothing_half_done(tmp_path: Path) -> None:
    # The store raises StoreUnavailable; the web layer's handler for it makes the 503.
    with running_redis() as url:
        settings = make_settings(tmp_path, store="redis", redis_url=url, redis_prefix=fresh_prefix())
        with open_env(settings) as env:
            auth_req_id = env.bc_authorize().json()["auth_req_id"]
            redis.Redis.from_url(url).shutdown(nosave=True)
            for response in (env.token(auth_req_id), env.bc_authorize()):
                assert response.status_code == 503
                assert response.json()["error"] == "temporarily_unavailable"
                assert response.headers["retry-after"] == "5"
                assert response.headers["cache-control"] == "no-store"


def test_a_redis_that_may_evict_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # volatile-* policies evict exactly the TTL'd keys that enforce single use (jti records,
    # user_code attempts): a replay would then pass. The service refuses to start on one.
    with running_redis() as url:
        admin = redis.Redis.from_url(url, decode_responses=True)
        settings = make_settings(tmp_path, store="redis", redis_url=url, redis_prefix=fresh_prefix())
        for policy in ("volatile-lru", "allkeys-lru", "volatile-ttl"):
            admin.config_set("maxmemory-policy", policy)
            with pytest.raises(StoreMisconfigured, match=f"maxmemory-policy is '{policy}'"):
                build_store(settings)
        admin.config_set("maxmemory-policy", "noeviction")
        store = build_store(settings)
        assert isinstance(store, RedisStore)
        assert any("appendonly" in w for w in store.check_server())  # this test server persists nothing
        # (switching AOF on in a test server makes its shutdown slow: the other answers, faked)
        replies = {"maxmemory-policy": "noeviction", "appendonly": "yes", "appendfsync": "everysec"}
        monkeypatch.setattr(store._redis, "config_get", lambda name: {name: replies[name]})
        assert any("appendfsync is 'everysec'" in w for w in store.check_server())
        replies["appendfsync"] = "always"
        assert store.check_server() == []
        store.close()
        admin.close()


# failures: what the caller may retry is StoreUnavailable, bugs are not ---------------------------
def snapshot(client: redis.Redis, prefix: str) -> dict[str, tuple[str, Any, bool]]:
    """Every key of the store: its type, its value, whether it expires (``client`` decodes)."""
    read: dict[str, Callable[[str], Any]] = {
        "hash": client.hgetall,
        "string": client.get,
        "zset": lambda key: client.zrange(key, 0, -1, withscores=True),
    }
    found = {}
    for key in client.scan_iter(match=prefix + "*"):
        kind = client.type(key)
        found[key] = (kind, read[kind](key), client.ttl(key) != -1)
    return found


def assert_refuses_writes(store: RedisStore, cause: type[Exception], *, but: tuple[str, ...] = ()) -> None:
    for name, call in WRITES.items():
        if name in but:
            continue
        with pytest.raises(StoreUnavailable) as caught:
            call(store)
        assert isinstance(caught.value.__cause__, cause), name


def test_unreachable_redis_is_unavailable() -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", prefix=fresh_prefix(), clock=lambda: NOW)
    for name, call in [*CALLS.items(), ("check_server", lambda s: s.check_server())]:
        with pytest.raises(StoreUnavailable) as caught:
            call(store)
        assert isinstance(caught.value.__cause__, redis.ConnectionError), name
    store.close()


def test_redis_timeout_is_unavailable(prefix: str) -> None:
    with running_redis() as url:
        admin = redis.Redis.from_url(url)
        # a client that gives up after 0.2 s, without retrying
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
        store = RedisStore(client, prefix=prefix, clock=lambda: NOW)
        admin.client_pause(1000, all=True)  # the server stops answering for a second
        for call in (READS["get_user"], READS["list_users"], WRITES["add_user"]):
            with pytest.raises(StoreUnavailable) as caught:
                call(store)
            assert isinstance(caught.value.__cause__, redis.TimeoutError)
        store.close()
        admin.close()


def test_redis_out_of_memory_is_unavailable_and_writes_nothing(prefix: str) -> None:
    with running_redis() as url:
        store = RedisStore.from_url(url, prefix=prefix, clock=lambda: NOW)
        admin = redis.Redis.from_url(url, decode_responses=True)
        seed(store)
        before = snapshot(admin, prefix)
        assert admin.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        admin.config_set("maxmemory", 1)  # full: every write that needs memory is refused
        try:
            # In a script, Redis refuses a command that needs memory only until the script's first
            # write command (it never stops a script halfway): reserve_attempt starts with a
            # prune, which needs none, so it runs to the end, atomically, even now.
            assert_refuses_writes(store, redis.exceptions.OutOfMemoryError, but=("reserve_attempt",))
            for call in READS.values():  # reads still work
                call(store)
            assert snapshot(admin, prefix) == before
        finally:
            admin.config_set("maxmemory", 0)
        WRITES["add_user"](store)  # memory again: the same store works
        assert store.get_user("u2") is not None
        store.close()
        admin.close()


def test_read_only_replica_is_unavailable_and_writes_nothing(prefix: str) -> None:
    with running_redis() as url:
        store = RedisStore.from_url(url, prefix=prefix, clock=lambda: NOW)
        admin = redis.Redis.from_url(url, decode_responses=True)
        seed(store)
        before = snapshot(admin, prefix)
        # What a failover leaves behind: this server is now a (read-only) replica of another
        # one, here one that does not answer, so it keeps serving its own data.
        admin.replicaof("127.0.0.1", free_port())
        try:
            assert_refuses_writes(store, redis.exceptions.ReadOnlyError)
            for call in READS.values():
                call(store)
            assert snapshot(admin, prefix) == before
        finally:
            admin.replicaof("NO", "ONE")
        WRITES["add_user"](store)
        assert store.get_user("u2") is not None
        store.close()
        admin.close()


def test_redis_bugs_are_not_unavailable(store: RedisStore, client: redis.Redis, prefix: str) -> None:
    store.add_user(user())
    with pytest.raises(StoreConflict):
        store.add_user(user())
    client.set(f"{prefix}user:u2", "not a hash")  # a command on a key of the wrong type
    with pytest.raises(redis.ResponseError, match="WRONGTYPE") as caught:
        store.get_user("u2")
    assert not isinstance(caught.value, StoreUnavailable)
    client.hset(f"{prefix}once:k", "a", "b")  # the same inside a script
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.use_once("k", expires_at=NOW + 60, now=NOW)


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (redis.ConnectionError("Connection reset by peer"), True),
        (redis.TimeoutError("Timeout reading from socket"), True),
        (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), True),
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), True),
        # older redis-py versions: the server's reply as a plain ResponseError
        (redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'."), True),
        (redis.ResponseError("READONLY You can't write against a read only replica."), True),
        (redis.ResponseError("ERR unknown command 'EVALSHA'"), False),
        (redis.ResponseError("NOSCRIPT No matching script"), False),
    ],
)
def test_redis_refusals_are_classified(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch, error: Exception, unavailable: bool
) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise error

    for command in ("evalsha", "get"):  # a script, a plain command
        monkeypatch.setattr(store._redis, command, refuse)
    for call in (WRITES["add_request"], READS["get_user_code"]):
        with pytest.raises(StoreUnavailable if unavailable else type(error)) as caught:
            call(store)
        assert (caught.value.__cause__ if unavailable else caught.value) is error
