"""The outbox: an acknowledged request always reaches its user.

The notice (the approval link) is stored with its request in one step and deleted only once the
notifier confirmed delivery; a sweep on any instance sharing the store re-sends what a crash, a
failed delivery or a full webhook queue left behind, one claimer at a time. Store level on
SQLite and Redis, provider level with two instances, and the real thing: ``ciba-service serve``
killed with SIGKILL right after answering, restarted on the same data directory."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import Settings
from ciba_service.core.model import BackchannelRequest, OutboxEntry, RequestStatus
from ciba_service.core.params import Params
from ciba_service.core.security import auth_req_id_key, hash_secret
from ciba_service.server.notify import ApprovalNotice, Notifier, NullNotifier, WebhookNotifier
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.store import RedisStore, SQLiteStore, Store, StoreConflict
from ciba_service.web.app import create_app
from tests.support.redis import free_port, fresh_prefix
from tests.support.service import (
    ACTION,
    AGENT_ID,
    AGENT_SECRET,
    BASE,
    Clock,
    RecordingNotifier,
    enroll,
    make_settings,
)

NOW = 1_800_000_000
LEASE = 60
CONFLICT = (sqlite3.IntegrityError, StoreConflict)


# store level: both stores --------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "ciba.sqlite3")
    else:
        opened = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=fresh_prefix(), clock=lambda: NOW)
    yield opened
    opened.close()


def pending(request_id: str = "r1", *, expires_in: int = 300, **fields: Any) -> BackchannelRequest:
    values: dict[str, Any] = {
        "auth_req_id_hash": f"hash-{request_id}",
        "approval_id": f"approval-{request_id}",
        "client_id": "agent-1",
        "client_name": "Agent One",
        "user_id": "u1",
        "scope": "openid",
        "binding_message": "BM-1",
        "authorization_details": ACTION,
        "created_at": NOW,
        "expires_at": NOW + expires_in,
        "interval": 2,
        "nonce": "n",
    }
    values.update(fields)
    return BackchannelRequest(request_id=request_id, **values)


def entry(request: BackchannelRequest, *, claimed_until: int = NOW + LEASE, attempts: int = 1) -> OutboxEntry:
    """The entry the answering instance writes: leased to itself for the first send."""
    return OutboxEntry(
        request_id=request.request_id,
        notice={"approval_url": f"{BASE}/approve/{request.approval_id}", "nested": {"list": [1, 2.5, None]}},
        created_at=NOW,
        expires_at=request.expires_at,
        claimed_until=claimed_until,
        attempts=attempts,
    )


def add(store: Store, request_id: str = "r1", **fields: Any) -> OutboxEntry:
    request = pending(request_id, **fields)
    written = entry(request)
    store.add_request(request, outbox=written)
    return written


def test_the_notice_is_stored_with_its_request_and_leased_to_its_writer(store: Store) -> None:
    written = add(store)
    assert store.get_request("r1") is not None
    # Leased to the instance that answered the agent: no sweep anywhere takes it meanwhile.
    assert store.outbox_due(now=NOW, limit=10) == []
    assert store.claim_outbox("r1", now=NOW + LEASE - 1, lease=LEASE) is None
    # Its lease over (that instance died, or its delivery failed): due for any sweep.
    assert store.outbox_due(now=NOW + LEASE, limit=10) == [written]


def test_a_request_without_a_notice_has_no_entry(store: Store) -> None:
    store.add_request(pending())
    assert store.outbox_due(now=NOW + 10_000, limit=10) == []
    assert store.claim_outbox("r1", now=NOW, lease=LEASE) is None


def test_the_request_and_its_notice_are_written_together_or_not_at_all(store: Store) -> None:
    add(store)
    clash = pending("r2", approval_id="approval-r1")
    with pytest.raises(CONFLICT):
        store.add_request(clash, outbox=entry(clash, claimed_until=0))
    assert store.get_request("r2") is None
    assert [e.request_id for e in store.outbox_due(now=NOW + LEASE, limit=10)] == ["r1"]
    assert store.claim_outbox("r2", now=NOW, lease=LEASE) is None


def test_an_entry_must_belong_to_its_request(store: Store) -> None:
    with pytest.raises(ValueError, match="another request"):
        store.add_request(pending("r1"), outbox=entry(pending("r2")))
    assert store.get_request("r1") is None


def test_an_entry_is_claimed_once_per_lease(store: Store) -> None:
    add(store)
    later = NOW + LEASE
    claimed = store.claim_outbox("r1", now=later, lease=30)
    assert claimed is not None
    assert (claimed.claimed_until, claimed.attempts) == (later + 30, 2)
    assert claimed.notice == entry(pending()).notice  # the notice comes back as it was written
    # Two instances sweeping at once: the second finds it leased and sends nothing.
    assert store.claim_outbox("r1", now=later, lease=30) is None
    assert store.claim_outbox("r1", now=later + 29, lease=30) is None
    assert store.outbox_due(now=later + 29, limit=10) == []
    # The claimer crashed (never confirmed): after its lease, someone else gets it.
    again = store.claim_outbox("r1", now=later + 30, lease=30)
    assert again is not None and again.attempts == 3


def test_a_delivered_entry_is_never_sent_again(store: Store) -> None:
    add(store)
    store.mark_outbox_delivered("r1")
    store.mark_outbox_delivered("r1")  # recording it twice is harmless
    assert store.outbox_due(now=NOW + 10 * LEASE, limit=10) == []
    assert store.claim_outbox("r1", now=NOW + 10 * LEASE, lease=LEASE) is None
    assert store.get_request("r1") is not None  # the request itself is untouched


@pytest.mark.parametrize("status", [RequestStatus.APPROVED, RequestStatus.DENIED])
def test_the_notice_of_a_decided_request_is_dropped(store: Store, status: RequestStatus) -> None:
    add(store)
    assert store.decide("r1", status=status, now=NOW + 1)
    # Due (its lease ran out), but the claim deletes it instead of handing out a dead link.
    assert len(store.outbox_due(now=NOW + LEASE, limit=10)) == 1
    assert store.claim_outbox("r1", now=NOW + LEASE, lease=LEASE) is None
    assert store.outbox_due(now=NOW + LEASE, limit=10) == []


def test_the_notice_of_an_expired_request_is_dropped(store: Store) -> None:
    add(store, expires_in=100)
    assert store.claim_outbox("r1", now=NOW + 100, lease=LEASE) is None  # the service clock says expired
    assert store.outbox_due(now=NOW + 100, limit=10) == []


def test_deleting_a_request_deletes_its_notice(store: Store) -> None:
    add(store)
    store.delete_request("r1")
    assert store.outbox_due(now=NOW + LEASE, limit=10) == []
    store.add_request(pending())  # the id is free again, with no notice of the old request
    assert store.claim_outbox("r1", now=NOW + LEASE, lease=LEASE) is None


def test_due_entries_come_oldest_lease_first_and_bounded(store: Store) -> None:
    for n in range(5):
        request = pending(f"r{n}")
        store.add_request(request, outbox=entry(request, claimed_until=NOW + 10 - n))
    assert [e.request_id for e in store.outbox_due(now=NOW + 10, limit=3)] == ["r4", "r3", "r2"]
    assert [e.request_id for e in store.outbox_due(now=NOW + 7, limit=10)] == ["r4", "r3"]


def _open_twin(store: Store, tmp_path: Path, redis_url: str | None) -> Store:
    """A second connection to the same state, as another instance has."""
    if isinstance(store, SQLiteStore):
        return SQLiteStore(tmp_path / "ciba.sqlite3")
    assert isinstance(store, RedisStore) and redis_url is not None
    return RedisStore(redis.Redis.from_url(redis_url, decode_responses=True), prefix=store._prefix, clock=lambda: NOW)


def test_instances_racing_for_one_entry_claim_it_once(
    store: Store, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    add(store)
    redis_url = request.getfixturevalue("redis_url") if isinstance(store, RedisStore) else None
    twins = [_open_twin(store, tmp_path, redis_url) for _ in range(8)]
    barrier = threading.Barrier(len(twins))

    def claim(twin: Store) -> bool:
        barrier.wait()
        return twin.claim_outbox("r1", now=NOW + LEASE, lease=LEASE) is not None

    try:
        with ThreadPoolExecutor(len(twins)) as pool:
            won = list(pool.map(claim, twins))
    finally:
        for twin in twins:
            twin.close()
    assert won.count(True) == 1


def test_redis_notice_lives_as_long_as_its_pending_request(redis_url: str) -> None:
    prefix = fresh_prefix()
    store = RedisStore.from_url(redis_url, prefix=prefix, clock=lambda: NOW, retain_after_expiry=3600)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        add(store)
        request_ttl = client.pttl(f"{prefix}request:r1")
        outbox_ttl = client.pttl(f"{prefix}outbox:r1")
        # Both expiries come from one script; the two reads are a few ms apart (not a bound).
        assert 0 < outbox_ttl <= request_ttl + 1000
        assert request_ttl <= (300 + 3600) * 1000
        assert client.zscore(f"{prefix}outbox", "r1") == NOW + LEASE
        store.mark_outbox_delivered("r1")
        assert client.exists(f"{prefix}outbox:r1") == 0 and client.zscore(f"{prefix}outbox", "r1") is None
        # Redis expired the entry (its TTL): the sweep's index forgets it the next time it looks.
        add(store, "r2")
        client.delete(f"{prefix}outbox:r2")
        assert store.outbox_due(now=NOW + LEASE, limit=10) == []
        assert client.zcard(f"{prefix}outbox") == 0
    finally:
        client.close()
        store.close()


def test_sqlite_database_of_an_earlier_version_gains_the_outbox(tmp_path: Path) -> None:
    """A database made before the outbox existed (no outbox or refusals table) opens, keeps its
    requests, and stores notices from then on (the schema is created with IF NOT EXISTS)."""
    path = tmp_path / "ciba.sqlite3"
    old = SQLiteStore(path)
    old.add_request(pending("old"))
    old.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE outbox")
    db.execute("DROP TABLE refusals")
    db.commit()
    db.close()
    store = SQLiteStore(path)
    try:
        assert store.get_request("old") is not None
        assert store.outbox_due(now=NOW + LEASE, limit=10) == []
        add(store, "new")
        assert [e.request_id for e in store.outbox_due(now=NOW + LEASE, limit=10)] == ["new"]
    finally:
        store.close()


# provider level --------------------------------------------------------------------------------------
class FailingNotifier(RecordingNotifier):
    """Records every attempt; the first ``failures`` attempts fail (nothing confirmed)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def send(self, notice: ApprovalNotice, on_delivered: Callable[[], None]) -> None:
        self.notices.append(notice)
        if self.failures > 0:
            self.failures -= 1
            return
        on_delivered()


