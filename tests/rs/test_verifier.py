"""The resource-server verifier: claims, matching, field rules, keys, introspection, errors and
the FastAPI glue. Forgeries and replays are in test_attacks.py, plans in test_plans.py, DPoP in
tests/rfc9449/test_dpop.py, Redis in test_replay_redis.py; the token builders they share are in
tests/support/tokens.py."""

from __future__ import annotations

import base64
import json
import time
from decimal import Decimal
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from ciba_service.core.security import b64url_decode as _b64url
from ciba_service.core.security import b64url_encode
from ciba_service.core.uri import normalize_uri
from ciba_service.demo.example_api import IAM_LOCATION, create_example_api
from ciba_service.jose.signatures import raw_to_der as _der_signature
from ciba_service.rs import (
    FieldRule,
    InMemoryReplayCache,
    InsufficientAuthorization,
    InsufficientUserAuthentication,
    InvalidToken,
    JwksCache,
    MissingToken,
    RequestedAction,
    ResourceUnavailable,
    StaticKeys,
    TokenIntrospection,
    TokenVerifier,
    VerifiedToken,
    action_matches,
)
from ciba_service.rs.fastapi import install_error_handler, require_action
from ciba_service.server.tokens import SigningKey
from tests.support.tokens import ACTION, AUD, ENTRY, ISS, decode_challenge_details, mint, verifier

PAYMENT: dict[str, Any] = {
    "type": "payment_initiation",
    "actions": ["initiate"],
    "instructedAmount": {"currency": "EUR", "amount": "10.00"},
    "creditorName": "Merchant A",
}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("k") / "key.pem")


# the happy path ---------------------------------------------------------------------------
def test_accepts_exact_action_once(key: SigningKey) -> None:
    v = verifier(key)
    token = mint(key)
    verified = v.verify(token, ACTION)
    assert verified.entry == ENTRY
    assert verified.entry_index == 0
    assert verified.subject == "user-1"
    assert verified.jkt is None
    with pytest.raises(InvalidToken, match="already been used"):
        v.verify(token, ACTION)


def test_mismatched_action_does_not_burn_the_token(key: SigningKey) -> None:
    v = verifier(key)
    token = mint(key)
    other = RequestedAction(type="iam_policy", actions=["update"], identifier="policy-43", locations=[IAM_LOCATION])
    with pytest.raises(InsufficientAuthorization) as info:
        v.verify(token, other)
    assert info.value.status_code == 403
    assert info.value.body() == {
        "error": "insufficient_scope",
        "error_description": "the token's approval does not cover this action",
        "authorization_details": [other.as_authorization_details()],
    }
    assert v.verify(token, ACTION).entry == ENTRY


# matching ---------------------------------------------------------------------------------
def _policy(**changes: Any) -> RequestedAction:
    base: dict[str, Any] = {
        "type": "iam_policy",
        "actions": ["update"],
        "identifier": "policy-42",
        "locations": [IAM_LOCATION],
    }
    return RequestedAction(**{**base, **changes})


@pytest.mark.parametrize(
    ("action", "covered"),
    [
        pytest.param(ACTION, True, id="exact"),
        pytest.param(_policy(locations=["HTTPS://IAM.example.test:443/./"]), True, id="normalised-location"),
        pytest.param(_policy(locations=["https://iam.example.test"]), True, id="empty-path-is-slash"),
        pytest.param(_policy(locations=[]), False, id="approval-names-locations-action-none"),
        pytest.param(_policy(actions=["delete"]), False, id="other-verb"),
        pytest.param(_policy(actions=["update", "delete"]), False, id="more-verbs"),
        pytest.param(_policy(actions=[]), False, id="no-verb"),
        pytest.param(_policy(type="key_rotation"), False, id="other-type"),
        pytest.param(_policy(identifier=None), False, id="no-identifier"),
        pytest.param(_policy(identifier="policy-4"), False, id="identifier-prefix"),
        pytest.param(_policy(identifier="policy-420"), False, id="identifier-extension"),
        pytest.param(_policy(locations=["https://iam.example.test/other"]), False, id="location-path"),
        pytest.param(_policy(locations=["https://iam.example.test.evil/"]), False, id="location-host-suffix"),
        pytest.param(_policy(locations=["https://iam.example.test:8443/"]), False, id="location-port"),
        pytest.param(_policy(locations=["http://iam.example.test/"]), False, id="location-scheme"),
        pytest.param(
            _policy(locations=[IAM_LOCATION, "https://other.example.test/"]), False, id="one-location-too-many"
        ),
        pytest.param(_policy(locations=["https://iam.example.test:99999/"]), False, id="invalid-location"),
        pytest.param(_policy(datatypes=["x"]), False, id="datatypes-not-approved"),
        pytest.param(_policy(privileges=["admin"]), False, id="privileges-not-approved"),
        pytest.param(_policy(fields={"extra": 1}), False, id="field-not-approved"),
        pytest.param(_policy(fields={"actions": ["update"]}), False, id="common-field-smuggled-as-field"),
        pytest.param(_policy(fields={"max_uses": 1}), False, id="plan-field-smuggled-as-field"),
    ],
)
def test_action_matching(action: RequestedAction, covered: bool) -> None:
    assert action_matches(ENTRY, action) is covered


