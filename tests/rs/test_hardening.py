"""Hardening of the resource-server side after an outside review, one section per class of
defect (the property tests that go with them are in test_verifier_properties.py):

1. hostile content in a DPoP proof (numbers beyond a double, lone surrogates, base64url of an
   impossible length) is refused as a ResourceError at the resource server and as a 400 at the
   token endpoint, never an exception (a 500);
2. a refusal always renders: RequestedAction holds JSON only, refusal bodies are plain JSON,
   and the WWW-Authenticate challenge is bounded;
3. the RFC 9068 claims are required with their JSON types; 300 s maximum lifetime by default;
4. strict parsing: URIs, ASCII quantities, null is not "absent", an empty subset is no subset;
5. one token cannot fill the replay store: proofs are spent only for covered calls with a use
   left.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciba_service.core.errors import InvalidAuthorizationDetails
from ciba_service.core.replay import InMemoryReplayCache, ReplayCache, ReplayStoreUnavailable
from ciba_service.core.security import b64url_encode, constant_time_eq, sha256_b64url
from ciba_service.core.uri import normalize_uri
from ciba_service.demo.example_api import IAM_LOCATION, create_example_api
from ciba_service.rfc9396 import TypeRegistry, parse_authorization_details
from ciba_service.rfc9449 import (
    DPoPNonces,
    DPoPProofError,
    access_token_hash,
    check_proof,
    create_proof,
    jwk_thumbprint,
    public_jwk,
    verify_proof,
)
from ciba_service.rs import (
    FieldRule,
    InsufficientAuthorization,
    InvalidDPoPProof,
    InvalidRequestedAction,
    InvalidToken,
    JwksCache,
    RedisReplayCache,
    RequestedAction,
    ResourceError,
    ResourceUnavailable,
    StaticKeys,
    TokenIntrospection,
    TokenVerifier,
    VerifiedToken,
    action_matches,
)
from ciba_service.rs.errors import MAX_BODY_DETAILS, MAX_CHALLENGE_DETAILS, MissingToken
from ciba_service.rs.fastapi import install_error_handler, require_action
from ciba_service.server.tokens import SigningKey
from tests.support.redis import free_port, fresh_prefix
from tests.support.service import AGENT_ID, AGENT_SECRET, BASE, CIBA, Env, make_settings, open_env

NOW = 1_800_000_000
ISS, AUD = "https://issuer.example.test", "resource-api"
URL = "https://iam.example.test/policies/policy-42"
ISSUER = SigningKey(private_key=ec.generate_private_key(ec.SECP256R1()), kid="hardening")
AGENT = ec.generate_private_key(ec.SECP256R1())
AGENT_JWK = public_jwk(AGENT.public_key())
AGENT_JKT = jwk_thumbprint(AGENT_JWK)
NONCES = DPoPNonces(b"n" * 32, clock=lambda: NOW)
ENTRY: dict[str, Any] = {
    "type": "iam_policy",
    "actions": ["update"],
    "identifier": "policy-42",
    "locations": [IAM_LOCATION],
}
ACTION = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[IAM_LOCATION])
OTHER_ACTION = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-43", locations=[IAM_LOCATION])
REMOVE = object()


# helpers: raw JWS, so any member can be any JSON text --------------------------------------
def _text(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def _object(members: dict[str, Any]) -> bytes:
    """A JSON object; bytes values are inserted as JSON text as they are (hostile ones too)."""
    return b"{" + b",".join(json.dumps(k).encode() + b":" + _text(v) for k, v in members.items()) + b"}"


def _jws(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, key: ec.EllipticCurvePrivateKey) -> str:
    parts = [h if isinstance(h, bytes) else _object(h) for h in (header, payload)]
    signing_input = f"{b64url_encode(parts[0])}.{b64url_encode(parts[1])}"
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **changes}
    return {k: v for k, v in merged.items() if v is not REMOVE}


def claims(**changes: Any) -> dict[str, Any]:
    base = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "client_id": "agent-1",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 120,
        "jti": "token-1",
        "authorization_details": [ENTRY],
    }
    return _changed(base, changes)


def token(**changes: Any) -> str:
    """A token signed by the issuer; a change to REMOVE drops the claim, to None writes null."""
    return _jws({"alg": "ES256", "typ": "at+jwt", "kid": ISSUER.kid}, claims(**changes), ISSUER.private_key)


def bound(**changes: Any) -> str:
    return token(**{"cnf": {"jkt": AGENT_JKT}, **changes})


_proof_count = iter(range(10**9))


def proof(
    access_token: str | None,
    *,
    header: dict[str, Any] | None = None,
    method: str = "PUT",
    url: str = URL,
    **changes: Any,
) -> str:
    """A proof signed by the agent; ``changes`` replace claims (bytes: as JSON text)."""
    base: dict[str, Any] = {"jti": f"proof-{next(_proof_count)}", "htm": method, "htu": url, "iat": NOW}
    if access_token is not None:
        base["ath"] = access_token_hash(access_token)
    head = _changed({"typ": "dpop+jwt", "alg": "ES256", "jwk": AGENT_JWK}, header or {})
    return _jws(head, _changed(base, changes), AGENT)


def verifier(**kwargs: Any) -> TokenVerifier:
    return TokenVerifier(issuer=ISS, audience=AUD, keys=StaticKeys(ISSUER.jwks()), clock=lambda: NOW, **kwargs)


def call(v: TokenVerifier, access_token: str, dpop: str | None, action: RequestedAction = ACTION) -> VerifiedToken:
    return v.verify(access_token, action, scheme="DPoP", method="PUT", url=URL, dpop_proof=dpop)


def _swap_segment(jws: str, index: int, segment: str) -> str:
    parts = jws.split(".")
    parts[index] = segment
    return ".".join(parts)


# 1. hostile content in DPoP proofs ----------------------------------------------------------
# (name, how to make the proof from a proof maker, the description expected). The maker
# builds a signed proof for the request at hand (the resource server's, with ath; or the token
# endpoint's), with the given claims (bytes: as JSON text) and header members replaced.
Maker = Any


def _one_mod_four(segment: str) -> str:
    # base64url of a length no encoding has: binascii.Error from a lenient decoder
    return segment + "A" * ((1 - len(segment)) % 4)


def _segment(jws: str, index: int, change: Any) -> str:
    parts = jws.split(".")
    parts[index] = change(parts[index])
    return ".".join(parts)


HOSTILE_PROOFS: list[tuple[str, Any, str]] = [
    ("iat-400-digits", lambda p: p(iat=b"1" + b"0" * 400), "DPoP proof payload is not JSON"),
    ("iat-minus-400-digits", lambda p: p(iat=b"-" + b"9" * 400), "DPoP proof payload is not JSON"),
    ("iat-1e400", lambda p: p(iat=b"1e400"), "DPoP proof payload is not JSON"),
    ("iat-NaN", lambda p: p(iat=b"NaN"), "DPoP proof payload is not JSON"),
    ("iat-Infinity", lambda p: p(iat=b"Infinity"), "DPoP proof payload is not JSON"),
    ("iat-beyond-64-bits", lambda p: p(iat=b"1" + b"0" * 30), "DPoP proof has no iat"),
    ("iat-year-5000", lambda p: p(iat=10**11 + 1), "DPoP proof has no iat"),
    ("ath-lone-surrogate", lambda p: p(ath=b'"\\ud800"'), "DPoP proof payload is not JSON"),
    ("jti-lone-surrogate", lambda p: p(jti=b'"j\\udc00"'), "DPoP proof payload is not JSON"),
    ("nonce-lone-surrogate", lambda p: p(nonce=b'"\\udbff"'), "DPoP proof payload is not JSON"),
    ("htm-lone-surrogate", lambda p: p(htm=b'"PUT\\ud800"'), "DPoP proof payload is not JSON"),
    ("htu-lone-surrogate", lambda p: p(htu=b'"https://iam.example.test/\\ud800"'), "DPoP proof payload is not JSON"),
    ("htu-raw-invalid-utf8", lambda p: p(htu=b'"https://iam.example.test/\xff"'), "DPoP proof payload is not JSON"),
    ("jti-raw-surrogate-utf8", lambda p: p(jti=b'"\xed\xa0\x80"'), "DPoP proof payload is not JSON"),
    ("typ-lone-surrogate", lambda p: p(header={"typ": b'"\\ud800"'}), "DPoP proof header is not JSON"),
    (
        "jwk-x-lone-surrogate",
        lambda p: p(header={"jwk": {**AGENT_JWK, "x": "\ud800"}}),
        "DPoP proof header is not JSON",
    ),
    ("header-member-name-surrogate", lambda p: p(header={"\udfff": 1}), "DPoP proof header is not JSON"),
    ("signature-length-1-mod-4", lambda p: _segment(p(), 2, _one_mod_four), "DPoP proof signature is not base64url"),
    ("signature-shortened", lambda p: _segment(p(), 2, lambda sig: sig[:-1]), "DPoP proof signature is not base64url"),
    ("signature-padded", lambda p: p() + "==", "DPoP proof signature is not base64url"),
    (
        "signature-standard-alphabet",
        lambda p: _segment(p(), 2, lambda sig: "+/" + sig[2:]),
        "DPoP proof signature is not base64url",
    ),
    (
        # 64 bytes encode to 86 characters (2 mod 4): the last one carries 4 unused bits
        "signature-non-canonical-last-character",
        lambda p: _segment(p(), 2, lambda sig: sig[:-1] + "B"),
        "DPoP proof signature is not base64url",
    ),
    ("header-length-1-mod-4", lambda p: _segment(p(), 0, _one_mod_four), "DPoP proof header is not base64url"),
    ("payload-length-1-mod-4", lambda p: _segment(p(), 1, _one_mod_four), "DPoP proof payload is not base64url"),
    (
        "payload-non-ascii",
        lambda p: _segment(p(), 1, lambda c: c[:-1] + "\u00e9"),
        "DPoP proof payload is not base64url",
    ),
    (
        "jwk-x-non-canonical",
        lambda p: p(header={"jwk": {**AGENT_JWK, "x": AGENT_JWK["x"][:-1] + "_"}}),
        "DPoP proof jwk is not a valid P-256 public key",
    ),
    (
        "jwk-x-length-1-mod-4",
        lambda p: p(header={"jwk": {**AGENT_JWK, "x": AGENT_JWK["x"] + "AA"}}),
        "DPoP proof jwk is not a valid P-256 public key",
    ),
    ("payload-nesting-past-1024", lambda p: p(x=b"[" * 1025 + b"]" * 1025), "DPoP proof payload is not JSON"),
    ("payload-too-large", lambda p: p(x=b"[" * 1600 + b"]" * 1600), "DPoP proof is too large"),
]
CASES = [c[1:] for c in HOSTILE_PROOFS]
CASE_IDS = [c[0] for c in HOSTILE_PROOFS]
# An HTTP header value is ASCII: the non-ASCII segment cannot reach the token endpoint.
HEADER_CASES = [c[1:] for c in HOSTILE_PROOFS if c[0] != "payload-non-ascii"]
HEADER_CASE_IDS = [c[0] for c in HOSTILE_PROOFS if c[0] != "payload-non-ascii"]


@pytest.mark.parametrize(("make", "description"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("with_nonces", [False, True], ids=["", "nonces"])
def test_hostile_proofs_are_invalid_dpop_proofs_at_the_resource_server(
    make: Any, description: str, with_nonces: bool
) -> None:
    v = verifier(dpop_nonces=NONCES if with_nonces else None)
    access_token = bound()
    with pytest.raises(InvalidDPoPProof) as info:
        call(v, access_token, make(lambda **changes: proof(access_token, **changes)))
    assert info.value.description == description
    assert info.value.status_code == 401
    # nothing was spent: the token still works with a good proof
    assert call(v, access_token, proof(access_token, nonce=NONCES.current())).entry == ENTRY


@pytest.mark.parametrize(("make", "description"), CASES, ids=CASE_IDS)
def test_hostile_proofs_raise_dpop_proof_error_from_verify_proof(make: Any, description: str) -> None:
    raw = make(lambda **changes: proof("t", **changes))
    with pytest.raises(DPoPProofError) as info:
        verify_proof(raw, method="PUT", url=URL, access_token="t", replay=InMemoryReplayCache(), now=NOW)
    assert info.value.description == description


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, TestClient]]:
    with open_env(make_settings(Path(tmp_path_factory.mktemp("svc"))), username=None) as env:
        # answers a server error with its 500 rather than raising it into the test
        yield env, TestClient(env.client.app, base_url=BASE, raise_server_exceptions=False)


def _token_request(client: TestClient, dpop: str) -> Any:
    return client.post(
        "/token",
        data={"grant_type": CIBA, "auth_req_id": "unknown"},
        auth=(AGENT_ID, AGENT_SECRET),
        headers={"DPoP": dpop},
    )


@pytest.mark.parametrize(("make", "description"), HEADER_CASES, ids=HEADER_CASE_IDS)
def test_hostile_proofs_are_400_invalid_dpop_proof_at_the_token_endpoint(
    service: tuple[Env, TestClient], make: Any, description: str
) -> None:
    env, client = service
    env.clock.now = NOW
    raw = make(lambda **changes: proof(None, method="POST", url=f"{BASE}/token", **changes))
    response = _token_request(client, raw)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_dpop_proof", "error_description": description}


def test_a_well_formed_proof_still_reaches_the_grant_at_the_token_endpoint(service: tuple[Env, TestClient]) -> None:
    env, client = service
    env.clock.now = NOW
    response = _token_request(client, create_proof(AGENT, "POST", f"{BASE}/token", now=NOW))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"  # past the proof


def test_lone_surrogates_never_raise_in_the_primitives() -> None:
    assert not constant_time_eq("\ud800", "x")
    assert constant_time_eq("\ud800", "\ud800")
    assert not constant_time_eq("\ud800", "\udc00")
    assert constant_time_eq("ok", "ok")  # valid strings compare as before
    assert sha256_b64url("abc") == sha256_b64url(b"abc")
    assert sha256_b64url("\ud800") != sha256_b64url("?")
    assert not NONCES.is_valid("\ud800")


def test_redis_replay_store_takes_any_key(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        store = RedisReplayCache(client, prefix=fresh_prefix())
        assert store.consume("dpop|k|\ud800", expires_at=NOW + 60) is True
        assert store.consume("dpop|k|\ud800", expires_at=NOW + 60) is False
        assert store.uses("dpop|k|\ud800") == 1
        assert store.consume("dpop|k|\udc00", expires_at=NOW + 60) is True  # a different key
        assert store.consume("dpop|k|é", expires_at=NOW + 60) is True
        assert store.uses("dpop|k|é") == 1
    finally:
        client.close()


def test_an_unreachable_redis_is_a_503_whatever_the_key() -> None:
    dead = RedisReplayCache.from_url(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(ReplayStoreUnavailable):
        dead.consume("dpop|k|\ud800", expires_at=NOW + 60)
    with pytest.raises(ReplayStoreUnavailable):
        dead.uses("dpop|k|\ud800")
    v = verifier(replay=dead)
    access_token = bound()
    with pytest.raises(ResourceUnavailable):
        call(v, access_token, proof(access_token))


def test_check_proof_does_not_spend_and_spend_does() -> None:
    replay = InMemoryReplayCache(lambda: NOW)
    raw = proof("t")
    checked = check_proof(raw, method="PUT", url=URL, access_token="t", now=NOW)
    assert checked.jkt == AGENT_JKT
    assert len(replay) == 0
    checked.spend(replay)
    with pytest.raises(DPoPProofError, match="already been used"):
        checked.spend(replay)
    with pytest.raises(DPoPProofError, match="already been used"):
        verify_proof(raw, method="PUT", url=URL, access_token="t", replay=replay, now=NOW)


# 2. refusals always render ----------------------------------------------------------------------
class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


NOT_JSON: list[tuple[str, dict[str, Any]]] = [
    ("nan", {"fields": {"amount": math.nan}}),
    ("infinity", {"fields": {"amount": math.inf}}),
    ("minus-infinity", {"fields": {"amount": -math.inf}}),
    ("float-overflow", {"fields": {"amount": float("1e400")}}),
    ("decimal", {"fields": {"amount": Decimal("7.50")}}),
    ("decimal-nan", {"fields": {"amount": Decimal("NaN")}}),
    ("bytes", {"fields": {"note": b"x"}}),
    ("bytearray", {"fields": {"note": bytearray(b"x")}}),
    ("set", {"fields": {"columns": {"a", "b"}}}),
    ("frozenset", {"fields": {"columns": frozenset({"a"})}}),
    ("int-key", {"fields": {"map": {1: "a"}}}),
    ("tuple-key", {"fields": {"map": {("a",): "a"}}}),
    ("none-key", {"fields": {"map": {None: "a"}}}),
    ("nested-nan", {"fields": {"a": [{"b": [math.nan]}]}}),
    ("lone-surrogate-value", {"fields": {"note": "\ud800"}}),
    ("lone-surrogate-key", {"fields": {"\udc00": 1}}),
    ("int-beyond-64-bits", {"fields": {"n": 2**64}}),
    ("int-with-5000-digits", {"fields": {"n": 10**5000}}),
    ("object", {"fields": {"o": object()}}),
    ("complex", {"fields": {"c": 1j}}),
    ("too-deep", {"fields": {"d": json.loads("[" * 40 + "]" * 40)}}),
    ("fields-not-a-mapping", {"fields": [("a", 1)]}),
    ("actions-a-string", {"actions": "update"}),
    ("actions-bytes", {"actions": [b"update"]}),
    ("actions-a-set", {"actions": {"update"}}),
    ("locations-a-string", {"locations": IAM_LOCATION}),
    ("datatypes-with-int", {"datatypes": ["a", 1]}),
    ("privileges-with-surrogate", {"privileges": ["\ud800"]}),
    ("identifier-int", {"identifier": 42}),
    ("identifier-surrogate", {"identifier": "p\ud800"}),
    ("type-empty", {"type": ""}),
    ("type-none", {"type": None}),
    ("type-surrogate", {"type": "\ud800"}),
]


@pytest.mark.parametrize("changes", [c[1] for c in NOT_JSON], ids=[c[0] for c in NOT_JSON])
def test_requested_action_refuses_what_json_cannot_carry(changes: dict[str, Any]) -> None:
    arguments = {"type": "iam_policy", "actions": ["update"], **changes}
    with pytest.raises(InvalidRequestedAction) as info:
        RequestedAction(**arguments)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("RequestedAction.")
    assert len(str(info.value)) < 400  # names the member, never echoes the value


def test_requested_action_keeps_a_plain_json_copy() -> None:
    nested = {"currency": "EUR", "amount": "7.50"}
    action = RequestedAction(
        type="payment_initiation",
        actions=("initiate",),
        fields=MappingProxyType(
            {"instructedAmount": nested, "path": ("a", 1, 2.5, None, True), "colour": Colour.RED, "level": Level.HIGH}
        ),
    )
    nested["amount"] = "9999.00"  # changed after construction: the action keeps what it was given
    assert action.fields == {
        "instructedAmount": {"currency": "EUR", "amount": "7.50"},
        "path": ["a", 1, 2.5, None, True],
        "colour": "red",
        "level": 3,
    }
    assert type(action.fields["colour"]) is str and type(action.fields["level"]) is int
    assert json.dumps(action.as_authorization_details(), allow_nan=False)


def _payment_app() -> FastAPI:
    """The guide's FastAPI example (RESOURCE_SERVER.md, "Quick start: FastAPI"), as written."""
    verifier_ = TokenVerifier(
        issuer="https://ciba.example.com",
        audience="resource-api",
        keys=JwksCache("https://ciba.example.com/jwks.json"),
        field_rules={"payment_initiation": {"instructedAmount.amount": FieldRule.MAX}},
    )
    app = FastAPI()
    install_error_handler(app)

    async def payment(request: Request) -> RequestedAction:
        body = await request.json()
        return RequestedAction(
            type="payment_initiation",
            actions=["initiate"],
            fields={
                "instructedAmount": {"currency": body["currency"], "amount": body["amount"]},
                "creditorName": body["creditor"],
            },
        )

    may_pay = Depends(require_action(verifier_, payment, public_url="https://iam.example.test"))

    @app.post("/payments")
    async def pay(token: VerifiedToken = may_pay) -> dict[str, str]:
        return {"paid_by": token.subject}

    return app


