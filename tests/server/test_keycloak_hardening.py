"""Keycloak mode, hardened: the client's policy is applied only after Keycloak authenticated the
client, and channel refusals live in the store so every instance can report them.

1. ``/bc-authorize`` used to check the client's allowed scopes and authorization_details types
   before forwarding, i.e. before Keycloak had checked the secret: anyone naming a client id
   learned what that client may request. Now only client-independent checks run before
   forwarding; the policy is applied in the channel step (Keycloak's signed token proves the
   client), and its refusal still reaches the agent as the same precise OAuth error.
2. The refusal was kept in one process's memory, so when Keycloak's channel call reached another
   instance the agent got ``temporarily_unavailable``. Now it is in the store (SQLite or Redis),
   taken once, with a bounded lifetime.

Keycloak is the respx fake of test_keycloak_mode.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import respx
from fastapi.testclient import TestClient

from ciba_service.config import ClientConfig, Settings
from ciba_service.core.errors import InvalidAuthorizationDetails, UnknownUserId
from ciba_service.core.model import ChannelRefusal
from ciba_service.server.keycloak import KeycloakIssuer
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.store import RedisStore, SQLiteStore, Store
from ciba_service.web.app import create_app
from tests.support.keycloak import AGENT_AUTH, KC, FakeKeycloak, _basic
from tests.support.redis import fresh_prefix
from tests.support.service import ACTION, BASE, Clock, RecordingNotifier, make_settings

NOW = 1_800_000_000
KEY_ROTATION = [{"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api"}]
# demo-agent may ask for openid only, and for key rotations only.
POLICY = ClientConfig(client_id="demo-agent", scopes=["openid"], authorization_details_types=["key_rotation"])
KEYCLOAK_401 = {"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"}


def kc_settings(data_dir: Path, clients: list[ClientConfig], **overrides: Any) -> Settings:
    return make_settings(
        data_dir,
        mode="keycloak",
        clients=clients,
        keycloak={"base_url": KC, "realm": "agents", "admin_client_secret": "dev-only"},
        **overrides,
    )


@dataclass
class Instance:
    provider: Provider
    client: TestClient
    notifier: RecordingNotifier

    def bc_authorize(self, *, auth: tuple[str, str] = AGENT_AUTH, **fields: str) -> httpx.Response:
        body = {
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "KC-1",
            "authorization_details": json.dumps(ACTION),
            **fields,
        }
        return self.client.post("/bc-authorize", data=body, auth=auth)


@contextmanager
def instance(settings: Settings, clock: Clock) -> Iterator[Instance]:
    notifier = RecordingNotifier()
    provider = build_provider(settings, notifier=notifier, clock=clock)
    assert isinstance(provider.issuer, KeycloakIssuer)
    provider.issuer.callbacks.sleep = lambda _: None
    provider.sweep_interval = 0
    try:
        with TestClient(create_app(provider), base_url=BASE) as client:
            yield Instance(provider=provider, client=client, notifier=notifier)
    finally:
        provider.store.close()


@contextmanager
def keycloak(clock: Clock) -> Iterator[FakeKeycloak]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        kc = FakeKeycloak(router=router, clock=clock)
        kc.register_passkey()
        kc.install()

        def authenticating(request: httpx.Request) -> httpx.Response:
            # As Keycloak does: a wrong client secret is 401 invalid_client, and the channel is
            # never called for it.
            if request.headers.get("authorization") != _basic(*AGENT_AUTH):
                return httpx.Response(401, json=KEYCLOAK_401)
            return kc.ciba_auth(request)

        router.routes["ciba"].side_effect = authenticating
        yield kc


@pytest.fixture
def one(tmp_path: Path) -> Iterator[tuple[Instance, FakeKeycloak]]:
    clock = Clock()
    with keycloak(clock) as kc, instance(kc_settings(tmp_path, [POLICY]), clock) as a:
        kc.app_client = a.client
        yield a, kc


def nothing_left(store: Store, kc: FakeKeycloak) -> None:
    """No intent, no request, no notice, no refusal outlives a refused request."""
    for forwarded in kc.forwarded:
        intent = dict(httpx.QueryParams(forwarded.content.decode()))["intent"]
        assert store.take_intent(intent, now=NOW) is None
        assert store.get_request(intent) is None
        assert store.take_refusal(intent, now=NOW) is None
    assert store.outbox_due(now=NOW + 10_000, limit=10) == []


# 1. the policy after authentication --------------------------------------------------------------
@pytest.mark.parametrize(
    "fields",
    [
        {},  # a type the client may not request (iam_policy)
        {"authorization_details": json.dumps(KEY_ROTATION)},  # one it may
        {"scope": "openid email", "authorization_details": json.dumps(KEY_ROTATION)},  # a scope it may not
    ],
    ids=["forbidden-type", "allowed", "forbidden-scope"],
)
def test_a_wrong_secret_learns_nothing_about_the_policy(
    one: tuple[Instance, FakeKeycloak], fields: dict[str, str]
) -> None:
    """Whatever the request asks for, a caller with a wrong secret gets Keycloak's 401 and
    nothing else: no answer that differs between what the client may and may not request."""
    a, kc = one
    response = a.bc_authorize(auth=("demo-agent", "wrong-secret"), **fields)
    assert response.status_code == 401
    assert response.json() == KEYCLOAK_401
    assert response.headers["www-authenticate"] == 'Basic realm="ciba-service"'
    assert "allowed" not in response.text and "key_rotation" not in response.text
    assert kc.channel_calls == []  # Keycloak never asked the channel
    assert a.notifier.notices == []
    nothing_left(a.provider.store, kc)


def test_client_independent_errors_are_still_answered_before_forwarding(one: tuple[Instance, FakeKeycloak]) -> None:
    """Syntax, the type registry and the limits say nothing about a client: checked first, even
    with a wrong secret (as before), so Keycloak is not bothered with a malformed request."""
    a, kc = one
    response = a.bc_authorize(auth=("demo-agent", "wrong-secret"), authorization_details='[{"type": "unknown"}]')
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_authorization_details",
        "error_description": "authorization_details[0]: unknown type 'unknown'",
    }
    assert a.bc_authorize(scope="profile").json()["error_description"] == "scope must include 'openid'"
    assert kc.forwarded == []


@pytest.mark.parametrize(
    ("clients", "fields", "error", "description"),
    [
        (
            [POLICY],
            {},
            "invalid_authorization_details",
            # exactly the embedded mode's error for the same refusal
            "authorization_details[0]: type 'iam_policy' is not allowed for this client",
        ),
        (
            [POLICY],
            {"scope": "openid email", "authorization_details": json.dumps(KEY_ROTATION)},
            "invalid_scope",
            "scope 'email' is not allowed for this client",
        ),
        (
            [POLICY.model_copy(update={"grant_types": []})],
            {"authorization_details": json.dumps(KEY_ROTATION)},
            "unauthorized_client",
            "client 'demo-agent' may not use the CIBA grant",
        ),
        (
            [],  # registered only in Keycloak: the standard scopes, every type
            {"scope": "openid admin"},
            "invalid_scope",
            "scope 'admin' is not allowed for this client",
        ),
    ],
    ids=["type", "scope", "grant", "unregistered-client-scope"],
)
def test_a_policy_refusal_reaches_the_authenticated_agent_precisely(
    tmp_path: Path, clients: list[ClientConfig], fields: dict[str, str], error: str, description: str
) -> None:
    clock = Clock()
    with keycloak(clock) as kc, instance(kc_settings(tmp_path, clients), clock) as a:
        kc.app_client = a.client
        response = a.bc_authorize(**fields)
        assert response.status_code == 400
        assert response.json() == {"error": error, "error_description": description}
        assert response.headers["cache-control"] == "no-store"
        # It was Keycloak's channel call that was refused, after Keycloak authenticated the client.
        [channel] = kc.channel_calls
        assert channel.status_code == 403
        assert channel.json() == {"error": "channel_refused", "error_description": description}
        assert a.notifier.notices == []
        assert kc.router.calls.call_count == 2  # the forward and the channel's key fetch: no admin API call
        nothing_left(a.provider.store, kc)


def test_what_the_policy_allows_goes_through(one: tuple[Instance, FakeKeycloak]) -> None:
    a, kc = one
    response = a.bc_authorize(authorization_details=json.dumps(KEY_ROTATION))
    assert response.status_code == 200, [c.text for c in kc.channel_calls]
    assert response.json()["auth_req_id"] == "kc-auth-req-id"
    [notice] = a.notifier.notices
    assert notice.actions == ["rotate the key of svc-api"]
    # the notice was recorded with the channel's request, and its delivery recorded too
    assert a.provider.store.outbox_due(now=NOW + 10_000, limit=10) == []


# 2. refusals in the store: any instance reports them ----------------------------------------------
@pytest.fixture(params=["sqlite", "redis"])
def shared_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Two instances' settings sharing one store: one SQLite file, or one Redis prefix."""
    if request.param == "sqlite":
        return kc_settings(tmp_path, [POLICY])
    return kc_settings(
        tmp_path,
        [POLICY],
        store="redis",
        redis_url=request.getfixturevalue("redis_url"),
        redis_prefix=fresh_prefix(),
    )