def test_locations_are_exact_uris_not_prefixes() -> None:
    entry = {**ENTRY, "locations": ["https://api.example.test/tenants/a"]}
    for location, covered in [
        ("https://api.example.test/tenants/a", True),
        ("https://API.example.test/tenants/%61", True),
        ("https://api.example.test/tenants/b/../a", True),
        ("https://api.example.test/tenants/a/", False),
        ("https://api.example.test/tenants/a/b", False),
        ("https://api.example.test/tenants/ab", False),
        ("https://api.example.test/tenants/a?x=1", False),
        ("https://api.example.test/tenants/a%2Fb", False),
        ("https://api.example.test/tenants", False),
    ]:
        assert action_matches(entry, _policy(locations=[location])) is covered, location


def test_approval_without_locations_covers_no_located_action() -> None:
    entry = {k: v for k, v in ENTRY.items() if k != "locations"}
    assert action_matches(entry, _policy(locations=[]))
    assert not action_matches(entry, ACTION)


def test_datatypes_and_privileges_are_restrictions() -> None:
    entry = {**ENTRY, "datatypes": ["contacts", "photos"], "privileges": ["read"]}
    assert action_matches(entry, _policy(datatypes=["photos"], privileges=["read"]))
    assert not action_matches(entry, _policy(datatypes=["photos", "email"], privileges=["read"]))
    assert not action_matches(entry, _policy(datatypes=["photos"], privileges=["read", "write"]))
    # a restriction the action does not address is not satisfied
    assert not action_matches(entry, _policy(privileges=["read"]))
    assert not action_matches(entry, _policy(datatypes=["photos"]))


def test_malformed_entries_cover_nothing() -> None:
    for entry in [
        {**ENTRY, "actions": "update"},
        {**ENTRY, "actions": [{"update": True}]},
        {**ENTRY, "locations": IAM_LOCATION},
        {**ENTRY, "locations": [42]},
        {**ENTRY, "identifier": 42},
        {**ENTRY, "type": None},
        {k: v for k, v in ENTRY.items() if k != "actions"},
    ]:
        assert not action_matches(entry, ACTION), entry


def _payment(**fields: Any) -> RequestedAction:
    return RequestedAction(type="payment_initiation", actions=["initiate"], fields=fields)


def test_type_specific_fields_compared_exactly() -> None:
    exact = {"instructedAmount": {"currency": "EUR", "amount": "10.00"}, "creditorName": "Merchant A"}
    assert action_matches(PAYMENT, _payment(**exact))
    assert not action_matches(PAYMENT, _payment(**{**exact, "instructedAmount": {"currency": "EUR", "amount": "9.99"}}))
    assert not action_matches(PAYMENT, _payment(**{**exact, "instructedAmount": {"currency": "EUR", "amount": 10}}))
    assert not action_matches(
        PAYMENT, _payment(**{**exact, "instructedAmount": {"currency": "EUR", "amount": "10.00", "x": 1}})
    )
    # a field of the approval the action does not name is an unenforced restriction
    assert not action_matches(PAYMENT, _payment(instructedAmount=exact["instructedAmount"]))
    flagged = {**PAYMENT, "urgent": True}
    assert not action_matches(flagged, _payment(**exact, urgent=1))
    assert action_matches(flagged, _payment(**exact, urgent=True))