@pytest.mark.parametrize(
    "body",
    [
        b'{"currency": "EUR", "amount": NaN, "creditor": "A"}',
        b'{"currency": "EUR", "amount": Infinity, "creditor": "A"}',
        b'{"currency": "EUR", "amount": -Infinity, "creditor": "A"}',
        b'{"currency": "EUR", "amount": 1e999, "creditor": "A"}',
        b'{"currency": "EUR", "amount": 100000000000000000000000000000, "creditor": "A"}',
        b'{"currency": "EUR", "amount": "7.50", "creditor": "\\ud800"}',
        b'{"currency": {"\\udfff": 1}, "amount": "7.50", "creditor": "A"}',
    ],
    ids=["nan", "infinity", "minus-infinity", "1e999", "beyond-64-bits", "lone-surrogate", "surrogate-key"],
)
def test_the_guides_example_answers_unrenderable_bodies_with_400_not_500(body: bytes) -> None:
    # Reachable without any token: the refusal echoes the action the body describes.
    client = TestClient(_payment_app(), raise_server_exceptions=False)
    response = client.post("/payments", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert response.json()["error_description"].startswith("the request cannot be checked against an approval")
    assert response.headers["www-authenticate"].startswith('Bearer realm="api", error="invalid_request"')


def test_the_guides_example_still_challenges_a_json_body_without_token() -> None:
    client = TestClient(_payment_app(), raise_server_exceptions=False)
    response = client.post("/payments", json={"currency": "EUR", "amount": "7.50", "creditor": "A"})
    assert response.status_code == 401
    assert response.json()["authorization_details"] == [
        {
            "type": "payment_initiation",
            "actions": ["initiate"],
            "instructedAmount": {"currency": "EUR", "amount": "7.50"},
            "creditorName": "A",
        }
    ]
    assert "authorization_details=" in response.headers["www-authenticate"]


def test_example_api_bounds_the_challenge_for_a_huge_identifier() -> None:
    client = TestClient(create_example_api(verifier()), raise_server_exceptions=False)
    small = client.put("/policies/policy-42")
    assert 'authorization_details="' in small.headers["www-authenticate"]
    assert small.json()["authorization_details"][0]["identifier"] == "policy-42"
    # 5 000 characters: too long for the challenge (>4 KiB encoded), kept in the body
    medium = client.put("/policies/" + "p" * 5000)
    assert medium.status_code == 401
    assert "authorization_details" not in medium.headers["www-authenticate"]
    assert len(medium.headers["www-authenticate"]) < 300
    assert medium.json()["authorization_details"][0]["identifier"] == "p" * 5000
    # 60 000 characters: left out of both, the refusal still a 401
    huge = client.put("/policies/" + "p" * 60_000)
    assert huge.status_code == 401
    assert "authorization_details" not in huge.headers["www-authenticate"]
    assert "authorization_details" not in huge.json()
    assert len(huge.content) < 1000


def test_a_200_kb_request_field_gets_a_small_refusal() -> None:
    # The review's case: a 200 KB field made a 533 KB WWW-Authenticate header (a proxy's 502).
    client = TestClient(_payment_app(), raise_server_exceptions=False)
    response = client.post("/payments", json={"currency": "EUR", "amount": "7.50", "creditor": "c" * 200_000})
    assert response.status_code == 401
    assert len(response.headers["www-authenticate"]) < 300
    assert len(response.content) < 1000


def test_challenge_and_body_bounds_are_exact() -> None:
    def error_for(size: int) -> MissingToken:
        return MissingToken("no token", required={"type": "t", "actions": ["a"], "n": "x" * size})

    base = len(json.dumps([{"type": "t", "actions": ["a"], "n": ""}], separators=(",", ":")))
    fits = (MAX_CHALLENGE_DETAILS // 4) * 3 - base  # JSON whose base64url is exactly the bound
    assert len(error_for(fits)._challenge_details or "") == MAX_CHALLENGE_DETAILS
    assert error_for(fits + 1)._challenge_details is None
    assert error_for(MAX_BODY_DETAILS - base).body()["authorization_details"]
    assert "authorization_details" not in error_for(MAX_BODY_DETAILS - base + 1).body()


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


def _cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {"type": "t"}
    value["self"] = value
    return value


UNRENDERABLE: list[tuple[str, Any]] = [
    ("decimal", {"type": "t", "amount": Decimal("1.5")}),
    ("nan", {"type": "t", "amount": math.nan}),
    ("bytes", {"type": "t", "note": b"x"}),
    ("set", {"type": "t", "columns": {"a"}}),
    ("surrogate", {"type": "t", "note": "\ud800"}),
    ("huge-int", {"type": "t", "n": 10**5000}),
    ("cycle", _cyclic()),
    ("deep", {"type": "t", "d": _deep(5000)}),
]


@pytest.mark.parametrize("required", [c[1] for c in UNRENDERABLE], ids=[c[0] for c in UNRENDERABLE])
def test_a_refusal_built_by_hand_with_non_json_still_renders(required: Any) -> None:
    app = FastAPI()
    install_error_handler(app)

    @app.get("/x")
    async def refuse() -> None:
        raise InsufficientAuthorization("not covered", required=required)

    response = TestClient(app, raise_server_exceptions=False).get("/x")
    assert response.status_code == 403
    assert response.json() == {"error": "insufficient_scope", "error_description": "not covered"}
    assert response.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", error_description="not covered"'
    )


PY_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.decimals(),
        st.binary(max_size=4),
        st.text(alphabet=st.characters(exclude_categories=()), max_size=8),
        st.sets(st.integers(), max_size=2),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.none()), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(required=st.dictionaries(st.text(max_size=6), PY_VALUES, max_size=4), status=st.sampled_from([401, 403]))