@contextmanager
def instance(
    settings: Settings, clock: Clock, notifier: Notifier, *, username: str | None = None
) -> Iterator[tuple[Provider, TestClient, SoftAuthenticator]]:
    """One service instance (its own store connection) with ``username`` enrolled."""
    provider = build_provider(settings, notifier=notifier, clock=clock)
    provider.sweep_interval = 0  # the tests sweep themselves
    authenticator = SoftAuthenticator()
    try:
        with TestClient(create_app(provider), base_url=BASE) as client:
            if username is not None:
                enroll(provider, client, username, authenticator)
            yield provider, client, authenticator
    finally:
        provider.store.close()


def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return make_settings(tmp_path)
    return make_settings(
        tmp_path, store="redis", redis_url=request.getfixturevalue("redis_url"), redis_prefix=fresh_prefix()
    )


@pytest.fixture(params=["sqlite", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of two instances sharing one store (one SQLite file, or one Redis prefix)."""
    return store_settings(request, tmp_path)


def bc_params(**fields: str) -> Params:
    values = {
        "scope": "openid",
        "login_hint": "alice",
        "binding_message": "BM-1",
        "authorization_details": json.dumps(ACTION),
        **fields,
    }
    return Params(list(values.items()))


def basic() -> str:
    import base64

    return "Basic " + base64.b64encode(f"{AGENT_ID}:{AGENT_SECRET}".encode()).decode()


def test_a_delivered_notice_is_recorded_and_never_resent(shared: Settings) -> None:
    clock, notifier = Clock(), RecordingNotifier()
    with instance(shared, clock, notifier, username="alice") as (provider, client, _):
        response = client.post("/bc-authorize", data=dict(bc_params().items()), auth=(AGENT_ID, AGENT_SECRET))
        assert response.status_code == 200
        [notice] = notifier.notices
        assert provider.store.outbox_due(now=provider.now() + 10 * LEASE, limit=10) == []
        clock.advance(LEASE)
        assert provider.sweep_notices() == 0
        assert provider.sweep_expired() == 0
        assert notifier.notices == [notice]


class SilentNotifier(RecordingNotifier):
    """Records every attempt and never confirms one (a delivery still under way)."""

    def send(self, notice: ApprovalNotice, on_delivered: Callable[[], None]) -> None:
        self.notices.append(notice)


def test_with_a_real_notifier_the_notice_is_written_with_the_request(shared: Settings) -> None:
    """The entry is in the store as soon as the agent has its answer, before any delivery."""
    clock, notifier = Clock(), SilentNotifier()
    with instance(shared, clock, notifier, username="alice") as (provider, _, _):
        result = provider.backchannel_authenticate(bc_params(), basic())
        assert result.request is not None and result.notice is not None
        [due] = provider.store.outbox_due(now=provider.now() + LEASE, limit=10)
        assert due.request_id == result.request.request_id
        assert ApprovalNotice(**due.notice) == result.notice
        assert notifier.notices == []  # written before, and without, any attempt to send


def test_a_notifier_that_tells_nobody_gets_no_outbox_entry(shared: Settings) -> None:
    """``notifier = "none"``: nothing to deliver, so nothing written, sent or deleted; the request
    itself is stored as always."""
    clock = Clock()
    with instance(shared, clock, NullNotifier()) as (provider, client, authenticator):
        enroll(provider, client, "alice", authenticator)
        response = client.post("/bc-authorize", data=dict(bc_params().items()), auth=(AGENT_ID, AGENT_SECRET))
        assert response.status_code == 200
        result = provider.backchannel_authenticate(bc_params(), basic())
        assert result.notice is None and result.request is not None
        assert provider.store.get_request(result.request.request_id) is not None
        assert provider.store.outbox_due(now=provider.now() + 10 * LEASE, limit=10) == []
        clock.advance(LEASE)
        assert provider.sweep_notices() == 0


def test_a_failed_delivery_is_retried_by_the_sweep_after_the_lease(shared: Settings) -> None:
    clock, notifier = Clock(), FailingNotifier(failures=1)
    with instance(shared, clock, notifier, username="alice") as (provider, client, _):
        response = client.post("/bc-authorize", data=dict(bc_params().items()), auth=(AGENT_ID, AGENT_SECRET))
        assert response.status_code == 200
        assert len(notifier.notices) == 1  # the attempt right after answering failed
        assert provider.sweep_notices() == 0  # still this instance's lease: not doubled
        clock.advance(LEASE)
        assert provider.sweep_notices() == 1
        assert len(notifier.notices) == 2 and notifier.notices[0] == notifier.notices[1]
        clock.advance(LEASE)
        assert provider.sweep_notices() == 0  # delivered now: never again


def test_another_instance_sends_what_a_dead_instance_acknowledged(shared: Settings) -> None:
    """Instance A answers the agent and dies before sending; B's sweep tells the user, once."""
    clock = Clock()
    dead, live = RecordingNotifier(), RecordingNotifier()
    with ExitStack() as stack:
        a, _, _ = stack.enter_context(instance(shared, clock, dead, username="alice"))
        b, _, _ = stack.enter_context(instance(shared, clock, live))
        # A answers /bc-authorize (the store has request and notice) and dies before its
        # background delivery: the provider call alone, without the web layer's task.
        result = a.backchannel_authenticate(bc_params(), basic())
        assert result.request is not None and result.notice is not None
        assert dead.notices == []
        assert b.sweep_notices() == 0  # A's lease: B waits
        clock.advance(LEASE)
        assert b.sweep_notices() + a.sweep_notices() == 1
        assert live.notices == [result.notice]
        assert b.sweep_notices() == 0
        clock.advance(LEASE)
        assert b.sweep_notices() == 0
    assert live.notices[0].approval_url == f"{BASE}/approve/{result.request.approval_id}"


def test_a_full_webhook_queue_loses_no_notice(shared: Settings) -> None:
    """The webhook drops notices past its queue bound; their entries stay and are re-sent."""
    clock = Clock()
    full = WebhookNotifier("http://127.0.0.1:9/hook", max_queued=0, clock=clock)
    live = RecordingNotifier()
    with ExitStack() as stack:
        _, client, _ = stack.enter_context(instance(shared, clock, full, username="alice"))
        b, _, _ = stack.enter_context(instance(shared, clock, live))
        response = client.post("/bc-authorize", data=dict(bc_params().items()), auth=(AGENT_ID, AGENT_SECRET))
        assert response.status_code == 200
        clock.advance(LEASE)
        assert b.sweep_notices() == 1
        assert len(live.notices) == 1
    full.close()


def test_no_notice_is_sent_for_a_request_decided_or_expired_meanwhile(shared: Settings) -> None:
    clock, dead, live = Clock(), RecordingNotifier(), RecordingNotifier()
    with ExitStack() as stack:
        a, client, _ = stack.enter_context(instance(shared, clock, dead, username="alice"))
        b, _, _ = stack.enter_context(instance(shared, clock, live))
        decided = a.backchannel_authenticate(bc_params(), basic())
        expiring = a.backchannel_authenticate(bc_params(requested_expiry="30"), basic())
        assert decided.request is not None and expiring.request is not None
        assert client.post(f"/approve/{decided.request.approval_id}/deny", json={}).status_code == 200
        clock.advance(LEASE)  # past the lease, and past the second request's expiry
        assert b.sweep_notices() == 0
        assert live.notices == [] and dead.notices == []
        assert b.store.outbox_due(now=b.now(), limit=10) == []  # both dropped


def test_the_notifier_reports_delivery_only_on_success() -> None:
    """Webhook: ``on_delivered`` runs after the webhook accepted the notice (retries included),
    never after it gave up; console and null: once the call returned."""
    notice = ApprovalNotice(
        username="alice",
        client_id="agent-1",
        client_name="Agent One",
        binding_message=None,
        actions=["x"],
        approval_url=f"{BASE}/approve/abc",
        expires_at=NOW + 300,
    )
    statuses = iter([503, 204, 400])
    hook = WebhookNotifier(
        "http://hooks.test/h",
        client=httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(next(statuses)))),
        attempts=2,
        sleep=lambda _: None,
        clock=lambda: NOW,
    )
    confirmed: list[str] = []
    hook.send(notice, lambda: confirmed.append("first"))  # 503, then 204: delivered
    hook.send(replace(notice, binding_message="B"), lambda: confirmed.append("second"))  # 400: final
    hook.close()
    assert confirmed == ["first"]
    recorded = RecordingNotifier()
    recorded.send(notice, lambda: confirmed.append("recorded"))
    assert recorded.notices == [notice] and confirmed == ["first", "recorded"]