AMOUNT_RULES = {"instructedAmount.amount": FieldRule.MAX}


@pytest.mark.parametrize(
    ("amount", "covered"),
    [
        ("10.00", True),
        ("10", True),
        ("7.50", True),
        ("0", True),
        ("10.01", False),
        ("-5", False),  # a negative amount is not "up to" the approved one
        ("1e1", False),
        ("NaN", False),
        (7.5, False),  # a number where the approval has a decimal string
        (None, False),
    ],
)
def test_max_rule_on_a_nested_amount(amount: Any, covered: bool) -> None:
    action = _payment(instructedAmount={"currency": "EUR", "amount": amount}, creditorName="Merchant A")
    assert action_matches(PAYMENT, action, rules=AMOUNT_RULES) is covered


def test_doubles_beyond_two_to_the_53_cover_nothing() -> None:
    # A JSON number above 2**53 parses to a rounded double (orjson turns integers beyond 64
    # bits into doubles): 2**64 + 1 and 2**64 read alike, so a bound the verifier compares with
    # could be wider than the one signed, and "equal" could hold for a value never approved.
    big = float(2**64 + 1)
    assert big == float(2**64)
    entry = {"type": "quota", "actions": ["raise"], "limit": big}
    rules = {"limit": FieldRule.MAX}
    five = RequestedAction(type="quota", actions=["raise"], fields={"limit": 5.0})
    assert not action_matches(entry, five, rules=rules)
    assert action_matches({**entry, "limit": float(2**53)}, five, rules=rules)
    same_double = RequestedAction(type="quota", actions=["raise"], fields={"limit": float(2**64)})
    assert not action_matches(entry, same_double)
    small = RequestedAction(type="quota", actions=["raise"], fields={"limit": 2.5})
    assert action_matches({**entry, "limit": 2.5}, small)


def test_rules_cover_only_their_path() -> None:
    def pay(currency: str = "EUR", creditor: str = "Merchant A", **extra: Any) -> RequestedAction:
        amount = {"currency": currency, "amount": "5.00", **extra}
        return _payment(instructedAmount=amount, creditorName=creditor)

    assert action_matches(PAYMENT, pay(), rules=AMOUNT_RULES)
    assert not action_matches(PAYMENT, pay(currency="USD"), rules=AMOUNT_RULES)
    assert not action_matches(PAYMENT, pay(creditor="Merchant B"), rules=AMOUNT_RULES)
    assert not action_matches(PAYMENT, pay(fee="1.00"), rules=AMOUNT_RULES)
    missing_currency = _payment(instructedAmount={"amount": "5.00"}, creditorName="Merchant A")
    assert not action_matches(PAYMENT, missing_currency, rules=AMOUNT_RULES)


def test_min_subset_ignore_and_custom_rules() -> None:
    entry = {
        "type": "report",
        "actions": ["export"],
        "retention_days": 30,
        "columns": ["name", "email", "city"],
        "reason": "quarterly audit",
        "region": "eu-west-1",
    }
    rules = {
        "retention_days": "min",
        "columns": FieldRule.SUBSET,
        "reason": FieldRule.IGNORE,
        "region": lambda approved, requested: str(requested).startswith(str(approved)),
    }

    def report(**fields: Any) -> RequestedAction:
        return RequestedAction(type="report", actions=["export"], fields=fields)

    ok = {"retention_days": 45, "columns": ["email"], "region": "eu-west-1"}
    assert action_matches(entry, report(**ok), rules=rules)
    assert action_matches(entry, report(**ok, reason="anything"), rules=rules)
    assert not action_matches(entry, report(**{**ok, "retention_days": 29}), rules=rules)
    assert not action_matches(entry, report(**{**ok, "columns": ["email", "ssn"]}), rules=rules)
    assert not action_matches(entry, report(**{**ok, "region": "us-east-1"}), rules=rules)
    assert not action_matches(entry, report(**{**ok, "retention_days": True}), rules=rules)


def test_a_failing_custom_comparator_covers_nothing() -> None:
    entry = {"type": "t", "actions": ["a"], "n": "x"}

    def explode(approved: Any, requested: Any) -> bool:
        return bool(Decimal(approved) > Decimal(requested))

    action = RequestedAction(type="t", actions=["a"], fields={"n": "y"})
    assert not action_matches(entry, action, rules={"n": explode})


