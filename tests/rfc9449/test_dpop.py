"""RFC 9449 DPoP: proofs (create/verify, every section 4.3 check, the RFC's own examples) and
DPoP-bound tokens at the verifier and through the FastAPI dependency."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from fastapi.testclient import TestClient

from ciba_service.core.replay import InMemoryReplayCache
from ciba_service.core.security import b64url_encode
from ciba_service.demo.example_api import create_example_api
from ciba_service.rfc9449 import (
    DPoPProofError,
    UseDPoPNonce,
    access_token_hash,
    create_proof,
    jwk_thumbprint,
    public_jwk,
    verify_proof,
)
from ciba_service.rs import InvalidDPoPProof, InvalidToken, ResourceError
from ciba_service.server.tokens import SigningKey
from tests.support.tokens import ACTION, AGENT, AGENT_JKT, ENTRY, mint, verifier

URL = "https://api.example.test/policies/policy-42"
OTHER = ec.generate_private_key(ec.SECP256R1())

# RFC 9449 section 4.1 (Figure 2) and section 7.1 (Figure 13), verbatim.
RFC_TOKEN_REQUEST_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZ"
    "OXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIs"
    "ImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVy"
    "LmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLb"
    "dLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg"
)
RFC_RESOURCE_PROOF = (
    "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZ"
    "OXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIs"
    "ImNydiI6IlAtMjU2In19.eyJqdGkiOiJlMWozVl9iS2ljOC1MQUVCIiwiaHRtIjoiR0VUIiwiaHR1IjoiaHR0cHM6Ly9yZXNvdXJj"
    "ZS5leGFtcGxlLm9yZy9wcm90ZWN0ZWRyZXNvdXJjZSIsImlhdCI6MTU2MjI2MjYxOCwiYXRoIjoiZlVIeU8ycjJaM0RaNTNFc05y"
    "V0JiMHhXWG9hTnk1OUlpS0NBcWtzbVFFbyJ9.2oW9RP35yRqzhrtNP86L-Ey71EOptxRimPPToA1plemAgR6pxHF8y6-yqyVnmcw6"
    "Fy1dqd-jfxSYoMxhAJpLjA"
)
RFC_ACCESS_TOKEN = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
RFC_JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_rfc9449_token_request_example() -> None:
    jkt = verify_proof(
        RFC_TOKEN_REQUEST_PROOF,
        method="POST",
        url="https://server.example.com/token",
        replay=InMemoryReplayCache(),
        now=1562262616,
    )
    assert jkt == RFC_JKT


def test_rfc9449_protected_resource_example() -> None:
    assert access_token_hash(RFC_ACCESS_TOKEN) == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    jkt = verify_proof(
        RFC_RESOURCE_PROOF,
        method="GET",
        url="https://resource.example.org/protectedresource",
        access_token=RFC_ACCESS_TOKEN,
        expected_jkt=RFC_JKT,
        replay=InMemoryReplayCache(),
        now=1562262618,
    )
    assert jkt == RFC_JKT


def test_rfc7638_thumbprint_example() -> None:
    # RFC 7638 section 3.1: the RSA key and its SHA-256 thumbprint.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKR"
        "XjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSq"
        "zs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-"
        "G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_ignores_optional_members_and_matches_the_service() -> None:
    jwk = public_jwk(AGENT.public_key())
    assert jwk_thumbprint({**jwk, "kid": "x", "alg": "ES256", "use": "sig"}) == jwk_thumbprint(jwk)
    from ciba_service.server.tokens import jwk_thumbprint as service_thumbprint

    assert service_thumbprint(jwk) == jwk_thumbprint(jwk)
    with pytest.raises(ValueError):
        jwk_thumbprint({"kty": "oct", "k": "c2VjcmV0"})
    with pytest.raises(ValueError):
        jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AA"})


def test_create_proof_shape() -> None:
    proof = create_proof(AGENT, "PUT", URL + "?dry_run=1#frag", access_token="tok", nonce="n-1", now=1000)
    header = jwt.get_unverified_header(proof)
    claims = jwt.decode(proof, options={"verify_signature": False})
    assert header == {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(AGENT.public_key())}
    assert set(claims) == {"jti", "htm", "htu", "iat", "ath", "nonce"}
    assert claims["htu"] == URL  # without query and fragment (RFC 9449 4.2)
    assert claims["htm"] == "PUT"
    assert claims["iat"] == 1000
    assert claims["ath"] == access_token_hash("tok")
    assert len(claims["jti"]) >= 22  # 128 bits, base64url
    # a standard JOSE library verifies it with the embedded key
    jwt.decode(proof, jwt.PyJWK(header["jwk"]).key, algorithms=["ES256"])


def test_round_trip_ignores_query_and_normalises_the_url() -> None:
    replay = InMemoryReplayCache()
    proof = create_proof(AGENT, "GET", "https://API.example.test:443/policies/policy-42?x=1", access_token="t")
    jkt = verify_proof(
        proof, method="GET", url=URL + "?page=2", access_token="t", expected_jkt=AGENT_JKT, replay=replay
    )
    assert jkt == AGENT_JKT


# every check of RFC 9449 4.3 ----------------------------------------------------------------
def _signed(header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey = AGENT) -> str:
    encoded = ".".join(b64url_encode(json.dumps(p).encode()) for p in (header, claims))
    r, s = decode_dss_signature(key.sign(encoded.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{encoded}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _parts(**changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(AGENT.public_key())}
    claims: dict[str, Any] = {
        "jti": "proof-1",
        "htm": "GET",
        "htu": URL,
        "iat": int(time.time()),
        "ath": access_token_hash("token"),
    }
    for name, value in changes.items():
        where, _, field = name.partition("__")
        target = header if where == "h" else claims
        if value is None:
            target.pop(field, None)
        else:
            target[field] = value
    return header, claims


def _proof(key: ec.EllipticCurvePrivateKey = AGENT, **changes: Any) -> str:
    return _signed(*_parts(**changes), key=key)


P384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: _proof(h__typ=None), "DPoP proof typ must be 'dpop+jwt'"),
        (lambda: _proof(h__typ="JWT"), "DPoP proof typ must be 'dpop+jwt'"),
        (lambda: _proof(h__typ="at+jwt"), "DPoP proof typ must be 'dpop+jwt'"),
        (lambda: _proof(h__alg="none"), "DPoP proof algorithm 'none' is not accepted"),
        (lambda: _proof(h__alg="HS256"), "DPoP proof algorithm 'HS256' is not accepted"),
        (lambda: _proof(h__alg="RS256"), "DPoP proof algorithm 'RS256' is not accepted"),
        (lambda: _proof(h__alg="ES384"), "DPoP proof algorithm 'ES384' is not accepted"),
        (lambda: _proof(h__crit=["exp"]), "DPoP proof has critical header parameters we do not understand"),
        (lambda: _proof(h__jwk=None), "DPoP proof has no jwk header"),
        (lambda: _proof(h__jwk="key"), "DPoP proof has no jwk header"),
        (
            lambda: _proof(h__jwk={**public_jwk(AGENT.public_key()), "d": "c2VjcmV0"}),
            "DPoP proof jwk contains private key material",
        ),
        (lambda: _proof(h__jwk={"kty": "oct", "k": "c2VjcmV0"}), "DPoP proof jwk contains private key material"),
        (lambda: _proof(h__jwk={"kty": "RSA", "n": "AQAB", "e": "AQAB"}), "DPoP proof jwk is not a P-256 key"),
        (
            lambda: _proof(
                h__jwk={
                    "kty": "EC",
                    "crv": "P-384",
                    "x": b64url_encode(P384.x.to_bytes(48, "big")),
                    "y": b64url_encode(P384.y.to_bytes(48, "big")),
                }
            ),
            "DPoP proof jwk is not a P-256 key",
        ),
        (
            lambda: _proof(h__jwk={"kty": "EC", "crv": "P-256", "x": b64url_encode(b"\1" * 32), "y": "AA"}),
            "DPoP proof jwk is not a valid P-256 public key",
        ),
        (
            lambda: _proof(
                h__jwk={"kty": "EC", "crv": "P-256", "x": b64url_encode(b"\1" * 32), "y": b64url_encode(b"\2" * 32)}
            ),
            "DPoP proof jwk is not a valid P-256 public key",  # not on the curve
        ),
        (lambda: _proof(h__jwk={"kty": "EC", "crv": "P-256", "x": 1, "y": 2}), "DPoP proof jwk is malformed"),
        (
            lambda: _signed(*_parts(), key=OTHER),  # the jwk is AGENT's, the signature OTHER's
            "DPoP proof signature verification failed",
        ),
        (lambda: _proof().rsplit(".", 1)[0] + ".AAAA", "DPoP proof signature is malformed"),
        (lambda: _proof(c__jti=None), "DPoP proof has no valid jti"),
        (lambda: _proof(c__jti=""), "DPoP proof has no valid jti"),
        (lambda: _proof(c__jti="j" * 257), "DPoP proof has no valid jti"),
        (lambda: _proof(c__htm=None), "DPoP proof has no htm"),
        (lambda: _proof(c__htu=None), "DPoP proof has no htu"),
        (lambda: _proof(c__iat=None), "DPoP proof has no iat"),
        (lambda: _proof(c__iat=True), "DPoP proof has no iat"),
        (lambda: _proof(c__iat="1700000000"), "DPoP proof has no iat"),
        (lambda: _proof(c__ath=None), "DPoP proof has no ath for the access token"),
        (lambda: _proof(c__htm="POST"), "DPoP proof is for another HTTP method"),
        (lambda: _proof(c__htm="get"), "DPoP proof is for another HTTP method"),
        (lambda: _proof(c__htu="https://api.example.test/policies/policy-43"), "DPoP proof is for another URL"),
        (lambda: _proof(c__htu="https://api.example.test/policies/policy-4"), "DPoP proof is for another URL"),
        (lambda: _proof(c__htu="https://api.example.test/policies/"), "DPoP proof is for another URL"),
        (lambda: _proof(c__htu="https://evil.example.test/policies/policy-42"), "DPoP proof is for another URL"),
        (lambda: _proof(c__htu="http://api.example.test/policies/policy-42"), "DPoP proof is for another URL"),
        (lambda: _proof(c__htu="https://api.example.test:99999/x"), "DPoP proof is for another URL"),
        (lambda: _proof(c__iat=int(time.time()) - 600), "DPoP proof is too old"),
        (lambda: _proof(c__iat=int(time.time()) + 600), "DPoP proof was issued in the future"),
        (lambda: _proof(c__ath=access_token_hash("another token")), "DPoP proof ath does not match the access token"),
        (
            lambda: _proof(OTHER, h__jwk=public_jwk(OTHER.public_key())),
            "DPoP proof key does not match the access token's binding",
        ),
        (lambda: "x" * 5000, "DPoP proof is too large"),
        (lambda: "a.b", "DPoP proof is not a compact JWS"),
        (lambda: "!!.e30.AA", "DPoP proof header is not base64url"),
        (lambda: b64url_encode(b"[]") + ".e30.AA", "DPoP proof header is not a JSON object"),
        (lambda: b64url_encode(b"{") + ".e30.AA", "DPoP proof header is not JSON"),
    ],
)
def test_refused_proofs(make: Callable[[], str], message: str) -> None:
    with pytest.raises(DPoPProofError) as info:
        verify_proof(
            make(),
            method="GET",
            url=URL,
            access_token="token",
            expected_jkt=AGENT_JKT,
            replay=InMemoryReplayCache(),
        )
    assert info.value.description == message
    assert info.value.error == "invalid_dpop_proof"


def test_iat_window_edges() -> None:
    now = 1_800_000_000

    def check(iat: int) -> None:
        verify_proof(
            _proof(c__iat=iat, c__jti=f"j{iat}"),
            method="GET",
            url=URL,
            access_token="token",
            replay=InMemoryReplayCache(),
            max_age=60,
            leeway=5,
            now=now,
        )

    check(now - 65)
    check(now + 5)
    with pytest.raises(DPoPProofError, match="too old"):
        check(now - 66)
    with pytest.raises(DPoPProofError, match="future"):
        check(now + 6)


def test_a_proof_is_used_once() -> None:
    replay = InMemoryReplayCache()
    proof = create_proof(AGENT, "GET", URL, access_token="token")
    verify_proof(proof, method="GET", url=URL, access_token="token", replay=replay)
    with pytest.raises(DPoPProofError, match="already been used"):
        verify_proof(proof, method="GET", url=URL, access_token="token", replay=replay)


def test_server_nonce() -> None:
    replay = InMemoryReplayCache()
    with pytest.raises(UseDPoPNonce) as info:
        verify_proof(_proof(), method="GET", url=URL, replay=replay, expected_nonce="n-1")
    assert info.value.error == "use_dpop_nonce"
    with pytest.raises(UseDPoPNonce):
        verify_proof(_proof(c__nonce="n-2", c__jti="j2"), method="GET", url=URL, replay=replay, expected_nonce="n-1")
    proof = create_proof(AGENT, "GET", URL, nonce="n-1")
    assert verify_proof(proof, method="GET", url=URL, replay=replay, expected_nonce="n-1") == AGENT_JKT


def test_proof_without_access_token_needs_no_ath() -> None:
    # the token endpoint's case (RFC 9449 5): no access token yet
    proof = create_proof(AGENT, "POST", "https://ciba.example.test/token")
    jkt = verify_proof(proof, method="POST", url="https://ciba.example.test/token", replay=InMemoryReplayCache())
    assert jkt == AGENT_JKT


# DPoP-bound tokens at the verifier -----------------------------------------------------------
@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("k") / "key.pem")


def _bound(key: SigningKey, jkt: str = AGENT_JKT, **override: Any) -> str:
    return mint(key, cnf={"jkt": jkt}, **override)


def test_bound_token_with_proof_is_accepted(key: SigningKey) -> None:
    token = _bound(key)
    proof = create_proof(AGENT, "PUT", URL, access_token=token)
    verified = verifier(key).verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=proof)
    assert verified.jkt == AGENT_JKT
    assert verified.entry == ENTRY


def test_plain_function_call_without_scheme(key: SigningKey) -> None:
    token = _bound(key)
    proof = create_proof(AGENT, "PUT", URL, access_token=token)
    assert verifier(key).verify(token, ACTION, method="PUT", url=URL, dpop_proof=proof).jkt == AGENT_JKT


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scheme": "Bearer"}, InvalidToken, "a DPoP-bound token must be presented with the DPoP scheme"),
        ({"dpop_proof": None}, InvalidDPoPProof, "a DPoP proof is required with this token"),
        (
            {"method": None},
            InvalidDPoPProof,
            "DPoP-bound tokens need the request method and URL, which were not supplied",
        ),
        ({"method": "DELETE"}, InvalidDPoPProof, "DPoP proof is for another HTTP method"),
        ({"url": "https://api.example.test/policies/policy-7"}, InvalidDPoPProof, "DPoP proof is for another URL"),
    ],
)
def test_bound_token_refusals(
    key: SigningKey, kwargs: dict[str, Any], error: type[ResourceError], message: str
) -> None:
    token = _bound(key)
    call: dict[str, Any] = {
        "scheme": "DPoP",
        "method": "PUT",
        "url": URL,
        "dpop_proof": create_proof(AGENT, "PUT", URL, access_token=token),
        **kwargs,
    }
    v = verifier(key)
    with pytest.raises(error) as info:
        v.verify(token, ACTION, **call)
    assert str(info.value) == message
    challenge = info.value.www_authenticate() or ""
    assert challenge.startswith('DPoP realm="api", error=')
    assert 'algs="ES256"' in challenge
    # the refusal did not burn the entry
    fresh = create_proof(AGENT, "PUT", URL, access_token=token)
    assert v.verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=fresh)


def test_expired_bound_token_is_answered_with_the_dpop_scheme(key: SigningKey) -> None:
    token = _bound(key, exp=int(time.time()) - 120)
    with pytest.raises(InvalidToken) as info:
        verifier(key).verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof="x")
    assert info.value.description == "token has expired"
    assert (info.value.www_authenticate() or "").startswith('DPoP realm="api", error="invalid_token"')


def test_unbound_token_presented_as_dpop_is_refused(key: SigningKey) -> None:
    token = mint(key)
    proof = create_proof(AGENT, "PUT", URL, access_token=token)
    with pytest.raises(InvalidToken, match="not DPoP-bound"):
        verifier(key).verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=proof)


@pytest.mark.parametrize("cnf", [{"x5t#S256": "abc"}, {"jkt": AGENT_JKT, "x5t#S256": "abc"}, {"jkt": 1}, "jkt"])
def test_other_confirmation_methods_are_refused(key: SigningKey, cnf: Any) -> None:
    token = mint(key, cnf=cnf)
    proof = create_proof(AGENT, "PUT", URL, access_token=token)
    with pytest.raises(InvalidToken, match="unsupported cnf"):
        verifier(key).verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=proof)


def test_require_dpop_refuses_bearer_tokens(key: SigningKey) -> None:
    with pytest.raises(InvalidToken, match="only DPoP-bound tokens"):
        verifier(key, require_dpop=True).verify(mint(key), ACTION, scheme="Bearer")


# through FastAPI ---------------------------------------------------------------------------
API_URL = "http://testserver/policies/policy-42"


def test_fastapi_dpop_bound_token(key: SigningKey) -> None:
    client = TestClient(create_example_api(verifier(key)))
    token = _bound(key)
    proof = create_proof(AGENT, "PUT", API_URL, access_token=token)
    ok = client.put("/policies/policy-42", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert ok.status_code == 200, ok.text

    as_bearer = client.put("/policies/policy-42", headers={"Authorization": f"Bearer {token}"})
    assert as_bearer.status_code == 401
    assert as_bearer.headers["www-authenticate"].startswith('DPoP realm="api", error="invalid_token"')


def test_fastapi_dpop_errors(key: SigningKey) -> None:
    client = TestClient(create_example_api(verifier(key)))
    token = _bound(key, entries=[ENTRY, {**ENTRY, "identifier": "policy-43"}])
    missing = client.put("/policies/policy-42", headers={"Authorization": f"DPoP {token}"})
    assert missing.status_code == 401
    assert missing.json()["error"] == "invalid_dpop_proof"
    challenge = missing.headers["www-authenticate"]
    assert challenge.startswith(
        'DPoP realm="api", error="invalid_dpop_proof", '
        'error_description="a DPoP proof is required with this token", algs="ES256", authorization_details="'
    )

    proof = create_proof(AGENT, "PUT", API_URL, access_token=token)
    assert (
        client.put("/policies/policy-42", headers={"Authorization": f"DPoP {token}", "DPoP": proof}).status_code == 200
    )
    # the same proof for the plan's next step: it names the first step's URL
    other_step = client.put("/policies/policy-43", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert other_step.status_code == 401
    assert other_step.json()["error_description"] == "DPoP proof is for another URL"
    wrong_method = client.put(
        "/policies/policy-43",
        headers={
            "Authorization": f"DPoP {token}",
            "DPoP": create_proof(AGENT, "DELETE", API_URL[:-1] + "3", access_token=token),
        },
    )
    assert wrong_method.json()["error_description"] == "DPoP proof is for another HTTP method"

    proof43 = create_proof(AGENT, "PUT", "http://testserver/policies/policy-43", access_token=token)
    two = client.put(
        "/policies/policy-43",
        headers=[("Authorization", f"DPoP {token}"), ("DPoP", proof43), ("DPoP", proof43)],
    )
    assert two.status_code == 401
    assert two.json()["error_description"] == "more than one DPoP header"
    ok = client.put("/policies/policy-43", headers={"Authorization": f"DPoP {token}", "DPoP": proof43})
    assert ok.status_code == 200
    again = client.put("/policies/policy-43", headers={"Authorization": f"DPoP {token}", "DPoP": proof43})
    assert again.json()["error_description"] == "DPoP proof has already been used"


def test_fastapi_public_url_is_what_the_proof_must_name(key: SigningKey) -> None:
    client = TestClient(create_example_api(verifier(key), public_url="https://iam.example.test"))
    token = _bound(key)
    internal = create_proof(AGENT, "PUT", API_URL, access_token=token)
    refused = client.put("/policies/policy-42", headers={"Authorization": f"DPoP {token}", "DPoP": internal})
    assert refused.json()["error_description"] == "DPoP proof is for another URL"
    public = create_proof(AGENT, "PUT", "https://iam.example.test/policies/policy-42", access_token=token)
    ok = client.put("/policies/policy-42", headers={"Authorization": f"DPoP {token}", "DPoP": public})
    assert ok.status_code == 200, ok.text


def test_fastapi_require_dpop_challenges_only_dpop(key: SigningKey) -> None:
    client = TestClient(create_example_api(verifier(key, require_dpop=True)))
    response = client.put("/policies/policy-42")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('DPoP realm="api", algs="ES256", authorization_details=')
    assert "Bearer" not in response.headers["www-authenticate"]
