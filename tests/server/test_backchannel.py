"""The backchannel authentication endpoint (CIBA Core 1.0 sections 7 and 13), over ASGI.

Each refusal asserts the exact status, ``{error, error_description}`` and ``no-store``; none
of them may create a request or notify the user.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig
from ciba_service.core.model import RequestStatus
from ciba_service.core.security import auth_req_id_key, hash_secret
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from tests.support.service import (
    ACTION,
    AGENT_ID,
    AGENT_SECRET,
    BASE,
    CIBA,
    OTHER_ID,
    OTHER_SECRET,
    Clock,
    Env,
    RecordingNotifier,
    enroll,
    make_settings,
)

B64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def assert_oauth_error(response: httpx.Response, *, status: int = 400, error: str, description: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": error, "error_description": description}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def assert_refused(env: Env, response: httpx.Response, *, error: str, description: str) -> None:
    assert_oauth_error(response, error=error, description=description)
    assert env.notifier.notices == []


def post_pairs(env: Env, pairs: list[tuple[str, str]]) -> httpx.Response:
    return env.client.post(
        "/bc-authorize",
        content=urlencode(pairs),
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=(AGENT_ID, AGENT_SECRET),
    )


def db(env: Env) -> sqlite3.Connection:
    return sqlite3.connect(env.settings.data_dir / "ciba.sqlite3", isolation_level=None)


# success --------------------------------------------------------------------------------


def test_success_shape(env: Env) -> None:
    response = env.bc_authorize()
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"auth_req_id", "expires_in", "interval"}
    assert body["expires_in"] == 300  # request_expiry_default
    assert body["interval"] == 2  # poll_interval
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    request = env.request_for(body["auth_req_id"])
    assert request.status is RequestStatus.PENDING
    assert request.client_id == AGENT_ID
    assert request.scope == "openid"
    assert request.binding_message == "BM-1"
    assert request.authorization_details == ACTION
    assert request.expires_at == request.created_at + 300 == int(env.clock()) + 300


def test_auth_req_id_has_at_least_128_bits_and_is_unique(env: Env) -> None:
    ids = [env.bc_authorize().json()["auth_req_id"] for _ in range(50)]
    for auth_req_id in ids:
        assert B64URL.match(auth_req_id), auth_req_id
        assert len(auth_req_id) >= 22  # 22 base64url characters carry 132 bits
        assert len(base64.urlsafe_b64decode(auth_req_id + "=" * (-len(auth_req_id) % 4))) >= 16
    assert len(set(ids)) == 50


def test_scope_is_deduplicated_and_allowed_extra_scopes_pass(env: Env) -> None:
    auth_req_id = env.bc_authorize(scope="openid profile openid").json()["auth_req_id"]
    assert env.request_for(auth_req_id).scope == "openid profile"


def test_agent_2_may_request_its_allowed_type(env: Env) -> None:
    details = [{"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api"}]
    response = env.bc_authorize(auth=(OTHER_ID, OTHER_SECRET), authorization_details=json.dumps(details))
    assert response.status_code == 200, response.text


def test_binding_message_is_optional(env: Env) -> None:
    response = env.bc_authorize(binding_message=None)
    assert response.status_code == 200, response.text
    assert env.request_for(response.json()["auth_req_id"]).binding_message is None


@pytest.mark.parametrize("message", ["x" * 64, "Café 42 ✓", "A1-B2 (deploy)", "Ünïcödé"])
def test_valid_binding_messages(env: Env, message: str) -> None:
    response = env.bc_authorize(binding_message=message)
    assert response.status_code == 200, response.text
    assert env.request_for(response.json()["auth_req_id"]).binding_message == message


# scope ----------------------------------------------------------------------------------


def test_missing_scope_is_invalid_request(env: Env) -> None:
    # CIBA 13: a missing required parameter is invalid_request (invalid_scope is for a scope
    # that is "invalid, unknown, or malformed").
    assert_refused(
        env,
        env.bc_authorize(scope=None),
        error="invalid_request",
        description="missing required parameter 'scope'",
    )


@pytest.mark.parametrize(
    ("scope", "description"),
    [
        ("profile", "scope must include 'openid'"),
        ("openid2", "scope must include 'openid'"),
        ("OPENID", "scope must include 'openid'"),
        ("openid email", "scope 'email' is not allowed for this client"),
        ("openid profile admin", "scope 'admin' is not allowed for this client"),
        ("openid  profile", "scope has empty values; separate scopes with single spaces"),
        (" openid", "scope has empty values; separate scopes with single spaces"),
        ("openid ", "scope has empty values; separate scopes with single spaces"),
    ],
    ids=[
        "no-openid",
        "openid-prefix",
        "openid-case",
        "not-allowed",
        "second-not-allowed",
        "double-space",
        "leading-space",
        "trailing-space",
    ],
)
def test_invalid_scope(env: Env, scope: str, description: str) -> None:
    assert_refused(env, env.bc_authorize(scope=scope), error="invalid_scope", description=description)


def test_scope_allowed_for_one_client_only(env: Env) -> None:
    # agent-2 was registered with the default scopes (openid only).
    details = [{"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api"}]
    response = env.bc_authorize(
        auth=(OTHER_ID, OTHER_SECRET), scope="openid profile", authorization_details=json.dumps(details)
    )
    assert_refused(env, response, error="invalid_scope", description="scope 'profile' is not allowed for this client")


# hints ----------------------------------------------------------------------------------


def test_no_hint(env: Env) -> None:
    assert_refused(
        env,
        env.bc_authorize(login_hint=None),
        error="invalid_request",
        description="one of login_hint, login_hint_token or id_token_hint is required",
    )


@pytest.mark.parametrize(
    ("fields", "description"),
    [
        ({"login_hint_token": "eyJ.x.y"}, "only one hint may be given, got login_hint, login_hint_token"),
        ({"id_token_hint": "eyJ.x.y"}, "only one hint may be given, got login_hint, id_token_hint"),
        (
            {"login_hint_token": "a", "id_token_hint": "b"},
            "only one hint may be given, got login_hint, login_hint_token, id_token_hint",
        ),
        (
            {"login_hint": None, "login_hint_token": "eyJ.x.y"},
            "login_hint_token needs keys registered for the client",
        ),
        (
            {"login_hint": None, "id_token_hint": "garbage"},
            "id_token_hint is not an ID token issued by this provider (Not enough segments)",
        ),
    ],
    ids=[
        "login_hint+login_hint_token",
        "login_hint+id_token_hint",
        "three",
        "login_hint_token-without-keys",
        "id_token_hint-not-a-jwt",
    ],
)
def test_hint_errors(env: Env, fields: dict[str, str], description: str) -> None:
    assert_refused(env, env.bc_authorize(**fields), error="invalid_request", description=description)


def _issued_tokens(env: Env) -> dict[str, Any]:
    # Provider.decode_id_token lets PyJWT check 'iat' against the wall clock (see the xfail
    # below), so these tokens are minted at wall-clock time.
    env.clock.now = time.time()
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.approve(auth_req_id)
    body: dict[str, Any] = env.token(auth_req_id).json()
    env.notifier.notices.clear()
    return body


def test_id_token_hint_selects_the_user(env: Env) -> None:
    id_token = _issued_tokens(env)["id_token"]
    response = env.bc_authorize(login_hint=None, id_token_hint=id_token)
    assert response.status_code == 200, response.text
    alice = env.provider.store.find_user("alice")
    assert alice is not None
    assert env.request_for(response.json()["auth_req_id"]).user_id == alice.user_id
    env.clock.advance(3600)  # like OpenID Connect Core 3.1.2.1, an expired ID token is still a hint
    assert env.bc_authorize(login_hint=None, id_token_hint=id_token).status_code == 200


def test_id_token_hint_is_judged_by_the_provider_clock(env: Env) -> None:
    # The provider (and every token it mints) runs on its injected clock; an ID token it
    # issued a second ago must be a valid hint even when that clock is ahead of the host's.
    env.clock.now = time.time() + 86_400
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.approve(auth_req_id)
    id_token = env.token(auth_req_id).json()["id_token"]
    env.clock.advance(1)
    response = env.bc_authorize(login_hint=None, id_token_hint=id_token)
    assert response.status_code == 200, response.text


def test_id_token_hint_of_another_client(env: Env) -> None:
    id_token = _issued_tokens(env)["id_token"]
    details = [{"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api"}]
    response = env.bc_authorize(
        auth=(OTHER_ID, OTHER_SECRET),
        login_hint=None,
        id_token_hint=id_token,
        authorization_details=json.dumps(details),
    )
    assert_refused(env, response, error="invalid_request", description="id_token_hint was not issued to this client")


def test_access_token_is_not_an_id_token_hint(env: Env) -> None:
    access_token = _issued_tokens(env)["access_token"]
    assert_refused(
        env,
        env.bc_authorize(login_hint=None, id_token_hint=access_token),
        error="invalid_request",
        description="id_token_hint is not an ID token issued by this provider (not an ID token)",
    )


def test_id_token_hint_signed_by_another_key(env: Env) -> None:
    forged = jwt.encode(
        {"iss": BASE, "sub": "x", "aud": AGENT_ID},
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": env.provider.signing_key.kid},
    )
    assert_refused(
        env,
        env.bc_authorize(login_hint=None, id_token_hint=forged),
        error="invalid_request",
        description="id_token_hint is not an ID token issued by this provider (Signature verification failed)",
    )


def test_unknown_user(env: Env) -> None:
    assert_refused(
        env,
        env.bc_authorize(login_hint="mallory"),
        error="unknown_user_id",
        description="no enabled user matches the hint 'mallory'",
    )


def test_disabled_user(env: Env) -> None:
    with db(env) as conn:
        conn.execute("UPDATE users SET enabled = 0 WHERE username = 'alice'")
    assert_refused(
        env,
        env.bc_authorize(),
        error="unknown_user_id",
        description="user 'alice' is disabled and cannot be asked to approve",
    )


def test_user_without_passkey(env: Env) -> None:
    env.provider.add_user(username="carol")
    assert_refused(
        env,
        env.bc_authorize(login_hint="carol"),
        error="unknown_user_id",
        description="user 'carol' has no passkey enrolled and cannot approve",
    )


# binding_message ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "description"),
    [
        ("x" * 65, "binding_message is longer than 64 characters"),
        ("BM\x07", "binding_message contains a control, format or unusual space character (U+0007)"),
        ("BM\n1", "binding_message contains a control, format or unusual space character (U+000A)"),
        ("\tBM", "binding_message contains a control, format or unusual space character (U+0009)"),
        ("BM\x7f", "binding_message contains a control, format or unusual space character (U+007F)"),
        ("pay \u202e01$", "binding_message contains a control, format or unusual space character (U+202E)"),
        ("B\u200bM", "binding_message contains a control, format or unusual space character (U+200B)"),
        ("BM\u2028", "binding_message contains a control, format or unusual space character (U+2028)"),
        ("BM\ufeff", "binding_message contains a control, format or unusual space character (U+FEFF)"),
        ("   ", "binding_message is blank"),
        ("\u00a0", "binding_message contains a control, format or unusual space character (U+00A0)"),
        (" BM-1", "binding_message has leading or trailing whitespace"),
        ("BM-1 ", "binding_message has leading or trailing whitespace"),
        ("BM-1\u3000", "binding_message contains a control, format or unusual space character (U+3000)"),
    ],
    ids=[
        "too-long",
        "bell",
        "newline",
        "tab",
        "del",
        "bidi-override",
        "zero-width",
        "line-separator",
        "bom",
        "blank",
        "nbsp-only",
        "leading-space",
        "trailing-space",
        "trailing-ideographic-space",
    ],
)
def test_invalid_binding_message(env: Env, message: str, description: str) -> None:
    assert_refused(
        env, env.bc_authorize(binding_message=message), error="invalid_binding_message", description=description
    )


# requested_expiry -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "description"),
    [
        ("abc", "requested_expiry must be a positive integer number of seconds"),
        ("0", "requested_expiry must be a positive integer number of seconds"),
        ("-5", "requested_expiry must be a positive integer number of seconds"),
        ("+60", "requested_expiry must be a positive integer number of seconds"),
        ("60.0", "requested_expiry must be a positive integer number of seconds"),
        ("1e2", "requested_expiry must be a positive integer number of seconds"),
        (" 60", "requested_expiry must be a positive integer number of seconds"),
        ("\u0661\u0662\u0660", "requested_expiry must be a positive integer number of seconds"),  # Arabic 120
        ("601", "requested_expiry exceeds the maximum of 600 seconds"),
        ("86400", "requested_expiry exceeds the maximum of 600 seconds"),
        ("99999999999999999999", "requested_expiry must be a positive integer number of seconds"),
    ],
    ids=[
        "non-numeric",
        "zero",
        "negative",
        "plus-sign",
        "float",
        "exponent",
        "space",
        "non-ascii-digits",
        "max-plus-one",
        "too-large",
        "huge",
    ],
)
def test_invalid_requested_expiry(env: Env, value: str, description: str) -> None:
    assert_refused(env, env.bc_authorize(requested_expiry=value), error="invalid_request", description=description)


@pytest.mark.parametrize(("value", "expires_in"), [("1", 1), ("120", 120), ("600", 600), ("0090", 90)])
def test_valid_requested_expiry_is_reflected(env: Env, value: str, expires_in: int) -> None:
    response = env.bc_authorize(requested_expiry=value)
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == expires_in
    request = env.request_for(response.json()["auth_req_id"])
    assert request.expires_at - request.created_at == expires_in


def test_requested_expiry_governs_expiry_at_the_token_endpoint(env: Env) -> None:
    auth_req_id = env.bc_authorize(requested_expiry="30").json()["auth_req_id"]
    env.clock.advance(29)
    assert env.token(auth_req_id).json()["error"] == "authorization_pending"
    env.clock.advance(1)
    assert_oauth_error(
        env.token(auth_req_id), error="expired_token", description="the authentication request has expired"
    )


# request syntax -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["scope", "login_hint", "binding_message", "authorization_details", "requested_expiry", "request"]
)
def test_repeated_parameter(env: Env, name: str) -> None:
    # RFC 6749 3.2: "Request and response parameters MUST NOT be included more than once."
    values = {
        "scope": "openid",
        "login_hint": "alice",
        "binding_message": "BM-1",
        "authorization_details": json.dumps(ACTION),
        "requested_expiry": "60",
        "request": "eyJ.x.y",
    }
    pairs = [(k, v) for k, v in values.items() if k not in ("requested_expiry", "request")]
    pairs.append((name, values[name]))
    if name in ("requested_expiry", "request"):
        pairs.append((name, values[name]))
    assert_refused(
        env,
        post_pairs(env, pairs),
        error="invalid_request",
        description=f"parameter '{name}' is included more than once",
    )


def test_repeated_parameter_with_one_empty_value(env: Env) -> None:
    pairs = [
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("login_hint", ""),
        ("authorization_details", json.dumps(ACTION)),
    ]
    assert_refused(
        env,
        post_pairs(env, pairs),
        error="invalid_request",
        description="parameter 'login_hint' is included more than once",
    )


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("request", "the client has no registered keys to verify 'request' with"),
        ("request_uri", "'request_uri' is not supported"),
        ("user_code", "'user_code' is not supported by this provider"),
    ],
)
def test_unsupported_parameters(env: Env, name: str, description: str) -> None:
    assert_refused(env, env.bc_authorize(**{name: "value"}), error="invalid_request", description=description)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"scope": "openid", "login_hint": "alice"}},
        {"content": b"scope=openid&login_hint=alice", "headers": {"content-type": "text/plain"}},
        {"content": b"scope=openid&login_hint=alice"},
        {"files": {"scope": (None, "openid")}},
    ],
    ids=["json", "text-plain", "no-content-type", "multipart"],
)
def test_wrong_content_type(env: Env, kwargs: dict[str, Any]) -> None:
    response = env.client.post("/bc-authorize", auth=(AGENT_ID, AGENT_SECRET), **kwargs)
    assert_refused(
        env,
        response,
        error="invalid_request",
        description="the request body must be application/x-www-form-urlencoded",
    )


def test_form_content_type_with_charset_is_accepted(env: Env) -> None:
    pairs = [
        ("scope", "openid"),
        ("login_hint", "alice"),
        ("authorization_details", json.dumps(ACTION)),
    ]
    response = env.client.post(
        "/bc-authorize",
        content=urlencode(pairs),
        headers={"content-type": "application/x-www-form-urlencoded; charset=UTF-8"},
        auth=(AGENT_ID, AGENT_SECRET),
    )
    assert response.status_code == 200, response.text


def test_missing_authorization_details(env: Env) -> None:
    assert_refused(
        env,
        env.bc_authorize(authorization_details=None),
        error="invalid_request",
        description="authorization_details is required: tokens are issued per action",
    )


def test_invalid_authorization_details_over_the_endpoint(env: Env) -> None:
    assert_refused(
        env,
        env.bc_authorize(authorization_details='[{"type": "iam_policy"}]'),
        error="invalid_authorization_details",
        description="authorization_details[0]: 'actions' is required for type 'iam_policy'",
    )


def test_checks_run_in_spec_order(env: Env) -> None:
    # Several faults at once: the first check in the list (unsupported parameters) answers.
    response = env.bc_authorize(request_uri="x", scope="profile", login_hint=None, binding_message=" x")
    assert_refused(env, response, error="invalid_request", description="'request_uri' is not supported")


# notification ---------------------------------------------------------------------------


def test_notice_carries_approval_url_not_auth_req_id(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    request = env.request_for(auth_req_id)
    [notice] = env.notifier.notices
    assert notice.approval_url == f"{BASE}/approve/{request.approval_id}"
    assert auth_req_id not in notice.approval_url
    assert request.approval_id != auth_req_id
    assert len(request.approval_id) >= 22
    assert notice.username == "alice"
    assert notice.client_id == AGENT_ID
    assert notice.client_name == "Agent One"
    assert notice.binding_message == "BM-1"
    assert notice.actions == ["update IAM policy policy-42 (where: https://iam.example.test/)"]
    assert notice.expires_at == request.expires_at
    # Only the hash of the auth_req_id is stored: a leaked database holds no redeemable id.
    assert request.auth_req_id_hash == auth_req_id_key(auth_req_id)
    with db(env) as conn:
        dump = "\n".join(conn.iterdump())
    assert auth_req_id not in dump


# restart --------------------------------------------------------------------------------


def test_request_survives_provider_restart(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.provider.store.close()

    second = build_provider(env.settings, notifier=env.notifier, clock=env.clock)
    try:
        request = second.store.find_request_by_auth_req_id(auth_req_id_key(auth_req_id))
        assert request is not None and request.status is RequestStatus.PENDING
        with TestClient(create_app(second), base_url=BASE) as client:
            pending = client.post(
                "/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id}, auth=(AGENT_ID, AGENT_SECRET)
            )
            assert pending.json()["error"] == "authorization_pending"
            view = client.get(f"/approve/{request.approval_id}/details").json()
            assert view["status"] == "pending"
            credential = env.authenticator.get(view["publicKey"], origin=BASE)
            decided = client.post(f"/approve/{request.approval_id}/approve", json={"credential": credential})
            assert decided.status_code == 200, decided.text
            env.clock.advance(2)
            token = client.post(
                "/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id}, auth=(AGENT_ID, AGENT_SECRET)
            )
            assert token.status_code == 200, token.text
            assert token.json()["authorization_details"] == ACTION
            # signed by the same key: the restart kept it
            assert second.signing_key.kid == env.provider.signing_key.kid
            reissued = client.post(
                "/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id}, auth=(AGENT_ID, AGENT_SECRET)
            )
            assert_oauth_error(reissued, error="invalid_grant", description="auth_req_id has already been used")
    finally:
        second.store.close()


# login_hint_token and signed authentication requests (a client with registered keys) ----------

KEYED_ID, KEYED_SECRET = "agent-keys", "test-secret-agent-keys"


@dataclass
class Keyed:
    client: TestClient
    provider: Provider
    clock: Clock
    key: ec.EllipticCurvePrivateKey

    def sign(self, claims: dict[str, Any], *, key: ec.EllipticCurvePrivateKey | None = None, **header: Any) -> str:
        return jwt.encode(claims, key or self.key, algorithm="ES256", headers={"kid": "k1", **header})

    def post(self, data: dict[str, str]) -> httpx.Response:
        return self.client.post("/bc-authorize", data=data, auth=(KEYED_ID, KEYED_SECRET))

    def body(self, **fields: str | None) -> dict[str, str]:
        body: dict[str, str | None] = {"scope": "openid", "authorization_details": json.dumps(ACTION), **fields}
        return {k: v for k, v in body.items() if v is not None}

    def hint_token(self, sub_id: Any, **claims: Any) -> str:
        now = int(self.clock())
        return self.sign({"aud": BASE, "iat": now, "exp": now + 60, "sub_id": sub_id, **claims})

    def request_object(self, **claims: Any) -> str:
        now = int(self.clock())
        base = {
            "iss": KEYED_ID,
            "aud": BASE,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": f"jti-{now}-{len(claims)}",
            "scope": "openid",
            "login_hint": "alice",
            "authorization_details": ACTION,
        }
        return self.sign({**base, **claims})


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Keyed]:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    client_config = ClientConfig(
        client_id=KEYED_ID,
        client_secret_hash=hash_secret(KEYED_SECRET),
        jwks={"keys": [{**jwk, "kid": "k1", "use": "sig"}]},
    )
    clock = Clock()
    provider = build_provider(
        make_settings(tmp_path, clients=[client_config]), notifier=RecordingNotifier(), clock=clock
    )
    with TestClient(create_app(provider), base_url=BASE) as client:
        enroll(provider, client, "alice", SoftAuthenticator())
        yield Keyed(client=client, provider=provider, clock=clock, key=key)
    provider.store.close()


def _user_of(keyed: Keyed, response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    request = keyed.provider.store.find_request_by_auth_req_id(auth_req_id_key(response.json()["auth_req_id"]))
    assert request is not None
    return request.user_id


def test_login_hint_token_opaque_and_iss_sub(keyed: Keyed) -> None:
    alice = keyed.provider.store.find_user("alice")
    assert alice is not None
    opaque = keyed.hint_token({"format": "opaque", "id": "alice"})
    assert _user_of(keyed, keyed.post(keyed.body(login_hint_token=opaque))) == alice.user_id
    iss_sub = keyed.hint_token({"format": "iss_sub", "iss": BASE, "sub": alice.user_id})
    assert _user_of(keyed, keyed.post(keyed.body(login_hint_token=iss_sub))) == alice.user_id


@pytest.mark.parametrize(
    ("sub_id", "claims", "error", "description"),
    [
        (
            {"format": "email", "email": "alice@example.test"},
            {},
            "invalid_request",
            "login_hint_token sub_id must be an 'opaque' or 'iss_sub' subject identifier",
        ),
        (
            {"format": "iss_sub", "iss": "https://other.example.test", "sub": "x"},
            {},
            "invalid_request",
            "login_hint_token sub_id must be an 'opaque' or 'iss_sub' subject identifier",
        ),
        ("alice", {}, "invalid_request", "login_hint_token sub_id must be an 'opaque' or 'iss_sub' subject identifier"),
        (
            {"format": "opaque", "id": "alice"},
            {"aud": "https://other.example.test"},
            "invalid_request",
            "login_hint_token 'aud' does not name this provider",
        ),
        (
            {"format": "opaque", "id": "alice"},
            {"iat": 1_800_000_000 - 120, "exp": 1_800_000_000 - 60},
            "expired_login_hint_token",
            "login_hint_token has expired",
        ),
        (
            {"format": "opaque", "id": "mallory"},
            {},
            "unknown_user_id",
            "no enabled user matches the hint 'mallory'",
        ),
    ],
    ids=["email-format", "foreign-iss_sub", "not-an-object", "wrong-aud", "expired", "unknown-user"],
)
def test_login_hint_token_errors(
    keyed: Keyed, sub_id: Any, claims: dict[str, Any], error: str, description: str
) -> None:
    response = keyed.post(keyed.body(login_hint_token=keyed.hint_token(sub_id, **claims)))
    assert_oauth_error(response, error=error, description=description)


def test_login_hint_token_signed_by_an_unregistered_key(keyed: Keyed) -> None:
    now = int(keyed.clock())
    token = keyed.sign(
        {"aud": BASE, "exp": now + 60, "sub_id": {"format": "opaque", "id": "alice"}},
        key=ec.generate_private_key(ec.SECP256R1()),
        kid="k2",
    )
    assert_oauth_error(
        keyed.post(keyed.body(login_hint_token=token)),
        error="invalid_request",
        description="login_hint_token is signed by an unregistered key",
    )


def test_login_hint_token_with_symmetric_algorithm(keyed: Keyed) -> None:
    token = jwt.encode(
        {"aud": BASE, "exp": int(keyed.clock()) + 60}, "shared-secret-of-32-bytes-at-least!", algorithm="HS256"
    )
    assert_oauth_error(
        keyed.post(keyed.body(login_hint_token=token)),
        error="invalid_request",
        description="login_hint_token algorithm 'HS256' is not allowed",
    )


def test_signed_authentication_request(keyed: Keyed) -> None:
    token = keyed.request_object(binding_message="SIGNED-1", requested_expiry=120)
    response = keyed.post({"request": token})
    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 120
    request = keyed.provider.store.find_request_by_auth_req_id(auth_req_id_key(response.json()["auth_req_id"]))
    assert request is not None
    assert request.binding_message == "SIGNED-1"
    assert request.authorization_details == ACTION
    # CIBA 7.1.1 requires jti; the same request object is refused the second time
    assert_oauth_error(
        keyed.post({"request": token}),
        error="invalid_request",
        description="request object 'jti' has been used before",
    )


def test_signed_request_with_parameters_outside(keyed: Keyed) -> None:
    response = keyed.post({"request": keyed.request_object(), "binding_message": "UNSIGNED"})
    assert_oauth_error(
        response,
        error="invalid_request",
        description="with 'request', 'binding_message' must be inside the request object",
    )


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"iss": "someone-else"}, "request object 'iss' must be the client_id"),
        ({"aud": "https://other.example.test"}, "request object 'aud' does not name this provider"),
        ({"jti": None}, "request object lacks the 'jti' claim"),
        ({"exp": 1_800_000_000 + 7200}, "request object lifetime exceeds 3600 seconds"),
        ({"login_hint": 42}, "request object claim 'login_hint' has the wrong JSON type"),
    ],
    ids=["iss", "aud", "no-jti", "too-long-lived", "wrong-claim-type"],
)
def test_signed_request_errors(keyed: Keyed, claims: dict[str, Any], description: str) -> None:
    token = keyed.request_object(**claims)
    if claims.get("jti", "") is None:
        payload = jwt.decode(token, options={"verify_signature": False})
        del payload["jti"]
        token = keyed.sign(payload)
    assert_oauth_error(keyed.post({"request": token}), error="invalid_request", description=description)


def test_signed_request_invalid_content_is_validated_like_form_parameters(keyed: Keyed) -> None:
    token = keyed.request_object(binding_message="bad\u202e")
    assert_oauth_error(
        keyed.post({"request": token}),
        error="invalid_binding_message",
        description="binding_message contains a control, format or unusual space character (U+202E)",
    )
