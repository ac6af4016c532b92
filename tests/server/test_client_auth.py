"""Client authentication at the backchannel and token endpoints (RFC 6749 2.3.1, 5.2).

Every failure asserts the exact status, ``{error, error_description}`` and headers: errors are
never cached, and every ``invalid_client`` 401 carries a Basic challenge, whichever method the
client used (RFC 6749 5.2: "the authorization server MUST respond with an HTTP 401 ... and
include the WWW-Authenticate response header field matching the authentication scheme used by
the client"; RFC 9110 11.6.1: a 401 "MUST send a WWW-Authenticate header field").
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient

from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig
from ciba_service.core.security import hash_secret
from ciba_service.server.client_auth import JWT_BEARER, JWT_SPIFFE
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from tests.support.service import (
    ACTION,
    AGENT_ID,
    AGENT_SECRET,
    BASE,
    CIBA,
    NOCIBA_ID,
    NOCIBA_SECRET,
    Clock,
    Env,
    RecordingNotifier,
    enroll,
    make_settings,
)

BASIC_CHALLENGE = 'Basic realm="ciba-service"'
ENDPOINTS = ["/bc-authorize", "/token"]


def assert_oauth_error(
    response: httpx.Response,
    *,
    status: int,
    error: str,
    description: str,
) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": error, "error_description": description}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    if status == 401:
        assert response.headers["www-authenticate"] == BASIC_CHALLENGE
    else:
        assert "www-authenticate" not in response.headers


def body_for(endpoint: str, **extra: str) -> dict[str, str]:
    """A valid request body for ``endpoint``, without client authentication."""
    if endpoint == "/token":
        body = {"grant_type": CIBA, "auth_req_id": "unknown-auth-req-id"}
    else:
        body = {
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "BM-1",
            "authorization_details": json.dumps(ACTION),
        }
    body.update(extra)
    return body


def basic(client_id: str, secret: str) -> str:
    """An RFC 6749 2.3.1 Basic header: each part form-urlencoded, then base64."""
    raw = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode("utf-8")).decode("ascii")


def assert_authenticated(endpoint: str, response: httpx.Response) -> None:
    """The request got past client authentication: a backchannel success, or at the token
    endpoint the grant-level error for an auth_req_id nobody issued."""
    if endpoint == "/token":
        assert_oauth_error(response, status=400, error="invalid_grant", description="auth_req_id is unknown")
    else:
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"auth_req_id", "expires_in", "interval"}


# successes ------------------------------------------------------------------------------


def test_client_secret_basic_authenticates_at_both_endpoints(env: Env) -> None:
    response = env.client.post("/bc-authorize", data=body_for("/bc-authorize"), auth=(AGENT_ID, AGENT_SECRET))
    assert response.status_code == 200, response.text
    auth_req_id = response.json()["auth_req_id"]
    pending = env.client.post(
        "/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id}, auth=(AGENT_ID, AGENT_SECRET)
    )
    assert_oauth_error(pending, status=400, error="authorization_pending", description="the user has not yet decided")


def test_client_secret_basic_scheme_is_case_insensitive(env: Env) -> None:
    header = basic(AGENT_ID, AGENT_SECRET).replace("Basic ", "bAsIc ")
    response = env.client.post("/bc-authorize", data=body_for("/bc-authorize"), headers={"Authorization": header})
    assert response.status_code == 200, response.text


def test_client_secret_post_authenticates_at_both_endpoints(env: Env) -> None:
    response = env.client.post(
        "/bc-authorize", data=body_for("/bc-authorize", client_id=AGENT_ID, client_secret=AGENT_SECRET)
    )
    assert response.status_code == 200, response.text
    auth_req_id = response.json()["auth_req_id"]
    pending = env.client.post(
        "/token",
        data={"grant_type": CIBA, "auth_req_id": auth_req_id, "client_id": AGENT_ID, "client_secret": AGENT_SECRET},
    )
    assert_oauth_error(pending, status=400, error="authorization_pending", description="the user has not yet decided")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_form_client_id_equal_to_basic_id_is_accepted(env: Env, endpoint: str) -> None:
    response = env.client.post(endpoint, data=body_for(endpoint, client_id=AGENT_ID), auth=(AGENT_ID, AGENT_SECRET))
    assert_authenticated(endpoint, response)


# refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_two_authentication_methods_at_once_are_refused(env: Env, endpoint: str) -> None:
    # RFC 6749 2.3: "The client MUST NOT use more than one authentication method in each request."
    response = env.client.post(
        endpoint,
        data=body_for(endpoint, client_id=AGENT_ID, client_secret=AGENT_SECRET),
        auth=(AGENT_ID, AGENT_SECRET),
    )
    assert_oauth_error(
        response,
        status=400,
        error="invalid_request",
        description="more than one client authentication method used",
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("extra", [{}, {"client_id": AGENT_ID}], ids=["nothing", "client_id-only"])
def test_no_authentication_is_invalid_client(env: Env, endpoint: str, extra: dict[str, str]) -> None:
    # A bare client_id is a public client's request; only confidential clients exist here.
    response = env.client.post(endpoint, data=body_for(endpoint, **extra))
    assert_oauth_error(
        response,
        status=401,
        error="invalid_client",
        description="client authentication is required",
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_client_secret_without_client_id_is_invalid_request(env: Env, endpoint: str) -> None:
    response = env.client.post(endpoint, data=body_for(endpoint, client_secret=AGENT_SECRET))
    assert_oauth_error(
        response, status=400, error="invalid_request", description="client_secret given without client_id"
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("unknown-agent", AGENT_SECRET), (AGENT_ID, "wrong-secret"), (AGENT_ID, AGENT_SECRET + "x"), (AGENT_ID, "")],
    ids=["unknown-client", "wrong-secret", "secret-with-suffix", "empty-secret"],
)
def test_bad_basic_credentials_are_invalid_client_with_challenge(
    env: Env, endpoint: str, client_id: str, secret: str
) -> None:
    response = env.client.post(endpoint, data=body_for(endpoint), headers={"Authorization": basic(client_id, secret)})
    assert_oauth_error(
        response,
        status=401,
        error="invalid_client",
        description="client authentication failed",
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("unknown-agent", AGENT_SECRET), (AGENT_ID, "wrong-secret")],
    ids=["unknown-client", "wrong-secret"],
)
def test_bad_post_credentials_are_invalid_client_with_challenge(
    env: Env, endpoint: str, client_id: str, secret: str
) -> None:
    # No Authorization header was used, but a 401 without a challenge is malformed (RFC 9110
    # 11.6.1); Basic is the scheme the client can retry with.
    response = env.client.post(endpoint, data=body_for(endpoint, client_id=client_id, client_secret=secret))
    assert_oauth_error(response, status=401, error="invalid_client", description="client authentication failed")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("header", "description"),
    [
        ("Basic !!!not-base64!!!", "malformed Basic credentials"),
        ("Basic " + _b64(b"agent-1:secret")[:-1], "malformed Basic credentials"),  # broken padding
        ("Basic " + _b64(AGENT_ID.encode()), "malformed Basic credentials"),  # no colon
        ("Basic " + _b64(b"\xff\xfe:\xfd"), "malformed Basic credentials"),  # not UTF-8
        ("Basic", "unsupported Authorization scheme; use Basic"),  # no credentials at all
        ("Bearer " + _b64(f"{AGENT_ID}:{AGENT_SECRET}".encode()), "unsupported Authorization scheme; use Basic"),
        ("Digest username=agent-1", "unsupported Authorization scheme; use Basic"),
    ],
    ids=["not-base64", "bad-padding", "no-colon", "not-utf8", "no-credentials", "bearer", "digest"],
)
def test_malformed_basic_header_is_invalid_client(env: Env, endpoint: str, header: str, description: str) -> None:
    response = env.client.post(endpoint, data=body_for(endpoint), headers={"Authorization": header})
    assert_oauth_error(response, status=401, error="invalid_client", description=description)


def _unsigned_assertion(client_id: str) -> str:
    # Well formed but for a client registered with a secret: refused before any key is looked up.
    return jwt.encode({"iss": client_id, "sub": client_id, "aud": BASE, "exp": 2_000_000_000, "jti": "j"}, "k" * 32)


@pytest.mark.parametrize("endpoint", [*ENDPOINTS, "/introspect"])
@pytest.mark.parametrize(
    ("credentials", "description"),
    [
        ({"client_id": "unknown-agent", "client_secret": AGENT_SECRET}, "client authentication failed"),
        (
            {"client_assertion_type": JWT_BEARER, "client_assertion": _unsigned_assertion(AGENT_ID)},
            "client is not registered for private_key_jwt",
        ),
        (
            {"client_id": AGENT_ID, "client_assertion_type": JWT_SPIFFE, "client_assertion": "x.y.z"},
            "client is not registered for SPIFFE JWT-SVID authentication",
        ),
        ({}, "client authentication is required"),
    ],
    ids=["client_secret_post", "private_key_jwt", "spiffe_jwt", "none"],
)
def test_every_invalid_client_carries_a_challenge_whatever_the_method(
    env: Env, endpoint: str, credentials: dict[str, str], description: str
) -> None:
    # RFC 9110 11.6.1: a 401 without WWW-Authenticate is malformed; no scheme is registered for
    # client_secret_post or client assertions, so the challenge is Basic, what a client can retry.
    data = {"token": "x"} if endpoint == "/introspect" else body_for(endpoint)
    response = env.client.post(endpoint, data={**data, **credentials})
    assert_oauth_error(response, status=401, error="invalid_client", description=description)


def test_introspection_with_bad_basic_credentials_carries_the_challenge(env: Env) -> None:
    response = env.client.post("/introspect", data={"token": "x"}, auth=(AGENT_ID, "wrong-secret"))
    assert_oauth_error(response, status=401, error="invalid_client", description="client authentication failed")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_form_client_id_differing_from_basic_id_is_invalid_request(env: Env, endpoint: str) -> None:
    # Otherwise a log or policy keyed on the form client_id would name a client that did not
    # authenticate.
    response = env.client.post(endpoint, data=body_for(endpoint, client_id="agent-2"), auth=(AGENT_ID, AGENT_SECRET))
    assert_oauth_error(
        response,
        status=400,
        error="invalid_request",
        description="client_id parameter differs from the authenticated client",
    )


def test_unauthorized_client_at_backchannel_endpoint(env: Env) -> None:
    response = env.bc_authorize(auth=(NOCIBA_ID, NOCIBA_SECRET))
    assert_oauth_error(
        response,
        status=400,
        error="unauthorized_client",
        description="client 'agent-no-ciba' may not use the CIBA grant",
    )
    assert env.notifier.notices == []


def test_unauthorized_client_at_token_endpoint(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    response = env.token(auth_req_id, auth=(NOCIBA_ID, NOCIBA_SECRET))
    assert_oauth_error(
        response,
        status=400,
        error="unauthorized_client",
        description="client 'agent-no-ciba' may not use the CIBA grant",
    )


# RFC 6749 2.3.1: "The client identifier is encoded using the application/x-www-form-urlencoded
# encoding algorithm ... and the encoded value is used as the username; the client password
# is encoded using the same algorithm and used as the password."
SPECIAL_ID = "agent:3 é+%/"
SPECIAL_SECRET = "p@ss:wörd +/=%&?#"


@pytest.fixture
def special(tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    settings = make_settings(
        tmp_path,
        clients=[ClientConfig(client_id=SPECIAL_ID, client_secret_hash=hash_secret(SPECIAL_SECRET))],
    )
    provider = build_provider(settings, notifier=RecordingNotifier(), clock=Clock())
    with TestClient(create_app(provider), base_url=BASE) as client:
        enroll(provider, client, "alice", SoftAuthenticator())
        yield client, provider
    provider.store.close()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_urlencoded_special_characters_in_basic_credentials(special: tuple[TestClient, Any], endpoint: str) -> None:
    client, _ = special
    response = client.post(
        endpoint, data=body_for(endpoint), headers={"Authorization": basic(SPECIAL_ID, SPECIAL_SECRET)}
    )
    assert_authenticated(endpoint, response)


def test_special_characters_basic_end_to_end(special: tuple[TestClient, Any]) -> None:
    client, provider = special
    header = {"Authorization": basic(SPECIAL_ID, SPECIAL_SECRET)}
    response = client.post("/bc-authorize", data=body_for("/bc-authorize"), headers=header)
    assert response.status_code == 200, response.text
    auth_req_id = response.json()["auth_req_id"]
    assert provider.notifier.notices[0].client_id == SPECIAL_ID
    pending = client.post("/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id}, headers=header)
    assert pending.json()["error"] == "authorization_pending"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_special_characters_with_client_secret_post(special: tuple[TestClient, Any], endpoint: str) -> None:
    client, _ = special
    response = client.post(endpoint, data=body_for(endpoint, client_id=SPECIAL_ID, client_secret=SPECIAL_SECRET))
    assert_authenticated(endpoint, response)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_special_characters_not_urlencoded_in_basic_fail(special: tuple[TestClient, Any], endpoint: str) -> None:
    # Sent raw, the ':' in the id splits it at the wrong place: the credentials do not match.
    client, _ = special
    raw = "Basic " + _b64(f"{SPECIAL_ID}:{SPECIAL_SECRET}".encode())
    response = client.post(endpoint, data=body_for(endpoint), headers={"Authorization": raw})
    assert_oauth_error(
        response,
        status=401,
        error="invalid_client",
        description="client authentication failed",
    )


def test_a_used_assertion_jti_is_remembered_past_exp_plus_leeway() -> None:
    """The jti must be remembered as long as the assertion can pass (exp + leeway), or a
    captured assertion could be replayed in that window."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from ciba_service.jose.client_assertion import ClientJwtError, verify_client_jwt

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    seen: dict[str, int] = {}

    def use_once(jti: str, until: int) -> bool:
        if jti in seen and seen[jti] > now:
            return False
        seen[jti] = until
        return True

    now = 1_000
    token = jwt.encode(
        {"iss": "c", "sub": "c", "aud": "https://op", "exp": now + 60, "jti": "j1", "iat": now}, key, algorithm="ES256"
    )
    kwargs = {
        "jwks": {"keys": [jwk]},
        "audiences": ["https://op"],
        "max_lifetime": 300,
        "required": ("exp", "jti"),
        "use_once": use_once,
    }
    verify_client_jwt(token, now=now, **kwargs)  # type: ignore[arg-type]
    now = 1_063  # after exp, within the 5 s leeway: the JWT would still pass
    with pytest.raises(ClientJwtError, match="'jti' has been used before"):
        verify_client_jwt(token, now=now, **kwargs)  # type: ignore[arg-type]
