"""RFC 9449 section 9: resource-server-provided DPoP nonces. The stateless nonce policy
(:class:`DPoPNonces`), the verifier's ``use_dpop_nonce`` answer and what a refused call leaves
unspent, and the agent's retry through the FastAPI dependency."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from ciba_service.agent import CibaAgent
from ciba_service.core.replay import InMemoryReplayCache
from ciba_service.core.security import b64url_encode
from ciba_service.demo.example_api import create_example_api
from ciba_service.rfc9449 import DPoPNonces, UseDPoPNonce, create_proof, jwk_thumbprint, public_jwk, verify_proof
from ciba_service.rs import InvalidDPoPProof, TokenVerifier, VerifiedToken
from ciba_service.rs import UseDPoPNonce as UseDPoPNonceError
from ciba_service.server.tokens import SigningKey
from tests.support.service import Clock
from tests.support.tokens import ACTION, ENTRY, mint, verifier

URL = "https://api.example.test/policies/policy-42"
API_URL = "http://testserver/policies/policy-42"
AGENT = ec.generate_private_key(ec.SECP256R1())
AGENT_JKT = jwk_thumbprint(public_jwk(AGENT.public_key()))
NONCE_KEY = b"k" * 32
BUCKET = 300
START = 1_800_000_000.0  # a bucket boundary (6_000_000 * 300)
MISSING = "DPoP proof must carry the server-provided nonce"
STALE = "DPoP proof nonce is stale or unknown; use the server-provided nonce"


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("k") / "key.pem")


@pytest.fixture
def clock() -> Clock:
    return Clock(START + 10)


@pytest.fixture
def nonces(clock: Clock) -> DPoPNonces:
    return DPoPNonces(NONCE_KEY, bucket_seconds=BUCKET, clock=clock)


def _bound(key: SigningKey) -> str:
    return mint(key, cnf={"jkt": AGENT_JKT})


def _call(v: TokenVerifier, token: str, *, nonce: str | None, jti: str | None = None) -> VerifiedToken:
    proof = create_proof(AGENT, "PUT", URL, access_token=token, nonce=nonce, jti=jti)
    return v.verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=proof)


# the nonce policy ----------------------------------------------------------------------------
@pytest.mark.parametrize("short", [b"", b"k" * 31, "k" * 32])
def test_short_or_textual_keys_are_refused(short: bytes | str) -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        DPoPNonces(short)  # type: ignore[arg-type]


@pytest.mark.parametrize("bucket", [0, -300, True, 1.5])
def test_bucket_must_be_a_positive_integer(bucket: int) -> None:
    with pytest.raises(ValueError, match="bucket_seconds"):
        DPoPNonces(NONCE_KEY, bucket_seconds=bucket)


def test_nonce_is_the_hmac_of_the_bucket(nonces: DPoPNonces, clock: Clock) -> None:
    nonce = nonces.current()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", nonce)  # 256 bits, base64url: RFC 9449 NQCHAR
    bucket = int(START) // BUCKET
    expected = hmac.new(NONCE_KEY, b"ciba-service DPoP-Nonce v1|" + bucket.to_bytes(8, "big"), hashlib.sha256)
    assert nonce == b64url_encode(expected.digest())
    clock.advance(BUCKET - 11)  # the bucket's last second: same nonce
    assert nonces.current() == nonce
    clock.advance(1)
    assert nonces.current() != nonce
    assert nonces.current() == nonces.current(START + BUCKET)  # an explicit time, same answer


def test_current_and_previous_bucket_only(nonces: DPoPNonces, clock: Clock) -> None:
    first = nonces.current()
    assert nonces.is_valid(first)
    clock.advance(BUCKET)  # one bucket later: still accepted
    assert nonces.is_valid(first)
    assert nonces.is_valid(nonces.current())
    clock.advance(BUCKET)  # two buckets later: gone
    assert not nonces.is_valid(first)
    # a nonce of a bucket still to come is not accepted either (it was never handed out)
    assert not nonces.is_valid(nonces.current(clock() + BUCKET))


def test_instances_sharing_the_key_agree(clock: Clock) -> None:
    one = DPoPNonces(NONCE_KEY, clock=clock)
    two = DPoPNonces(NONCE_KEY, clock=clock)
    assert one.current() == two.current()
    assert two.is_valid(one.current())


@pytest.mark.parametrize(
    "forged",
    [
        "",
        "x",
        b64url_encode(secrets.token_bytes(32)),
        DPoPNonces(b"o" * 32).current(START + 10),  # another server's key
        b64url_encode(hmac.new(b"o" * 32, str(int(START) // BUCKET).encode(), hashlib.sha256).digest()),
    ],
)
def test_forged_nonces_are_refused(nonces: DPoPNonces, forged: str) -> None:
    assert not nonces.is_valid(forged)


def test_verify_proof_takes_a_nonce_predicate(nonces: DPoPNonces) -> None:
    replay = InMemoryReplayCache()

    def check(nonce: str | None) -> str:
        proof = create_proof(AGENT, "GET", URL, nonce=nonce)
        return verify_proof(proof, method="GET", url=URL, replay=replay, expected_nonce=nonces.is_valid)

    with pytest.raises(UseDPoPNonce, match=MISSING):
        check(None)
    with pytest.raises(UseDPoPNonce, match=re.escape(STALE)):
        check("old")
    assert check(nonces.current()) == AGENT_JKT


# at the verifier -------------------------------------------------------------------------------
def test_missing_nonce_is_answered_with_use_dpop_nonce(key: SigningKey, nonces: DPoPNonces) -> None:
    with pytest.raises(UseDPoPNonceError) as info:
        _call(verifier(key, dpop_nonces=nonces), _bound(key), nonce=None)
    refused = info.value
    assert isinstance(refused, InvalidDPoPProof)  # an invalid proof, more precisely named
    assert (refused.status_code, refused.error, refused.description) == (401, "use_dpop_nonce", MISSING)
    assert refused.body()["error"] == "use_dpop_nonce"
    headers = refused.headers()
    assert headers["DPoP-Nonce"] == nonces.current()
    assert headers["Cache-Control"] == "no-store"
    assert headers["WWW-Authenticate"].startswith(
        f'DPoP realm="api", error="use_dpop_nonce", error_description="{MISSING}", algs="ES256", '
        'authorization_details="'
    )


def test_current_nonce_is_accepted(key: SigningKey, nonces: DPoPNonces) -> None:
    verified = _call(verifier(key, dpop_nonces=nonces), _bound(key), nonce=nonces.current())
    assert verified.jkt == AGENT_JKT
    assert verified.dpop_nonce is None  # nothing newer to tell the agent


def test_previous_bucket_nonce_is_accepted_and_renewed(key: SigningKey, nonces: DPoPNonces, clock: Clock) -> None:
    old = nonces.current()
    clock.advance(BUCKET)
    verified = _call(verifier(key, dpop_nonces=nonces), _bound(key), nonce=old)
    assert verified.entry == ENTRY
    assert verified.dpop_nonce == nonces.current() != old


def test_older_nonce_is_refused(key: SigningKey, nonces: DPoPNonces, clock: Clock) -> None:
    old = nonces.current()
    clock.advance(2 * BUCKET)
    with pytest.raises(UseDPoPNonceError) as info:
        _call(verifier(key, dpop_nonces=nonces), _bound(key), nonce=old)
    assert info.value.description == STALE
    assert info.value.headers()["DPoP-Nonce"] == nonces.current()


def test_forged_nonce_is_refused(key: SigningKey, nonces: DPoPNonces) -> None:
    forged = DPoPNonces(secrets.token_bytes(32), clock=nonces.clock).current()
    with pytest.raises(UseDPoPNonceError, match=re.escape(STALE)):
        _call(verifier(key, dpop_nonces=nonces), _bound(key), nonce=forged)


def test_nonce_of_another_resource_server_is_refused(key: SigningKey, clock: Clock) -> None:
    ours = verifier(key, dpop_nonces=DPoPNonces(NONCE_KEY, clock=clock))
    theirs = DPoPNonces(b"t" * 32, clock=clock)
    with pytest.raises(UseDPoPNonceError, match=re.escape(STALE)):
        _call(ours, _bound(key), nonce=theirs.current())


def test_another_instance_with_the_same_key_accepts_the_nonce(key: SigningKey, clock: Clock) -> None:
    # Two instances, no shared state at all (each its own replay cache): only the key.
    handed_out = verifier(key, dpop_nonces=DPoPNonces(NONCE_KEY, clock=clock))
    other = verifier(key, dpop_nonces=DPoPNonces(NONCE_KEY, clock=clock))
    token = _bound(key)
    with pytest.raises(UseDPoPNonceError) as info:
        _call(handed_out, token, nonce=None)
    assert _call(other, token, nonce=info.value.nonce).jkt == AGENT_JKT


def test_a_refused_call_spends_neither_the_jti_nor_the_token(key: SigningKey, nonces: DPoPNonces) -> None:
    v = verifier(key, dpop_nonces=nonces)
    token = _bound(key)  # one entry, usable once
    with pytest.raises(UseDPoPNonceError) as info:
        _call(v, token, nonce=None, jti="the-same-jti")
    # The retry: the same token, and even a proof with the same jti, now with the nonce.
    verified = _call(v, token, nonce=info.value.nonce, jti="the-same-jti")
    assert verified.entry == ENTRY
    # ...which did spend both
    with pytest.raises(InvalidDPoPProof, match="already been used"):
        _call(v, token, nonce=info.value.nonce, jti="the-same-jti")


def test_a_proof_failing_its_signature_is_invalid_whatever_its_nonce(key: SigningKey, nonces: DPoPNonces) -> None:
    token = _bound(key)
    proof = create_proof(AGENT, "PUT", URL, access_token=token)
    header, payload, signature = proof.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    with pytest.raises(InvalidDPoPProof) as info:
        verifier(key, dpop_nonces=nonces).verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=forged)
    assert type(info.value) is InvalidDPoPProof  # no nonce handed to an unauthenticated proof
    assert "DPoP-Nonce" not in info.value.headers()


def test_bearer_tokens_need_no_nonce(key: SigningKey, nonces: DPoPNonces) -> None:
    assert verifier(key, dpop_nonces=nonces).verify(mint(key), ACTION, scheme="Bearer").entry == ENTRY


def test_without_a_policy_no_nonce_is_required(key: SigningKey) -> None:
    assert _call(verifier(key), _bound(key), nonce=None).dpop_nonce is None


# through FastAPI, with the agent's retry --------------------------------------------------------
class NonceAwareAgent:
    """What an agent does (RFC 9449 section 9): put the last nonce the server gave in each
    proof; on ``401 use_dpop_nonce`` retry once with the ``DPoP-Nonce`` of the answer; keep
    the ``DPoP-Nonce`` of successful answers for the next call."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.agent = CibaAgent(issuer="https://ciba.example.test", client_id="a", client_secret="s", dpop_key=AGENT)
        self.nonce: str | None = None
        self.attempts = 0

    def _send(self, path: str, token: str) -> httpx.Response:
        self.attempts += 1
        url = f"http://testserver{path}"
        headers = self.agent.resource_headers(token, method="PUT", url=url, token_type="DPoP", nonce=self.nonce)
        return self.client.put(path, headers=headers)

    def put(self, path: str, token: str) -> httpx.Response:
        response = self._send(path, token)
        if response.status_code == 401 and response.json().get("error") == "use_dpop_nonce":
            self.nonce = response.headers["DPoP-Nonce"]
            response = self._send(path, token)
        if "DPoP-Nonce" in response.headers:
            self.nonce = response.headers["DPoP-Nonce"]
        return response


