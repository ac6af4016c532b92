"""Attacks on the resource server, each refused with the right error (class, status, error
code, description, challenge scheme). One case per attack; setup that must happen first
(a legitimate use before a replay) happens inside the case."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ciba_service.core.security import b64url_decode, b64url_encode
from ciba_service.rfc9449.dpop import DPoPNonces, create_proof, jwk_thumbprint, public_jwk
from ciba_service.rs.verifier import (
    InsufficientAuthorization,
    InsufficientUserAuthentication,
    InvalidDPoPProof,
    InvalidToken,
    RequestedAction,
    ResourceError,
    TokenVerifier,
    UseDPoPNonce,
)
from ciba_service.server.tokens import SigningKey
from tests.support.tokens import ACTION, AUD, ENTRY, ISS, decode_challenge_details, mint, verifier

URL = "https://iam.example.test/policies/policy-42"
AGENT = ec.generate_private_key(ec.SECP256R1())
AGENT_JKT = jwk_thumbprint(public_jwk(AGENT.public_key()))
THIEF = ec.generate_private_key(ec.SECP256R1())
ATTACKER = ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Ctx:
    key: SigningKey
    v: TokenVerifier


Attack = Callable[[Ctx], Any]


def _policy(**changes: Any) -> RequestedAction:
    base: dict[str, Any] = {"type": "iam_policy", "actions": ["update"], "identifier": "policy-42"}
    return RequestedAction(**{"locations": ENTRY["locations"], **base, **changes})


def _claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "iat": now,
        "exp": now + 60,
        "jti": f"j-{time.monotonic_ns()}",
        "authorization_details": [ENTRY],
        **override,
    }
    return claims


def _raw_sign(header: dict[str, Any], payload_segment: str, key: ec.EllipticCurvePrivateKey) -> str:
    """Sign arbitrary (even malformed) segments with an EC key: the signature is valid."""
    signing_input = f"{b64url_encode(json.dumps(header).encode())}.{payload_segment}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url_encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _issuer_header(c: Ctx, **extra: Any) -> dict[str, Any]:
    return {"alg": "ES256", "typ": "at+jwt", "kid": c.key.kid, **extra}


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"x" * 64) -> str:
    parts = [b64url_encode(json.dumps(p).encode()) for p in (header, claims)]
    return ".".join([*parts, b64url_encode(signature)])


def _tamper(token: str, change: Callable[[dict[str, Any]], None]) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    change(claims)
    return ".".join([header, b64url_encode(json.dumps(claims).encode()), signature])


def _public_pem(c: Ctx) -> bytes:
    return c.key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hs256_with(secret: bytes, c: Ctx) -> str:
    # PyJWT refuses PEM-looking HMAC keys; build the HS256 token by hand, as an attacker would.
    import hashlib
    import hmac

    header = b64url_encode(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": c.key.kid}).encode())
    payload = b64url_encode(json.dumps(_claims()).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url_encode(mac)}"


def _twice(c: Ctx, token: str, first: RequestedAction, second: RequestedAction) -> Any:
    c.v.verify(token, first)
    return c.v.verify(token, second)


def _bound(c: Ctx) -> str:
    return mint(c.key, cnf={"jkt": AGENT_JKT})


def _dpop(c: Ctx, token: str, proof: str | None, *, method: str = "PUT") -> Any:
    return c.v.verify(token, ACTION, scheme="DPoP", method=method, url=URL, dpop_proof=proof)


def _dpop_reuse(c: Ctx) -> Any:
    token = mint(c.key, cnf={"jkt": AGENT_JKT}, entries=[ENTRY, ENTRY])
    proof = create_proof(AGENT, "PUT", URL, access_token=token)
    _dpop(c, token, proof)
    return _dpop(c, token, proof)


def _stolen_proof_other_token(c: Ctx) -> Any:
    victim = _bound(c)
    proof = create_proof(AGENT, "PUT", URL, access_token=victim)
    other = _bound(c)
    return _dpop(c, other, proof)


# The resource server's nonces (RFC 9449 9), on a fixed clock at a bucket boundary.
NONCE_TIME = 1_800_000_000.0
NONCES = DPoPNonces(b"n" * 32, clock=lambda: NONCE_TIME)


def _dpop_with_nonce(c: Ctx, nonce: str | None) -> Any:
    token = _bound(c)
    proof = create_proof(AGENT, "PUT", URL, access_token=token, nonce=nonce)
    nonced = verifier(c.key, dpop_nonces=NONCES)
    return nonced.verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=proof)


def _plan_step_replay(c: Ctx) -> Any:
    other = {**ENTRY, "identifier": "policy-7"}
    token = mint(c.key, entries=[ENTRY, other])
    c.v.verify(token, _policy(identifier="policy-7"))
    c.v.verify(token, ACTION)
    return c.v.verify(token, _policy(identifier="policy-7"))


def _rs256_confusion(c: Ctx) -> str:
    private = rsa.generate_private_key(65537, 2048)
    return jwt.encode(_claims(), private, algorithm="RS256", headers={"kid": c.key.kid, "typ": "at+jwt"})


NOW = int(time.time())


# (id, attack, error class, description)
def _respell_last_char(token: str) -> str:
    """The token with its signature's last character's unused bits set: same bytes decoded."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(token.rsplit(".", 1)[1]) % 4 == 2  # ES256: 64 bytes, 86 characters, 4 unused bits
    return token[:-1] + alphabet[alphabet.index(token[-1]) | 1]