def test_every_refusal_renders_whatever_it_echoes(required: dict[str, Any], status: int) -> None:
    error: ResourceError = (
        InsufficientAuthorization("x", required=required) if status == 403 else InvalidToken("x", required=required)
    )
    text = json.dumps(error.body(), ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")
    for value in error.headers().values():
        value.encode("latin-1")
    assert len(error.headers()["WWW-Authenticate"]) <= MAX_CHALLENGE_DETAILS + 200


# 3. RFC 9068 claims and lifetimes -------------------------------------------------------------
MALFORMED_CLAIMS: list[tuple[str, dict[str, Any], str]] = [
    ("no-sub", {"sub": REMOVE}, "token has no sub"),
    ("null-sub", {"sub": None}, "token has no sub"),
    ("empty-sub", {"sub": ""}, "token has no sub"),
    ("numeric-sub", {"sub": 123}, "token has no sub"),
    ("array-sub", {"sub": ["user-1"]}, "token has no sub"),
    ("object-sub", {"sub": {"id": "user-1"}}, "token has no sub"),
    ("no-client-id", {"client_id": REMOVE}, "token has no client_id"),
    ("null-client-id", {"client_id": None}, "token has no client_id"),
    ("numeric-client-id", {"client_id": 1}, "token has no client_id"),
    ("empty-client-id", {"client_id": ""}, "token has no client_id"),
    ("no-iss", {"iss": REMOVE}, "token issuer is not trusted here"),
    ("array-iss", {"iss": [ISS]}, "token issuer is not trusted here"),
    ("no-aud", {"aud": REMOVE}, "token is not intended for this resource server"),
    ("null-aud", {"aud": None}, "token is not intended for this resource server"),
    ("aud-with-non-string", {"aud": [AUD, 1]}, "token is not intended for this resource server"),
    ("aud-object", {"aud": {AUD: True}}, "token is not intended for this resource server"),
    ("aud-nested", {"aud": [[AUD]]}, "token is not intended for this resource server"),
    ("no-exp", {"exp": REMOVE}, "token lacks exp or iat"),
    ("null-exp", {"exp": None}, "token lacks exp or iat"),
    ("string-exp", {"exp": str(NOW + 60)}, "token lacks exp or iat"),
    ("bool-exp", {"exp": True}, "token lacks exp or iat"),
    ("no-iat", {"iat": REMOVE}, "token lacks exp or iat"),
    ("null-iat", {"iat": None}, "token lacks exp or iat"),
    ("null-nbf", {"nbf": None}, "token is not yet valid"),
    ("string-nbf", {"nbf": "0"}, "token is not yet valid"),
    ("no-jti", {"jti": REMOVE}, "token has no jti"),
    ("null-jti", {"jti": None}, "token has no jti"),
    ("numeric-jti", {"jti": 7}, "token has no jti"),
    ("long-jti", {"jti": "j" * 257}, "token has no jti"),
    ("lifetime-301", {"exp": NOW + 301}, "token lifetime is longer than accepted"),
    ("lifetime-an-hour", {"exp": NOW + 3600}, "token lifetime is longer than accepted"),
]


@pytest.mark.parametrize(
    ("changes", "description"), [c[1:] for c in MALFORMED_CLAIMS], ids=[c[0] for c in MALFORMED_CLAIMS]
)
def test_rfc9068_claims_are_required_with_their_types(changes: dict[str, Any], description: str) -> None:
    with pytest.raises(InvalidToken) as info:
        verifier().verify(token(**changes), ACTION)
    assert info.value.description == description


def test_claims_at_their_limits_are_accepted() -> None:
    v = verifier()
    verified = v.verify(token(jti="j" * 256, sub="s" * 1000, exp=NOW + 300, nbf=REMOVE, aud=["other", AUD]), ACTION)
    assert verified.subject == "s" * 1000
    assert verified.client_id == "agent-1"


def test_the_default_lifetime_is_what_the_issuer_promises_and_is_configurable() -> None:
    assert TokenVerifier(issuer=ISS, audience=AUD, keys=StaticKeys(ISSUER.jwks())).max_lifetime == 300
    hour = token(exp=NOW + 3600, jti="hour")
    with pytest.raises(InvalidToken, match="lifetime"):
        verifier().verify(hour, ACTION)
    assert verifier(max_lifetime=3600).verify(hour, ACTION).entry == ENTRY


def test_subject_is_never_the_string_none() -> None:
    verified = verifier().verify(token(), ACTION)
    assert verified.subject == "user-1"
    by_hand = VerifiedToken(claims={"sub": None, "client_id": None}, entry=ENTRY)
    with pytest.raises(TypeError):
        _ = by_hand.subject
    with pytest.raises(TypeError):
        _ = by_hand.client_id


# 4. strict parsing ----------------------------------------------------------------------------
INVALID_URIS = [
    "https://iam.exa\tmple.test/",
    "https://iam.exa\nmple.test/",
    "https://iam.exa\rmple.test/",
    "https://iam.example.test\t/",
    " https://iam.example.test/",
    "https://iam.example.test/ ",
    "https://iam.example.test/\n",
    "\x00https://iam.example.test/",
    "https://iam.example.test/a b",
    "https://iam.example.test/\x7f",
    "https://iam.example.test/\u0085",  # NEL
    "https://iam.example.test/\u00a0",  # NBSP
    "https://iam.example.test/\u2028",  # line separator
    "https://iam.example.test/\u202e",  # bidi override
    "https://iam.example.test/\u200b",  # zero-width space
    "https://iam.example.test/\ud800",  # lone surrogate
    "https://iam.example.test\\@evil.test/",
    "https://iam.example.test/a\\b",
    "https://iam.example.test/%zz",
    "https://iam.example.test/%4",
    "https://iam.exämple.test/",
    "https://iam.example.test:8o/",
    "https://iam.example.test:\u0668\u0660/",
    "https://[v1.x]/",
    "https://[::1/",
    "https:///policies",
    "https://:443/",
    "//iam.example.test/",
    "/policies/policy-42",
    "iam.example.test",
    "",
    "https://us er@iam.example.test/",
]


@pytest.mark.parametrize("uri", INVALID_URIS)
def test_invalid_uris_are_refused_not_cleaned(uri: str) -> None:
    with pytest.raises(ValueError):
        normalize_uri(uri)


@pytest.mark.parametrize("uri", INVALID_URIS)
def test_an_invalid_location_matches_nothing_on_either_side(uri: str) -> None:
    clean = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[IAM_LOCATION])
    assert not action_matches({**ENTRY, "locations": [uri]}, clean)
    try:
        dirty = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[uri])
    except InvalidRequestedAction:
        return  # a lone surrogate is refused when the action is built
    assert not action_matches(ENTRY, dirty)
    assert not action_matches({**ENTRY, "locations": [uri]}, dirty)  # not even itself


