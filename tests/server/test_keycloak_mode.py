"""Keycloak mode against a mocked Keycloak (respx): forward, channel, admin API, callback.

The fake Keycloak below behaves as the real one does (see scripts/keycloak_smoke.py for the
observed facts): its CIBA endpoint calls our authentication channel with a realm-signed bearer
token *before* answering the agent, only a 201 counts, and the callback takes that same token.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from ciba_service.core.errors import ApprovalNotFound
from ciba_service.core.model import CallbackState, RequestStatus
from ciba_service.core.security import b64url_encode
from ciba_service.server.keycloak import KeycloakIssuer, passkey_from_keycloak
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from tests.support.keycloak import ADMIN, AGENT_AUTH, ISSUER, KC, OIDC, USER_ID, FakeKeycloak, _basic
from tests.support.service import ACTION, BASE, CIBA, Clock, Env, RecordingNotifier, make_settings


@dataclass
class KcEnv:
    kc: FakeKeycloak
    client: TestClient
    provider: Provider
    notifier: RecordingNotifier
    clock: Clock

    def bc_authorize(self, **fields: str | None) -> httpx.Response:
        body: dict[str, str | None] = {
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "KC-1",
            "authorization_details": json.dumps(ACTION),
        }
        body.update(fields)
        return self.client.post("/bc-authorize", data={k: v for k, v in body.items() if v is not None}, auth=AGENT_AUTH)

    def approval_url(self) -> str:
        return self.notifier.notices[-1].approval_url.removeprefix(BASE)

    def approve(self) -> httpx.Response:
        url = self.approval_url()
        view = self.client.get(f"{url}/details").json()
        credential = self.kc.authenticator.get(view["publicKey"], origin=BASE)
        return self.client.post(f"{url}/approve", json={"credential": credential})


@pytest.fixture
def kc_env(tmp_path: Path) -> Iterator[KcEnv]:
    clock = Clock()
    notifier = RecordingNotifier()
    settings = make_settings(
        tmp_path,
        mode="keycloak",
        clients=[],
        keycloak={"base_url": KC, "realm": "agents", "admin_client_secret": "dev-only"},
    )
    provider = build_provider(settings, notifier=notifier, clock=clock)
    assert isinstance(provider.issuer, KeycloakIssuer)
    provider.issuer.callbacks.sleep = lambda _: None  # no real backoff waits in tests
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        kc = FakeKeycloak(router=router, clock=clock)
        kc.register_passkey()
        kc.install()
        with TestClient(create_app(provider), base_url=BASE) as client:
            kc.app_client = client
            yield KcEnv(kc=kc, client=client, provider=provider, notifier=notifier, clock=clock)
    provider.store.close()


def test_forward_carries_intent_not_authorization_details(kc_env: KcEnv) -> None:
    response = kc_env.bc_authorize()
    assert response.status_code == 200, [c.text for c in kc_env.kc.channel_calls]
    assert response.json() == {"auth_req_id": "kc-auth-req-id", "expires_in": 120, "interval": 2}
    [forwarded] = kc_env.kc.forwarded
    form = dict(httpx.QueryParams(forwarded.content.decode()))
    assert forwarded.headers["authorization"] == _basic(*AGENT_AUTH)  # the agent's own auth, unchanged
    assert set(form) == {"scope", "login_hint", "binding_message", "intent"}
    assert len(form["intent"]) <= 200  # Keycloak drops longer extra parameters
    [channel] = kc_env.kc.channel_calls
    assert channel.status_code == 201
    [notice] = kc_env.notifier.notices
    assert notice.actions == ["update IAM policy policy-42 (where: https://iam.example.test/)"]


def test_approval_sends_one_succeed_callback_with_the_action(kc_env: KcEnv) -> None:
    kc_env.bc_authorize()
    response = kc_env.approve()
    assert response.status_code == 200, response.text
    [callback] = kc_env.kc.callbacks
    assert callback["status"] == "SUCCEED"
    assert json.loads(callback["authorization_details"]) == ACTION
    approval = json.loads(callback["approval"])
    assert approval["receipt"] == response.json()["receipt"]
    assert approval["service"] == BASE
    # the same approval machinery as embedded mode: the receipt re-verifies
    assert kc_env.provider.verify_receipt(approval["receipt"])["valid"] is True
    # a second decision is refused and sends nothing
    assert kc_env.client.post(f"{kc_env.approval_url()}/deny", json={}).status_code == 409
    assert len(kc_env.kc.callbacks) == 1


def test_denial_sends_unauthorized(kc_env: KcEnv) -> None:
    kc_env.bc_authorize()
    assert kc_env.client.post(f"{kc_env.approval_url()}/deny", json={}).status_code == 200
    assert kc_env.kc.callbacks == [{"status": "UNAUTHORIZED"}]


def test_expiry_sends_no_callback_so_the_agent_gets_expired_token(kc_env: KcEnv) -> None:
    # Keycloak treats CANCELLED as a denial: sent before Keycloak's own expiry it would tell
    # the agent access_denied. The request is closed here and Keycloak expires its side.
    kc_env.bc_authorize()
    approval_url = kc_env.approval_url()
    kc_env.clock.advance(121)
    assert kc_env.provider.sweep_expired() == 1
    assert kc_env.provider.sweep_expired() == 0
    assert kc_env.kc.callbacks == []
    request = kc_env.provider.store.find_request_by_approval_id(approval_url.split("/")[2])
    assert request is not None and request.callback_state is CallbackState.WITHHELD
    assert kc_env.client.get(f"{approval_url}/details").json()["status"] == "expired"
    # and a decision arriving now is refused and sends nothing
    assert kc_env.client.post(f"{approval_url}/deny", json={}).status_code == 410
    assert kc_env.kc.callbacks == []


def test_callback_retried_only_when_it_never_reached_keycloak(kc_env: KcEnv) -> None:
    kc_env.bc_authorize()
    route = kc_env.kc.router.routes["callback"]
    route.side_effect = [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.Response(200)]
    assert kc_env.approve().status_code == 200
    assert route.call_count == 3
    request = kc_env.provider.store.get_request(kc_env.approval_url().split("/")[2]) or next(
        iter([kc_env.provider.store.find_request_by_approval_id(kc_env.approval_url().split("/")[2])])
    )
    assert request is not None and request.callback_state is CallbackState.SENT


@pytest.mark.parametrize("failure", [httpx.ReadTimeout("no answer"), httpx.Response(500), httpx.Response(400)])
def test_ambiguous_or_refused_callback_is_never_resent(kc_env: KcEnv, failure: Any) -> None:
    kc_env.bc_authorize()
    route = kc_env.kc.router.routes["callback"]
    route.side_effect = [failure, httpx.Response(200)]
    assert kc_env.approve().status_code == 200  # the user's decision stands either way
    assert route.call_count == 1
    request = kc_env.provider.store.find_request_by_approval_id(kc_env.approval_url().split("/")[2])
    assert request is not None
    assert request.status is RequestStatus.APPROVED
    assert request.callback_state is CallbackState.FAILED
    kc_env.clock.advance(500)
    assert kc_env.provider.sweep_expired() == 0  # decided requests are not cancelled
    assert route.call_count == 1


def test_keycloak_unreachable_gives_503_and_leaves_nothing(kc_env: KcEnv) -> None:
    route = kc_env.kc.router.routes["ciba"]
    route.side_effect = httpx.ConnectError("connection refused")
    response = kc_env.bc_authorize()
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert "unreachable" in response.json()["error_description"]
    db = kc_env.provider.store._db  # nothing half-done: no intent, no request
    assert db.execute("SELECT COUNT(*) FROM intents").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0
    # recovers without a restart
    route.side_effect = kc_env.kc.ciba_auth
    assert kc_env.bc_authorize().status_code == 200


def test_keycloak_errors_pass_through_unchanged(kc_env: KcEnv) -> None:
    route = kc_env.kc.router.routes["ciba"]
    route.side_effect = None
    route.return_value = httpx.Response(
        401,
        json={"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"},
    )
    response = kc_env.bc_authorize()
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_client",
        "error_description": "Invalid client or Invalid client credentials",
    }
    # RFC 9110 11.6.1: the relayed 401 still carries a challenge
    assert response.headers["www-authenticate"] == 'Basic realm="ciba-service"'
    assert kc_env.provider.store._db.execute("SELECT COUNT(*) FROM intents").fetchone()[0] == 0


def test_invalid_request_is_refused_before_forwarding(kc_env: KcEnv) -> None:
    response = kc_env.bc_authorize(authorization_details='[{"type": "unknown"}]')
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_authorization_details"
    assert kc_env.kc.router.routes["ciba"].call_count == 0


def _channel(kc_env: KcEnv, token: str | None, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return kc_env.client.post("/keycloak/auth-channel", json=body, headers=headers)


def _intent(kc_env: KcEnv) -> str:
    """Store an intent as /bc-authorize would, without Keycloak calling back."""
    route = kc_env.kc.router.routes["ciba"]
    captured: dict[str, str] = {}

    def hold(request: httpx.Request) -> httpx.Response:
        captured.update(httpx.QueryParams(request.content.decode()))
        return httpx.Response(200, json={"auth_req_id": "x", "expires_in": 120, "interval": 2})

    route.side_effect = hold
    kc_env.bc_authorize()
    return captured["intent"]


@pytest.mark.parametrize(
    ("make_token", "body_change", "status", "description"),
    [
        (lambda kc: None, {}, 401, "bearer token required"),
        (
            lambda kc: kc.channel_token(azp="demo-agent", iss="http://evil.test/realms/agents"),
            {},
            401,
            "channel token rejected: Invalid issuer",
        ),
        (
            lambda kc: kc.channel_token(azp="demo-agent", aud="someone-else"),
            {},
            401,
            "channel token rejected: Audience doesn't match",
        ),
        (
            lambda kc: kc.channel_token(azp="demo-agent", exp=int(kc.clock()) - 60),
            {},
            401,
            "channel token rejected: expired",
        ),
        (
            lambda kc: jwt.encode(
                {"iss": ISSUER},
                rsa.generate_private_key(65537, 2048),
                algorithm="RS256",
                headers={"kid": "other"},
            ),
            {},
            401,
            "channel token signed by an unknown key",
        ),
        (lambda kc: kc.channel_token(azp="other-agent"), {}, 403, "intent belongs to another client"),
        (
            lambda kc: kc.channel_token(azp="demo-agent"),
            {"login_hint": "bob"},
            403,
            "intent was made for another login_hint",
        ),
        (
            lambda kc: kc.channel_token(azp="demo-agent"),
            {"binding_message": "OTHER"},
            403,
            "binding_message differs from the intent",
        ),
        (lambda kc: kc.channel_token(azp="demo-agent"), {"intent": "nope"}, 400, "unknown or expired intent"),
        (
            lambda kc: kc.channel_token(azp="demo-agent"),
            {"intent": None},
            400,
            "the request carries no intent reference; use this service's /bc-authorize",
        ),
    ],
)
def test_channel_refusals(
    kc_env: KcEnv, make_token: Any, body_change: dict[str, Any], status: int, description: str
) -> None:
    intent = _intent(kc_env)
    body = {"login_hint": "alice", "scope": "openid", "binding_message": "KC-1", "intent": intent}
    body.update(body_change)
    response = _channel(kc_env, make_token(kc_env.kc), body)
    assert response.status_code == status
    assert response.json()["error_description"] == description


def test_channel_refuses_user_without_passkey_or_disabled(kc_env: KcEnv) -> None:
    kc_env.kc.credentials.clear()
    intent = _intent(kc_env)
    body = {"login_hint": "alice", "scope": "openid", "binding_message": "KC-1", "intent": intent}
    response = _channel(kc_env, kc_env.kc.channel_token(azp="demo-agent"), body)
    assert response.status_code == 403
    assert response.json()["error_description"] == "the user has no passkey registered in Keycloak"


def test_channel_admin_api_down_is_503(kc_env: KcEnv) -> None:
    kc_env.kc.router.get(f"{ADMIN}/users/{USER_ID}").mock(side_effect=httpx.ConnectError("down"))
    intent = _intent(kc_env)
    body = {"login_hint": "alice", "scope": "openid", "binding_message": "KC-1", "intent": intent}
    response = _channel(kc_env, kc_env.kc.channel_token(azp="demo-agent"), body)
    assert response.status_code == 503


def test_an_intent_binds_one_channel_call(kc_env: KcEnv) -> None:
    intent = _intent(kc_env)
    body = {"login_hint": "alice", "scope": "openid", "binding_message": "KC-1", "intent": intent}
    assert _channel(kc_env, kc_env.kc.channel_token(azp="demo-agent"), body).status_code == 201
    again = _channel(kc_env, kc_env.kc.channel_token(azp="demo-agent"), body)
    assert again.status_code == 400
    assert again.json()["error_description"] == "unknown or expired intent"


def test_passkeys_are_cached_for_the_ttl(kc_env: KcEnv) -> None:
    kc_env.bc_authorize()
    kc_env.bc_authorize(binding_message="KC-2")
    calls = [c for c in kc_env.kc.router.calls if c.request.url.path.endswith("/credentials")]
    assert len(calls) == 1
    kc_env.clock.advance(31)
    kc_env.bc_authorize(binding_message="KC-3")
    calls = [c for c in kc_env.kc.router.calls if c.request.url.path.endswith("/credentials")]
    assert len(calls) == 2


def test_passkey_conversion_from_admin_api() -> None:
    cred_id = bytes(range(40))
    representation = {
        "type": "webauthn-passwordless",
        "createdDate": 1_700_000_000_000,
        "credentialData": json.dumps(
            {
                "credentialId": base64.b64encode(cred_id).decode(),
                "credentialPublicKey": b64url_encode(b"\xa5\x01\x02"),
                "counter": 7,
            }
        ),
    }
    passkey = passkey_from_keycloak(representation, user_id="u1")
    assert passkey is not None
    assert passkey.credential_id == cred_id
    assert passkey.public_key == b"\xa5\x01\x02"
    assert passkey.sign_count == 7
    assert passkey_from_keycloak({**representation, "type": "password"}, user_id="u1") is None
    assert passkey_from_keycloak({**representation, "credentialData": "{"}, user_id="u1") is None


def test_discovery_names_keycloak_as_issuer(kc_env: KcEnv) -> None:
    meta = kc_env.client.get("/.well-known/openid-configuration").json()
    assert meta["issuer"] == ISSUER
    assert meta["token_endpoint"] == f"{OIDC}/token"
    assert meta["jwks_uri"] == f"{OIDC}/certs"
    assert meta["backchannel_authentication_endpoint"] == f"{BASE}/bc-authorize"


def test_token_endpoint_passes_through(kc_env: KcEnv) -> None:
    kc_env.kc.router.post(f"{OIDC}/token").mock(
        return_value=httpx.Response(400, json={"error": "authorization_pending"})
    )
    response = kc_env.client.post("/token", data={"grant_type": CIBA, "auth_req_id": "kc-auth-req-id"}, auth=AGENT_AUTH)
    assert response.status_code == 400
    assert response.json() == {"error": "authorization_pending"}
    forwarded = kc_env.kc.router.calls.last.request
    assert forwarded.headers["authorization"] == _basic(*AGENT_AUTH)
    assert dict(httpx.QueryParams(forwarded.content.decode())) == {
        "grant_type": CIBA,
        "auth_req_id": "kc-auth-req-id",
    }


def test_token_endpoint_relays_a_401_with_a_challenge(kc_env: KcEnv) -> None:
    kc_env.kc.router.post(f"{OIDC}/token").mock(
        return_value=httpx.Response(401, json={"error": "invalid_client", "error_description": "bad secret"})
    )
    form = {"grant_type": CIBA, "auth_req_id": "kc-auth-req-id", "client_id": "agent-1", "client_secret": "nope"}
    response = kc_env.client.post("/token", data=form)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client", "error_description": "bad secret"}
    assert response.headers["www-authenticate"] == 'Basic realm="ciba-service"'
    assert response.headers["cache-control"] == "no-store"


def test_missing_client_authentication_in_keycloak_mode_carries_a_challenge(kc_env: KcEnv) -> None:
    response = kc_env.client.post("/bc-authorize", data={"scope": "openid", "login_hint": "alice"})
    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client", "error_description": "client authentication is required"}
    assert response.headers["www-authenticate"] == 'Basic realm="ciba-service"'


def test_a_user_without_passkey_gets_a_precise_error_not_a_503(kc_env: KcEnv) -> None:
    # Keycloak itself would only say "503 server_error" when the channel refuses.
    kc_env.kc.credentials.clear()
    response = kc_env.bc_authorize()
    assert response.status_code == 400
    assert response.json() == {
        "error": "unknown_user_id",
        "error_description": "the user has no passkey registered in Keycloak",
    }
    assert kc_env.provider.store._db.execute("SELECT COUNT(*) FROM intents").fetchone()[0] == 0


def test_a_refused_binding_gets_invalid_request(kc_env: KcEnv) -> None:
    kc_env.kc.azp_override = "another-agent"
    response = kc_env.bc_authorize()
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "the approval could not start: intent belongs to another client",
    }


def test_a_passkey_deleted_in_keycloak_stops_approving_at_once(kc_env: KcEnv) -> None:
    kc_env.bc_authorize()
    kc_env.kc.credentials.clear()  # the admin removes the lost device's passkey in Keycloak
    response = kc_env.approve()
    assert response.status_code == 400
    assert response.json()["error_description"] == "credential is not a passkey of the requested user"
    assert kc_env.kc.callbacks == []


def test_approval_is_refused_when_keycloak_cannot_confirm_the_passkey(kc_env: KcEnv) -> None:
    kc_env.bc_authorize()
    kc_env.kc.router.get(f"{ADMIN}/users/{USER_ID}").mock(side_effect=httpx.ConnectError("down"))
    response = kc_env.approve()
    assert response.status_code == 400
    assert response.json()["error_description"] == "cannot confirm the passkey with Keycloak right now; try again"


def test_oversized_or_deeply_nested_channel_bodies_are_refused(kc_env: KcEnv) -> None:
    big = kc_env.client.post(
        "/keycloak/auth-channel", content=b"{" + b" " * 20_000 + b"}", headers={"Content-Type": "application/json"}
    )
    deep = kc_env.client.post(
        "/keycloak/auth-channel", content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert big.status_code == 400 and deep.status_code == 400


# One interface, two modes: what keycloak mode does not serve it says so (discovery) and refuses
# with a protocol error, never with embedded behaviour (the service's own key, local users).
def test_discovery_lists_only_what_keycloak_mode_serves(kc_env: KcEnv) -> None:
    meta = kc_env.client.get("/.well-known/openid-configuration").json()
    assert meta["introspection_endpoint"] == f"{OIDC}/token/introspect"
    assert meta["backchannel_token_delivery_modes_supported"] == ["poll", "ping"]
    assert meta["backchannel_user_code_parameter_supported"] is False
    assert "backchannel_authentication_request_signing_alg_values_supported" not in meta
    assert "private_key_jwt" not in meta["token_endpoint_auth_methods_supported"]


@pytest.mark.parametrize(
    ("method", "path", "needle"),
    [
        ("get", "/jwks.json", f"{OIDC}/certs"),
        ("post", "/introspect", f"{OIDC}/token/introspect"),
    ],
)
def test_endpoints_keycloak_serves_are_not_offered_here(kc_env: KcEnv, method: str, path: str, needle: str) -> None:
    if method == "get":
        response = kc_env.client.get(path)
    else:
        response = kc_env.client.post(path, data={"token": "x"}, auth=AGENT_AUTH)
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "invalid_request"
    assert needle in body["error_description"]
    assert kc_env.kc.router.calls.call_count == 0  # nothing was asked of Keycloak either


def test_enrollment_is_keycloaks(kc_env: KcEnv) -> None:
    with pytest.raises(ApprovalNotFound, match="Keycloak"):
        kc_env.provider.add_user(username="mallory")
    assert kc_env.provider.store.find_user("mallory") is None
    response = kc_env.client.get("/enroll/some-token/details")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_user_code_is_refused_in_keycloak_mode_not_ignored(kc_env: KcEnv) -> None:
    response = kc_env.bc_authorize(user_code="1234")
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "error_description": "'user_code' is not supported in keycloak mode",
    }
    assert kc_env.kc.forwarded == []
    assert kc_env.provider.store._db.execute("SELECT COUNT(*) FROM intents").fetchone()[0] == 0


def test_embedded_mode_has_no_authentication_channel(env: Env) -> None:
    response = env.client.post("/keycloak/auth-channel", json={"intent": "x"}, headers={"Authorization": "Bearer x"})
    assert response.status_code == 404
    assert response.json()["error"] == "channel_refused"
    assert env.notifier.notices == []
