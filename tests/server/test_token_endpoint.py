"""The token endpoint with the CIBA grant (CIBA Core 1.0 sections 10 and 11), the tokens it
mints (RFC 9068 access token, OpenID ID token) and the discovery document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jwt
import pydantic
import pytest

from ciba_service.config import load_settings
from ciba_service.core.model import RequestStatus
from ciba_service.server.grant import SLOW_DOWN_INCREMENT
from tests.support.service import ACTION, AGENT_ID, AGENT_SECRET, BASE, CIBA, OTHER_ID, OTHER_SECRET, Env


def assert_oauth_error(response: httpx.Response, *, status: int = 400, error: str, description: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": error, "error_description": description}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def assert_pending(response: httpx.Response) -> None:
    assert_oauth_error(response, error="authorization_pending", description="the user has not yet decided")


def assert_slow_down(response: httpx.Response, interval: int) -> None:
    assert_oauth_error(
        response,
        error="slow_down",
        description=f"polling too fast; wait at least {interval} seconds between requests",
    )


def post_token(env: Env, data: dict[str, str]) -> httpx.Response:
    return env.client.post("/token", data=data, auth=(AGENT_ID, AGENT_SECRET))


def decode_access_token(env: Env, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify the signature against the published JWKS; time claims are checked by the
    caller against the test clock (which is not the wall clock PyJWT would use)."""
    jwks = env.client.get("/jwks.json").json()
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(
        token,
        key=key,
        algorithms=["ES256"],
        audience="resource-api",
        issuer=BASE,
        options={
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
            "require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"],
        },
    )
    return header, claims


# request errors -----------------------------------------------------------------------------


def test_missing_grant_type(env: Env) -> None:
    assert_oauth_error(
        post_token(env, {"auth_req_id": "x"}),
        error="invalid_request",
        description="missing required parameter 'grant_type'",
    )


@pytest.mark.parametrize(
    "grant_type",
    ["authorization_code", "client_credentials", "urn:ietf:params:oauth:grant-type:device_code", CIBA.upper()],
)
def test_other_grant_types_are_unsupported(env: Env, grant_type: str) -> None:
    assert_oauth_error(
        post_token(env, {"grant_type": grant_type, "auth_req_id": "x"}),
        error="unsupported_grant_type",
        description=f"grant_type '{grant_type}' is not supported",
    )


def test_repeated_grant_type(env: Env) -> None:
    response = env.client.post(
        "/token",
        content=f"grant_type={CIBA}&grant_type={CIBA}&auth_req_id=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
        auth=(AGENT_ID, AGENT_SECRET),
    )
    assert_oauth_error(
        response, error="invalid_request", description="parameter 'grant_type' is included more than once"
    )


def test_json_body_is_refused(env: Env) -> None:
    response = env.client.post("/token", json={"grant_type": CIBA, "auth_req_id": "x"}, auth=(AGENT_ID, AGENT_SECRET))
    assert_oauth_error(
        response, error="invalid_request", description="the request body must be application/x-www-form-urlencoded"
    )


@pytest.mark.parametrize(
    "data", [{"grant_type": CIBA}, {"grant_type": CIBA, "auth_req_id": ""}], ids=["absent", "empty"]
)
def test_missing_auth_req_id(env: Env, data: dict[str, str]) -> None:
    assert_oauth_error(
        post_token(env, data), error="invalid_request", description="missing required parameter 'auth_req_id'"
    )


def test_unknown_auth_req_id(env: Env) -> None:
    real = env.bc_authorize().json()["auth_req_id"]
    for guess in ("nope", real[:-1], real + "A", real.upper()):
        assert_oauth_error(env.token(guess), error="invalid_grant", description="auth_req_id is unknown")