def test_fastapi_use_dpop_nonce_then_retry(key: SigningKey, nonces: DPoPNonces) -> None:
    client = TestClient(create_example_api(verifier(key, dpop_nonces=nonces)))
    token = _bound(key)
    first = client.put(
        "/policies/policy-42",
        headers={"Authorization": f"DPoP {token}", "DPoP": create_proof(AGENT, "PUT", API_URL, access_token=token)},
    )
    assert first.status_code == 401
    assert first.json()["error"] == "use_dpop_nonce"
    assert first.headers["DPoP-Nonce"] == nonces.current()
    assert first.headers["WWW-Authenticate"].startswith(
        f'DPoP realm="api", error="use_dpop_nonce", error_description="{MISSING}", algs="ES256"'
    )
    proof = create_proof(AGENT, "PUT", API_URL, access_token=token, nonce=first.headers["DPoP-Nonce"])
    retry = client.put("/policies/policy-42", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "updated"
    assert "DPoP-Nonce" not in retry.headers  # the nonce used is the current one


def test_fastapi_agent_retries_once_and_follows_new_nonces(key: SigningKey, nonces: DPoPNonces, clock: Clock) -> None:
    client = TestClient(create_example_api(verifier(key, dpop_nonces=nonces)))
    agent = NonceAwareAgent(client)
    ok = agent.put("/policies/policy-42", _bound(key))
    assert (ok.status_code, agent.attempts) == (200, 2)  # refused once, then accepted

    clock.advance(BUCKET)  # the agent's nonce is now the previous bucket's
    renewed = agent.put("/policies/policy-42", _bound(key))
    assert (renewed.status_code, agent.attempts) == (200, 3)  # accepted at once...
    assert renewed.headers["DPoP-Nonce"] == agent.nonce == nonces.current()  # ...with the new nonce

    clock.advance(2 * BUCKET)  # the agent was idle: its nonce has expired
    again = agent.put("/policies/policy-42", _bound(key))
    assert (again.status_code, agent.attempts) == (200, 5)


def test_fastapi_other_refusals_carry_no_nonce(key: SigningKey, nonces: DPoPNonces) -> None:
    client = TestClient(create_example_api(verifier(key, dpop_nonces=nonces)))
    missing_proof = client.put("/policies/policy-42", headers={"Authorization": f"DPoP {_bound(key)}"})
    assert missing_proof.json()["error"] == "invalid_dpop_proof"
    assert "DPoP-Nonce" not in missing_proof.headers
