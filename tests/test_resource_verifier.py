"""The resource-server verifier: signature, header, claims, exact action, single use."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ciba_service.resource import (
    InsufficientAuthorization,
    InvalidToken,
    JwksCache,
    RequestedAction,
    StaticKeys,
    TokenVerifier,
    action_matches,
    normalize_uri,
)
from ciba_service.security import b64url_encode
from ciba_service.tokens import SigningKey, mint_access_token

ISS, AUD = "https://issuer.example.test", "resource-api"
ENTRY = {
    "type": "iam_policy",
    "actions": ["update"],
    "identifier": "policy-42",
    "locations": ["https://iam.example.test/"],
}
ACTION = RequestedAction(
    type="iam_policy", actions=["update"], identifier="policy-42", locations=["https://iam.example.test/"]
)


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("k") / "key.pem")


def mint(key: SigningKey, *, now: int | None = None, lifetime: int = 120, **override: Any) -> str:
    now = int(time.time()) if now is None else now
    token, claims = mint_access_token(
        key=key,
        issuer=ISS,
        subject="user-1",
        audience=AUD,
        client_id="agent-1",
        scope="openid",
        authorization_details=[ENTRY],
        approval={"receipt": "r"},
        auth_time=now,
        now=now,
        lifetime=lifetime,
    )
    if not override:
        return token
    claims.update(override)
    claims = {k: v for k, v in claims.items() if v is not None}
    return key.sign(claims, typ="at+jwt")


def verifier(key: SigningKey, **kwargs: Any) -> TokenVerifier:
    return TokenVerifier(issuer=ISS, audience=AUD, keys=StaticKeys(key.jwks()), **kwargs)


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"x" * 64) -> str:
    enc = [b64url_encode(json.dumps(p).encode()) for p in (header, payload)]
    return ".".join([*enc, b64url_encode(signature)])


def test_accepts_exact_action_once(key: SigningKey) -> None:
    v = verifier(key)
    token = mint(key)
    assert v.verify(token, ACTION).entry == ENTRY
    with pytest.raises(InvalidToken, match="already been used"):
        v.verify(token, ACTION)


def test_mismatched_action_does_not_burn_the_token(key: SigningKey) -> None:
    v = verifier(key)
    token = mint(key)
    other = RequestedAction(
        type="iam_policy", actions=["update"], identifier="policy-43", locations=["https://iam.example.test/"]
    )
    with pytest.raises(InsufficientAuthorization) as info:
        v.verify(token, other)
    assert info.value.status_code == 403
    assert info.value.body()["authorization_details"] == [other.as_authorization_details()]
    assert 'error="insufficient_scope"' in info.value.www_authenticate()
    assert v.verify(token, ACTION).entry == ENTRY


@pytest.mark.parametrize(
    ("action", "covered"),
    [
        (ACTION, True),
        (RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42"), True),
        (RequestedAction(type="iam_policy", actions=["delete"], identifier="policy-42"), False),
        (RequestedAction(type="iam_policy", actions=["update", "delete"], identifier="policy-42"), False),
        (RequestedAction(type="iam_policy", actions=[], identifier="policy-42"), False),
        (RequestedAction(type="key_rotation", actions=["update"], identifier="policy-42"), False),
        (RequestedAction(type="iam_policy", actions=["update"]), False),
        (RequestedAction(type="iam_policy", actions=["update"], identifier="policy-4"), False),
        (
            RequestedAction(
                type="iam_policy",
                actions=["update"],
                identifier="policy-42",
                locations=["https://iam.example.test/other"],
            ),
            False,
        ),
        (
            RequestedAction(
                type="iam_policy",
                actions=["update"],
                identifier="policy-42",
                locations=["https://iam.example.test.evil/"],
            ),
            False,
        ),
        (
            RequestedAction(
                type="iam_policy",
                actions=["update"],
                identifier="policy-42",
                locations=["HTTPS://IAM.example.test:443/./"],
            ),
            True,
        ),
        (
            RequestedAction(type="iam_policy", actions=["update"], identifier="policy-42", datatypes=["x"]),
            False,
        ),
        (
            RequestedAction(
                type="iam_policy", actions=["update"], identifier="policy-42", fields={"extra": 1}
            ),
            False,
        ),
    ],
)
def test_action_matching(action: RequestedAction, covered: bool) -> None:
    assert action_matches(ENTRY, action) is covered


def test_type_specific_fields_compared_exactly() -> None:
    entry = {
        "type": "payment_initiation",
        "actions": ["initiate"],
        "instructedAmount": {"currency": "EUR", "amount": "10.00"},
        "flag": True,
    }
    ok = RequestedAction(
        type="payment_initiation",
        actions=["initiate"],
        fields={"instructedAmount": {"currency": "EUR", "amount": "10.00"}},
    )
    more = RequestedAction(
        type="payment_initiation",
        actions=["initiate"],
        fields={"instructedAmount": {"currency": "EUR", "amount": "10.01"}},
    )
    int_for_bool = RequestedAction(type="payment_initiation", actions=["initiate"], fields={"flag": 1})
    assert action_matches(entry, ok)
    assert not action_matches(entry, more)
    assert not action_matches(entry, int_for_bool)


def test_normalize_uri() -> None:
    assert normalize_uri("HTTPS://Example.COM:443/a/./b/../c/%7euser") == "https://example.com/a/c/~user"
    assert normalize_uri("http://example.com:8080") == "http://example.com:8080/"
    assert normalize_uri("https://example.com/a%2fb") == "https://example.com/a%2Fb"


def _other_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda k: forge({"alg": "none", "typ": "at+jwt", "kid": k.kid}, {"iss": ISS}, b""),
            "algorithm 'none' is not allowed",
        ),
        (
            lambda k: jwt.encode(
                {"iss": ISS},
                k.private_key.public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                .decode()[:40],
                algorithm="HS256",
                headers={"typ": "at+jwt", "kid": k.kid},
            ),
            "algorithm 'HS256' is not allowed",
        ),
        (
            lambda k: jwt.encode(
                {"iss": ISS}, _other_key(), algorithm="ES256", headers={"typ": "at+jwt", "kid": "unknown"}
            ),
            "token signed by an unknown key",
        ),
        (
            lambda k: jwt.encode(
                {"iss": ISS}, _other_key(), algorithm="ES256", headers={"typ": "at+jwt", "kid": k.kid}
            ),
            "signature verification failed",
        ),
        (lambda k: k.sign({"iss": ISS}, typ="JWT"), "token type 'JWT' is not an access token"),
        (
            lambda k: forge({"alg": "ES256", "kid": k.kid}, {"iss": ISS}),
            "token type None is not an access token",
        ),
        (
            lambda k: jwt.encode(
                {"iss": ISS},
                k.private_key,
                algorithm="ES256",
                headers={"typ": "at+jwt", "kid": k.kid, "jku": "https://evil.test/jwks"},
            ),
            "header 'jku' is not accepted",
        ),
        (
            lambda k: jwt.encode(
                {"iss": ISS},
                k.private_key,
                algorithm="ES256",
                headers={"typ": "at+jwt", "kid": k.kid, "jwk": {"kty": "EC"}},
            ),
            "header 'jwk' is not accepted",
        ),
        (
            lambda k: jwt.encode(
                {"iss": ISS},
                k.private_key,
                algorithm="ES256",
                headers={"typ": "at+jwt", "kid": k.kid, "x5u": "https://evil.test/c"},
            ),
            "header 'x5u' is not accepted",
        ),
        (
            lambda k: jwt.encode({"iss": ISS}, k.private_key, algorithm="ES256", headers={"typ": "at+jwt"}),
            "token has no kid",
        ),
        (lambda k: "a.b", "token is not a compact JWS"),
        (lambda k: "!!!.e30.sig", "malformed token header"),
        (lambda k: b64url_encode(b"[1]") + ".e30.AA", "token header is not a JSON object"),
        (lambda k: "x" * 20_000, "token is too large"),
    ],
)
def test_refuses_forged_tokens(key: SigningKey, make: Any, message: str) -> None:
    with pytest.raises(InvalidToken) as info:
        verifier(key).verify(make(key), ACTION)
    assert info.value.description == message
    assert info.value.status_code == 401
    assert 'error="invalid_token"' in info.value.www_authenticate()


def test_tampered_authorization_details_fail_signature(key: SigningKey) -> None:
    header, payload, signature = mint(key).split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["authorization_details"][0]["identifier"] = "policy-43"
    tampered = ".".join([header, b64url_encode(json.dumps(claims).encode()), signature])
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verifier(key).verify(tampered, ACTION)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"iss": "https://evil.test"}, "token issuer is not trusted here"),
        ({"aud": "other-api"}, "token is not intended for this resource server"),
        ({"aud": ["other-api", AUD]}, None),
        ({"exp": int(time.time()) - 120}, "token has expired"),
        ({"nbf": int(time.time()) + 600}, "token is not yet valid"),
        ({"iat": int(time.time()) + 600, "exp": int(time.time()) + 700}, "token was issued in the future"),
        ({"exp": None}, "token lacks exp or iat"),
        ({"exp": True}, "token lacks exp or iat"),
        ({"exp": int(time.time()) + 86_400}, "token lifetime is longer than accepted"),
        ({"jti": None}, "token has no jti"),
        ({"authorization_details": None}, "token carries no authorization_details"),
    ],
)
def test_claim_checks(key: SigningKey, override: dict[str, Any], message: str | None) -> None:
    token = mint(key, **override)
    if message is None:
        assert verifier(key).verify(token, ACTION)
        return
    with pytest.raises(InvalidToken) as info:
        verifier(key).verify(token, ACTION)
    assert info.value.description == message


def test_leeway_tolerates_small_skew(key: SigningKey) -> None:
    now = int(time.time())
    token = mint(key, iat=now + 10, nbf=now + 10, exp=now + 100)
    assert verifier(key, leeway=30).verify(token, ACTION)


def test_jwks_cache_fetches_once_and_refreshes_on_unknown_kid(
    key: SigningKey, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get("https://issuer.example.test/jwks").mock(
        return_value=httpx.Response(200, json=key.jwks())
    )
    ticks = [0.0]
    cache = JwksCache("https://issuer.example.test/jwks", min_refresh_interval=10, clock=lambda: ticks[0])
    v = TokenVerifier(issuer=ISS, audience=AUD, keys=cache)
    v.verify(mint(key), ACTION)
    v.verify(mint(key), ACTION)
    assert route.call_count == 1
    # an unknown kid refreshes, but not more often than min_refresh_interval
    stranger = jwt.encode(
        {"iss": ISS}, _other_key(), algorithm="ES256", headers={"typ": "at+jwt", "kid": "new"}
    )
    ticks[0] = 11.0
    with pytest.raises(InvalidToken):
        v.verify(stranger, ACTION)
    with pytest.raises(InvalidToken):
        v.verify(stranger, ACTION)
    assert route.call_count == 2


def test_jwks_unreachable_is_invalid_token(key: SigningKey, respx_mock: respx.MockRouter) -> None:
    respx_mock.get("https://issuer.example.test/jwks").mock(side_effect=httpx.ConnectError("down"))
    v = TokenVerifier(issuer=ISS, audience=AUD, keys=JwksCache("https://issuer.example.test/jwks"))
    with pytest.raises(InvalidToken, match="issuer keys unavailable"):
        v.verify(mint(key), ACTION)


def test_only_es256_may_be_configured(key: SigningKey) -> None:
    with pytest.raises(ValueError, match="unsupported algorithms"):
        verifier(key, algorithms=("ES256", "HS256"))


def _rsa_jwks(private: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}


def _claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISS,
        "aud": AUD,
        "iat": now,
        "exp": now + 60,
        "jti": "j-rsa",
        "authorization_details": [ENTRY],
    }


def test_rs256_tokens_from_keycloak_verify_when_allowed() -> None:
    private = rsa.generate_private_key(65537, 2048)
    token = jwt.encode(_claims(), private, algorithm="RS256", headers={"kid": "kc", "typ": "at+jwt"})
    keys = StaticKeys(_rsa_jwks(private, "kc"))
    with pytest.raises(InvalidToken, match="algorithm 'RS256' is not allowed"):
        TokenVerifier(issuer=ISS, audience=AUD, keys=keys).verify(token, ACTION)
    verified = TokenVerifier(issuer=ISS, audience=AUD, keys=keys, algorithms=("RS256",)).verify(token, ACTION)
    assert verified.entry == ENTRY


def test_a_key_verifies_only_its_own_algorithm(key: SigningKey) -> None:
    """An RS256 token naming the EC key's kid is refused before any signature math."""
    private = rsa.generate_private_key(65537, 2048)
    token = jwt.encode(_claims(), private, algorithm="RS256", headers={"kid": key.kid, "typ": "at+jwt"})
    with pytest.raises(InvalidToken, match=f"key '{key.kid}' does not sign with RS256"):
        verifier(key, algorithms=("ES256", "RS256")).verify(token, ACTION)


def test_short_rsa_keys_are_ignored() -> None:
    private = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weak key under test
    assert StaticKeys(_rsa_jwks(private, "weak")).key_for("weak") is None