@pytest.mark.parametrize("bad", [{"actions": "exact"}, {"max_uses": "max"}, {"a..b": "max"}, {"a": "bigger"}])
def test_field_rules_are_validated_when_configured(key: SigningKey, bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        verifier(key, field_rules={"payment_initiation": bad})


def test_verifier_applies_field_rules_per_type(key: SigningKey) -> None:
    v = verifier(key, field_rules={"payment_initiation": AMOUNT_RULES})
    token = mint(key, entries=[PAYMENT])
    action = _payment(instructedAmount={"currency": "EUR", "amount": "7.50"}, creditorName="Merchant A")
    assert v.verify(token, action).entry == PAYMENT
    # the same amount compares exactly under a verifier without the rule
    with pytest.raises(InsufficientAuthorization):
        verifier(key).verify(mint(key, entries=[PAYMENT]), action)


def test_normalize_uri() -> None:
    assert normalize_uri("HTTPS://Example.COM:443/a/./b/../c/%7euser") == "https://example.com/a/c/~user"
    assert normalize_uri("http://example.com:8080") == "http://example.com:8080/"
    assert normalize_uri("https://example.com/a%2fb") == "https://example.com/a%2Fb"
    assert normalize_uri("https://example.com/ü") == "https://example.com/%C3%BC"
    assert normalize_uri("https://[::1]:443/x") == "https://[::1]/x"
    assert normalize_uri("https://user@Example.com/") == "https://user@example.com/"
    assert normalize_uri("https://example.com/a#frag") == "https://example.com/a"
    with pytest.raises(ValueError):
        normalize_uri("https://example.com:99999/")


# claims -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"aud": ["other-api", AUD]}, None),
        ({"exp": None}, "token lacks exp or iat"),
        ({"exp": True}, "token lacks exp or iat"),
        ({"iat": "now"}, "token lacks exp or iat"),
        ({"nbf": "soon"}, "token is not yet valid"),
        ({"jti": None}, "token has no jti"),
        ({"jti": ""}, "token has no jti"),
        ({"authorization_details": None}, "token carries no authorization_details"),
        ({"authorization_details": ENTRY}, "token carries no authorization_details"),
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


def test_application_at_jwt_typ_is_accepted(key: SigningKey) -> None:
    token = mint(key, header={"typ": "application/at+jwt"})
    assert verifier(key).verify(token, ACTION)


# keys -------------------------------------------------------------------------------------
def test_jwks_cache_fetches_once_and_refreshes_on_unknown_kid(key: SigningKey, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get("https://issuer.example.test/jwks").mock(return_value=httpx.Response(200, json=key.jwks()))
    ticks = [0.0]
    cache = JwksCache("https://issuer.example.test/jwks", min_refresh_interval=10, clock=lambda: ticks[0])
    v = TokenVerifier(issuer=ISS, audience=AUD, keys=cache)
    v.verify(mint(key), ACTION)
    v.verify(mint(key), ACTION)
    assert route.call_count == 1
    # an unknown kid refreshes, but not more often than min_refresh_interval
    stranger = mint(key, header={"kid": "new"})
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


def test_only_es256_and_rs256_may_be_configured(key: SigningKey) -> None:
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
        "sub": "user-1",
        "client_id": "agent-1",
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


def test_short_rsa_keys_are_ignored() -> None:
    private = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the weak key under test
    assert StaticKeys(_rsa_jwks(private, "weak")).key_for("weak") is None


# revocation: RFC 7662 introspection ---------------------------------------------------------
INTROSPECT = "https://issuer.example.test/introspect"


def _introspecting(key: SigningKey) -> TokenVerifier:
    return verifier(
        key,
        introspection=TokenIntrospection(INTROSPECT, client_id="rs 1", client_secret="s3cret:+"),
    )


def test_introspection_active_token_is_accepted(key: SigningKey, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(INTROSPECT).mock(return_value=httpx.Response(200, json={"active": True}))
    token = mint(key)
    assert _introspecting(key).verify(token, ACTION)
    request = route.calls.last.request
    # client_secret_basic: id and secret form-urlencoded before Basic (RFC 6749 2.3.1)
    scheme, _, value = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == "rs+1:s3cret%3A%2B"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert dict(httpx.QueryParams(request.content.decode())) == {
        "token": token,
        "token_type_hint": "access_token",
    }


def test_introspection_inactive_token_is_refused_and_not_burned(key: SigningKey, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(INTROSPECT).mock(
        side_effect=[httpx.Response(200, json={"active": False}), httpx.Response(200, json={"active": True})]
    )
    v = _introspecting(key)
    token = mint(key)
    with pytest.raises(InvalidToken) as info:
        v.verify(token, ACTION)
    assert info.value.description == "token has been revoked"
    assert 'error="invalid_token"' in (info.value.www_authenticate() or "")
    assert v.verify(token, ACTION)  # the refusal did not consume the entry


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"active": "true"}),
        httpx.Response(200, json=[{"active": True}]),
        httpx.Response(200, json={}),
    ],
)
def test_introspection_anything_but_active_true_is_revoked(
    key: SigningKey, respx_mock: respx.MockRouter, answer: httpx.Response
) -> None:
    respx_mock.post(INTROSPECT).mock(return_value=answer)
    with pytest.raises(InvalidToken, match="revoked"):
        _introspecting(key).verify(mint(key), ACTION)


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(500), httpx.Response(401, json={"error": "invalid_client"}), httpx.Response(200, text="x")],
)
def test_introspection_failure_fails_closed(
    key: SigningKey, respx_mock: respx.MockRouter, answer: httpx.Response
) -> None:
    respx_mock.post(INTROSPECT).mock(return_value=answer)
    with pytest.raises(ResourceUnavailable) as info:
        _introspecting(key).verify(mint(key), ACTION)
    assert info.value.status_code == 503
    assert "WWW-Authenticate" not in info.value.headers()