def test_valid_uris_are_normalised_as_before() -> None:
    assert normalize_uri("HTTPS://IAM.Example.TEST:443/./a/../b/%7e") == "https://iam.example.test/b/~"
    assert normalize_uri("https://iam.example.test/ü") == "https://iam.example.test/%C3%BC"
    assert normalize_uri("https://xn--iam-qoa.example.test/") == "https://xn--iam-qoa.example.test/"
    assert normalize_uri("https://[2001:DB8::1]:8443/x") == "https://[2001:db8::1]:8443/x"
    assert normalize_uri("https://u:p@iam.example.test/") == "https://u:p@iam.example.test/"
    assert normalize_uri("https://iam.example.test:/x") == "https://iam.example.test/x"
    assert normalize_uri("urn:example:resource") == "urn:example:resource"


REGISTRY = TypeRegistry.from_config({})


@pytest.mark.parametrize(
    "location",
    [
        " https://iam.example.test/",
        "https://iam.example.test/ ",
        "https://iam.example.test/a b",
        "https://iam.example.test\\@evil.test/",
        "https://iam.example.test/%zz",
        "https://iam.exämple.test/",
    ],
)
def test_the_service_refuses_invalid_locations_when_asked(location: str) -> None:
    raw = json.dumps([{**ENTRY, "locations": [location]}])
    with pytest.raises(InvalidAuthorizationDetails) as info:
        parse_authorization_details(raw, registry=REGISTRY, allowed_types=None, max_entries=10, max_bytes=10_000)
    assert "'locations'[0]" in info.value.description


