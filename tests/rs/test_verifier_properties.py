"""Whatever a token or a DPoP proof holds, the resource-server verifier raises nothing but a
``ResourceError`` (and every refusal renders), and the token endpoint answers a 4xx OAuth
error, never a 500 (property tests, hypothesis).

Tokens are signed with the issuer's key and proofs with the agent's key, so the examples get
past the signatures to the claim logic; other examples are unsigned garbage. Values are
generated as JSON *text*, so they include what Python's ``json`` reads but RFC 8259 forbids or
a double cannot hold: integers of hundreds of digits, ``1e400``, ``NaN``, ``Infinity``, lone
UTF-16 surrogate escapes, raw invalid UTF-8, deep nesting, duplicate and hostile member names.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciba_service.core.replay import InMemoryReplayCache, ReplayCache
from ciba_service.core.security import b64url_encode
from ciba_service.rfc9449 import DPoPNonces, DPoPProofError, access_token_hash, jwk_thumbprint, public_jwk, verify_proof
from ciba_service.rs import (
    FieldRule,
    RedisReplayCache,
    RequestedAction,
    ResourceError,
    StaticKeys,
    TokenVerifier,
    VerifiedToken,
)
from ciba_service.rs.errors import MAX_CHALLENGE_DETAILS
from ciba_service.server.tokens import SigningKey
from tests.support.redis import fresh_prefix
from tests.support.service import AGENT_ID, AGENT_SECRET, BASE, CIBA, Env, make_settings, open_env

NOW = 1_800_000_000
ISS, AUD = "https://issuer.example.test", "resource-api"
URL = "https://iam.example.test/policies/policy-42"
LOCATION = "https://iam.example.test/"
ISSUER_KEY = SigningKey(private_key=ec.generate_private_key(ec.SECP256R1()), kid="prop-issuer")
AGENT = ec.generate_private_key(ec.SECP256R1())
AGENT_JWK = public_jwk(AGENT.public_key())
AGENT_JKT = jwk_thumbprint(AGENT_JWK)
NONCES = DPoPNonces(b"k" * 32, clock=lambda: NOW)
SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# JSON text, hostile included ----------------------------------------------------------------
def _quoted(raw: bytes) -> bytes:
    # Raw bytes as a JSON string's content: invalid UTF-8 and control bytes stay as they are.
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=()), max_size=12)  # surrogates too
NUMBER = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(min_value=10**17, max_value=10**400).map(str),  # beyond 64 bits, beyond a double
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(
        ["1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "1" + "0" * 500, "-0", "1E5", "01", "+1", "0x1"]
    ),
).map(str.encode)
STRING = st.one_of(
    ANY_TEXT.map(lambda t: json.dumps(t).encode()),  # lone surrogates become \udXXX escapes
    st.binary(max_size=10).map(_quoted),
    st.sampled_from([b'"\\ud800"', b'"\\udfff"', b'"a\\ud800b"', b'"\\u0000"', b'"\\x"', b'"open', b'"\\uZZZZ"']),
    st.sampled_from(["", "x" * 300, "x" * 5000, ISS, AUD, "ES256", "at+jwt", "dpop+jwt", "PUT", URL, LOCATION]).map(
        lambda t: json.dumps(t).encode()
    ),
)
SCALAR = st.one_of(st.sampled_from([b"null", b"true", b"false", b"", b"nul", b"}", b"]"]), NUMBER, STRING)


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def _object(members: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(name + b":" + value for name, value in members) + b"}"


JSON_TEXT = st.one_of(
    st.recursive(
        SCALAR,
        lambda inner: (
            st.lists(inner, max_size=3).map(_array) | st.lists(st.tuples(STRING, inner), max_size=3).map(_object)
        ),
        max_leaves=8,
    ),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),  # orjson stops at 1024 levels
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)


# Known troublemakers, drawn often: each broke something once (a number too large for a double,
# NaN and Infinity, which Python's json reads; lone surrogates, as escapes and as raw UTF-8 of
# one; invalid UTF-8; an integer beyond 64 bits; nesting deeper than any parser's limit).
HOSTILE = st.sampled_from(
    [
        b"1" + b"0" * 400,
        b"-" + b"9" * 400,
        b"1" + b"0" * 30,
        b"18446744073709551616",
        b"1e400",
        b"-1e400",
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b'"\\ud800"',
        b'"a\\udfffb"',
        b'"\\ud800\\ud800"',
        b'"\xff"',
        b'"\xed\xa0\x80"',
        b'"\xc0\xaf"',
        b'"\x00"',
        b'"\t"',
        b'"https://iam.exa\\tmple.test/policies/policy-42"',
        b'" https://iam.example.test/policies/policy-42"',
        b"[" * 1100 + b"]" * 1100,
        b'{"jkt":"\\ud800"}',
        b'["\\ud800"]',
        b"{}",
        b"[]",
        b'""',
    ]
)

# tokens and proofs with members replaced ------------------------------------------------------
DELETE = object()
Mutation = tuple[str, str, Any]  # (target, member, JSON text or DELETE)

TOKEN_HEADER = ("alg", "typ", "kid", "jku", "jwk", "crit", "x5u")
TOKEN_CLAIMS = (
    "iss",
    "aud",
    "sub",
    "client_id",
    "iat",
    "nbf",
    "exp",
    "jti",
    "authorization_details",
    "cnf",
    "acr",
    "auth_time",
    "scope",
)
ENTRY_FIELDS = ("type", "actions", "locations", "identifier", "max_uses", "not_before", "not_after", "amount")
PROOF_HEADER = ("typ", "alg", "jwk", "crit", "kid")
JWK_MEMBERS = ("kty", "crv", "x", "y", "d", "alg")
PROOF_CLAIMS = ("jti", "htm", "htu", "iat", "ath", "nonce")
TARGETS: dict[str, tuple[str, ...]] = {
    "token_header": TOKEN_HEADER,
    "token_claims": TOKEN_CLAIMS,
    "entry": ENTRY_FIELDS,
    "cnf": ("jkt", "x5t#S256"),
    "proof_header": PROOF_HEADER,
    "jwk": JWK_MEMBERS,
    "proof_claims": PROOF_CLAIMS,
}
NEAR_VALID = st.sampled_from(
    [
        json.dumps(v).encode()
        for v in (NOW, NOW + 1, NOW - 100, NOW + 120, NOW + 4000, 0, -1, 2**63, 1.5, True, None, [], {}, [AUD])
    ]
)


VALUE = st.one_of(HOSTILE, NEAR_VALID, JSON_TEXT, st.just(DELETE))


@st.composite
def mutations(draw: st.DrawFn, targets: tuple[str, ...], least: int = 1) -> list[Mutation]:
    found: list[Mutation] = []
    for _ in range(draw(st.integers(least, 3))):
        target = draw(st.sampled_from(targets))
        name = draw(st.one_of(st.sampled_from(TARGETS[target]), st.sampled_from(TARGETS[target]), ANY_TEXT))
        found.append((target, name, draw(VALUE)))
    return found


# Edits of one segment of a signed JWS: base64url of a length 1 mod 4, padding, the standard
# alphabet, a last character with non-zero unused bits, characters outside any alphabet.
Edit = tuple[int, str, str] | None
EDITS: st.SearchStrategy[Edit] = st.one_of(
    st.none(),
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["append", "drop", "last", "insert"]),
        st.sampled_from(["A", "B", "=", "==", "+", "/", "\u00e9", "\ud800", " ", ".", "\x00", "-", "_"]),
    ),
)


def edit(jws: str, change: Edit) -> str:
    if change is None:
        return jws
    index, how, text = change
    parts = jws.split(".")
    segment = parts[index]
    if how == "append":
        segment += text
    elif how == "drop":
        segment = segment[: -len(text)]
    elif how == "last":
        segment = segment[:-1] + text
    else:
        segment = segment[:1] + text + segment[1:]
    parts[index] = segment
    return ".".join(parts)


def _members(values: dict[str, Any], target: str, changes: list[Mutation]) -> bytes:
    members = {json.dumps(name).encode(): json.dumps(value).encode() for name, value in values.items()}
    for where, name, value in changes:
        if where != target:
            continue
        key = json.dumps(name).encode()  # a lone surrogate name becomes its escape
        if value is DELETE:
            members.pop(key, None)
        else:
            members[key] = value
    return _object(list(members.items()))


def _sign(header: bytes, payload: bytes, key: ec.EllipticCurvePrivateKey) -> str:
    signing_input = f"{b64url_encode(header)}.{b64url_encode(payload)}"
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


ENTRY: dict[str, Any] = {
    "type": "iam_policy",
    "actions": ["update"],
    "identifier": "policy-42",
    "locations": [LOCATION],
}


def build_token(changes: list[Mutation]) -> str:
    entry = _members(ENTRY, "entry", changes)
    cnf = _members({"jkt": AGENT_JKT}, "cnf", changes)
    claims = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "client_id": "agent-1",
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 120,
        "jti": "token-1",
        "scope": "openid",
        "auth_time": NOW,
        "acr": "phr",
    }
    payload = _members(claims, "token_claims", changes)
    # authorization_details and cnf are spliced in as text, so their members can be hostile too
    replaced = {name for where, name, _ in changes if where == "token_claims"}
    extra = []
    if "authorization_details" not in replaced:
        extra.append(b'"authorization_details":' + _array([entry]))
    if "cnf" not in replaced:
        extra.append(b'"cnf":' + cnf)
    if extra:
        payload = payload[:-1] + (b"," if payload != b"{}" else b"") + b",".join(extra) + b"}"
    header = _members({"alg": "ES256", "typ": "at+jwt", "kid": ISSUER_KEY.kid}, "token_header", changes)
    return _sign(header, payload, ISSUER_KEY.private_key)


def build_proof(changes: list[Mutation], *, method: str, url: str, access_token: str | None) -> str:
    jwk = _members(AGENT_JWK, "jwk", changes)
    claims: dict[str, Any] = {"jti": "proof-1", "htm": method, "htu": url, "iat": NOW}
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if any(where == "proof_claims" and name == "nonce" for where, name, _ in changes) or access_token is not None:
        claims["nonce"] = NONCES.current()
    payload = _members(claims, "proof_claims", changes)
    header = _members({"typ": "dpop+jwt", "alg": "ES256"}, "proof_header", changes)
    if not any(where == "proof_header" and name == "jwk" for where, name, _ in changes):
        header = header[:-1] + (b"," if header != b"{}" else b"") + b'"jwk":' + jwk + b"}"
    return _sign(header, payload, AGENT)


# the resource server ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    nonces: bool
    require_dpop: bool
    max_uses: bool
    amount_rule: bool
    step_up: bool


CONFIGS = st.builds(Config, st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans())
ACTIONS = st.sampled_from(
    [
        RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[LOCATION]),
        RequestedAction(
            type="iam_policy",
            actions=["update"],
            identifier="policy-42",
            locations=[LOCATION],
            fields={"amount": "5.00"},
        ),
        RequestedAction(type="iam_policy", actions=["update"], identifier="policy-43", locations=[LOCATION]),
    ]
)


def make_verifier(config: Config, replay: ReplayCache) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISS,
        audience=AUD,
        keys=StaticKeys(ISSUER_KEY.jwks()),
        replay=replay,
        clock=lambda: NOW,
        dpop_nonces=NONCES if config.nonces else None,
        require_dpop=config.require_dpop,
        max_uses={"iam_policy": 3} if config.max_uses else None,
        field_rules={"iam_policy": {"amount": FieldRule.MAX}} if config.amount_rule else None,
        required_acr=["phr"] if config.step_up else None,
        max_auth_age=300 if config.step_up else None,
    )


def assert_renders(error: ResourceError) -> None:
    """What install_error_handler sends: Starlette's JSONResponse is strict (allow_nan=False,
    UTF-8), header values must be latin-1, and the challenge is bounded."""
    json.dumps(error.body(), ensure_ascii=False, allow_nan=False).encode("utf-8")
    for name, value in error.headers().items():
        value.encode("latin-1")
        assert "\r" not in value and "\n" not in value, name
    challenge = error.headers().get("WWW-Authenticate", "")
    assert len(challenge) <= MAX_CHALLENGE_DETAILS + 1200


def call_twice(verifier: TokenVerifier, action: RequestedAction, **request: Any) -> None:
    """The call and its replay: each succeeds or raises a ResourceError, nothing else."""
    for _ in range(2):
        try:
            verified = verifier.verify_request(action, **request)
        except ResourceError as error:
            assert_renders(error)
        else:
            assert isinstance(verified, VerifiedToken)
            assert isinstance(verified.subject, str) and verified.subject
            assert isinstance(verified.client_id, str) and verified.client_id


def _check_signed(
    replay: Callable[[], ReplayCache],
    config: Config,
    action: RequestedAction,
    changes: list[Mutation],
    scheme: str,
    with_proof: bool,
) -> None:
    token = build_token(changes)
    proof = build_proof(changes, method="PUT", url=URL, access_token=token) if with_proof else None
    call_twice(
        make_verifier(config, replay()),
        action,
        authorization=f"{scheme} {token}",
        method="PUT",
        url=URL,
        dpop=proof,
    )


ALL_TARGETS = tuple(TARGETS)
TOKEN_TARGETS = ("token_header", "token_claims", "entry", "cnf")
PROOF_TARGETS = ("proof_header", "jwk", "proof_claims")
ACTION = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[LOCATION])


@SETTINGS
@given(config=CONFIGS, changes=mutations(PROOF_TARGETS), change=EDITS)
def test_hostile_proofs_raise_only_resource_errors(config: Config, changes: list[Mutation], change: Edit) -> None:
    # A valid bound token, so every example reaches the proof.
    token = build_token([])
    proof = edit(build_proof(changes, method="PUT", url=URL, access_token=token), change)
    call_twice(
        make_verifier(config, InMemoryReplayCache()),
        ACTION,
        authorization=f"DPoP {token}",
        method="PUT",
        url=URL,
        dpop=proof,
    )


@SETTINGS
@given(config=CONFIGS, action=ACTIONS, changes=mutations(TOKEN_TARGETS), change=EDITS)
def test_hostile_tokens_raise_only_resource_errors(
    config: Config, action: RequestedAction, changes: list[Mutation], change: Edit
) -> None:
    token = edit(build_token(changes), change)
    proof = build_proof([], method="PUT", url=URL, access_token=token)  # valid for whatever token
    call_twice(
        make_verifier(config, InMemoryReplayCache()),
        action,
        authorization=f"DPoP {token}",
        method="PUT",
        url=URL,
        dpop=proof,
    )


@SETTINGS
@given(
    config=CONFIGS,
    action=ACTIONS,
    changes=mutations(ALL_TARGETS, least=0),
    scheme=st.sampled_from(["DPoP", "Bearer", "dpop"]),
    with_proof=st.booleans(),
)
def test_signed_tokens_and_proofs_with_hostile_members_raise_only_resource_errors(
    config: Config, action: RequestedAction, changes: list[Mutation], scheme: str, with_proof: bool
) -> None:
    _check_signed(InMemoryReplayCache, config, action, changes, scheme, with_proof)


@settings(SETTINGS, max_examples=100, suppress_health_check=list(HealthCheck))
@given(config=CONFIGS, changes=mutations(PROOF_TARGETS))
def test_the_same_with_the_redis_replay_store(redis_url: str, config: Config, changes: list[Mutation]) -> None:
    # The proof's jti becomes part of a Redis key: a lone surrogate there made redis-py raise
    # UnicodeEncodeError, a 500 that also bypassed the 503 mapping of store failures.
    client = redis.Redis.from_url(redis_url)
    try:
        replay = RedisReplayCache(client, prefix=fresh_prefix())
        _check_signed(lambda: replay, config, ACTION, changes, "DPoP", True)
    finally:
        client.close()


def test_the_generator_reaches_success() -> None:
    # Without changes the token and proof are valid: the properties above exercise the
    # verifier all the way through, not only its first refusals.
    token = build_token([])
    proof = build_proof([], method="PUT", url=URL, access_token=token)
    config = Config(nonces=True, require_dpop=True, max_uses=False, amount_rule=False, step_up=True)
    action = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", locations=[LOCATION])
    verified = make_verifier(config, InMemoryReplayCache()).verify_request(
        action, authorization=f"DPoP {token}", method="PUT", url=URL, dpop=proof
    )
    assert verified.jkt == AGENT_JKT and verified.subject == "user-1"


SEGMENT = st.one_of(
    ANY_TEXT,
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=", max_size=90),
    st.binary(max_size=60).map(b64url_encode),
)
GARBAGE = st.one_of(ANY_TEXT, st.lists(SEGMENT, min_size=1, max_size=4).map(".".join))


@SETTINGS
@given(
    config=CONFIGS,
    action=ACTIONS,
    authorization=st.one_of(
        st.none(), GARBAGE, GARBAGE.map(lambda t: "DPoP " + t), GARBAGE.map(lambda t: "Bearer " + t)
    ),
    method=st.one_of(st.just("PUT"), ANY_TEXT),
    url=st.one_of(st.just(URL), ANY_TEXT, ANY_TEXT.map(lambda t: URL + t)),
    dpop=st.one_of(st.none(), GARBAGE, st.lists(GARBAGE, max_size=3)),
)
def test_unsigned_garbage_raises_only_resource_errors(
    config: Config, action: RequestedAction, authorization: str | None, method: str, url: str, dpop: Any
) -> None:
    call_twice(
        make_verifier(config, InMemoryReplayCache()),
        action,
        authorization=authorization,
        method=method,
        url=url,
        dpop=dpop,
    )


@SETTINGS
@given(changes=mutations(PROOF_TARGETS), change=EDITS, with_token=st.booleans(), nonce=st.booleans())
def test_verify_proof_raises_only_dpop_proof_errors(
    changes: list[Mutation], change: Edit, with_token: bool, nonce: bool
) -> None:
    # The framework-free entry point the token endpoint uses.
    proof = edit(build_proof(changes, method="POST", url=URL, access_token="t" if with_token else None), change)
    for _ in range(2):
        try:
            jkt = verify_proof(
                proof,
                method="POST",
                url=URL,
                replay=InMemoryReplayCache(lambda: NOW),
                access_token="t" if with_token else None,
                expected_jkt=AGENT_JKT,
                expected_nonce=NONCES.is_valid if nonce else None,
                now=NOW,
            )
        except DPoPProofError as error:
            assert isinstance(error.description, str)
        else:
            assert jkt == AGENT_JKT


# the token endpoint ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, TestClient]]:
    with open_env(make_settings(Path(tmp_path_factory.mktemp("svc"))), username=None) as env:
        # A client that answers a server error with its 500 instead of raising it.
        yield env, TestClient(env.client.app, base_url=BASE, raise_server_exceptions=False)


def _token_request(client: TestClient, proofs: list[str]) -> Any:
    return client.post(
        "/token",
        data={"grant_type": CIBA, "auth_req_id": "no-such-request"},
        auth=(AGENT_ID, AGENT_SECRET),
        headers=[("DPoP", p) for p in proofs],
    )


def _assert_oauth_4xx(response: Any) -> None:
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]


@settings(SETTINGS, max_examples=150, suppress_health_check=list(HealthCheck))
@given(changes=mutations(PROOF_TARGETS), change=EDITS)
def test_token_endpoint_answers_hostile_proofs_with_4xx(
    service: tuple[Env, TestClient], changes: list[Mutation], change: Edit
) -> None:
    env, client = service
    env.clock.now = NOW
    proof = edit(build_proof(changes, method="POST", url=f"{BASE}/token", access_token=None), change)
    if not proof.isascii() or not proof.isprintable():
        proof = proof.encode("ascii", "replace").decode().replace("\x00", "?")  # an HTTP header value
    _assert_oauth_4xx(_token_request(client, [proof]))


PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80)


@settings(SETTINGS, max_examples=60, suppress_health_check=list(HealthCheck))
@given(
    proofs=st.lists(st.one_of(PRINTABLE, st.lists(SEGMENT.filter(str.isascii), max_size=4).map(".".join)), max_size=2)
)
def test_token_endpoint_answers_garbage_dpop_headers_with_4xx(
    service: tuple[Env, TestClient], proofs: list[str]
) -> None:
    _, client = service
    _assert_oauth_4xx(_token_request(client, [p for p in proofs if p.isprintable() and p.strip() == p and p]))