def test_introspection_unreachable_fails_closed(key: SigningKey, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(INTROSPECT).mock(side_effect=httpx.ConnectTimeout("slow"))
    with pytest.raises(ResourceUnavailable, match="token status could not be checked"):
        _introspecting(key).verify(mint(key), ACTION)


def test_introspection_not_asked_for_a_token_refused_locally(key: SigningKey, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(INTROSPECT).mock(return_value=httpx.Response(200, json={"active": True}))
    with pytest.raises(InsufficientAuthorization):
        _introspecting(key).verify(mint(key), _policy(identifier="policy-1"))
    assert route.call_count == 0


# RFC 9470 step-up -------------------------------------------------------------------------
def test_required_acr(key: SigningKey) -> None:
    v = verifier(key, required_acr=["phr"])
    assert v.verify(mint(key), ACTION)
    with pytest.raises(InsufficientUserAuthentication) as info:
        v.verify(mint(key, acr="1"), ACTION)
    assert info.value.status_code == 401
    challenge = info.value.www_authenticate() or ""
    assert challenge.startswith('Bearer realm="api", error="insufficient_user_authentication"')
    assert 'acr_values="phr"' in challenge


def test_max_auth_age(key: SigningKey) -> None:
    now = int(time.time())
    v = verifier(key, max_auth_age=60)
    assert v.verify(mint(key, auth_time=now - 10), ACTION)
    with pytest.raises(InsufficientUserAuthentication) as info:
        v.verify(mint(key, auth_time=now - 600), ACTION)
    assert 'max_age="60"' in (info.value.www_authenticate() or "")


# errors -----------------------------------------------------------------------------------
def test_insufficient_scope_challenge_carries_the_needed_authorization_details(key: SigningKey) -> None:
    other = _policy(identifier="policy-7")
    with pytest.raises(InsufficientAuthorization) as info:
        verifier(key).verify(mint(key), other)
    challenge = info.value.www_authenticate() or ""
    assert challenge.startswith(
        'Bearer realm="api", error="insufficient_scope", '
        'error_description="the token\'s approval does not cover this action", authorization_details="'
    )
    assert decode_challenge_details(challenge) == [other.as_authorization_details()]
    assert info.value.headers()["Cache-Control"] == "no-store"


def test_invalid_token_also_names_what_to_request(key: SigningKey) -> None:
    with pytest.raises(InvalidToken) as info:
        verifier(key).verify(mint(key, exp=int(time.time()) - 120), ACTION)
    assert info.value.body()["authorization_details"] == [ACTION.as_authorization_details()]
    assert decode_challenge_details(info.value.www_authenticate() or "") == [ACTION.as_authorization_details()]


def test_challenge_values_cannot_break_the_header(key: SigningKey) -> None:
    token = mint(key, header={"typ": 'at"+jwt\\\r\nX-Injected: 1 ü'})
    with pytest.raises(InvalidToken) as info:
        verifier(key).verify(token, ACTION)
    challenge = info.value.www_authenticate() or ""
    description = challenge.split('error_description="', 1)[1].split('"', 1)[0]
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description)
    challenge.encode("latin-1")


def test_large_authorization_details_survive_the_challenge(key: SigningKey) -> None:
    big = _policy(identifier="p" * 200, fields={"note": "n" * 400})
    with pytest.raises(InsufficientAuthorization) as info:
        verifier(key).verify(mint(key), big)
    assert decode_challenge_details(info.value.www_authenticate() or "") == [big.as_authorization_details()]


def test_missing_token_offers_both_schemes() -> None:
    error = MissingToken("a token is required", required=ACTION.as_authorization_details())
    challenge = error.www_authenticate()
    bearer, dpop = challenge.split(", DPoP ")
    assert bearer.startswith('Bearer realm="api", authorization_details="')
    assert "error=" not in challenge  # RFC 6750 3.1
    assert dpop.startswith('realm="api", algs="ES256", authorization_details="')


# FastAPI ----------------------------------------------------------------------------------
@pytest.fixture
def api(key: SigningKey) -> TestClient:
    return TestClient(create_example_api(verifier(key)))


def test_fastapi_accepts_once_then_refuses(api: TestClient, key: SigningKey) -> None:
    headers = {"Authorization": f"Bearer {mint(key)}"}
    first = api.put("/policies/policy-42", headers=headers)
    assert first.status_code == 200
    assert first.json() == {"policy": "policy-42", "status": "updated", "by": "user-1"}
    again = api.put("/policies/policy-42", headers=headers)
    assert again.status_code == 401
    assert again.json()["error_description"] == "token has already been used"
    assert again.headers["www-authenticate"].startswith('Bearer realm="api", error="invalid_token"')


def test_fastapi_missing_token(api: TestClient) -> None:
    response = api.put("/policies/policy-42")
    assert response.status_code == 401
    assert response.headers["cache-control"] == "no-store"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="api", authorization_details="')
    assert ', DPoP realm="api", algs="ES256"' in challenge
    needed = ACTION.as_authorization_details()
    assert decode_challenge_details(challenge) == [needed]
    assert response.json()["authorization_details"] == [needed]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "Token abc"])