def test_the_service_refuses_an_invalid_location_at_bc_authorize(env: Env) -> None:
    response = env.bc_authorize(authorization_details=json.dumps([{**ENTRY, "locations": [IAM_LOCATION + " "]}]))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_authorization_details"


def test_htu_with_whitespace_is_another_url_but_the_servers_decoded_path_still_matches() -> None:
    v = verifier()
    access_token = bound()
    tabbed = proof(access_token, htu="https://iam.exa\tmple.test/policies/policy-42")
    with pytest.raises(InvalidDPoPProof, match="another URL"):
        call(v, access_token, tabbed)
    # A framework hands over the decoded path ("/a b" for "/a%20b"): still the URL the agent named.
    spaced = proof(access_token, htu="https://iam.example.test/policies/a%20b")
    verified = v.verify(
        access_token,
        ACTION,
        scheme="DPoP",
        method="PUT",
        url="https://iam.example.test/policies/a b",
        dpop_proof=spaced,
    )
    assert verified.entry == ENTRY


QUANTITY_ENTRY = {"type": "quota", "actions": ["raise"], "limit": "50", "floor": "10"}
QUANTITY_RULES = {"limit": FieldRule.MAX, "floor": FieldRule.MIN}


@pytest.mark.parametrize(
    ("limit", "floor", "covered"),
    [
        ("50", "10", True),
        ("49.99", "10.5", True),
        ("\u0665\u0660", "10", False),  # Arabic-Indic 50
        ("\uff15\uff10", "10", False),  # fullwidth 50
        ("5\u0660", "10", False),  # mixed
        ("50", "\u0661\u0660", False),  # MIN side too
        ("\u0662.\u0665", "10", False),
        ("50", "\U0001d7e3\U0001d7e2", False),  # mathematical digits
    ],
)
def test_quantities_are_ascii_decimals_only(limit: str, floor: str, covered: bool) -> None:
    action = RequestedAction(type="quota", actions=["raise"], fields={"limit": limit, "floor": floor})
    assert action_matches(QUANTITY_ENTRY, action, rules=QUANTITY_RULES) is covered


