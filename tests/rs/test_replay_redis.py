"""Consumption state in a real Redis (``redis_url``: a redis-server on a free port, see tests/support/redis.py):
atomic counting, expiry with the token, several verifier instances sharing it, races."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from ciba_service.core.replay import InMemoryReplayCache, ReplayCache, ReplayStoreUnavailable
from ciba_service.rfc9449 import create_proof
from ciba_service.rs import InvalidDPoPProof, InvalidToken, RedisReplayCache, ResourceUnavailable, TokenVerifier
from ciba_service.server.tokens import SigningKey
from tests.support.redis import free_port
from tests.support.tokens import ACTION, AGENT, AGENT_JKT, ENTRY, act, mint, verifier

URL = "https://api.example.test/policies/policy-42"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("k") / "key.pem")


def _instance(key: SigningKey, redis_url: str, **kwargs: object) -> TokenVerifier:
    """A verifier as another process would build it: its own connection to the shared Redis."""
    return verifier(key, replay=RedisReplayCache.from_url(redis_url), **kwargs)


# the store itself ---------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 3])
def test_consume_counts_up_to_the_limit(client: redis.Redis, limit: int) -> None:
    store = RedisReplayCache(client)
    expires_at = int(time.time()) + 60
    assert [store.consume("k", expires_at=expires_at, limit=limit) for _ in range(limit + 2)] == [True] * limit + [
        False,
        False,
    ]
    assert client.get("ciba:rs:used:k") == str(limit).encode()


def test_key_expires_with_the_token(client: redis.Redis) -> None:
    store = RedisReplayCache(client, prefix="p:")
    assert store.consume("k", expires_at=int(time.time()) + 100)
    assert 95 <= client.ttl("p:k") <= 100
    # the TTL is set once, by the first use; later uses do not extend it
    client.expire("p:k", 1)
    assert not store.consume("k", expires_at=int(time.time()) + 100)
    assert client.ttl("p:k") <= 1


def test_expired_key_is_fresh(client: redis.Redis) -> None:
    store = RedisReplayCache(client)
    assert store.consume("k", expires_at=int(time.time()) + 1)
    assert not store.consume("k", expires_at=int(time.time()) + 1)
    time.sleep(2.1)
    assert store.consume("k", expires_at=int(time.time()) + 1)


def test_expiry_in_the_past_still_keeps_the_key_a_second(client: redis.Redis) -> None:
    store = RedisReplayCache(client)
    assert store.consume("k", expires_at=0)
    assert not store.consume("k", expires_at=0)


def test_zero_limit_never_consumes(client: redis.Redis) -> None:
    assert not RedisReplayCache(client).consume("k", expires_at=int(time.time()) + 60, limit=0)
    assert client.exists("ciba:rs:used:k") == 0


@pytest.mark.parametrize("limit", [1, 3])
def test_racing_threads_exactly_limit_win(redis_url: str, client: redis.Redis, limit: int) -> None:
    stores = [RedisReplayCache.from_url(redis_url) for _ in range(4)]  # four "instances"
    barrier = threading.Barrier(32)
    expires_at = int(time.time()) + 60

    def attempt(n: int) -> bool:
        barrier.wait()
        return stores[n % 4].consume("race", expires_at=expires_at, limit=limit)

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(attempt, range(32)))
    assert results.count(True) == limit


@pytest.mark.parametrize("store", [InMemoryReplayCache(), None], ids=["memory", "redis"])
def test_both_stores_implement_the_same_contract(client: redis.Redis, store: ReplayCache | None) -> None:
    store = store or RedisReplayCache(client)
    expires_at = int(time.time()) + 60
    assert store.consume("a", expires_at=expires_at, limit=2)
    assert store.consume("a", expires_at=expires_at, limit=2)
    assert not store.consume("a", expires_at=expires_at, limit=2)
    assert store.consume("b", expires_at=expires_at)


def test_memory_store_is_bounded_and_fails_closed() -> None:
    now = [1000.0]
    store = InMemoryReplayCache(lambda: now[0], max_entries=2)
    assert store.consume("a", expires_at=1010)
    assert store.consume("b", expires_at=1100)
    with pytest.raises(ReplayStoreUnavailable):
        store.consume("c", expires_at=1100)
    now[0] = 1011.0  # "a" expired: room again
    assert store.consume("c", expires_at=1100)
    assert len(store) == 2


def test_redis_down_fails_closed(key: SigningKey) -> None:
    dead = RedisReplayCache.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ReplayStoreUnavailable):
        dead.consume("k", expires_at=int(time.time()) + 60)
    with pytest.raises(ResourceUnavailable) as info:
        verifier(key, replay=dead).verify(mint(key), ACTION)
    assert info.value.status_code == 503
    assert info.value.headers()["Retry-After"] == "1"


# several verifier instances -------------------------------------------------------------------
def test_two_instances_share_single_use(key: SigningKey, redis_url: str, client: redis.Redis) -> None:
    first, second = _instance(key, redis_url), _instance(key, redis_url)
    token = mint(key)
    assert first.verify(token, ACTION).entry == ENTRY
    with pytest.raises(InvalidToken, match="already been used"):
        second.verify(token, ACTION)
    with pytest.raises(InvalidToken, match="already been used"):
        first.verify(token, ACTION)


def test_plan_steps_split_across_instances(key: SigningKey, redis_url: str, client: redis.Redis) -> None:
    first, second = _instance(key, redis_url), _instance(key, redis_url)
    other = {**ENTRY, "identifier": "policy-43"}
    token = mint(key, entries=[ENTRY, other])
    assert first.verify(token, ACTION).entry_index == 0
    assert second.verify(token, act(other)).entry_index == 1
    for instance in (first, second):
        for entry in (ENTRY, other):
            with pytest.raises(InvalidToken, match="already been used"):
                instance.verify(token, act(entry))


def test_dpop_proof_replay_across_instances(key: SigningKey, redis_url: str, client: redis.Redis) -> None:
    first = _instance(key, redis_url, max_uses={"iam_policy": 2})
    second = _instance(key, redis_url, max_uses={"iam_policy": 2})
    token = mint(key, cnf={"jkt": AGENT_JKT})
    proof = create_proof(AGENT, "PUT", URL, access_token=token)
    assert first.verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=proof).jkt == AGENT_JKT
    with pytest.raises(InvalidDPoPProof, match="DPoP proof has already been used"):
        second.verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=proof)


def test_racing_requests_through_verifiers(key: SigningKey, redis_url: str, client: redis.Redis) -> None:
    """24 concurrent calls with one token whose entry allows 2 uses, over 3 instances."""
    instances = [_instance(key, redis_url, max_uses={"iam_policy": 2}) for _ in range(3)]
    token = mint(key)
    barrier = threading.Barrier(24)

    def attempt(n: int) -> str:
        barrier.wait()
        try:
            instances[n % 3].verify(token, ACTION)
        except InvalidToken as exc:
            return exc.description
        return "ok"

    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(attempt, range(24)))
    assert outcomes.count("ok") == 2
    assert set(outcomes) == {"ok", "token has already been used"}