@contextmanager
def two_instances(settings: Settings) -> Iterator[tuple[Instance, Instance, FakeKeycloak]]:
    """Instance A takes the agent's request; Keycloak's channel call lands on instance B."""
    clock = Clock()
    with ExitStack() as stack:
        kc = stack.enter_context(keycloak(clock))
        a = stack.enter_context(instance(settings, clock))
        b = stack.enter_context(instance(settings, clock))
        kc.app_client = b.client
        yield a, b, kc


def test_a_refusal_on_instance_b_is_reported_precisely_by_instance_a(shared_settings: Settings) -> None:
    with two_instances(shared_settings) as (a, _, kc):
        response = a.bc_authorize()
        assert response.status_code == 400
        assert response.json() == {
            "error": "invalid_authorization_details",
            "error_description": "authorization_details[0]: type 'iam_policy' is not allowed for this client",
        }
        [channel] = kc.channel_calls
        assert channel.status_code == 403
        nothing_left(a.provider.store, kc)


def test_a_user_without_passkey_refused_on_b_is_unknown_user_id_on_a(shared_settings: Settings) -> None:
    with two_instances(shared_settings) as (a, _, kc):
        kc.credentials.clear()
        response = a.bc_authorize(authorization_details=json.dumps(KEY_ROTATION))
        assert response.status_code == 400
        assert response.json() == {
            "error": "unknown_user_id",
            "error_description": "the user has no passkey registered in Keycloak",
        }