def test_a_non_ascii_approved_quantity_covers_nothing() -> None:
    entry = {**QUANTITY_ENTRY, "limit": "\u0665\u0660"}
    action = RequestedAction(type="quota", actions=["raise"], fields={"limit": "5", "floor": "10"})
    assert not action_matches(entry, action, rules=QUANTITY_RULES)


@pytest.mark.parametrize(
    ("entry_changes", "description"),
    [
        ({"not_before": None}, "authorization_details[0] has an invalid not_before"),
        ({"not_after": None}, "authorization_details[0] has an invalid not_after"),
        ({"max_uses": None}, "authorization_details[0] has an invalid max_uses"),
        ({"max_uses": "2"}, "authorization_details[0] has an invalid max_uses"),
        ({"max_uses": 0}, "authorization_details[0] has an invalid max_uses"),
    ],
    ids=["not_before", "not_after", "max_uses", "max_uses-string", "max_uses-zero"],
)
@pytest.mark.parametrize("ceiling", [None, 3], ids=["", "ceiling-3"])
def test_null_plan_fields_make_the_token_invalid(
    entry_changes: dict[str, Any], description: str, ceiling: int | None
) -> None:
    v = verifier(max_uses={"iam_policy": ceiling} if ceiling else None)
    with pytest.raises(InvalidToken) as info:
        v.verify(token(authorization_details=[{**ENTRY, **entry_changes}]), ACTION)
    assert info.value.description == description


