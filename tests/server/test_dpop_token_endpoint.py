"""DPoP at the token endpoint (RFC 9449 5): the agent's proof binds the token to its key
(``cnf.jkt``, ``token_type: DPoP``); the resource server then wants a proof on every call."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ciba_service import rfc9449 as dpop
from ciba_service.rs import RequestedAction, ResourceError, StaticKeys, TokenVerifier
from tests.support.service import AGENT_ID, AGENT_SECRET, BASE, CIBA, Env

EXACT = RequestedAction(
    type="iam_policy", actions=["update"], identifier="policy-42", locations=["https://iam.example.test/"]
)
RS_URL = "https://iam.example.test/policies/policy-42"


def _approved(env: Env) -> str:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    env.approve(auth_req_id)
    return str(auth_req_id)


def _token(env: Env, auth_req_id: str, *proofs: str) -> object:
    headers = [("DPoP", p) for p in proofs]
    return env.client.post(
        "/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id}, auth=(AGENT_ID, AGENT_SECRET), headers=headers
    )


def test_dpop_binds_the_token_to_the_agent_key(env: Env) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    proof = dpop.create_proof(key, "POST", f"{BASE}/token", now=env.clock())
    response = _token(env, _approved(env), proof)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "DPoP"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    jkt = dpop.jwk_thumbprint(dpop.public_jwk(key.public_key()))
    assert claims["cnf"] == {"jkt": jkt}
    verifier = TokenVerifier(
        issuer=BASE, audience="resource-api", keys=StaticKeys(env.provider.signing_key.jwks()), clock=env.clock
    )
    token = body["access_token"]
    # without a proof, a bound token is refused (a copied token is useless to another agent)
    with pytest.raises(ResourceError) as missing:
        verifier.verify(token, EXACT, scheme="DPoP", method="PUT", url=RS_URL)
    assert (missing.value.error, missing.value.status_code, missing.value.description) == (
        "invalid_dpop_proof",
        401,
        "a DPoP proof is required with this token",
    )
    thief = ec.generate_private_key(ec.SECP256R1())
    stolen = dpop.create_proof(thief, "PUT", RS_URL, access_token=token, now=env.clock())
    with pytest.raises(ResourceError) as refused:
        verifier.verify(token, EXACT, scheme="DPoP", method="PUT", url=RS_URL, dpop_proof=stolen)
    assert (refused.value.error, refused.value.status_code, refused.value.description) == (
        "invalid_dpop_proof",
        401,
        "DPoP proof key does not match the access token's binding",
    )
    good = dpop.create_proof(key, "PUT", RS_URL, access_token=token, now=env.clock())
    assert verifier.verify(token, EXACT, scheme="DPoP", method="PUT", url=RS_URL, dpop_proof=good).entry


@pytest.mark.parametrize(
    ("make", "description"),
    [
        (
            lambda k, env: dpop.create_proof(k, "GET", f"{BASE}/token", now=env.clock()),
            "DPoP proof is for another HTTP method",
        ),
        (
            lambda k, env: dpop.create_proof(k, "POST", f"{BASE}/other", now=env.clock()),
            "DPoP proof is for another URL",
        ),
        (lambda k, env: dpop.create_proof(k, "POST", f"{BASE}/token", now=env.clock() - 3600), "DPoP proof is too old"),
        (lambda k, env: "not-a-jwt", ""),
    ],
)
def test_bad_proofs_are_invalid_dpop_proof(env: Env, make: object, description: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    auth_req_id = _approved(env)
    response = _token(env, auth_req_id, make(key, env))  # type: ignore[operator]
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"
    assert description in response.json()["error_description"]  # "" for the unparsable one
    # the request is not consumed by a bad proof: a good one still redeems it
    good = dpop.create_proof(key, "POST", f"{BASE}/token", now=env.clock())
    assert _token(env, auth_req_id, good).status_code == 200


def test_replayed_and_repeated_proofs_are_refused(env: Env) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    proof = dpop.create_proof(key, "POST", f"{BASE}/token", now=env.clock())
    first = _token(env, _approved(env), proof)
    assert first.status_code == 200
    replay = _token(env, _approved(env), proof)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_dpop_proof"
    two = _token(
        env,
        _approved(env),
        dpop.create_proof(key, "POST", f"{BASE}/token", now=env.clock()),
        dpop.create_proof(key, "POST", f"{BASE}/token", now=env.clock()),
    )
    assert two.json() == {"error": "invalid_dpop_proof", "error_description": "more than one DPoP header"}


def test_without_dpop_the_token_stays_bearer(env: Env) -> None:
    body = _token(env, _approved(env)).json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in jwt.decode(body["access_token"], options={"verify_signature": False})
    assert json.loads(json.dumps(body))["authorization_details"]