def test_fastapi_wrong_scheme_is_a_missing_token(api: TestClient, header: str) -> None:
    response = api.put("/policies/policy-42", headers={"Authorization": header})
    assert response.status_code == 401
    assert "error=" not in response.headers["www-authenticate"]


def test_fastapi_insufficient_scope(api: TestClient, key: SigningKey) -> None:
    response = api.delete("/policies/policy-42", headers={"Authorization": f"Bearer {mint(key)}"})
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "insufficient_scope"
    assert body["authorization_details"] == [
        {"type": "iam_policy", "actions": ["delete"], "locations": [IAM_LOCATION], "identifier": "policy-42"}
    ]
    assert decode_challenge_details(response.headers["www-authenticate"]) == body["authorization_details"]


def test_fastapi_action_from_the_request_body(key: SigningKey) -> None:
    v = verifier(key, field_rules={"payment_initiation": AMOUNT_RULES})
    app = FastAPI()
    install_error_handler(app)

    async def payment(request: Request) -> RequestedAction:
        body = await request.json()
        return _payment(
            instructedAmount={"currency": body["currency"], "amount": body["amount"]},
            creditorName=body["creditor"],
        )

    may_pay = Depends(require_action(v, payment))

    @app.post("/payments")
    async def pay(token: VerifiedToken = may_pay) -> dict[str, Any]:
        return {"paid_by": token.subject, "entry": token.entry_index}

    client = TestClient(app)
    token = mint(key, entries=[PAYMENT])
    over = client.post(
        "/payments",
        json={"currency": "EUR", "amount": "12.00", "creditor": "Merchant A"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert over.status_code == 403
    assert over.json()["authorization_details"][0]["instructedAmount"] == {"currency": "EUR", "amount": "12.00"}
    ok = client.post(
        "/payments",
        json={"currency": "EUR", "amount": "9.99", "creditor": "Merchant A"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"paid_by": "user-1", "entry": 0}


def test_fastapi_action_factory_gets_only_the_parameters_it_names(key: SigningKey) -> None:
    app = FastAPI()
    install_error_handler(app)
    v = verifier(key)

    def action_for(policy_id: str) -> RequestedAction:
        return _policy(identifier=policy_id)

    may_put = Depends(require_action(v, action_for))

    @app.put("/tenants/{tenant}/policies/{policy_id}")
    async def put(tenant: str, policy_id: str, token: VerifiedToken = may_put) -> str:
        return f"{tenant}/{policy_id}"

    response = TestClient(app).put("/tenants/t1/policies/policy-42", headers={"Authorization": f"Bearer {mint(key)}"})
    assert response.status_code == 200
    assert response.json() == "t1/policy-42"


def test_shared_replay_cache_across_verifiers(key: SigningKey) -> None:
    shared = InMemoryReplayCache()
    token = mint(key)
    assert verifier(key, replay=shared).verify(token, ACTION)
    with pytest.raises(InvalidToken, match="already been used"):
        verifier(key, replay=shared).verify(token, ACTION)


def test_forged_kid_does_not_enter_the_header_cache(key: SigningKey) -> None:
    v = verifier(key)
    for n in range(100):
        with pytest.raises(InvalidToken):
            v.verify(mint(key, header={"kid": f"k{n}"}), ACTION)
    assert v.verify(mint(key), ACTION)
    assert len(v._headers) == 1


@settings(max_examples=300)
@given(
    r=st.integers(0, 2**256 - 1) | st.sampled_from([0, 1, 2**255, 2**255 - 1, 2**256 - 1, 2**248 - 1]),
    s=st.integers(0, 2**256 - 1) | st.sampled_from([0, 1, 2**255, 2**256 - 1]),
)
def test_der_conversion_matches_cryptography(r: int, s: int) -> None:
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert _der_signature(raw) == encode_dss_signature(r, s)


@settings(max_examples=300)
@given(data=st.binary(max_size=40))
def test_strict_base64url(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert _b64url(encoded) == data
    for bad in (encoded + "=", encoded + "!", encoded.replace("-", "+"), " " + encoded, encoded + "\n"):
        if bad != encoded:
            with pytest.raises(ValueError):
                _b64url(bad)


def test_introspection_against_the_service(tmp_path: Any) -> None:
    """The client side against the service's real /introspect: a token the service issued is
    active until its auth_req_id is redeemed twice, which revokes it."""
    from ciba_service.agent.softauthn import SoftAuthenticator
    from ciba_service.config import ClientConfig
    from ciba_service.core.security import hash_secret
    from ciba_service.server.wiring import build_provider
    from ciba_service.web.app import create_app
    from tests.support.service import BASE, Clock, Env, RecordingNotifier, enroll, make_settings

    base = make_settings(tmp_path)
    rs = ClientConfig(client_id="rs 1", client_secret_hash=hash_secret("s3cret:+"), grant_types=[], introspection=True)
    settings = make_settings(tmp_path, clients=[*base.clients, rs])
    clock, notifier, authenticator = Clock(), RecordingNotifier(), SoftAuthenticator()
    provider = build_provider(settings, notifier=notifier, clock=clock)
    try:
        with TestClient(create_app(provider), base_url=BASE) as client:
            enroll(provider, client, "alice", authenticator)
            env = Env(provider, client, clock, notifier, authenticator, settings)
            v = TokenVerifier(
                issuer=BASE,
                audience=settings.default_audience,
                keys=StaticKeys(provider.signing_key.jwks()),
                clock=clock,
                max_uses={"iam_policy": 2},
                introspection=TokenIntrospection(
                    f"{BASE}/introspect", client_id="rs 1", client_secret="s3cret:+", client=client
                ),
            )
            auth_req_id = env.bc_authorize().json()["auth_req_id"]
            env.approve(auth_req_id)
            clock.advance(2)
            token = env.token(auth_req_id).json()["access_token"]
            assert v.verify(token, ACTION).subject
            assert env.token(auth_req_id).status_code == 400  # a second redemption revokes the token
            with pytest.raises(InvalidToken) as info:
                v.verify(token, ACTION)
            assert info.value.description == "token has been revoked"
    finally:
        provider.store.close()