def test_absent_max_uses_is_the_ceiling_and_null_is_never_more() -> None:
    v = verifier(max_uses={"iam_policy": 3})
    three = token(jti="three")
    assert [v.verify(three, ACTION).entry_index for _ in range(3)] == [0, 0, 0]
    with pytest.raises(InvalidToken, match="already been used"):
        v.verify(three, ACTION)
    with pytest.raises(InvalidToken, match="invalid max_uses"):
        v.verify(token(jti="null", authorization_details=[{**ENTRY, "max_uses": None}]), ACTION)


@pytest.mark.parametrize("scheme", ["Bearer", "DPoP", None])
def test_a_null_cnf_is_not_an_unbound_token(scheme: str | None) -> None:
    access_token = token(cnf=None)
    with pytest.raises(InvalidToken, match="unsupported cnf"):
        verifier().verify(access_token, ACTION, scheme=scheme, method="PUT", url=URL, dpop_proof=proof(access_token))


def test_empty_subset_covers_nothing() -> None:
    entry = {"type": "report", "actions": ["export"], "columns": ["name", "email"]}
    rules = {"columns": FieldRule.SUBSET}

    def report(columns: Any) -> RequestedAction:
        return RequestedAction(type="report", actions=["export"], fields={"columns": columns})

    assert action_matches(entry, report(["email"]), rules=rules)
    assert not action_matches(entry, report([]), rules=rules)  # "no columns" may mean "all"
    assert not action_matches({**entry, "columns": []}, report([]), rules=rules)
    assert not action_matches({**entry, "columns": []}, report(["name"]), rules=rules)
    # exact stays exact: an approval of [] covers exactly []
    assert action_matches({**entry, "columns": []}, report([]))