def test_a_binding_refusal_on_b_is_invalid_request_on_a(shared_settings: Settings) -> None:
    with two_instances(shared_settings) as (a, _, kc):
        kc.azp_override = "another-agent"
        response = a.bc_authorize(authorization_details=json.dumps(KEY_ROTATION))
        assert response.json() == {
            "error": "invalid_request",
            "error_description": "the approval could not start: intent belongs to another client",
        }


def test_an_accepted_channel_call_on_b_notifies_from_b(shared_settings: Settings) -> None:
    with two_instances(shared_settings) as (a, b, _):
        response = a.bc_authorize(authorization_details=json.dumps(KEY_ROTATION))
        assert response.status_code == 200
        assert a.notifier.notices == [] and len(b.notifier.notices) == 1
        # delivered and recorded: neither instance's sweep sends it again
        assert a.provider.sweep_notices() == 0 and b.provider.sweep_notices() == 0


def test_a_refusal_is_taken_even_when_keycloak_answers_otherwise(shared_settings: Settings) -> None:
    """Keycloak's own error (not a 5xx) is relayed as it is; the refusal the channel recorded is
    taken all the same, so nothing is left for anyone to report later."""
    with two_instances(shared_settings) as (a, _, kc):

        def refused_but_ok(request: httpx.Request) -> httpx.Response:
            kc.ciba_auth(request)
            return httpx.Response(400, json={"error": "invalid_request", "error_description": "from keycloak"})

        kc.router.routes["ciba"].side_effect = refused_but_ok
        response = a.bc_authorize()
        assert response.status_code == 400
        assert response.json()["error_description"] == "from keycloak"  # Keycloak's own answer, relayed
        nothing_left(a.provider.store, kc)


def test_only_keycloak_can_record_a_refusal(one: tuple[Instance, FakeKeycloak]) -> None:
    """A channel call without Keycloak's signed token is refused before anything is recorded:
    nobody can plant an error for another agent's intent."""
    a, _ = one
    response = a.client.post(
        "/keycloak/auth-channel", json={"intent": "someone-elses-intent"}, headers={"Authorization": "Bearer x"}
    )
    assert response.status_code == 401
    assert a.provider.store.take_refusal("someone-elses-intent", now=NOW) is None


# the refusal store --------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "ciba.sqlite3")
    else:
        opened = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=fresh_prefix(), clock=lambda: NOW)
    yield opened
    opened.close()


def refusal(intent_id: str = "i1", *, expires_in: int = 300, **fields: Any) -> ChannelRefusal:
    values: dict[str, Any] = {
        "error": InvalidAuthorizationDetails.error,
        "error_description": "authorization_details[0]: type 'iam_policy' is not allowed for this client",
        "expires_at": NOW + expires_in,
    }
    values.update(fields)
    return ChannelRefusal(intent_id=intent_id, **values)


def test_a_refusal_is_taken_once(store: Store) -> None:
    store.keep_refusal(refusal(), now=NOW)
    assert store.take_refusal("i1", now=NOW + 1) == refusal()
    assert store.take_refusal("i1", now=NOW + 1) is None
    assert store.take_refusal("other", now=NOW) is None


def test_a_later_refusal_replaces_the_earlier_one(store: Store) -> None:
    store.keep_refusal(refusal(), now=NOW)
    newer = refusal(error=UnknownUserId.error, error_description="the user has no passkey registered in Keycloak")
    store.keep_refusal(newer, now=NOW)
    assert store.take_refusal("i1", now=NOW) == newer


def test_an_expired_refusal_is_not_reported(store: Store) -> None:
    store.keep_refusal(refusal(expires_in=10), now=NOW)
    assert store.take_refusal("i1", now=NOW + 10) is None


def test_sqlite_forgets_expired_refusals(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ciba.sqlite3")
    try:
        for n in range(5):
            store.keep_refusal(refusal(f"old-{n}", expires_in=10), now=NOW)
        store.keep_refusal(refusal("new"), now=NOW + 10)  # each write prunes the expired ones
        assert [row[0] for row in store._db.execute("SELECT intent_id FROM refusals")] == ["new"]
    finally:
        store.close()


def test_redis_refusal_has_a_bounded_lifetime(redis_url: str) -> None:
    prefix = fresh_prefix()
    store = RedisStore.from_url(redis_url, prefix=prefix, clock=lambda: NOW)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store.keep_refusal(refusal(expires_in=300), now=NOW)
        assert 300_000 < client.pttl(f"{prefix}refusal:i1") <= 600_000  # expiry + clock skew
    finally:
        client.close()
        store.close()