def test_auth_req_id_of_another_client(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.approve(auth_req_id)
    assert_oauth_error(
        env.token(auth_req_id, auth=(OTHER_ID, OTHER_SECRET)),
        error="invalid_grant",
        description="auth_req_id was not issued to this client",
    )
    # the attempt neither burns nor changes the request: its client still redeems it
    assert env.request_for(auth_req_id).status is RequestStatus.APPROVED
    assert env.token(auth_req_id).status_code == 200


# polling --------------------------------------------------------------------------------------


def test_authorization_pending(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    assert_pending(env.token(auth_req_id))
    for _ in range(3):
        env.clock.advance(2)  # exactly the interval
        assert_pending(env.token(auth_req_id))
    assert env.request_for(auth_req_id).interval == 2


def test_poll_slightly_early_is_tolerated_as_network_jitter(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    assert_pending(env.token(auth_req_id))
    env.clock.advance(1.75)  # interval 2 s minus the 250 ms allowance
    assert_pending(env.token(auth_req_id))
    env.clock.advance(1.7)
    assert_slow_down(env.token(auth_req_id), 7)


def test_slow_down_then_the_new_interval_is_honoured(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    assert_pending(env.token(auth_req_id))
    env.clock.advance(1)
    # RFC 8628 3.5 (CIBA 11): "the interval MUST be increased by 5 seconds for this and all
    # subsequent requests".
    assert SLOW_DOWN_INCREMENT == 5
    assert_slow_down(env.token(auth_req_id), 2 + 5)
    assert env.request_for(auth_req_id).interval == 7
    env.clock.advance(7)
    assert_pending(env.token(auth_req_id))
    env.clock.advance(7)
    assert_pending(env.token(auth_req_id))
    assert env.request_for(auth_req_id).interval == 7  # it does not shrink back


def test_slow_down_polling_at_the_old_interval_is_still_too_fast(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    assert_pending(env.token(auth_req_id))
    env.clock.advance(1)
    assert_slow_down(env.token(auth_req_id), 7)
    env.clock.advance(2)  # the old interval
    assert_slow_down(env.token(auth_req_id), 12)  # and each slow_down adds 5 s more
    env.clock.advance(7)  # the first raised interval is now not enough either
    assert_slow_down(env.token(auth_req_id), 17)
    env.clock.advance(17)
    assert_pending(env.token(auth_req_id))


def test_slow_down_does_not_apply_once_decided(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    assert_pending(env.token(auth_req_id))
    env.approve(auth_req_id)
    assert env.token(auth_req_id).status_code == 200  # immediately after the previous poll


def test_expired_token_while_pending(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.clock.advance(299)
    assert_pending(env.token(auth_req_id))
    env.clock.advance(1)
    assert_oauth_error(
        env.token(auth_req_id), error="expired_token", description="the authentication request has expired"
    )
    env.clock.advance(1)  # expiry wins over slow_down
    assert_oauth_error(
        env.token(auth_req_id), error="expired_token", description="the authentication request has expired"
    )


def test_expired_token_when_approved_but_not_redeemed(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.approve(auth_req_id)
    env.clock.advance(300)
    assert_oauth_error(
        env.token(auth_req_id), error="expired_token", description="the authentication request has expired"
    )
    assert env.request_for(auth_req_id).status is RequestStatus.APPROVED  # no token was minted


def test_access_denied_after_deny(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    approval_id = env.request_for(auth_req_id).approval_id
    denied = env.client.post(f"/approve/{approval_id}/deny", json={})
    assert denied.status_code == 200
    assert denied.json() == {"status": "denied"}
    for _ in range(2):  # every later poll gets the same answer
        assert_oauth_error(env.token(auth_req_id), error="access_denied", description="the user denied the request")
    env.clock.advance(400)  # even after expiry the decision is what the agent learns
    assert_oauth_error(env.token(auth_req_id), error="access_denied", description="the user denied the request")


def test_token_is_issued_once(env: Env) -> None:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.approve(auth_req_id)
    first = env.token(auth_req_id)
    assert first.status_code == 200, first.text
    assert env.request_for(auth_req_id).revoked is False
    for _ in range(2):
        assert_oauth_error(
            env.token(auth_req_id), error="invalid_grant", description="auth_req_id has already been used"
        )
    request = env.request_for(auth_req_id)
    assert request.status is RequestStatus.ISSUED
    # a second redemption means the auth_req_id leaked: the token issued for it is revoked
    assert request.revoked is True
    _, claims = decode_access_token(env, first.json()["access_token"])
    assert request.token_jti == claims["jti"]


# the token response and the tokens ------------------------------------------------------------


@pytest.fixture
def issued(env: Env) -> dict[str, Any]:
    """A token response for the default action, with what the approval produced."""
    auth_req_id = env.bc_authorize(scope="openid profile").json()["auth_req_id"]
    request = env.request_for(auth_req_id)
    challenge = env.client.get(f"/approve/{request.approval_id}/details").json()["publicKey"]["challenge"]
    receipt = env.approve(auth_req_id)["receipt"]
    env.clock.advance(3)
    response = env.token(auth_req_id)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    return {
        "auth_req_id": auth_req_id,
        "request": request,
        "challenge": challenge,
        "receipt": receipt,
        "body": response.json(),
    }


def test_token_response_fields(env: Env, issued: dict[str, Any]) -> None:
    body = issued["body"]
    assert set(body) == {"access_token", "token_type", "expires_in", "id_token", "scope", "authorization_details"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == env.settings.access_token_lifetime == 120
    assert body["expires_in"] <= 300
    assert body["scope"] == "openid profile"
    assert body["authorization_details"] == ACTION


def test_access_token_header(env: Env, issued: dict[str, Any]) -> None:
    header = jwt.get_unverified_header(issued["body"]["access_token"])
    [jwk] = env.client.get("/jwks.json").json()["keys"]
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": jwk["kid"]}
    assert jwk["kid"] == env.provider.signing_key.kid
    assert {jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]} == {"EC", "P-256", "ES256", "sig"}
    assert "d" not in jwk  # public part only


def test_access_token_claims(env: Env, issued: dict[str, Any]) -> None:
    _, claims = decode_access_token(env, issued["body"]["access_token"])
    request = issued["request"]
    now = int(env.clock())
    receipt = env.provider.store.get_receipt(issued["receipt"])
    assert receipt is not None
    assert claims["iss"] == BASE
    assert claims["sub"] == request.user_id
    assert claims["aud"] == "resource-api"
    assert claims["client_id"] == AGENT_ID
    assert claims["iat"] == claims["nbf"] == now
    assert claims["exp"] - claims["iat"] == env.settings.access_token_lifetime
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 22
    assert claims["scope"] == "openid profile"
    assert claims["authorization_details"] == ACTION
    assert json.dumps(claims["authorization_details"]) == json.dumps(request.authorization_details)
    assert claims["acr"] == "phr"
    assert claims["amr"] == ["pop", "user", "mfa"]
    assert claims["auth_time"] == receipt.created_at == now - 3
    assert claims["approval"] == {
        "receipt": issued["receipt"],
        "challenge": issued["challenge"],
        "approved_at": receipt.created_at,
    }
    assert receipt.challenge == issued["challenge"]


def test_id_token(env: Env, issued: dict[str, Any]) -> None:
    jwks = env.client.get("/jwks.json").json()
    id_token = issued["body"]["id_token"]
    header = jwt.get_unverified_header(id_token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    claims = jwt.decode(
        id_token,
        key=jwt.PyJWKSet.from_dict(jwks)[header["kid"]],
        algorithms=["ES256"],
        audience=AGENT_ID,
        issuer=BASE,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == issued["request"].user_id
    assert claims["urn:openid:params:jwt:claim:auth_req_id"] == issued["auth_req_id"]
    assert claims["exp"] - claims["iat"] == env.settings.access_token_lifetime
    assert claims["acr"] == "phr"


def test_jti_is_unique_per_token(env: Env) -> None:
    jtis = set()
    for _ in range(3):
        auth_req_id = env.bc_authorize().json()["auth_req_id"]
        env.approve(auth_req_id)
        _, claims = decode_access_token(env, env.token(auth_req_id).json()["access_token"])
        jtis.add(claims["jti"])
    assert len(jtis) == 3


def test_access_token_carries_the_approved_details_exactly(env: Env) -> None:
    details = [
        {"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api"},
        {
            "type": "payment_initiation",
            "actions": ["initiate"],
            "instructedAmount": {"currency": "EUR", "amount": "12.50"},
            "creditorName": "Merchant A",
        },
    ]
    auth_req_id = env.bc_authorize(authorization_details=json.dumps(details)).json()["auth_req_id"]
    env.approve(auth_req_id)
    body = env.token(auth_req_id).json()
    _, claims = decode_access_token(env, body["access_token"])
    assert claims["authorization_details"] == body["authorization_details"] == details
    # key order as approved, too (the challenge was computed over this document)
    assert list(claims["authorization_details"][1]["instructedAmount"]) == ["currency", "amount"]


def test_tampered_access_token_fails_verification(env: Env, issued: dict[str, Any]) -> None:
    token = issued["body"]["access_token"]
    head, _, signature = token.split(".")
    forged_payload = jwt.utils.base64url_encode(
        json.dumps({**jwt.decode(token, options={"verify_signature": False}), "scope": "openid admin"}).encode()
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        decode_access_token(env, f"{head}.{forged_payload}.{signature}")


# discovery and settings --------------------------------------------------------------------


def test_discovery_document(env: Env) -> None:
    response = env.client.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    doc = response.json()
    expected = {
        "issuer": BASE,
        "backchannel_authentication_endpoint": f"{BASE}/bc-authorize",
        "token_endpoint": f"{BASE}/token",
        "jwks_uri": f"{BASE}/jwks.json",
        "grant_types_supported": [CIBA],
        "backchannel_token_delivery_modes_supported": ["poll", "ping", "push"],
        "backchannel_user_code_parameter_supported": False,
        "backchannel_authentication_request_signing_alg_values_supported": ["ES256", "PS256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "spiffe_jwt",
        ],
        "id_token_signing_alg_values_supported": ["ES256"],
        "acr_values_supported": ["phr"],
        "authorization_details_types_supported": ["iam_policy", "key_rotation", "payment_initiation"],
    }
    assert {k: doc.get(k) for k in expected} == expected
    # the published endpoints are the ones that answer
    assert env.client.get(doc["jwks_uri"].removeprefix(BASE)).status_code == 200


def test_access_token_lifetime_above_five_minutes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        load_settings(data_dir=tmp_path, access_token_lifetime=301)
    [error] = info.value.errors()
    assert error["loc"] == ("access_token_lifetime",)
    assert error["type"] == "less_than_equal"
    assert error["msg"] == "Input should be less than or equal to 300"
    assert load_settings(data_dir=tmp_path, access_token_lifetime=300).access_token_lifetime == 300