# the real thing: kill -9 right after answering --------------------------------------------------------
class Receiver:
    """A webhook receiver on ``port`` once started: records every JSON body POSTed to it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _serve(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "ciba_service", "serve", "--config", str(config), "--port", str(port)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    out.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://localhost:{port}/healthz").status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_request_acknowledged_before_kill_9_reaches_its_user_once_after_restart(tmp_path: Path) -> None:
    port, hook_port, lease = free_port(), free_port(), 2
    data = tmp_path / "data"
    config = tmp_path / "ciba.toml"
    config.write_text(
        f'issuer = "http://localhost:{port}"\n'
        f'data_dir = "{data}"\n'
        'notifier = "webhook"\n'
        # Nobody listens here until after the kill: no delivery can succeed before it.
        f'webhook_url = "http://127.0.0.1:{hook_port}/hook"\n'
        "webhook_timeout = 1.0\n"
        f"notice_lease = {lease}\n"
        "[[clients]]\n"
        f'client_id = "{AGENT_ID}"\n'
        f'client_secret_hash = "{hash_secret(AGENT_SECRET)}"\n'
    )
    # alice and her passkey, in the data directory the service will use
    settings = make_settings(data, issuer=f"http://localhost:{port}")
    setup = build_provider(settings, notifier=RecordingNotifier())
    setup.sweep_interval = 0
    with TestClient(create_app(setup), base_url=f"http://localhost:{port}") as client:
        _, link = setup.add_user(username="alice")
        token = link.rsplit("/", 1)[1]
        options = client.post(f"/enroll/{token}/options", json={}).json()
        credential = SoftAuthenticator().create(options, origin=f"http://localhost:{port}")
        assert client.post(f"/enroll/{token}/complete", json={"credential": credential}).status_code == 200
    setup.store.close()

    log = tmp_path / "serve.log"
    receiver = Receiver(hook_port)
    first = _serve(config, port, log)
    try:
        response = httpx.post(
            f"http://localhost:{port}/bc-authorize",
            data=dict(bc_params().items()),
            auth=(AGENT_ID, AGENT_SECRET),
            timeout=10,
        )
        first.send_signal(signal.SIGKILL)  # right after the 200: no shutdown, no background task
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert response.status_code == 200, response.text
    assert first.returncode == -signal.SIGKILL
    auth_req_id = response.json()["auth_req_id"]

    receiver.start()
    second = _serve(config, port, log)
    try:
        assert _wait_for(lambda: len(receiver.bodies) >= 1, timeout=lease + 15), log.read_text()
        # Several more sweeps and leases: nothing is sent twice.
        time.sleep(lease + 3)
    finally:
        second.terminate()
        second.wait(timeout=10)
        receiver.stop()

    store = SQLiteStore(data / "ciba.sqlite3")
    try:
        request = store.find_request_by_auth_req_id(auth_req_id_key(auth_req_id))
        assert request is not None and request.status is RequestStatus.PENDING
        assert [b["approval_url"] for b in receiver.bodies] == [
            f"http://localhost:{port}/approve/{request.approval_id}"
        ]
        assert receiver.bodies[0]["event"] == "approval_requested"
        assert store.outbox_due(now=int(time.time()) + 3600, limit=10) == []  # recorded as delivered
    finally:
        store.close()