CASES: list[tuple[str, Attack, type[ResourceError], str]] = [
    # -- header and signature
    (
        "alg-none",
        lambda c: c.v.verify(_forge({"alg": "none", "typ": "at+jwt", "kid": c.key.kid}, _claims(), b""), ACTION),
        InvalidToken,
        "algorithm 'none' is not allowed",
    ),
    (
        "alg-None-case",
        lambda c: c.v.verify(_forge({"alg": "None", "typ": "at+jwt", "kid": c.key.kid}, _claims(), b""), ACTION),
        InvalidToken,
        "algorithm 'None' is not allowed",
    ),
    (
        "hs256-with-public-key-pem",
        lambda c: c.v.verify(_hs256_with(_public_pem(c), c), ACTION),
        InvalidToken,
        "algorithm 'HS256' is not allowed",
    ),
    (
        "hs256-with-jwk-x",
        lambda c: c.v.verify(_hs256_with(c.key.jwks()["keys"][0]["x"].encode(), c), ACTION),
        InvalidToken,
        "algorithm 'HS256' is not allowed",
    ),
    (
        "rs256-naming-the-ec-kid",
        lambda c: verifier(c.key, algorithms=("ES256", "RS256")).verify(_rs256_confusion(c), ACTION),
        InvalidToken,
        "key '{kid}' does not sign with RS256",
    ),
    (
        "unknown-kid",
        lambda c: c.v.verify(mint(c.key, header={"kid": "rotated-out"}), ACTION),
        InvalidToken,
        "token signed by an unknown key",
    ),
    (
        "attacker-key-with-our-kid",
        lambda c: c.v.verify(
            _raw_sign(_issuer_header(c), b64url_encode(json.dumps(_claims()).encode()), ATTACKER), ACTION
        ),
        InvalidToken,
        "signature verification failed",
    ),
    (
        "jku-header",
        lambda c: c.v.verify(mint(c.key, header={"jku": "https://evil.test/jwks.json"}), ACTION),
        InvalidToken,
        "header 'jku' is not accepted",
    ),
    (
        "x5u-header",
        lambda c: c.v.verify(mint(c.key, header={"x5u": "https://evil.test/cert.pem"}), ACTION),
        InvalidToken,
        "header 'x5u' is not accepted",
    ),
    (
        "embedded-jwk-header",
        lambda c: c.v.verify(
            _raw_sign(
                _issuer_header(c, jwk=public_jwk(ATTACKER.public_key())),
                b64url_encode(json.dumps(_claims()).encode()),
                ATTACKER,
            ),
            ACTION,
        ),
        InvalidToken,
        "header 'jwk' is not accepted",
    ),
    (
        "x5c-header",
        lambda c: c.v.verify(mint(c.key, header={"x5c": ["MIIB"]}), ACTION),
        InvalidToken,
        "header 'x5c' is not accepted",
    ),
    (
        "crit-header",
        lambda c: c.v.verify(mint(c.key, header={"crit": ["exp"], "exp": 1}), ACTION),
        InvalidToken,
        "header 'crit' is not accepted",
    ),
    (
        "alg-as-a-list",
        lambda c: c.v.verify(_forge({"alg": ["ES256"], "typ": "at+jwt", "kid": c.key.kid}, _claims()), ACTION),
        InvalidToken,
        "algorithm ['ES256'] is not allowed",
    ),
    (
        "no-kid",
        lambda c: c.v.verify(_raw_sign({"alg": "ES256", "typ": "at+jwt"}, b64url_encode(b"{}"), ATTACKER), ACTION),
        InvalidToken,
        "token has no kid",
    ),
    (
        "id-token-as-access-token",
        lambda c: c.v.verify(mint(c.key, header={"typ": "JWT"}), ACTION),
        InvalidToken,
        "token type 'JWT' is not an access token",
    ),
    (
        "no-typ",
        lambda c: c.v.verify(_forge({"alg": "ES256", "kid": c.key.kid}, _claims()), ACTION),
        InvalidToken,
        "token type None is not an access token",
    ),
    (
        "proof-jwt-as-access-token",
        lambda c: c.v.verify(mint(c.key, header={"typ": "dpop+jwt"}), ACTION),
        InvalidToken,
        "token type 'dpop+jwt' is not an access token",
    ),
    (
        "signature-stripped",
        lambda c: c.v.verify(mint(c.key).rsplit(".", 1)[0] + ".", ACTION),
        InvalidToken,
        "signature verification failed",
    ),
    (
        "signature-truncated",
        lambda c: c.v.verify(mint(c.key)[:-10], ACTION),
        InvalidToken,
        "signature verification failed",
    ),
    (
        "signature-in-der-form",
        lambda c: c.v.verify(
            mint(c.key).rsplit(".", 1)[0]
            + "."
            + b64url_encode(c.key.private_key.sign(b"x", ec.ECDSA(hashes.SHA256()))),
            ACTION,
        ),
        InvalidToken,
        "signature verification failed",
    ),
    # -- claims
    (
        "wrong-issuer",
        lambda c: c.v.verify(mint(c.key, iss="https://evil.test"), ACTION),
        InvalidToken,
        "token issuer is not trusted here",
    ),
    (
        "issuer-trailing-slash",
        lambda c: c.v.verify(mint(c.key, iss=ISS + "/"), ACTION),
        InvalidToken,
        "token issuer is not trusted here",
    ),
    (
        "wrong-audience",
        lambda c: c.v.verify(mint(c.key, aud="other-api"), ACTION),
        InvalidToken,
        "token is not intended for this resource server",
    ),
    (
        "audience-substring",
        lambda c: c.v.verify(mint(c.key, aud="resource-api-2"), ACTION),
        InvalidToken,
        "token is not intended for this resource server",
    ),
    (
        "no-audience",
        lambda c: c.v.verify(mint(c.key, aud=None), ACTION),
        InvalidToken,
        "token is not intended for this resource server",
    ),
    (
        "expired",
        lambda c: c.v.verify(mint(c.key, exp=NOW - 120), ACTION),
        InvalidToken,
        "token has expired",
    ),
    (
        "not-yet-valid",
        lambda c: c.v.verify(mint(c.key, nbf=NOW + 600), ACTION),
        InvalidToken,
        "token is not yet valid",
    ),
    (
        "issued-far-in-the-future",
        lambda c: c.v.verify(mint(c.key, iat=NOW + 86_400, exp=NOW + 86_500), ACTION),
        InvalidToken,
        "token was issued in the future",
    ),
    (
        "lifetime-too-long",
        lambda c: c.v.verify(mint(c.key, exp=NOW + 30 * 86_400), ACTION),
        InvalidToken,
        "token lifetime is longer than accepted",
    ),
    (
        "nan-nbf",
        lambda c: c.v.verify(
            _raw_sign(
                _issuer_header(c),
                b64url_encode(json.dumps(_claims(nbf=float("nan"))).encode()),
                c.key.private_key,
            ),
            ACTION,
        ),
        InvalidToken,
        "token payload is not JSON",
    ),
    (
        "tampered-payload-scope",
        lambda c: c.v.verify(_tamper(mint(c.key), lambda p: p.update(scope="openid admin")), ACTION),
        InvalidToken,
        "signature verification failed",
    ),
    (
        "tampered-authorization-details",
        lambda c: c.v.verify(
            _tamper(
                mint(c.key, entries=[{**ENTRY, "identifier": "policy-1"}]),
                lambda p: p["authorization_details"][0].update(identifier="policy-42"),
            ),
            ACTION,
        ),
        InvalidToken,
        "signature verification failed",
    ),
    (
        "tampered-cnf-removed",
        lambda c: c.v.verify(_tamper(_bound(c), lambda p: p.pop("cnf")), ACTION),
        InvalidToken,
        "signature verification failed",
    ),
    # -- the action
    (
        "action-other-identifier",
        lambda c: c.v.verify(mint(c.key), _policy(identifier="policy-43")),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "action-other-verb",
        lambda c: c.v.verify(mint(c.key), _policy(actions=["delete"])),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "action-extra-verb",
        lambda c: c.v.verify(mint(c.key), _policy(actions=["update", "delete"])),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "action-other-type",
        lambda c: c.v.verify(mint(c.key), _policy(type="key_rotation")),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "location-prefix-trick",
        lambda c: c.v.verify(mint(c.key), _policy(locations=["https://iam.example.test/admin"])),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "location-host-suffix-trick",
        lambda c: c.v.verify(mint(c.key), _policy(locations=["https://iam.example.test.evil.test/"])),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "location-userinfo-trick",
        lambda c: c.v.verify(mint(c.key), _policy(locations=["https://iam.example.test@evil.test/"])),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "unknown-field-in-token-never-widens",
        lambda c: c.v.verify(mint(c.key, entries=[{**ENTRY, "scope_override": "*"}]), ACTION),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "locations-as-objects",
        lambda c: c.v.verify(mint(c.key, entries=[{**ENTRY, "locations": [{"uri": ENTRY["locations"][0]}]}]), ACTION),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "bool-for-number-field",
        lambda c: c.v.verify(mint(c.key, entries=[{**ENTRY, "count": 1}]), _policy(fields={"count": True})),
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "entry-not-an-object",
        lambda c: c.v.verify(mint(c.key, entries=[json.dumps(ENTRY)]), ACTION),  # type: ignore[list-item]
        InsufficientAuthorization,
        "the token's approval does not cover this action",
    ),
    (
        "outside-execution-window",
        lambda c: c.v.verify(mint(c.key, entries=[{**ENTRY, "not_after": NOW - 1}]), ACTION),
        InsufficientAuthorization,
        f"the approval for this action ended at {NOW - 1} (epoch seconds)",
    ),
    # -- replay
    (
        "replayed-token",
        lambda c: _twice(c, mint(c.key), ACTION, ACTION),
        InvalidToken,
        "token has already been used",
    ),
    (
        "replayed-plan-step",
        _plan_step_replay,
        InvalidToken,
        "this step of the approved plan has already been used",
    ),
    (
        "entry-max-uses-above-type-allowance",
        lambda c: _twice(c, mint(c.key, entries=[{**ENTRY, "max_uses": 100}]), ACTION, ACTION),
        InvalidToken,
        "token has already been used",
    ),
    # -- DPoP
    (
        "dpop-proof-missing",
        lambda c: _dpop(c, _bound(c), None),
        InvalidDPoPProof,
        "a DPoP proof is required with this token",
    ),
    (
        "dpop-bound-token-as-bearer",
        lambda c: c.v.verify(_bound(c), ACTION, scheme="Bearer"),
        InvalidToken,
        "a DPoP-bound token must be presented with the DPoP scheme",
    ),
    (
        "dpop-proof-reused",
        _dpop_reuse,
        InvalidDPoPProof,
        "DPoP proof has already been used",
    ),
    (
        "dpop-proof-for-another-url",
        lambda c: _dpop(c, (t := _bound(c)), create_proof(AGENT, "PUT", URL + "/x", access_token=t)),
        InvalidDPoPProof,
        "DPoP proof is for another URL",
    ),
    (
        "dpop-proof-for-another-method",
        lambda c: _dpop(c, (t := _bound(c)), create_proof(AGENT, "GET", URL, access_token=t)),
        InvalidDPoPProof,
        "DPoP proof is for another HTTP method",
    ),
    (
        "dpop-proof-by-another-key",
        lambda c: _dpop(c, (t := _bound(c)), create_proof(THIEF, "PUT", URL, access_token=t)),
        InvalidDPoPProof,
        "DPoP proof key does not match the access token's binding",
    ),
    (
        "dpop-proof-for-another-token",
        _stolen_proof_other_token,
        InvalidDPoPProof,
        "DPoP proof ath does not match the access token",
    ),
    (
        "dpop-proof-stale",
        lambda c: _dpop(c, (t := _bound(c)), create_proof(AGENT, "PUT", URL, access_token=t, now=NOW - 3600)),
        InvalidDPoPProof,
        "DPoP proof is too old",
    ),
    (
        "dpop-unsupported-cnf",
        lambda c: _dpop(
            c, (t := mint(c.key, cnf={"x5t#S256": "abc"})), create_proof(AGENT, "PUT", URL, access_token=t)
        ),
        InvalidToken,
        "token is bound by an unsupported cnf confirmation method",
    ),
    # -- DPoP with server-provided nonces (RFC 9449 9, 11.2)
    (
        "dpop-pregenerated-proof-without-nonce",
        lambda c: _dpop_with_nonce(c, None),
        UseDPoPNonce,
        "DPoP proof must carry the server-provided nonce",
    ),
    (
        "dpop-nonce-stale",
        lambda c: _dpop_with_nonce(c, NONCES.current(NONCE_TIME - 600)),
        UseDPoPNonce,
        "DPoP proof nonce is stale or unknown; use the server-provided nonce",
    ),
    (
        "dpop-nonce-forged",
        lambda c: _dpop_with_nonce(c, DPoPNonces(b"f" * 32).current(NONCE_TIME)),
        UseDPoPNonce,
        "DPoP proof nonce is stale or unknown; use the server-provided nonce",
    ),
    # -- malformed input
    (
        "oversized-token",
        lambda c: c.v.verify("a" * 20_000, ACTION),
        InvalidToken,
        "token is too large",
    ),
    (
        "two-parts",
        lambda c: c.v.verify("a.b", ACTION),
        InvalidToken,
        "token is not a compact JWS",
    ),
    (
        "four-parts",
        lambda c: c.v.verify(mint(c.key) + ".x", ACTION),
        InvalidToken,
        "token is not a compact JWS",
    ),
    (
        "header-not-base64url",
        lambda c: c.v.verify("!!!." + mint(c.key).split(".", 1)[1], ACTION),
        InvalidToken,
        "malformed token header",
    ),
    (
        "header-standard-base64-alphabet",
        lambda c: c.v.verify("eyJhbGciOiJFUzI1NiJ9+/." + mint(c.key).split(".", 1)[1], ACTION),
        InvalidToken,
        "malformed token header",
    ),
    (
        "header-impossible-length",
        lambda c: c.v.verify("eyJhb." + mint(c.key).split(".", 1)[1], ACTION),
        InvalidToken,
        "malformed token header",
    ),
    (
        "header-not-json",
        lambda c: c.v.verify(b64url_encode(b"{alg") + ".e30.AA", ACTION),
        InvalidToken,
        "token header is not JSON",
    ),
    (
        "header-json-array",
        lambda c: c.v.verify(b64url_encode(b"[1]") + ".e30.AA", ACTION),
        InvalidToken,
        "token header is not a JSON object",
    ),
    (
        "payload-not-base64url-but-signed",
        lambda c: c.v.verify(_raw_sign(_issuer_header(c), "e30=", c.key.private_key), ACTION),
        InvalidToken,
        "malformed token payload",
    ),
    (
        # the same signature spelled differently (non-zero unused bits in its last character)
        "signature-non-canonical-base64url",
        lambda c: c.v.verify(_respell_last_char(mint(c.key)), ACTION),
        InvalidToken,
        "malformed token signature",
    ),
    (
        "payload-non-ascii",
        lambda c: c.v.verify(mint(c.key).split(".")[0] + ".é." + "AA", ACTION),
        InvalidToken,
        "malformed token payload",
    ),
    (
        "payload-not-json-but-signed",
        lambda c: c.v.verify(_raw_sign(_issuer_header(c), b64url_encode(b"not json"), c.key.private_key), ACTION),
        InvalidToken,
        "token payload is not JSON",
    ),
    (
        "payload-invalid-utf8-but-signed",
        lambda c: c.v.verify(_raw_sign(_issuer_header(c), b64url_encode(b'{"a":"\xff"}'), c.key.private_key), ACTION),
        InvalidToken,
        "token payload is not JSON",
    ),
    (
        "payload-trailing-data-but-signed",
        lambda c: c.v.verify(
            _raw_sign(_issuer_header(c), b64url_encode(b'{"a":1} {"b":2}'), c.key.private_key), ACTION
        ),
        InvalidToken,
        "token payload is not JSON",
    ),
    (
        "payload-lone-surrogate-but-signed",
        lambda c: c.v.verify(
            _raw_sign(_issuer_header(c), b64url_encode(b'{"sub":"\\ud800"}'), c.key.private_key), ACTION
        ),
        InvalidToken,
        "token payload is not JSON",
    ),
    (
        "payload-number-overflow-but-signed",
        lambda c: c.v.verify(_raw_sign(_issuer_header(c), b64url_encode(b'{"exp":1e400}'), c.key.private_key), ACTION),
        InvalidToken,
        "token payload is not JSON",
    ),
    (
        "payload-json-array-but-signed",
        lambda c: c.v.verify(_raw_sign(_issuer_header(c), b64url_encode(b"[]"), c.key.private_key), ACTION),
        InvalidToken,
        "token payload is not a JSON object",
    ),
    (
        "payload-deeply-nested-but-signed",
        lambda c: c.v.verify(
            _raw_sign(_issuer_header(c), b64url_encode(b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"), c.key.private_key),
            ACTION,
        ),
        InvalidToken,
        "token payload is not JSON",
    ),
    # -- authentication level
    (
        "weak-authentication",
        lambda c: verifier(c.key, required_acr=["phr"]).verify(mint(c.key, acr="pwd"), ACTION),
        InsufficientUserAuthentication,
        "a stronger user authentication is required",
    ),
]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("k") / "key.pem")


@pytest.mark.parametrize(("name", "attack", "error", "description"), CASES, ids=[c[0] for c in CASES])
def test_attack_is_refused(
    key: SigningKey, name: str, attack: Attack, error: type[ResourceError], description: str
) -> None:
    ctx = Ctx(key=key, v=verifier(key))
    with pytest.raises(ResourceError) as info:
        attack(ctx)
    refused = info.value
    assert type(refused) is error
    assert refused.description == description.format(kid=key.kid)
    assert refused.status_code == {"insufficient_scope": 403}.get(refused.error, 401)
    body = refused.body()
    assert body["error"] == refused.error
    # every refusal tells the agent which authorization_details the call needs
    (needed,) = body["authorization_details"]
    assert needed["type"] in ("iam_policy", "key_rotation")
    assert needed["actions"]
    challenge = refused.www_authenticate() or ""
    assert f'error="{refused.error}"' in challenge
    assert decode_challenge_details(challenge) == body["authorization_details"]
    # a DPoP-bound token (or a DPoP proof) is answered with the DPoP scheme and its algorithms
    if name.startswith("dpop-"):
        assert challenge.startswith('DPoP realm="api", ')
        assert 'algs="ES256"' in challenge
    else:
        assert challenge.startswith('Bearer realm="api", ')


def test_there_are_at_least_thirty_attacks() -> None:
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


# fuzzing: whatever arrives, the answer is a protocol error, never a crash -------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
CLAIM_NAMES = st.sampled_from(["iss", "aud", "exp", "iat", "nbf", "jti", "cnf", "acr", "authorization_details", "x"])
ENTRY_NAMES = st.sampled_from(
    [
        "type",
        "actions",
        "locations",
        "identifier",
        "datatypes",
        "privileges",
        "max_uses",
        "not_before",
        "not_after",
        "y",
    ]
)
FUZZ = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
FUZZ_KEY = SigningKey(private_key=ec.generate_private_key(ec.SECP256R1()), kid="fuzz")


@FUZZ
@given(
    header=st.dictionaries(st.sampled_from(["alg", "typ", "kid", "jku", "b64", "zip"]), JSON_VALUES, max_size=3),
    claims=st.dictionaries(CLAIM_NAMES, JSON_VALUES, max_size=4),
    entry=st.dictionaries(ENTRY_NAMES, JSON_VALUES, max_size=5),
)
def test_signed_garbage_is_refused_cleanly(
    header: dict[str, Any], claims: dict[str, Any], entry: dict[str, Any]
) -> None:
    """Tokens signed by the issuer's own key but carrying anything at all in header, claims and
    entries: a ResourceError or a verified token, never another exception."""
    base = _claims(authorization_details=[{**ENTRY, **entry}])
    token = _raw_sign(
        {"alg": "ES256", "typ": "at+jwt", "kid": "fuzz", **header},
        b64url_encode(json.dumps({**base, **claims}).encode()),
        FUZZ_KEY.private_key,
    )
    v = verifier(FUZZ_KEY)
    with contextlib.suppress(ResourceError):
        v.verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof="x.y.z")
    with contextlib.suppress(ResourceError):
        v.verify(token, ACTION)