def test_empty_subset_through_the_verifier_is_insufficient_and_burns_nothing() -> None:
    entry = {"type": "report", "actions": ["export"], "columns": ["name"]}
    v = verifier(field_rules={"report": {"columns": FieldRule.SUBSET}})
    access_token = token(authorization_details=[entry])
    with pytest.raises(InsufficientAuthorization):
        v.verify(access_token, RequestedAction(type="report", actions=["export"], fields={"columns": []}))
    assert v.verify(access_token, RequestedAction(type="report", actions=["export"], fields={"columns": ["name"]}))


# 5. one token cannot fill the replay store --------------------------------------------------------
def _flood(v: TokenVerifier, access_token: str, action: RequestedAction, count: int) -> set[str]:
    refusals = set()
    for _ in range(count):
        with pytest.raises(ResourceError) as info:
            call(v, access_token, proof(access_token), action)
        refusals.add(f"{type(info.value).__name__}: {info.value.description}")
    return refusals


def test_proofs_for_uncovered_actions_spend_nothing_and_others_keep_working() -> None:
    store = InMemoryReplayCache(lambda: NOW, max_entries=30)
    v = verifier(replay=store)
    attacker = bound(jti="attacker")
    refusals = _flood(v, attacker, OTHER_ACTION, 500)  # many times the store's capacity
    assert refusals == {"InsufficientAuthorization: the token's approval does not cover this action"}
    assert len(store) == 0
    # every other user's token still works (no 503), and so does the attacker's own, once
    for n in range(10):
        victim = bound(jti=f"victim-{n}")
        assert call(v, victim, proof(victim)).entry == ENTRY
    assert call(v, attacker, proof(attacker)).entry == ENTRY


def test_proofs_for_a_used_up_token_spend_nothing() -> None:
    store = InMemoryReplayCache(lambda: NOW, max_entries=20)
    v = verifier(replay=store)
    attacker = bound(jti="used-up")
    assert call(v, attacker, proof(attacker)).entry == ENTRY
    before = len(store)  # the use and its proof
    assert before == 2
    assert _flood(v, attacker, ACTION, 500) == {"InvalidToken: token has already been used"}
    assert len(store) == before
    victim = bound(jti="victim")
    assert call(v, victim, proof(victim)).entry == ENTRY


def test_a_multi_use_plan_records_at_most_one_proof_per_use() -> None:
    store = InMemoryReplayCache(lambda: NOW, max_entries=50)
    v = verifier(replay=store, max_uses={"iam_policy": 3})
    plan = bound(jti="plan", authorization_details=[ENTRY, {**ENTRY, "identifier": "policy-43"}])
    for action in (ACTION, ACTION, ACTION, OTHER_ACTION, OTHER_ACTION, OTHER_ACTION):
        call(v, plan, proof(plan), action)
    assert len(store) == 2 + 6  # two entries' counters, six proofs
    assert _flood(v, plan, ACTION, 100) == {"InvalidToken: this step of the approved plan has already been used"}
    assert len(store) == 8


def test_a_replayed_proof_is_still_named_as_such() -> None:
    v = verifier(replay=InMemoryReplayCache(lambda: NOW))
    access_token = bound()
    captured = proof(access_token)
    call(v, access_token, captured)
    with pytest.raises(InvalidDPoPProof, match="DPoP proof has already been used"):
        call(v, access_token, captured)


def test_a_revoked_token_spends_no_proof() -> None:
    class Revoked(TokenIntrospection):
        def __init__(self) -> None:
            pass

        def is_active(self, token: str) -> bool:
            return False

    store = InMemoryReplayCache(lambda: NOW)
    v = verifier(replay=store, introspection=Revoked())
    access_token = bound()
    for _ in range(20):
        with pytest.raises(InvalidToken, match="revoked"):
            call(v, access_token, proof(access_token))
    assert len(store) == 0


def test_a_store_that_cannot_count_still_works() -> None:
    class Opaque(ReplayCache):
        """A store with consume only (uses() answers None): the verifier cannot ask first."""

        def __init__(self) -> None:
            self.inner = InMemoryReplayCache(lambda: NOW)

        def consume(self, key: str, *, expires_at: int, limit: int = 1) -> bool:
            return self.inner.consume(key, expires_at=expires_at, limit=limit)

    store = Opaque()
    v = verifier(replay=store)
    access_token = bound()
    captured = proof(access_token)
    assert call(v, access_token, captured).entry == ENTRY
    with pytest.raises(InvalidDPoPProof, match="already been used"):
        call(v, access_token, captured)
    _flood(v, access_token, OTHER_ACTION, 50)  # uncovered: still nothing recorded
    assert len(store.inner) == 2


def test_the_flood_records_nothing_in_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        prefix = fresh_prefix()
        v = verifier(replay=RedisReplayCache(client, prefix=prefix))
        attacker = bound(jti="redis-attacker")
        _flood(v, attacker, OTHER_ACTION, 200)
        assert client.keys(prefix + "*") == []
        assert call(v, attacker, proof(attacker)).entry == ENTRY
        _flood(v, attacker, ACTION, 200)
        assert len(client.keys(prefix + "*")) == 2
    finally:
        client.close()
