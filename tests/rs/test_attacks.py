"""Attacks on the resource server, each refused with the right error (class, status, error
code, description, challenge scheme). One case per attack; setup that must happen first
(a legitimate use before a replay) happens inside the case."""

from __future__ import annotations

import json
import math
import re
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
from ciba_service.rfc9449 import DPoPNonces, create_proof, jwk_thumbprint, public_jwk
from ciba_service.rs import (
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
    now: int  # when the case runs (the verifier reads the wall clock)


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
        "client_id": "agent-1",
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
        lambda c: c.v.verify(mint(c.key, exp=c.now - 120), ACTION),
        InvalidToken,
        "token has expired",
    ),
    (
        "not-yet-valid",
        lambda c: c.v.verify(mint(c.key, nbf=c.now + 600), ACTION),
        InvalidToken,
        "token is not yet valid",
    ),
    (
        "issued-far-in-the-future",
        lambda c: c.v.verify(mint(c.key, iat=c.now + 86_400, exp=c.now + 86_500), ACTION),
        InvalidToken,
        "token was issued in the future",
    ),
    (
        "lifetime-too-long",
        lambda c: c.v.verify(mint(c.key, exp=c.now + 30 * 86_400), ACTION),
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
        lambda c: c.v.verify(mint(c.key, entries=[{**ENTRY, "not_after": c.now}]), ACTION),
        InsufficientAuthorization,
        "the approval for this action ended at {now} (epoch seconds)",
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
        lambda c: _dpop(c, (t := _bound(c)), create_proof(AGENT, "PUT", URL, access_token=t, now=c.now - 3600)),
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
    ctx = Ctx(key=key, v=verifier(key), now=int(time.time()))
    with pytest.raises(ResourceError) as info:
        attack(ctx)
    refused = info.value
    assert type(refused) is error
    assert refused.description == description.format(kid=key.kid, now=ctx.now)
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


# fuzzing: whatever arrives is refused with the error the order of checks names, never a crash --
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
CLAIM_NAMES = st.sampled_from(
    ["iss", "aud", "sub", "client_id", "exp", "iat", "nbf", "jti", "cnf", "acr", "authorization_details", "x"]
)
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
FUZZ_NOW = 1_800_000_000  # the fuzzed verifiers' clock
# Values that get past the first checks more often: names used in headers, instants around the
# clock, a cnf.jkt.
HEADER_VALUES = JSON_VALUES | st.sampled_from(
    ["ES256", "RS256", "HS256", "none", "at+jwt", "AT+JWT", "application/at+jwt", "JWT", "dpop+jwt", "fuzz"]
)
NEAR_NOW = st.integers(FUZZ_NOW - 7200, FUZZ_NOW + 7200) | st.floats(FUZZ_NOW - 7200, FUZZ_NOW + 7200)
CLAIM_VALUES = JSON_VALUES | NEAR_NOW | st.fixed_dictionaries({"jkt": st.text(max_size=10)})
# The verifier's defaults (verifier() sets none of them) and RFC 9396's common fields plus the
# plan fields: an entry with any other member covers no action that does not name it.
LEEWAY, MAX_LIFETIME, MAX_TOKEN_BYTES = 30, 300, 16_384
ENTRY_FIELDS = {"type", "actions", "locations", "identifier", "datatypes", "privileges"} | {
    "max_uses",
    "not_before",
    "not_after",
}
# Every refusal's error code and status (RFC 6750 3.1, RFC 9449 7.1).
ERROR_AND_STATUS: dict[type[ResourceError], tuple[str, int]] = {
    InvalidToken: ("invalid_token", 401),
    InvalidDPoPProof: ("invalid_dpop_proof", 401),
    InsufficientAuthorization: ("insufficient_scope", 403),
}


class _NotJson(Exception):
    pass


def _as_read(value: Any) -> Any:
    """``value`` as the verifier's strict JSON reader (64-bit integers, IEEE doubles) gets it
    back from ``json.dumps``: NaN and the infinities are not JSON; larger integers are doubles."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _NotJson
    if type(value) is int and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, list):
        return [_as_read(item) for item in value]
    if isinstance(value, dict):
        return {name: _as_read(item) for name, item in value.items()}
    return value


def _number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def _shown(value: Any, limit: int) -> str:
    """A value echoed in a description: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _covers_action(entry: Any) -> bool:
    """Does an approved entry cover ACTION (RESOURCE_SERVER.md)? Fuzzed strings are at most ten
    characters, so none is a spelling of ACTION's location other than the exact one."""
    return (
        isinstance(entry, dict)
        and entry.get("type") == ACTION.type
        and isinstance(entry.get("actions"), list)
        and all(verb in entry["actions"] for verb in ACTION.actions)
        and isinstance(entry.get("locations"), list)
        and all(location in entry["locations"] for location in ACTION.locations)
        and entry.get("identifier") == ACTION.identifier
        and "datatypes" not in entry  # ACTION names none: an approval restricting them does not cover it
        and "privileges" not in entry
        and set(entry) <= ENTRY_FIELDS  # a type-specific field ACTION does not name is not covered
    )


@dataclass(frozen=True)
class Expected:
    """What ``verify`` must do: refuse with ``error`` and ``description`` (answering in the
    ``scheme`` challenge), or accept and consume the entry at ``entry_index``."""

    error: type[ResourceError] | None
    description: str = ""
    scheme: str = "Bearer"
    entry_index: int | None = None


GARBAGE_PROOF = "x.y.z"  # a DPoP proof whose header is not even base64url of JSON


def _expected(token: str, header: dict[str, Any], claims: dict[str, Any], *, as_dpop: bool) -> Expected:
    """The answer to ``token`` (``header`` and ``claims`` signed by FUZZ_KEY) for ACTION, by the
    verifier's order of checks (see ciba_service.rs.verifier): presented with the DPoP scheme and
    GARBAGE_PROOF when ``as_dpop``, else outside HTTP (no scheme, no proof)."""
    scheme = "DPoP" if as_dpop else "Bearer"

    def refused(error: type[ResourceError], description: str) -> Expected:
        return Expected(error, description, "DPoP" if error is InvalidDPoPProof else scheme)

    # 1-3: size, header, signature (always valid: FUZZ_KEY signed it)
    if len(token) > MAX_TOKEN_BYTES:
        return refused(InvalidToken, "token is too large")
    try:
        header = _as_read(header)
    except _NotJson:
        return refused(InvalidToken, "token header is not JSON")
    alg, typ, kid = header.get("alg"), header.get("typ"), header.get("kid")
    if alg != "ES256":
        return refused(InvalidToken, f"algorithm {_shown(alg, 80)} is not allowed")
    if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
        return refused(InvalidToken, f"token type {_shown(typ, 80)} is not an access token")
    if "jku" in header:
        return refused(InvalidToken, "header 'jku' is not accepted")
    if not isinstance(kid, str):
        return refused(InvalidToken, "token has no kid")
    if kid != FUZZ_KEY.kid:
        return refused(InvalidToken, "token signed by an unknown key")
    try:
        claims = _as_read(claims)
    except _NotJson:
        return refused(InvalidToken, "token payload is not JSON")
    # a token with a cnf claim is answered in DPoP terms from here on
    scheme = "DPoP" if as_dpop or "cnf" in claims else "Bearer"
    # 4: claims
    now = FUZZ_NOW
    aud, exp, iat, nbf, jti = (claims.get(name) for name in ("aud", "exp", "iat", "nbf", "jti"))
    if claims.get("iss") != ISS:
        return refused(InvalidToken, "token issuer is not trusted here")
    if not (aud == AUD or (isinstance(aud, list) and all(isinstance(a, str) for a in aud) and AUD in aud)):
        return refused(InvalidToken, "token is not intended for this resource server")
    # RFC 9068 2.2: sub and client_id, non-empty strings
    for name in ("sub", "client_id"):
        if not isinstance(claims.get(name), str) or not claims[name]:
            return refused(InvalidToken, f"token has no {name}")
    if not _number(exp) or not _number(iat):
        return refused(InvalidToken, "token lacks exp or iat")
    if now >= exp + LEEWAY:
        return refused(InvalidToken, "token has expired")
    if "nbf" in claims and (not _number(nbf) or now + LEEWAY < nbf):  # null is not absent
        return refused(InvalidToken, "token is not yet valid")
    if iat > now + LEEWAY:
        return refused(InvalidToken, "token was issued in the future")
    if exp - iat > MAX_LIFETIME:
        return refused(InvalidToken, "token lifetime is longer than accepted")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        return refused(InvalidToken, "token has no jti")
    if not isinstance(claims.get("authorization_details"), list):
        return refused(InvalidToken, "token carries no authorization_details")
    # 5: sender constraint (RFC 9449 7)
    cnf = claims.get("cnf")
    if as_dpop and "cnf" not in claims:
        return refused(InvalidToken, "the token is not DPoP-bound; present it with the Bearer scheme")
    if "cnf" in claims:  # "cnf": null is a binding we cannot read, not an unbound token
        if not (isinstance(cnf, dict) and cnf.keys() == {"jkt"} and isinstance(cnf["jkt"], str)):
            return refused(InvalidToken, "token is bound by an unsupported cnf confirmation method")
        if not as_dpop:
            return refused(InvalidDPoPProof, "a DPoP proof is required with this token")
        return refused(InvalidDPoPProof, "DPoP proof header is not base64url")  # GARBAGE_PROOF
    # 7: the action, each covering entry within its window
    usable: list[int] = []
    outside: str | None = None
    for index, entry in enumerate(claims["authorization_details"]):
        if not _covers_action(entry):
            continue
        not_before, not_after = entry.get("not_before"), entry.get("not_after")
        for name, value in (("not_before", not_before), ("not_after", not_after)):
            if name in entry and not _number(value):  # null is not absent
                return refused(InvalidToken, f"authorization_details[{index}] has an invalid {name}")
        if not_before is not None and now < not_before:
            outside = f"the approval for this action is valid from {int(not_before)} (epoch seconds)"
        elif not_after is not None and now >= not_after:
            outside = f"the approval for this action ended at {int(not_after)} (epoch seconds)"
        else:
            usable.append(index)
    if not usable:
        return refused(InsufficientAuthorization, outside or "the token's approval does not cover this action")
    # 9: one use of the first usable entry (a fresh verifier: none used yet)
    max_uses = claims["authorization_details"][usable[0]].get("max_uses")
    if "max_uses" in claims["authorization_details"][usable[0]] and (type(max_uses) is not int or max_uses < 1):
        return refused(InvalidToken, f"authorization_details[{usable[0]}] has an invalid max_uses")
    return Expected(None, scheme=scheme, entry_index=usable[0])


def _assert_answer(call: Callable[[], Any], expected: Expected) -> None:
    if expected.error is None:
        assert call().entry_index == expected.entry_index
        return
    with pytest.raises(ResourceError) as info:
        call()
    refused = info.value
    assert (type(refused), refused.description) == (expected.error, expected.description)
    assert (refused.error, refused.status_code) == ERROR_AND_STATUS[expected.error]
    assert refused.body() == {
        "error": refused.error,
        "error_description": expected.description,
        "authorization_details": [ACTION.as_authorization_details()],
    }
    assert (refused.www_authenticate() or "").startswith(f'{expected.scheme} realm="api", error="{refused.error}"')


@FUZZ
@given(
    header=st.dictionaries(st.sampled_from(["alg", "typ", "kid", "jku", "b64", "zip"]), HEADER_VALUES, max_size=3),
    claims=st.dictionaries(CLAIM_NAMES, CLAIM_VALUES, max_size=4),
    entry=st.dictionaries(ENTRY_NAMES, JSON_VALUES | NEAR_NOW, max_size=5),
)
def test_signed_garbage_is_refused_cleanly(
    header: dict[str, Any], claims: dict[str, Any], entry: dict[str, Any]
) -> None:
    """Tokens signed by the issuer's own key but carrying anything at all in header, claims and
    entries: each is refused with the error, description, status and challenge that the first
    check it fails names, or verified (consuming the entry that covers the action) when it
    fails none. Presented as DPoP with a garbage proof, none is ever accepted."""
    header = {"alg": "ES256", "typ": "at+jwt", "kid": FUZZ_KEY.kid, **header}
    claims = {
        **_claims(iat=FUZZ_NOW, exp=FUZZ_NOW + 60, authorization_details=[{**ENTRY, **entry}]),
        **claims,
    }
    token = _raw_sign(header, b64url_encode(json.dumps(claims).encode()), FUZZ_KEY.private_key)
    v = verifier(FUZZ_KEY, clock=lambda: FUZZ_NOW)
    as_dpop = _expected(token, header, claims, as_dpop=True)
    assert as_dpop.error is not None
    _assert_answer(
        lambda: v.verify(token, ACTION, scheme="DPoP", method="PUT", url=URL, dpop_proof=GARBAGE_PROOF), as_dpop
    )
    _assert_answer(lambda: v.verify(token, ACTION), _expected(token, header, claims, as_dpop=False))


@FUZZ
@given(
    token=st.text(max_size=200) | st.from_regex(r"[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-=+/]{0,40}\.[A-Za-z0-9_\-]{0,90}")
)
def test_arbitrary_strings_are_refused_cleanly(token: str) -> None:
    # Nothing but the issuer's key makes a valid signature: a string is an invalid token.
    with pytest.raises(InvalidToken) as info:
        verifier(FUZZ_KEY).verify(token, ACTION)
    assert (info.value.error, info.value.status_code) == ("invalid_token", 401)


def _proof_refusal(proof: str, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """The description verify_proof must refuse ``proof`` with (RFC 9449 4.3, in its order) when
    called as below: ``header`` and ``claims`` are what AGENT signed in it."""
    if len(proof) > 4096:
        return "DPoP proof is too large"
    for what, value in (("header", header), ("payload", claims)):
        try:
            _as_read(value)
        except _NotJson:
            return f"DPoP proof {what} is not JSON"  # strict RFC 8259: no NaN or infinities
    if header.get("typ") != "dpop+jwt":
        return "DPoP proof typ must be 'dpop+jwt'"
    if header.get("alg") != "ES256":
        return f"DPoP proof algorithm {_shown(header.get('alg'), 40)} is not accepted"
    if "crit" in header:
        return "DPoP proof has critical header parameters we do not understand"
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        return "DPoP proof has no jwk header"
    if jwk.keys() & {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}:
        return "DPoP proof jwk contains private key material"
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        return "DPoP proof jwk is not a P-256 key"
    if jwk != public_jwk(AGENT.public_key()):
        x, y = jwk.get("x"), jwk.get("y")
        if not isinstance(x, str) or not isinstance(y, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", x + y):
            return "DPoP proof jwk is malformed"
        return "DPoP proof jwk is not a valid P-256 public key"  # fuzzed strings are too short for a coordinate
    # AGENT's key, so the signature is valid
    jti, iat = claims.get("jti"), claims.get("iat")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        return "DPoP proof has no valid jti"
    for name in ("htm", "htu"):
        if not isinstance(claims.get(name), str):
            return f"DPoP proof has no {name}"
    if not _number(iat) or abs(iat) > 10**11:
        return "DPoP proof has no iat"
    if not isinstance(claims.get("ath"), str):
        return "DPoP proof has no ath for the access token"
    if claims["htm"] != "PUT":
        return "DPoP proof is for another HTTP method"
    if claims["htu"] != URL:  # fuzzed strings other than URL are too short to be another spelling of it
        return "DPoP proof is for another URL"
    if iat > FUZZ_NOW + LEEWAY:
        return "DPoP proof was issued in the future"
    if iat < FUZZ_NOW - 60 - LEEWAY:
        return "DPoP proof is too old"
    return "DPoP proof ath does not match the access token"  # a fuzzed ath is never the token's hash


@FUZZ
@given(
    header=st.dictionaries(st.sampled_from(["typ", "alg", "jwk", "crit"]), HEADER_VALUES, max_size=3),
    claims=st.dictionaries(
        st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce"]),
        JSON_VALUES | NEAR_NOW | st.sampled_from(["PUT", "GET", URL]),
        max_size=4,
    ),
)
def test_garbage_dpop_proofs_are_refused_cleanly(header: dict[str, Any], claims: dict[str, Any]) -> None:
    """Proofs signed by the agent's key but carrying anything at all in header and claims: each
    is refused as invalid_dpop_proof (never use_dpop_nonce: no nonce is asked for) with the
    description of the first RFC 9449 4.3 check it fails; none is accepted."""
    from ciba_service.core.replay import InMemoryReplayCache
    from ciba_service.rfc9449 import DPoPProofError, verify_proof

    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(AGENT.public_key()), **header}
    claims = {"jti": "j", "htm": "PUT", "htu": URL, "iat": FUZZ_NOW, **claims}
    proof = _raw_sign(header, b64url_encode(json.dumps(claims).encode()), AGENT)
    with pytest.raises(DPoPProofError) as info:
        verify_proof(proof, method="PUT", url=URL, access_token="t", replay=InMemoryReplayCache(), now=FUZZ_NOW)
    assert type(info.value) is DPoPProofError
    assert (info.value.error, info.value.description) == ("invalid_dpop_proof", _proof_refusal(proof, header, claims))