@FUZZ
@given(
    token=st.text(max_size=200) | st.from_regex(r"[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-=+/]{0,40}\.[A-Za-z0-9_\-]{0,90}")
)
def test_arbitrary_strings_are_refused_cleanly(token: str) -> None:
    with pytest.raises(ResourceError):
        verifier(FUZZ_KEY).verify(token, ACTION)


@FUZZ
@given(
    header=st.dictionaries(st.sampled_from(["typ", "alg", "jwk", "crit"]), JSON_VALUES, max_size=3),
    claims=st.dictionaries(st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce"]), JSON_VALUES, max_size=4),
)
def test_garbage_dpop_proofs_are_refused_cleanly(header: dict[str, Any], claims: dict[str, Any]) -> None:
    from ciba_service.core.replay import InMemoryReplayCache
    from ciba_service.rfc9449.dpop import DPoPProofError, verify_proof

    proof = _raw_sign(
        {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(AGENT.public_key()), **header},
        b64url_encode(json.dumps({"jti": "j", "htm": "PUT", "htu": URL, "iat": int(time.time()), **claims}).encode()),
        AGENT,
    )
    with contextlib.suppress(DPoPProofError):
        verify_proof(proof, method="PUT", url=URL, access_token="t", replay=InMemoryReplayCache())
