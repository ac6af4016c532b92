"""Malformed requests at the OAuth endpoints, one table row each.

Derived from OpenID CIBA Core 1.0 (sections 7, 10, 11, 13), the FAPI-CIBA conformance plan
(``fapiciba/``: request-object claims and lifetimes, multiple hints, wrong client, wrong
``auth_req_id``, expired ``auth_req_id``, reuse), RFC 9396 (``invalid_authorization_details``),
RFC 6749 2.3 / 5.2 and RFC 7523 (client authentication) and the SPIFFE JWT-SVID profile.

Every row is one :class:`Case`: how to build the request (on a module-scoped app, so rows that
need earlier state build it themselves), the expected status, ``error`` and the exact
``error_description`` (a compiled pattern only where the text embeds a value we do not
choose, such as a parser's message). Every answer must be ``no-store``; an ``invalid_client``
answer carries a Basic challenge exactly when the client used Basic, sent no credentials or
another Authorization scheme. Positive controls (``error=None``) send the same request with
the one defect removed, so each negative row tests what it claims.

A row may carry ``bug=`` (a documented product defect, run as ``xfail(strict=True)``); none
does today: the six found while writing this module are fixed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm

from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig, Settings
from ciba_service.core.model import User
from ciba_service.core.security import auth_req_id_key, b64url_encode
from ciba_service.server.embedded import EmbeddedIssuer
from ciba_service.server.provider import Provider
from ciba_service.server.tokens import mint_access_token, mint_id_token
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from tests.support.service import ACTION, BASE, CIBA, Clock, RecordingNotifier, enroll, make_settings

FORM = "application/x-www-form-urlencoded"
BASIC_CHALLENGE = 'Basic realm="ciba-service"'
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"

# clients ----------------------------------------------------------------------------------
AGENT, AGENT_SECRET = "agent-1", "secret-agent-1"  # secret client (basic or post)
LIMITED, LIMITED_SECRET = "agent-limited", "secret-limited"  # only key_rotation
NOCIBA, NOCIBA_SECRET = "agent-no-ciba", "secret-no-ciba"  # without the CIBA grant
PK = "pk-agent"  # private_key_jwt
SPIFFE, SPIFFE_ID = "spiffe-agent", "spiffe://example.test/agent/ops"
SPIFFE_2, SPIFFE_ID_2 = "spiffe-billing", "spiffe://example.test/agent/billing"
SIGNED, SIGNED_SECRET = "signed-agent", "secret-signed"  # must send ES256 request objects
PING, PING_SECRET = "ping-agent", "secret-ping"
PUSH, PUSH_SECRET = "push-agent", "secret-push"
RS, RS_SECRET = "resource-server", "secret-rs"  # may introspect
CALLBACK = "http://127.0.0.1:9/cb"

PK_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNED_KEY = ec.generate_private_key(ec.SECP256R1())
BUNDLE_KEY = ec.generate_private_key(ec.SECP256R1())
SPIRE_KEY = ec.generate_private_key(ec.SECP256R1())  # published as SPIFFE bundles do: use=jwt-svid
ROGUE_KEY = ec.generate_private_key(ec.SECP256R1())  # registered nowhere
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: str) -> dict[str, str]:
    jwk: dict[str, str] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, **extra}


def cheap_hash(secret: str) -> str:
    """``hash_secret``'s format (``scrypt$N$r$p$salt$hash``) at a low cost. ``verify_secret``
    reads the cost from the stored string, so this only keeps ~200 authentications fast."""
    salt = hashlib.sha256(secret.encode()).digest()[:16]
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=16, r=1, p=1, dklen=32)
    return f"scrypt$16$1$1${b64url_encode(salt)}${b64url_encode(digest)}"


def clients() -> list[ClientConfig]:
    return [
        ClientConfig(
            client_id=AGENT, name="Agent", client_secret_hash=cheap_hash(AGENT_SECRET), scopes=["openid", "profile"]
        ),
        ClientConfig(
            client_id=LIMITED,
            client_secret_hash=cheap_hash(LIMITED_SECRET),
            authorization_details_types=["key_rotation"],
        ),
        ClientConfig(client_id=NOCIBA, client_secret_hash=cheap_hash(NOCIBA_SECRET), grant_types=[]),
        ClientConfig(
            client_id=PK,
            token_endpoint_auth_method="private_key_jwt",
            jwks={"keys": [public_jwk(PK_KEY, "pk-1")]},
        ),
        ClientConfig(client_id=SPIFFE, token_endpoint_auth_method="spiffe_jwt", spiffe_id=SPIFFE_ID),
        ClientConfig(client_id=SPIFFE_2, token_endpoint_auth_method="spiffe_jwt", spiffe_id=SPIFFE_ID_2),
        ClientConfig(
            client_id=SIGNED,
            client_secret_hash=cheap_hash(SIGNED_SECRET),
            jwks={"keys": [public_jwk(SIGNED_KEY, "ro-1")]},
            backchannel_authentication_request_signing_alg="ES256",
        ),
        ClientConfig(
            client_id=PING,
            client_secret_hash=cheap_hash(PING_SECRET),
            backchannel_token_delivery_mode="ping",
            backchannel_client_notification_endpoint=CALLBACK,
        ),
        ClientConfig(
            client_id=PUSH,
            client_secret_hash=cheap_hash(PUSH_SECRET),
            backchannel_token_delivery_mode="push",
            backchannel_client_notification_endpoint=CALLBACK,
        ),
        ClientConfig(client_id=RS, client_secret_hash=cheap_hash(RS_SECRET), grant_types=[], introspection=True),
    ]


# requests ---------------------------------------------------------------------------------
Auth = Callable[["World"], tuple[str | None, list[tuple[str, str]]]]


def basic_header(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
    return "Basic " + base64.b64encode(raw.encode()).decode()


def basic(client_id: str, secret: str) -> Auth:
    return lambda w: (basic_header(client_id, secret), [])


def post(client_id: str, secret: str) -> Auth:
    return lambda w: (None, [("client_id", client_id), ("client_secret", secret)])


def header(value: str) -> Auth:
    return lambda w: (value, [])


def no_auth(w: World) -> tuple[str | None, list[tuple[str, str]]]:
    return None, []


def pk(**claims: Any) -> Auth:
    """private_key_jwt as ``pk-agent``; ``claims`` override or (None) drop claims."""

    def auth(w: World) -> tuple[str | None, list[tuple[str, str]]]:
        return None, [("client_assertion_type", JWT_BEARER), ("client_assertion", w.assertion(**claims))]

    return auth


def spiffe(*, client_id: str | None = SPIFFE, **claims: Any) -> Auth:
    def auth(w: World) -> tuple[str | None, list[tuple[str, str]]]:
        pairs = [("client_assertion_type", JWT_SPIFFE), ("client_assertion", w.svid(**claims))]
        return None, ([("client_id", client_id)] if client_id else []) + pairs

    return auth


AGENT_BASIC = basic(AGENT, AGENT_SECRET)
SIGNED_BASIC = basic(SIGNED, SIGNED_SECRET)


@dataclass(frozen=True)
class Call:
    path: str
    form: Sequence[tuple[str, str]] = ()
    authorization: str | None = None
    content: bytes | None = None  # replaces the encoded form
    content_type: str | None = FORM


def sign(claims: dict[str, Any], key: Any = PK_KEY, *, alg: str = "ES256", kid: str | None = "pk-1", **hdr: Any) -> str:
    """A compact JWS over exactly ``claims`` (PyJWS, not PyJWT: no claim is checked or added,
    so a malformed claim such as a numeric ``iss`` can be sent)."""
    headers = {**({"kid": kid} if kid is not None else {}), **hdr}
    payload = json.dumps(claims, separators=(",", ":")).encode()
    return jwt.api_jws.encode(payload, None if alg == "none" else key, algorithm=alg, headers=headers)


def hs256_with_public_key(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    """The classic key-confusion token: HMAC keyed with the registered public key."""

    def part(value: dict[str, Any]) -> str:
        return b64url_encode(json.dumps(value, separators=(",", ":")).encode())

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    secret = json.dumps(public_jwk(key, kid)).encode()
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(mac)}"


def with_claims(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    claims = {**base, **overrides}
    return {k: v for k, v in claims.items() if v is not None}


@dataclass
class World:
    """One app on its own store and clock, shared by the rows of a module."""

    provider: Provider
    client: TestClient
    clock: Clock
    authenticator: SoftAuthenticator
    settings: Settings
    alice: User

    @property
    def now(self) -> int:
        return int(self.clock.now)

    # signed JWTs -----------------------------------------------------------------------
    def assertion(
        self, *, key: Any = PK_KEY, alg: str = "ES256", kid: str | None = "pk-1", hdr: Any = None, **claims: Any
    ) -> str:
        base = {"iss": PK, "sub": PK, "aud": BASE, "iat": self.now, "exp": self.now + 60, "jti": uuid.uuid4().hex}
        return sign(with_claims(base, claims), key, alg=alg, kid=kid, **(hdr or {}))

    def svid(self, *, key: Any = BUNDLE_KEY, kid: str | None = "bundle-1", **claims: Any) -> str:
        base = {"sub": SPIFFE_ID, "aud": [BASE], "iat": self.now, "exp": self.now + 60}
        return sign(with_claims(base, claims), key, kid=kid)

    def login_hint_token(
        self, *, key: Any = PK_KEY, alg: str = "ES256", kid: str | None = "pk-1", **claims: Any
    ) -> str:
        base = {
            "iss": PK,
            "aud": BASE,
            "iat": self.now,
            "exp": self.now + 60,
            "sub_id": {"format": "opaque", "id": "alice"},
        }
        return sign(with_claims(base, claims), key, alg=alg, kid=kid)

    def request_object(
        self, *, key: Any = SIGNED_KEY, alg: str = "ES256", kid: str | None = "ro-1", **claims: Any
    ) -> str:
        base = {
            "iss": SIGNED,
            "aud": BASE,
            "iat": self.now,
            "nbf": self.now,
            "exp": self.now + 300,
            "jti": uuid.uuid4().hex,
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "BM-1",
            "authorization_details": ACTION,
        }
        return sign(with_claims(base, claims), key, alg=alg, kid=kid)

    def id_token(self, *, key: Any = None, client_id: str = AGENT, **claims: Any) -> str:
        token = mint_id_token(
            key=self.provider.signing_key,
            issuer=BASE,
            subject=self.alice.user_id,
            client_id=client_id,
            auth_req_id="auth-req-id",
            auth_time=self.now,
            now=self.now,
            lifetime=120,
        )
        if key is None and not claims:
            return token
        payload = {**jwt.decode(token, options={"verify_signature": False}), **claims}
        return sign(payload, key or self.provider.signing_key.private_key, kid=self.provider.signing_key.kid)

    def access_token(self) -> str:
        token, _ = mint_access_token(
            key=self.provider.signing_key,
            issuer=BASE,
            subject=self.alice.user_id,
            audience="resource-api",
            client_id=AGENT,
            scope="openid",
            authorization_details=ACTION,
            approval={},
            auth_time=self.now,
            now=self.now,
            lifetime=120,
        )
        return token

    # requests --------------------------------------------------------------------------
    def bc(self, *, auth: Auth = AGENT_BASIC, extra: Sequence[tuple[str, str]] = (), **fields: Any) -> Call:
        """A backchannel request: a valid one, with ``fields`` replaced (None drops one;
        lists/dicts for authorization_details are JSON-encoded) and ``extra`` pairs appended."""
        body: dict[str, Any] = {
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "BM-1",
            "authorization_details": ACTION,
        }
        body.update(fields)
        authorization, auth_pairs = auth(self)
        pairs = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in body.items() if v is not None]
        return Call("/bc-authorize", [*pairs, *extra, *auth_pairs], authorization)

    def signed(self, *, auth: Auth = SIGNED_BASIC, extra: Sequence[tuple[str, str]] = (), **claims: Any) -> Call:
        """A signed authentication request (CIBA 7.1.1) from ``signed-agent``."""
        authorization, auth_pairs = auth(self)
        return Call("/bc-authorize", [("request", self.request_object(**claims)), *extra, *auth_pairs], authorization)

    def token(
        self, auth_req_id: str | None = "unknown", *, auth: Auth = AGENT_BASIC, grant_type: str | None = CIBA
    ) -> Call:
        authorization, auth_pairs = auth(self)
        body = [("grant_type", grant_type), ("auth_req_id", auth_req_id)]
        return Call("/token", [(k, v) for k, v in body if v is not None] + auth_pairs, authorization)

    def send(self, call: Call) -> httpx.Response:
        headers = {}
        if call.content_type is not None:
            headers["content-type"] = call.content_type
        if call.authorization is not None:
            headers["authorization"] = call.authorization
        content = call.content if call.content is not None else urlencode(list(call.form)).encode()
        return self.client.post(call.path, content=content, headers=headers)

    # state -----------------------------------------------------------------------------
    def new_request(self, call: Call | None = None) -> str:
        response = self.send(call or self.bc())
        assert response.status_code == 200, response.text
        auth_req_id: str = response.json()["auth_req_id"]
        return auth_req_id

    def approval_id(self, auth_req_id: str) -> str:
        request = self.provider.store.find_request_by_auth_req_id(auth_req_id_key(auth_req_id))
        assert request is not None
        return request.approval_id

    def approve(self, auth_req_id: str) -> str:
        approval_id = self.approval_id(auth_req_id)
        view = self.client.get(f"/approve/{approval_id}/details").json()
        credential = self.authenticator.get(view["publicKey"], origin=BASE)
        response = self.client.post(f"/approve/{approval_id}/approve", json={"credential": credential})
        assert response.status_code == 200, response.text
        return auth_req_id

    def deny(self, auth_req_id: str) -> str:
        response = self.client.post(f"/approve/{self.approval_id(auth_req_id)}/deny", json={})
        assert response.status_code == 200, response.text
        return auth_req_id

    def first(self, call: Call) -> Call:
        """Send ``call`` once (it must succeed) and return it for the replay."""
        response = self.send(call)
        assert response.status_code == 200, response.text
        return call

    def first_poll_then_again(self) -> Call:
        """A poll that comes right after the first one (which answered authorization_pending)."""
        call = self.token(self.new_request())
        response = self.send(call)
        assert response.json()["error"] == "authorization_pending", response.text
        return call

    def expired_request_poll(self) -> Call:
        auth_req_id = self.new_request(self.bc(requested_expiry="1"))
        self.clock.advance(1)
        return self.token(auth_req_id)

    def issued_token(self) -> str:
        response = self.send(self.token(self.approve(self.new_request())))
        assert response.status_code == 200, response.text
        access_token: str = response.json()["access_token"]
        return access_token


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[World], Call]
    status: int = 400
    error: str | None = "invalid_request"  # None: success
    description: str | re.Pattern[str] | None = None
    world: str = "main"
    # WWW-Authenticate: Basic expected; None means "when the answer is invalid_client"
    challenge: bool | None = None
    # the exact members of a success body (None: not checked)
    keys: frozenset[str] | None = frozenset({"auth_req_id", "expires_in", "interval"})
    body: dict[str, Any] = field(default_factory=dict)  # success body members to match exactly
    bug: str | None = None  # a documented product defect: xfail(strict)


def ok(id: str, build: Callable[[World], Call], **kw: Any) -> Case:
    return Case(id, build, status=200, error=None, **kw)


def bad(id: str, build: Callable[[World], Call], description: str | re.Pattern[str], **kw: Any) -> Case:
    return Case(id, build, description=description, **kw)


def client_error(id: str, build: Callable[[World], Call], description: str, **kw: Any) -> Case:
    return Case(id, build, status=401, error="invalid_client", description=description, **kw)


def rar(id: str, details: Any, description: str | re.Pattern[str], *, auth: Auth = AGENT_BASIC, **kw: Any) -> Case:
    return Case(
        id,
        lambda w: w.bc(auth=auth, authorization_details=details),
        error="invalid_authorization_details",
        description=description,
        **kw,
    )


def entry(**fields: Any) -> list[dict[str, Any]]:
    """One iam_policy entry with ``fields`` replaced (None drops one)."""
    return [with_claims(ACTION[0], fields)]


PAYMENT: dict[str, Any] = {
    "type": "payment_initiation",
    "actions": ["initiate"],
    "instructedAmount": {"currency": "EUR", "amount": "123.50"},
    "creditorName": "Merchant A",
    "creditorAccount": {"iban": "DE02100100109307118603"},
}


def payment(**fields: Any) -> list[dict[str, Any]]:
    return [with_claims(PAYMENT, fields)]


def amount(**fields: Any) -> list[dict[str, Any]]:
    return payment(instructedAmount=with_claims(PAYMENT["instructedAmount"], fields))


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(levels):
        value = {"n": value}
    return value


LONG = "x" * 65
CONFORMANCE_MESSAGE = (
    "1234 \U0001f44d\U0001f3ff \u54c1\u5ddd Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do "
    "eiusmod tempor incididunt ut labore et dolore magna aliqua."
)
SUB_ID_ERROR = "login_hint_token sub_id must be an 'opaque' or 'iss_sub' subject identifier"
NOT_OUR_ID_TOKEN = "id_token_hint is not an ID token issued by this provider"
B64TOKEN_ERROR = "client_notification_token must be an RFC 6750 b64token of at most 1024 characters"
POSITIVE_EXPIRY = "requested_expiry must be a positive integer number of seconds"
LOCATION_ERROR = "authorization_details[0]: 'locations'[0] must be an absolute http(s) URI without fragment"
TOKEN_KEYS = frozenset({"access_token", "token_type", "expires_in", "id_token", "scope", "authorization_details"})


def control(char: str) -> Case:
    return bad(
        f"binding_message-U+{ord(char):04X}",
        lambda w: w.bc(binding_message=f"BM{char}1"),
        f"binding_message contains a control, format or unusual space character (U+{ord(char):04X})",
        error="invalid_binding_message",
    )


def expiry(id: str, value: str, description: str = POSITIVE_EXPIRY) -> Case:
    return bad(f"requested_expiry-{id}", lambda w: w.bc(requested_expiry=value), description)


def missing_ro_claim(claim: str) -> Case:
    return bad(
        f"request-object-missing-{claim}",
        lambda w: w.signed(**{claim: None}),
        f"request object lacks the '{claim}' claim",
    )


def outside_ro(name: str, value: str) -> Case:
    return bad(
        f"request-object-{name}-outside",
        lambda w: w.signed(extra=[(name, value)]),
        f"with 'request', '{name}' must be inside the request object",
    )


# the table --------------------------------------------------------------------------------
CASES: list[Case] = [
    # transport: form encoding, size, charset (RFC 6749 3.2: application/x-www-form-urlencoded)
    ok("form-charset-parameter", lambda w: replace(w.bc(), content_type=f"{FORM}; charset=UTF-8")),
    ok("form-content-type-case-insensitive", lambda w: replace(w.bc(), content_type=FORM.upper())),
    *(
        bad(
            f"content-type-{name}",
            lambda w, ct=ct: replace(w.bc(), content_type=ct),
            "the request body must be application/x-www-form-urlencoded",
        )
        for name, ct in [
            ("json", "application/json"),
            ("missing", None),
            ("multipart", "multipart/form-data; boundary=x"),
            ("text", "text/plain"),
        ]
    ),
    bad(
        "token-content-type-json",
        lambda w: replace(
            w.token(), content=json.dumps({"grant_type": CIBA}).encode(), content_type="application/json"
        ),
        "the request body must be application/x-www-form-urlencoded",
    ),
    bad(
        "body-over-64KiB",
        lambda w: w.bc(extra=[("padding", "x" * 64 * 1024)]),
        "request body too large",
    ),
    bad(
        "body-not-utf8", lambda w: replace(w.bc(), content=b"scope=openid&login_hint=\xff"), "request body is not UTF-8"
    ),
    # repeated parameters (RFC 6749 3.1: "MUST NOT be included more than once")
    *(
        bad(
            f"repeated-{name}",
            lambda w, name=name, value=value: w.bc(**{name: value}, extra=[(name, value)]),
            f"parameter '{name}' is included more than once",
        )
        for name, value in [
            ("scope", "openid"),
            ("login_hint", "alice"),
            ("binding_message", "BM-2"),
            ("authorization_details", json.dumps(ACTION)),
            ("requested_expiry", "30"),
        ]
    ),
    bad(
        "repeated-scope-second-empty",
        lambda w: w.bc(extra=[("scope", "")]),
        "parameter 'scope' is included more than once",
    ),
    bad(
        "repeated-client_id",
        lambda w: w.bc(auth=post(AGENT, AGENT_SECRET), extra=[("client_id", AGENT)]),
        "parameter 'client_id' is included more than once",
    ),
    bad(
        "repeated-client_assertion",
        lambda w: w.bc(auth=pk(), extra=[("client_assertion", w.assertion())]),
        "parameter 'client_assertion' is included more than once",
    ),
    bad(
        "token-repeated-grant_type",
        lambda w: replace(w.token(), form=[*w.token().form, ("grant_type", CIBA)]),
        "parameter 'grant_type' is included more than once",
    ),
    bad(
        "token-repeated-auth_req_id",
        lambda w: replace(w.token(), form=[*w.token().form, ("auth_req_id", "other")]),
        "parameter 'auth_req_id' is included more than once",
    ),
    # missing and empty parameters (RFC 6749 3.1: empty means omitted)
    bad("scope-missing", lambda w: w.bc(scope=None), "missing required parameter 'scope'"),
    bad("scope-empty", lambda w: w.bc(scope=""), "missing required parameter 'scope'"),
    bad(
        "authorization_details-missing",
        lambda w: w.bc(authorization_details=None),
        "authorization_details is required: tokens are issued per action",
    ),
    bad(
        "authorization_details-empty-value",
        lambda w: w.bc(authorization_details=""),
        "authorization_details is required: tokens are issued per action",
    ),
    ok("binding_message-empty-is-absent", lambda w: w.bc(binding_message="")),
    ok("binding_message-absent", lambda w: w.bc(binding_message=None)),
    # scope (CIBA 7.1: MUST include openid; RFC 6749 3.3: space-delimited)
    bad("scope-without-openid", lambda w: w.bc(scope="profile"), "scope must include 'openid'", error="invalid_scope"),
    bad(
        "scope-openid-wrong-case", lambda w: w.bc(scope="OpenID"), "scope must include 'openid'", error="invalid_scope"
    ),
    bad(
        "scope-not-allowed",
        lambda w: w.bc(scope="openid email"),
        "scope 'email' is not allowed for this client",
        error="invalid_scope",
    ),
    bad(
        "scope-not-allowed-for-this-client",
        lambda w: w.bc(auth=basic(LIMITED, LIMITED_SECRET), scope="openid profile"),
        "scope 'profile' is not allowed for this client",
        error="invalid_scope",
    ),
    *(
        bad(
            f"scope-{name}",
            lambda w, scope=scope: w.bc(scope=scope),
            "scope has empty values; separate scopes with single spaces",
            error="invalid_scope",
        )
        for name, scope in [
            ("double-space", "openid  profile"),
            ("leading-space", " openid"),
            ("trailing-space", "openid "),
        ]
    ),
    bad(
        "scope-tab-separated",
        lambda w: w.bc(scope="openid\tprofile"),
        "scope must include 'openid'",
        error="invalid_scope",
    ),
    ok("scope-other-order", lambda w: w.bc(scope="profile openid")),
    ok("scope-openid-twice", lambda w: w.bc(scope="openid openid")),
    # hints (CIBA 7.1: exactly one of login_hint_token, id_token_hint, login_hint)
    bad(
        "hint-none", lambda w: w.bc(login_hint=None), "one of login_hint, login_hint_token or id_token_hint is required"
    ),
    bad(
        "hint-login_hint-and-login_hint_token",
        lambda w: w.bc(login_hint_token="eyJ.x.y"),
        "only one hint may be given, got login_hint, login_hint_token",
    ),
    bad(
        "hint-login_hint-and-id_token_hint",
        lambda w: w.bc(id_token_hint="eyJ.x.y"),
        "only one hint may be given, got login_hint, id_token_hint",
    ),
    bad(
        "hint-login_hint_token-and-id_token_hint",
        lambda w: w.bc(login_hint=None, login_hint_token="a", id_token_hint="b"),
        "only one hint may be given, got login_hint_token, id_token_hint",
    ),
    bad(
        "hint-three",
        lambda w: w.bc(login_hint_token="a", id_token_hint="b"),
        "only one hint may be given, got login_hint, login_hint_token, id_token_hint",
    ),
    bad(
        "login_hint-unknown",
        lambda w: w.bc(login_hint="nobody"),
        "no enabled user matches the hint 'nobody'",
        error="unknown_user_id",
    ),
    bad(
        "login_hint-disabled-user",
        lambda w: w.bc(login_hint="carol"),
        "user 'carol' is disabled and cannot be asked to approve",
        error="unknown_user_id",
    ),
    bad(
        "login_hint-user-without-passkey",
        lambda w: w.bc(login_hint="bob"),
        "user 'bob' has no passkey enrolled and cannot approve",
        error="unknown_user_id",
    ),
    # login_hint_token: a JWT signed with the client's registered key, RFC 9493 sub_id
    ok("login_hint_token-opaque", lambda w: w.bc(auth=pk(), login_hint=None, login_hint_token=w.login_hint_token())),
    ok(
        "login_hint_token-iss_sub",
        lambda w: w.bc(
            auth=pk(),
            login_hint=None,
            login_hint_token=w.login_hint_token(sub_id={"format": "iss_sub", "iss": BASE, "sub": w.alice.user_id}),
        ),
    ),
    bad(
        "login_hint_token-expired",
        lambda w: w.bc(
            auth=pk(), login_hint=None, login_hint_token=w.login_hint_token(iat=w.now - 120, exp=w.now - 60)
        ),
        "login_hint_token has expired",
        error="expired_login_hint_token",
    ),
    *(
        bad(
            f"login_hint_token-{name}",
            lambda w, make=make: w.bc(auth=pk(), login_hint=None, login_hint_token=make(w)),
            description,
        )
        for name, make, description in [
            (
                "bad-signature",
                lambda w: w.login_hint_token(key=ROGUE_KEY),
                "login_hint_token signature is invalid (Signature verification failed)",
            ),
            (
                "unregistered-key",
                lambda w: w.login_hint_token(key=ROGUE_KEY, kid="rogue"),
                "login_hint_token is signed by an unregistered key",
            ),
            (
                "wrong-aud",
                lambda w: w.login_hint_token(aud="https://other.example"),
                "login_hint_token 'aud' does not name this provider",
            ),
            ("missing-sub_id", lambda w: w.login_hint_token(sub_id=None), "login_hint_token lacks the 'sub_id' claim"),
            ("missing-exp", lambda w: w.login_hint_token(exp=None), "login_hint_token lacks the 'exp' claim"),
            (
                "sub_id-unknown-format",
                lambda w: w.login_hint_token(sub_id={"format": "email", "email": "alice@example.test"}),
                SUB_ID_ERROR,
            ),
            ("sub_id-not-an-object", lambda w: w.login_hint_token(sub_id="alice"), SUB_ID_ERROR),
            (
                "iss_sub-other-issuer",
                lambda w: w.login_hint_token(
                    sub_id={"format": "iss_sub", "iss": "https://other.example", "sub": w.alice.user_id}
                ),
                SUB_ID_ERROR,
            ),
            (
                "opaque-id-not-a-string",
                lambda w: w.login_hint_token(sub_id={"format": "opaque", "id": 7}),
                SUB_ID_ERROR,
            ),
            (
                "alg-none",
                lambda w: w.login_hint_token(alg="none"),
                "login_hint_token algorithm 'none' is not allowed",
            ),
            ("not-a-jwt", lambda w: "not-a-jwt", "login_hint_token is not a well-formed JWT"),
            (
                "nbf-in-future",
                lambda w: w.login_hint_token(nbf=w.now + 600, exp=w.now + 900),
                "login_hint_token is not yet valid",
            ),
            (
                "lifetime-over-60-minutes",
                lambda w: w.login_hint_token(exp=w.now + 3601),
                "login_hint_token lifetime exceeds 3600 seconds",
            ),
        ]
    ),
    bad(
        "login_hint_token-opaque-unknown-user",
        lambda w: w.bc(
            auth=pk(), login_hint=None, login_hint_token=w.login_hint_token(sub_id={"format": "opaque", "id": "nobody"})
        ),
        "no enabled user matches the hint 'nobody'",
        error="unknown_user_id",
    ),
    bad(
        "login_hint_token-client-without-keys",
        lambda w: w.bc(login_hint=None, login_hint_token=w.login_hint_token()),
        "login_hint_token needs keys registered for the client",
    ),
    # id_token_hint: an ID token this provider issued to this client
    ok("id_token_hint", lambda w: w.bc(login_hint=None, id_token_hint=w.id_token())),
    ok(
        "id_token_hint-expired-is-still-a-hint",
        lambda w: w.bc(login_hint=None, id_token_hint=w.id_token(iat=w.now - 7200, exp=w.now - 3600)),
    ),
    bad(
        "id_token_hint-not-ours",
        lambda w: w.bc(login_hint=None, id_token_hint=w.id_token(key=ROGUE_KEY)),
        f"{NOT_OUR_ID_TOKEN} (Signature verification failed)",
    ),
    bad(
        "id_token_hint-for-another-client",
        lambda w: w.bc(login_hint=None, id_token_hint=w.id_token(client_id=LIMITED)),
        "id_token_hint was not issued to this client",
    ),
    bad(
        "id_token_hint-access-token",
        lambda w: w.bc(login_hint=None, id_token_hint=w.access_token()),
        f"{NOT_OUR_ID_TOKEN} (not an ID token)",
    ),
    bad(
        "id_token_hint-garbage",
        lambda w: w.bc(login_hint=None, id_token_hint="garbage"),
        re.compile(re.escape(NOT_OUR_ID_TOKEN) + r" \(.+\)"),
    ),
    bad(
        "id_token_hint-other-issuer",
        lambda w: w.bc(login_hint=None, id_token_hint=w.id_token(iss="https://other.example")),
        f"{NOT_OUR_ID_TOKEN} (Invalid issuer)",
    ),
    bad(
        "id_token_hint-unknown-subject",
        lambda w: w.bc(login_hint=None, id_token_hint=w.id_token(sub="no-such-user")),
        "no enabled user matches the hint 'no-such-user'",
        error="unknown_user_id",
    ),
    bad(
        "id_token_hint-alg-none",
        lambda w: w.bc(
            login_hint=None,
            id_token_hint=sign(jwt.decode(w.id_token(), options={"verify_signature": False}), alg="none"),
        ),
        re.compile(re.escape(NOT_OUR_ID_TOKEN) + r" \(.+\)"),
    ),
    ok(
        # the user_code world's clock runs ahead of the wall clock: the hint's iat is judged by
        # the provider's clock, not PyJWT's
        "id_token_hint-fresh-while-clock-ahead-of-wall-clock",
        lambda w: w.bc(login_hint=None, id_token_hint=w.id_token(), user_code="4711"),
        world="user_code",
    ),
    # user_code (CIBA 7.1, 13)
    bad(
        "user_code-when-unsupported",
        lambda w: w.bc(user_code="4711"),
        "'user_code' is not supported by this provider",
    ),
    ok("user_code-right", lambda w: w.bc(user_code="4711"), world="user_code"),
    ok("user_code-for-user-without-code", lambda w: w.bc(login_hint="dave", user_code="0000"), world="user_code"),
    bad(
        "user_code-missing",
        lambda w: w.bc(),
        "this user requires a user_code",
        error="missing_user_code",
        world="user_code",
    ),
    bad(
        "user_code-empty",
        lambda w: w.bc(user_code=""),
        "this user requires a user_code",
        error="missing_user_code",
        world="user_code",
    ),
    bad(
        "user_code-wrong",
        lambda w: w.bc(user_code="1234"),
        "user_code is not valid for this user",
        error="invalid_user_code",
        world="user_code",
    ),
    bad(
        "user_code-repeated",
        lambda w: w.bc(user_code="4711", extra=[("user_code", "4711")]),
        "parameter 'user_code' is included more than once",
        world="user_code",
    ),
    bad(
        "user_code-unknown-user-first",
        lambda w: w.bc(login_hint="nobody", user_code="4711"),
        "no enabled user matches the hint 'nobody'",
        error="unknown_user_id",
        world="user_code",
    ),
    # binding_message (CIBA 7.1, 13: invalid_binding_message)
    ok("binding_message-64-characters", lambda w: w.bc(binding_message="x" * 64)),
    ok("binding_message-unicode-letters-and-symbols", lambda w: w.bc(binding_message="Überweisung ✅ 42")),
    # fapi-ciba-id1-ensure-authorization-request-with-potentially-bad-binding-message: the server
    # either shows it or answers invalid_binding_message; its first characters fit and are shown.
    ok("binding_message-conformance-emoji-and-kanji", lambda w: w.bc(binding_message=CONFORMANCE_MESSAGE[:10])),
    bad(
        "binding_message-conformance-potentially-bad",
        lambda w: w.bc(binding_message=CONFORMANCE_MESSAGE),
        "binding_message is longer than 64 characters",
        error="invalid_binding_message",
    ),
    bad(
        "binding_message-65-characters",
        lambda w: w.bc(binding_message=LONG),
        "binding_message is longer than 64 characters",
        error="invalid_binding_message",
    ),
    *(
        control(char)
        for char in [
            "\x07",  # BEL
            "\n",
            "\t",
            "\x7f",  # DEL
            "\x85",  # NEL (C1)
            "\u202e",  # RIGHT-TO-LEFT OVERRIDE
            "\u2066",  # LEFT-TO-RIGHT ISOLATE
            "\u200b",  # ZERO WIDTH SPACE
            "\u200d",  # ZERO WIDTH JOINER
            "\ufeff",  # BOM
            "\u2028",  # LINE SEPARATOR (Zl)
            "\u2029",  # PARAGRAPH SEPARATOR (Zp)
            "\U000e0041",  # TAG LATIN CAPITAL LETTER A
            "\ue000",  # private use
        ]
    ),
    bad(
        "binding_message-lone-surrogate-in-request-object",
        lambda w: w.signed(binding_message="BM\ud8001"),
        "binding_message contains a control, format or unusual space character (U+D800)",
        error="invalid_binding_message",
    ),
    *(
        bad(
            f"binding_message-{name}",
            lambda w, message=message: w.bc(binding_message=message),
            description,
            error="invalid_binding_message",
        )
        for name, message, description in [
            ("blank", "   ", "binding_message is blank"),
            (
                "no-break-spaces-only",
                "\u00a0\u00a0",
                "binding_message contains a control, format or unusual space character (U+00A0)",
            ),
            ("leading-space", " BM-1", "binding_message has leading or trailing whitespace"),
            ("trailing-space", "BM-1 ", "binding_message has leading or trailing whitespace"),
            (
                "trailing-no-break-space",
                "BM-1\u00a0",
                "binding_message contains a control, format or unusual space character (U+00A0)",
            ),
        ]
    ),
    # requested_expiry (CIBA 7.1: a positive integer; FAPI-CIBA: may be a numeric string)
    ok("requested_expiry-numeric-string", lambda w: w.bc(requested_expiry="30"), body={"expires_in": 30}),
    ok("requested_expiry-maximum", lambda w: w.bc(requested_expiry="600"), body={"expires_in": 600}),
    ok("requested_expiry-leading-zeros", lambda w: w.bc(requested_expiry="0030"), body={"expires_in": 30}),
    expiry("zero", "0"),
    expiry("negative", "-5"),
    expiry("float", "1.5"),
    expiry("hex", "0x10"),
    expiry("exponent", "1e3"),
    expiry("plus-sign", "+30"),
    expiry("leading-space", " 30"),
    expiry("trailing-space", "30 "),
    expiry("huge", "9" * 20),
    expiry("arabic-indic-digits", "\u0663\u0660"),
    expiry("word", "soon"),
    expiry("above-maximum", "601", "requested_expiry exceeds the maximum of 600 seconds"),
    ok(
        "requested_expiry-integer-in-request-object",
        lambda w: w.signed(requested_expiry=120),
        body={"expires_in": 120},
    ),
    ok(
        "requested_expiry-string-in-request-object",
        lambda w: w.signed(requested_expiry="120"),
        body={"expires_in": 120},
    ),
    bad(
        "requested_expiry-float-in-request-object",
        lambda w: w.signed(requested_expiry=120.0),
        "request object claim 'requested_expiry' has the wrong JSON type",
    ),
    bad(
        "requested_expiry-boolean-in-request-object",
        lambda w: w.signed(requested_expiry=True),
        "request object claim 'requested_expiry' has the wrong JSON type",
    ),
    bad(
        "requested_expiry-negative-in-request-object",
        lambda w: w.signed(requested_expiry=-5),
        POSITIVE_EXPIRY,
    ),
    # authorization_details (RFC 9396 5: invalid_authorization_details)
    rar(
        "rar-not-json",
        "{",
        "authorization_details is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)",
    ),
    rar("rar-object-not-array", ACTION[0], "authorization_details must be a JSON array"),
    rar("rar-string-not-array", json.dumps(json.dumps(ACTION)), "authorization_details must be a JSON array"),
    rar("rar-empty-array", [], "authorization_details must not be empty"),
    rar(
        "rar-11-entries",
        [{**ACTION[0], "identifier": f"policy-{i}"} for i in range(11)],
        "authorization_details has 11 entries; at most 10 are allowed",
    ),
    ok(
        "rar-10-entries",
        lambda w: w.bc(authorization_details=[{**ACTION[0], "identifier": f"policy-{i}"} for i in range(10)]),
    ),
    rar("rar-over-8KiB", entry(identifier="p" * 8200), "authorization_details is larger than 8192 bytes"),
    rar(
        "rar-nested-6-levels",
        payment(creditorAccount={"iban": "DE02100100109307118603", **nested(4)}),
        "authorization_details[0]: nested deeper than 5 levels",
    ),
    ok(
        "rar-nested-5-levels",
        lambda w: w.bc(authorization_details=payment(creditorAccount={"iban": "DE02100100109307118603", **nested(3)})),
    ),
    rar(
        "rar-recursion-bomb",
        "[" * 4000 + "]" * 4000,
        re.compile(r"authorization_details is not valid JSON: maximum recursion depth exceeded.*"),
    ),
    *(
        rar(
            f"rar-{name}",
            f'[{{"type": "iam_policy", "actions": ["update"], "identifier": "p", "x": {name}}}]',
            f"authorization_details is not valid JSON: {name} is not allowed",
        )
        for name in ["NaN", "Infinity", "-Infinity"]
    ),
    rar(
        "rar-number-overflows-to-infinity",
        '[{"type": "payment_initiation", "actions": ["initiate"], "creditorName": "M", '
        '"instructedAmount": {"currency": "EUR", "amount": "1"}, '
        '"creditorAccount": {"iban": "DE02100100109307118603", "weight": 1e400}}]',
        "authorization_details[0]: not representable in canonical JSON (RFC 8785)",
    ),
    rar(
        "rar-integer-outside-i-json-range",
        [{**PAYMENT, "creditorAccount": {"iban": "DE02100100109307118603", "ref": 2**53 + 1}}],
        "authorization_details[0]: not representable in canonical JSON (RFC 8785)",
    ),
    rar(
        "rar-lone-surrogate",
        '[{"type": "iam_policy", "actions": ["update"], "identifier": "policy-\\ud800"}]',
        "authorization_details[0]: 'identifier' contains a control, format or unusual space character (U+D800)",
    ),
    rar(
        "rar-bidi-override-in-identifier",
        entry(identifier="policy-\u202e24"),
        "authorization_details[0]: 'identifier' contains a control, format or unusual space character (U+202E)",
    ),
    rar(
        "rar-zero-width-space-in-location",
        entry(locations=["https://iam.example.test/\u200b"]),
        "authorization_details[0]: 'locations' contains a control, format or unusual space character (U+200B)",
    ),
    rar(
        "rar-control-character-in-nested-key",
        payment(creditorAccount={"iban": "DE02100100109307118603", "no\u0007te": "x"}),
        "authorization_details[0]: 'creditorAccount' contains a control, format or unusual space character (U+0007)",
    ),
    rar(
        "rar-line-separator-in-creditorName",
        payment(creditorName="Merchant\u2028A"),
        "authorization_details[0]: 'creditorName' contains a control, format or unusual space character (U+2028)",
    ),
    ok("rar-non-ascii-text", lambda w: w.bc(authorization_details=payment(creditorName="Bäckerei Müller ✅"))),
    rar("rar-entry-not-object", ["iam_policy"], "authorization_details[0]: must be a JSON object"),
    rar("rar-type-missing", entry(type=None), "authorization_details[0]: 'type' is required"),
    rar("rar-type-not-string", entry(type=7), "authorization_details[0]: 'type' must be a non-empty string"),
    rar("rar-type-empty", entry(type=""), "authorization_details[0]: 'type' must be a non-empty string"),
    rar("rar-type-unknown", entry(type="launch_missiles"), "authorization_details[0]: unknown type 'launch_missiles'"),
    rar(
        "rar-type-not-allowed-for-client",
        ACTION,
        "authorization_details[0]: type 'iam_policy' is not allowed for this client",
        auth=basic(LIMITED, LIMITED_SECRET),
    ),
    ok(
        "rar-type-allowed-for-limited-client",
        lambda w: w.bc(
            auth=basic(LIMITED, LIMITED_SECRET),
            authorization_details=[{"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api"}],
        ),
    ),
    rar(
        "rar-actions-missing",
        entry(actions=None),
        "authorization_details[0]: 'actions' is required for type 'iam_policy'",
    ),
    rar(
        "rar-actions-string",
        entry(actions="update"),
        "authorization_details[0]: 'actions' must be a non-empty array of strings",
    ),
    rar(
        "rar-actions-empty",
        entry(actions=[]),
        "authorization_details[0]: 'actions' must be a non-empty array of strings",
    ),
    rar("rar-actions-number", entry(actions=[1]), "authorization_details[0]: 'actions'[0] must be a non-empty string"),
    rar(
        "rar-actions-empty-string",
        entry(actions=[""]),
        "authorization_details[0]: 'actions'[0] must be a non-empty string",
    ),
    rar(
        "rar-actions-too-long",
        entry(actions=["u" * 513]),
        "authorization_details[0]: 'actions'[0] is longer than 512 characters",
    ),
    rar(
        "rar-action-undefined",
        entry(actions=["update", "drop"]),
        "authorization_details[0]: action 'drop' is not defined for type 'iam_policy'",
    ),
    rar(
        "rar-actions-duplicate",
        entry(actions=["update", "update"]),
        "authorization_details[0]: 'actions' has duplicate values",
    ),
    rar(
        "rar-identifier-number",
        entry(identifier=42),
        "authorization_details[0]: 'identifier' must be a non-empty string",
    ),
    rar(
        "rar-identifier-empty",
        entry(identifier=""),
        "authorization_details[0]: 'identifier' must be a non-empty string",
    ),
    rar(
        "rar-identifier-missing",
        entry(identifier=None),
        "authorization_details[0]: 'identifier' is required for type 'iam_policy'",
    ),
    rar("rar-location-relative", entry(locations=["/policies/42"]), LOCATION_ERROR),
    rar("rar-location-fragment", entry(locations=["https://iam.example.test/#policies"]), LOCATION_ERROR),
    rar("rar-location-ftp", entry(locations=["ftp://iam.example.test/"]), LOCATION_ERROR),
    rar("rar-location-javascript", entry(locations=["javascript:alert(1)"]), LOCATION_ERROR),
    rar("rar-location-no-host", entry(locations=["https:///policies"]), LOCATION_ERROR),
    rar(
        "rar-locations-string",
        entry(locations="https://iam.example.test/"),
        "authorization_details[0]: 'locations' must be a non-empty array of strings",
    ),
    ok("rar-location-http", lambda w: w.bc(authorization_details=entry(locations=["http://iam.example.test/"]))),
    rar(
        "rar-datatypes-number",
        entry(datatypes=[1]),
        "authorization_details[0]: 'datatypes'[0] must be a non-empty string",
    ),
    rar(
        "rar-privileges-duplicate",
        entry(privileges=["admin", "admin"]),
        "authorization_details[0]: 'privileges' has duplicate values",
    ),
    rar(
        "rar-unknown-field",
        entry(foo="bar"),
        "authorization_details[0]: field 'foo' is not defined for type 'iam_policy'",
    ),
    rar(
        "rar-second-entry-invalid",
        [*ACTION, {**ACTION[0], "actions": ["drop"]}],
        "authorization_details[1]: action 'drop' is not defined for type 'iam_policy'",
    ),
    rar(
        "rar-key_rotation-undefined-action",
        [{"type": "key_rotation", "actions": ["delete"], "identifier": "svc"}],
        "authorization_details[0]: action 'delete' is not defined for type 'key_rotation'",
    ),
    # payment_initiation: declared field kinds, then the type's JSON Schema
    ok("rar-payment", lambda w: w.bc(authorization_details=payment())),
    rar(
        "rar-payment-creditorName-number",
        payment(creditorName=7),
        "authorization_details[0]: field 'creditorName' must be of JSON type string",
    ),
    rar(
        "rar-payment-creditorName-boolean",
        payment(creditorName=True),
        "authorization_details[0]: field 'creditorName' must be of JSON type string",
    ),
    rar(
        "rar-payment-instructedAmount-string",
        payment(instructedAmount="123.50 EUR"),
        "authorization_details[0]: field 'instructedAmount' must be of JSON type object",
    ),
    rar(
        "rar-payment-currency-lowercase",
        amount(currency="eur"),
        "authorization_details[0].instructedAmount.currency: 'eur' does not match '^[A-Z]{3}$'",
    ),
    rar(
        "rar-payment-amount-number",
        amount(amount=10.5),
        "authorization_details[0].instructedAmount.amount: 10.5 is not of type 'string'",
    ),
    rar(
        "rar-payment-amount-three-decimals",
        amount(amount="10.555"),
        "authorization_details[0].instructedAmount.amount: '10.555' does not match '^[0-9]{1,12}(\\\\.[0-9]{1,2})?$'",
    ),
    rar(
        "rar-payment-amount-negative",
        amount(amount="-5"),
        "authorization_details[0].instructedAmount.amount: '-5' does not match '^[0-9]{1,12}(\\\\.[0-9]{1,2})?$'",
    ),
    rar(
        "rar-payment-currency-missing",
        amount(currency=None),
        "authorization_details[0].instructedAmount: 'currency' is a required property",
    ),
    rar(
        "rar-payment-amount-extra-member",
        amount(fx="1.1"),
        "authorization_details[0].instructedAmount: Additional properties are not allowed ('fx' was unexpected)",
    ),
    rar(
        "rar-payment-creditorName-missing",
        payment(creditorName=None),
        "authorization_details[0] (entry): 'creditorName' is a required property",
    ),
    rar(
        "rar-payment-creditorName-empty",
        payment(creditorName=""),
        "authorization_details[0].creditorName: '' should be non-empty",
    ),
    rar(
        "rar-payment-iban-malformed",
        payment(creditorAccount={"iban": "not-an-iban"}),
        "authorization_details[0].creditorAccount.iban: 'not-an-iban' does not match "
        "'^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$'",
    ),
    # client_notification_token (CIBA 7.1: REQUIRED for ping and push; RFC 6750 b64token)
    ok("notification_token-ping", lambda w: w.bc(auth=basic(PING, PING_SECRET), client_notification_token="t" * 1024)),
    ok(
        "notification_token-push",
        lambda w: w.bc(auth=basic(PUSH, PUSH_SECRET), client_notification_token="abc-._~+/=="),
        keys=frozenset({"auth_req_id", "expires_in"}),
    ),
    ok("notification_token-ignored-in-poll-mode", lambda w: w.bc(client_notification_token="not checked")),
    bad(
        "notification_token-missing-ping",
        lambda w: w.bc(auth=basic(PING, PING_SECRET)),
        "client_notification_token is required in ping mode",
    ),
    bad(
        "notification_token-missing-push",
        lambda w: w.bc(auth=basic(PUSH, PUSH_SECRET)),
        "client_notification_token is required in push mode",
    ),
    *(
        bad(
            f"notification_token-{name}",
            lambda w, token=token: w.bc(auth=basic(PING, PING_SECRET), client_notification_token=token),
            B64TOKEN_ERROR,
        )
        for name, token in [
            ("too-long", "t" * 1025),
            ("space", "abc def"),
            ("padding-in-the-middle", "ab=cd"),
            ("non-ascii", "tökén"),
            ("quote", 'abc"def'),
        ]
    ),
    # client authentication: secrets (RFC 6749 2.3.1, 5.2)
    ok("auth-client_secret_post", lambda w: w.bc(auth=post(AGENT, AGENT_SECRET))),
    ok("auth-basic-with-matching-client_id", lambda w: w.bc(extra=[("client_id", AGENT)])),
    client_error("auth-none", lambda w: w.bc(auth=no_auth), "client authentication is required", challenge=True),
    client_error(
        "auth-client_id-only",
        lambda w: w.bc(auth=no_auth, extra=[("client_id", AGENT)]),
        "client authentication is required",
        challenge=True,
    ),
    bad(
        "auth-basic-and-post",
        lambda w: w.bc(extra=[("client_id", AGENT), ("client_secret", AGENT_SECRET)]),
        "more than one client authentication method used",
    ),
    client_error("auth-basic-not-base64", lambda w: w.bc(auth=header("Basic %%%")), "malformed Basic credentials"),
    client_error(
        "auth-basic-without-colon",
        lambda w: w.bc(auth=header("Basic " + base64.b64encode(b"agent-1").decode())),
        "malformed Basic credentials",
    ),
    client_error(
        "auth-basic-not-utf8",
        lambda w: w.bc(auth=header("Basic " + base64.b64encode(b"\xff:\xfe").decode())),
        "malformed Basic credentials",
    ),
    client_error(
        "auth-bearer-scheme",
        lambda w: w.bc(auth=header("Bearer abc")),
        "unsupported Authorization scheme; use Basic",
        challenge=True,
    ),
    client_error("auth-unknown-client", lambda w: w.bc(auth=basic("nobody", "x")), "client authentication failed"),
    client_error("auth-wrong-secret-basic", lambda w: w.bc(auth=basic(AGENT, "wrong")), "client authentication failed"),
    client_error("auth-wrong-secret-post", lambda w: w.bc(auth=post(AGENT, "wrong")), "client authentication failed"),
    client_error("auth-unknown-client-post", lambda w: w.bc(auth=post("nobody", "x")), "client authentication failed"),
    client_error(
        "auth-secret-for-private_key_jwt-client",
        lambda w: w.bc(auth=basic(PK, "anything")),
        "client authentication failed",
    ),
    bad(
        "auth-client_id-mismatch",
        lambda w: w.bc(extra=[("client_id", LIMITED)]),
        "client_id parameter differs from the authenticated client",
    ),
    bad(
        "auth-secret-without-client_id",
        lambda w: w.bc(auth=no_auth, extra=[("client_secret", AGENT_SECRET)]),
        "client_secret given without client_id",
    ),
    client_error(
        "token-auth-wrong-secret",
        lambda w: w.token(auth=basic(AGENT, "wrong")),
        "client authentication failed",
    ),
    client_error(
        "token-auth-none", lambda w: w.token(auth=no_auth), "client authentication is required", challenge=True
    ),
    # client authentication: private_key_jwt (RFC 7523 3)
    ok("pkjwt", lambda w: w.bc(auth=pk())),
    ok("pkjwt-aud-backchannel-endpoint", lambda w: w.bc(auth=pk(aud=f"{BASE}/bc-authorize"))),
    ok("pkjwt-aud-array", lambda w: w.bc(auth=pk(aud=["https://other.example", BASE]))),
    ok("pkjwt-matching-client_id", lambda w: w.bc(auth=pk(), extra=[("client_id", PK)])),
    Case(
        "pkjwt-at-token-endpoint",
        lambda w: w.token(auth=pk(aud=f"{BASE}/token")),
        error="invalid_grant",
        description="auth_req_id is unknown",
    ),
    *(
        client_error(f"pkjwt-{name}", lambda w, auth=auth: w.bc(auth=auth), description)
        for name, auth, description in [
            ("wrong-aud", pk(aud="https://other.example/token"), "client assertion 'aud' does not name this provider"),
            ("unknown-iss", pk(iss="nobody", sub="nobody"), "client is not registered for private_key_jwt"),
            ("iss-of-secret-client", pk(iss=AGENT, sub=AGENT), "client is not registered for private_key_jwt"),
            ("iss-not-a-string", pk(iss=7), "client_assertion 'iss' must be the client_id"),
            ("wrong-sub", pk(sub="someone-else"), "client assertion 'sub' must be 'pk-agent'"),
            ("missing-jti", pk(jti=None), "client assertion lacks the 'jti' claim"),
            ("missing-exp", pk(exp=None), "client assertion lacks the 'exp' claim"),
            ("missing-aud", pk(aud=None), "client assertion lacks the 'aud' claim"),
            ("missing-sub", pk(sub=None), "client assertion lacks the 'sub' claim"),
            (
                "other-key-same-kid",
                pk(key=ROGUE_KEY),
                "client assertion signature is invalid (Signature verification failed)",
            ),
            ("unregistered-kid", pk(key=ROGUE_KEY, kid="rogue"), "client assertion is signed by an unregistered key"),
            ("alg-none", pk(alg="none"), "client assertion algorithm 'none' is not allowed"),
        ]
    ),
    client_error(
        "pkjwt-expired",
        lambda w: w.bc(auth=pk(iat=w.now - 120, exp=w.now - 60)),
        "client assertion has expired",
    ),
    client_error(
        "pkjwt-lifetime-too-long",
        lambda w: w.bc(auth=pk(exp=w.now + 3600)),
        "client assertion lifetime exceeds 300 seconds",
    ),
    client_error(
        "pkjwt-iat-in-future",
        lambda w: w.bc(auth=pk(iat=w.now + 60, exp=w.now + 120)),
        "client assertion was issued in the future",
    ),
    client_error(
        "pkjwt-nbf-in-future",
        lambda w: w.bc(auth=pk(nbf=w.now + 60, exp=w.now + 120)),
        "client assertion is not yet valid",
    ),
    client_error(
        "pkjwt-embedded-jwk-header",
        lambda w: w.bc(auth=pk(hdr={"jwk": public_jwk(ROGUE_KEY, "rogue")})),
        "client assertion header 'jwk' is not accepted",
    ),
    client_error(
        "pkjwt-hs256-keyed-with-public-key",
        lambda w: w.bc(
            auth=lambda w: (
                None,
                [
                    ("client_assertion_type", JWT_BEARER),
                    (
                        "client_assertion",
                        hs256_with_public_key(
                            {"iss": PK, "sub": PK, "aud": BASE, "exp": w.now + 60, "jti": uuid.uuid4().hex},
                            PK_KEY,
                            "pk-1",
                        ),
                    ),
                ],
            )
        ),
        "client assertion algorithm 'HS256' is not allowed",
    ),
    client_error(
        "pkjwt-rs256-for-an-ec-key",
        lambda w: w.bc(auth=pk(key=RSA_KEY, alg="RS256")),
        "client assertion algorithm 'RS256' is not allowed",
    ),
    client_error(
        "pkjwt-replayed-jti",
        lambda w: w.first(w.bc(auth=pk())),
        "client assertion 'jti' has been used before",
    ),
    client_error(
        "pkjwt-not-a-jwt",
        lambda w: w.bc(auth=lambda w: (None, [("client_assertion_type", JWT_BEARER), ("client_assertion", "abc")])),
        "client_assertion is not a well-formed JWT",
    ),
    client_error(
        "pkjwt-iss-differs-from-client_id",
        lambda w: w.bc(auth=pk(), extra=[("client_id", AGENT)]),
        "client_assertion 'iss' must be the client_id",
    ),
    client_error(
        "auth-unsupported-assertion-type",
        lambda w: w.bc(
            auth=lambda w: (
                None,
                [
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"),
                    ("client_assertion", w.assertion()),
                ],
            )
        ),
        "unsupported client_assertion_type 'urn:ietf:params:oauth:client-assertion-type:saml2-bearer'",
    ),
    bad(
        "auth-assertion-without-type",
        lambda w: w.bc(auth=lambda w: (None, [("client_assertion", w.assertion())])),
        "missing required parameter 'client_assertion_type'",
    ),
    bad(
        "auth-type-without-assertion",
        lambda w: w.bc(auth=lambda w: (None, [("client_assertion_type", JWT_BEARER)])),
        "missing required parameter 'client_assertion'",
    ),
    bad(
        "auth-assertion-and-basic",
        lambda w: w.bc(extra=[("client_assertion_type", JWT_BEARER), ("client_assertion", w.assertion())]),
        "more than one client authentication method used",
    ),
    client_error(
        "pkjwt-exp-NaN",
        lambda w: w.bc(auth=pk(exp=float("nan"))),
        "client assertion 'exp' is not a number",
    ),
    client_error(
        "pkjwt-iat-NaN-escapes-lifetime-limit",
        lambda w: w.bc(auth=pk(iat=float("nan"), exp=w.now + 10**6)),
        "client assertion 'iat' is not a number",
    ),
    client_error("pkjwt-exp-string", lambda w: w.bc(auth=pk(exp="soon")), "client assertion 'exp' is not a number"),
    client_error("pkjwt-iat-boolean", lambda w: w.bc(auth=pk(iat=True)), "client assertion 'iat' is not a number"),
    client_error(
        "pkjwt-aud-object",
        lambda w: w.bc(auth=pk(aud={"uri": BASE})),
        "client assertion 'aud' does not name this provider",
    ),
    # client authentication: SPIFFE JWT-SVID
    ok("spiffe", lambda w: w.bc(auth=spiffe())),
    ok(
        "spiffe-bundle-key-with-use-jwt-svid",
        lambda w: w.bc(auth=spiffe(key=SPIRE_KEY, kid="spire-1")),
    ),
    *(
        client_error(f"spiffe-{name}", lambda w, auth=auth: w.bc(auth=auth), description)
        for name, auth, description in [
            (
                "wrong-trust-domain",
                spiffe(sub="spiffe://other.test/agent/ops"),
                "JWT-SVID is not from the configured trust domain",
            ),
            (
                "trust-domain-suffix-trick",
                spiffe(sub="spiffe://example.test.evil/agent/ops"),
                "JWT-SVID is not from the configured trust domain",
            ),
            ("id-bound-to-another-client", spiffe(sub=SPIFFE_ID_2), "JWT-SVID SPIFFE ID is not bound to this client"),
            ("other-clients-svid", spiffe(client_id=SPIFFE_2), "JWT-SVID SPIFFE ID is not bound to this client"),
            ("key-outside-bundle", spiffe(key=ROGUE_KEY, kid="rogue"), "JWT-SVID is signed by an unregistered key"),
            (
                "other-key-same-kid",
                spiffe(key=ROGUE_KEY),
                "JWT-SVID signature is invalid (Signature verification failed)",
            ),
            ("wrong-aud", spiffe(aud=["https://other.example"]), "JWT-SVID 'aud' does not name this provider"),
            ("missing-sub", spiffe(sub=None), "JWT-SVID lacks the 'sub' claim"),
            ("missing-exp", spiffe(exp=None), "JWT-SVID lacks the 'exp' claim"),
            ("missing-aud", spiffe(aud=None), "JWT-SVID lacks the 'aud' claim"),
            (
                "client-not-registered-for-spiffe",
                spiffe(client_id=AGENT),
                "client is not registered for SPIFFE JWT-SVID authentication",
            ),
            (
                "unknown-client",
                spiffe(client_id="nobody"),
                "client is not registered for SPIFFE JWT-SVID authentication",
            ),
            ("signed-by-client-key", spiffe(key=PK_KEY, kid="pk-1"), "JWT-SVID is signed by an unregistered key"),
        ]
    ),
    client_error(
        "spiffe-expired",
        lambda w: w.bc(auth=spiffe(iat=w.now - 120, exp=w.now - 60)),
        "JWT-SVID has expired",
    ),
    client_error(
        "spiffe-lifetime-too-long",
        lambda w: w.bc(auth=spiffe(exp=w.now + 3600)),
        "JWT-SVID lifetime exceeds 300 seconds",
    ),
    bad(
        "spiffe-missing-client_id",
        lambda w: w.bc(auth=spiffe(client_id=None)),
        "client_id is required with a JWT-SVID client assertion",
    ),
    client_error(
        "spiffe-svid-as-jwt-bearer",
        lambda w: w.bc(
            auth=lambda w: (
                None,
                [("client_id", SPIFFE), ("client_assertion_type", JWT_BEARER), ("client_assertion", w.svid())],
            )
        ),
        "client_assertion 'iss' must be the client_id",
    ),
    # signed authentication requests (CIBA 7.1.1; FAPI-CIBA request-object tests)
    ok("request-object", lambda w: w.signed()),
    ok("request-object-private_key_jwt-client", lambda w: w.signed(auth=pk(), key=PK_KEY, kid="pk-1", iss=PK)),
    bad(
        "request-object-required-plain-form",
        lambda w: w.bc(auth=SIGNED_BASIC),
        "this client must send signed authentication requests ('request')",
    ),
    bad(
        "request-object-bad-signature",
        lambda w: w.signed(key=ROGUE_KEY),
        "request object signature is invalid (Signature verification failed)",
    ),
    bad(
        "request-object-signed-by-other-client",
        lambda w: w.signed(key=PK_KEY, kid="pk-1"),
        "request object is signed by an unregistered key",
    ),
    *(missing_ro_claim(claim) for claim in ["aud", "iss", "exp", "iat", "nbf", "jti"]),
    bad(
        "request-object-expired",
        lambda w: w.signed(iat=w.now - 600, nbf=w.now - 600, exp=w.now - 60),
        "request object has expired",
    ),
    bad(
        "request-object-nbf-10-minutes-in-future",
        lambda w: w.signed(nbf=w.now + 600, exp=w.now + 900),
        "request object is not yet valid",
    ),
    bad(
        "request-object-iat-in-future",
        lambda w: w.signed(iat=w.now + 600, exp=w.now + 900),
        "request object was issued in the future",
    ),
    bad(
        "request-object-exp-70-minutes-in-future",
        lambda w: w.signed(exp=w.now + 70 * 60),
        "request object lifetime exceeds 3600 seconds",
    ),
    bad(
        "request-object-nbf-70-minutes-in-past",
        lambda w: w.signed(nbf=w.now - 70 * 60),
        "request object is valid for more than 60 minutes from nbf",
    ),
    bad("request-object-nbf-string", lambda w: w.signed(nbf="now"), "request object 'nbf' is not a number"),
    bad(
        "request-object-iat-NaN-escapes-lifetime-limit",
        lambda w: w.signed(iat=float("nan"), exp=w.now + 10**6),
        "request object 'iat' is not a number",
    ),
    bad(
        "request-object-wrong-aud",
        lambda w: w.signed(aud="https://other.example"),
        "request object 'aud' does not name this provider",
    ),
    bad("request-object-iss-not-client", lambda w: w.signed(iss=AGENT), "request object 'iss' must be the client_id"),
    bad(
        "request-object-replayed-jti",
        lambda w: w.first(w.signed()),
        "request object 'jti' has been used before",
    ),
    outside_ro("scope", "openid"),
    outside_ro("login_hint", "alice"),
    outside_ro("binding_message", "BM-1"),
    outside_ro("authorization_details", json.dumps(ACTION)),
    outside_ro("requested_expiry", "30"),
    bad("request-object-alg-none", lambda w: w.signed(alg="none"), "request object must be signed with ES256"),
    bad(
        "request-object-rs256-when-es256-required",
        lambda w: w.signed(key=RSA_KEY, alg="RS256"),
        "request object must be signed with ES256",
    ),
    bad(
        "request-object-hs256",
        lambda w: replace(w.signed(), form=[("request", hs256_with_public_key({"iss": SIGNED}, SIGNED_KEY, "ro-1"))]),
        "request object must be signed with ES256",
    ),
    bad(
        "request-object-alg-none-optional-signing",
        lambda w: w.signed(auth=pk(), alg="none", iss=PK),
        "request object algorithm 'none' is not allowed",
    ),
    bad(
        "request-object-not-a-jwt",
        lambda w: replace(w.signed(), form=[("request", "abc")]),
        "request object is not a well-formed JWT",
    ),
    bad(
        "request-object-client-without-keys",
        lambda w: w.bc(
            scope=None,
            login_hint=None,
            binding_message=None,
            authorization_details=None,
            extra=[("request", w.request_object(iss=AGENT))],
        ),
        "the client has no registered keys to verify 'request' with",
    ),
    bad(
        "request-object-login_hint-number",
        lambda w: w.signed(login_hint=7),
        "request object claim 'login_hint' has the wrong JSON type",
    ),
    bad(
        "request-object-authorization_details-object",
        lambda w: w.signed(authorization_details=ACTION[0]),
        "request object claim 'authorization_details' has the wrong JSON type",
    ),
    bad(
        "request-object-scope-without-openid",
        lambda w: w.signed(scope="profile"),
        "scope must include 'openid'",
        error="invalid_scope",
    ),
    bad(
        "request-object-without-hint",
        lambda w: w.signed(login_hint=None),
        "one of login_hint, login_hint_token or id_token_hint is required",
    ),
    bad(
        "request_uri",
        lambda w: w.bc(request_uri="urn:ietf:params:oauth:request_uri:abc"),
        "'request_uri' is not supported",
    ),
    # token endpoint (CIBA 10.1, 11; RFC 6749 5.2)
    bad("token-grant_type-missing", lambda w: w.token(grant_type=None), "missing required parameter 'grant_type'"),
    *(
        bad(
            f"token-grant_type-{name}",
            lambda w, grant=grant: w.token(grant_type=grant),
            f"grant_type '{grant}' is not supported",
            error="unsupported_grant_type",
        )
        for name, grant in [
            ("authorization_code", "authorization_code"),
            ("client_credentials", "client_credentials"),
            ("device_code", "urn:ietf:params:oauth:grant-type:device_code"),
            ("ciba-wrong-case", CIBA.upper()),
        ]
    ),
    bad("token-auth_req_id-missing", lambda w: w.token(None), "missing required parameter 'auth_req_id'"),
    bad("token-auth_req_id-empty", lambda w: w.token(""), "missing required parameter 'auth_req_id'"),
    bad("token-auth_req_id-unknown", lambda w: w.token("unknown"), "auth_req_id is unknown", error="invalid_grant"),
    bad(
        "token-auth_req_id-of-another-client",
        lambda w: w.token(w.new_request(), auth=basic(LIMITED, LIMITED_SECRET)),
        "auth_req_id was not issued to this client",
        error="invalid_grant",
    ),
    bad(
        "token-authorization_pending",
        lambda w: w.token(w.new_request()),
        "the user has not yet decided",
        error="authorization_pending",
    ),
    bad(
        "token-slow_down",
        lambda w: w.first_poll_then_again(),
        "polling too fast; wait at least 7 seconds between requests",
        error="slow_down",
    ),
    bad(
        "token-expired_token",
        lambda w: w.expired_request_poll(),
        "the authentication request has expired",
        error="expired_token",
    ),
    bad(
        "token-access_denied",
        lambda w: w.token(w.deny(w.new_request())),
        "the user denied the request",
        error="access_denied",
    ),
    ok("token-approved", lambda w: w.token(w.approve(w.new_request())), keys=TOKEN_KEYS),
    bad(
        "token-reused",
        lambda w: w.first(w.token(w.approve(w.new_request()))),
        "auth_req_id has already been used",
        error="invalid_grant",
    ),
    bad(
        "token-ping-client-may-poll",
        lambda w: w.token(
            w.new_request(w.bc(auth=basic(PING, PING_SECRET), client_notification_token="tok")),
            auth=basic(PING, PING_SECRET),
        ),
        "the user has not yet decided",
        error="authorization_pending",
    ),
    bad(
        "token-push-client",
        lambda w: w.token("any", auth=basic(PUSH, PUSH_SECRET)),
        "this client is registered for push delivery; tokens are pushed",
        error="unauthorized_client",
    ),
    bad(
        "token-client-without-ciba-grant",
        lambda w: w.token(auth=basic(NOCIBA, NOCIBA_SECRET)),
        "client 'agent-no-ciba' may not use the CIBA grant",
        error="unauthorized_client",
    ),
    bad(
        "bc-authorize-client-without-ciba-grant",
        lambda w: w.bc(auth=basic(NOCIBA, NOCIBA_SECRET)),
        "client 'agent-no-ciba' may not use the CIBA grant",
        error="unauthorized_client",
    ),
    # introspection (RFC 7662 2.1, 2.3)
    ok(
        "introspect-garbage-token-inactive",
        lambda w: Call("/introspect", [("token", "garbage")], basic_header(RS, RS_SECRET)),
        keys=frozenset({"active"}),
        body={"active": False},
    ),
    # the main world's clock is an hour behind the wall clock: exp is judged by the provider's clock
    ok(
        "introspect-fresh-token-active",
        lambda w: Call("/introspect", [("token", w.issued_token())], basic_header(RS, RS_SECRET)),
        keys=None,
        body={"active": True, "client_id": AGENT, "authorization_details": ACTION},
    ),
    bad(
        "introspect-client-not-allowed",
        lambda w: Call("/introspect", [("token", "x")], basic_header(AGENT, AGENT_SECRET)),
        "this client may not introspect tokens",
        error="unauthorized_client",
    ),
    bad(
        "introspect-token-missing",
        lambda w: Call("/introspect", [], basic_header(RS, RS_SECRET)),
        "missing required parameter 'token'",
    ),
    client_error(
        "introspect-no-auth",
        lambda w: Call("/introspect", [("token", "x")]),
        "client authentication is required",
        challenge=True,
    ),
    client_error(
        "introspect-wrong-secret",
        lambda w: Call("/introspect", [("token", "x")], basic_header(RS, "wrong")),
        "client authentication failed",
    ),
]


# fixtures ---------------------------------------------------------------------------------
def _world(tmp: Path, clock: Clock, **overrides: Any) -> Iterator[World]:
    bundle = tmp / "bundle.jwks"
    bundle.write_text(
        json.dumps({"keys": [public_jwk(BUNDLE_KEY, "bundle-1"), public_jwk(SPIRE_KEY, "spire-1", use="jwt-svid")]})
    )
    settings = make_settings(
        tmp,
        clients=clients(),
        spiffe_trust_domain="example.test",
        spiffe_bundle_path=bundle,
        **overrides,
    )
    provider = build_provider(settings, notifier=RecordingNotifier(), clock=clock)
    provider.sweep_interval = 0  # no background deliveries to the (unreachable) ping/push endpoint
    assert isinstance(provider.issuer, EmbeddedIssuer)
    provider.issuer.deliver_in_background = False
    authenticator = SoftAuthenticator()
    app = create_app(provider)
    # A 500 must show as a status to assert on, not as an exception in the test.
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        enroll(provider, client, "alice", authenticator)
        enroll(provider, client, "carol", authenticator)
        carol = provider.store.find_user("carol")
        assert carol is not None
        provider.store.upsert_user(replace(carol, enabled=False))
        provider.add_user(username="bob")  # no passkey
        alice = provider.store.find_user("alice")
        assert alice is not None
        yield World(provider, client, clock, authenticator, settings, alice)
    provider.store.close()


@pytest.fixture(scope="module")
def main_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # An hour behind the wall clock: advancing it (expired_token) never crosses into the future.
    yield from _world(tmp_path_factory.mktemp("main"), Clock(start=float(int(time.time()) - 3600)))


@pytest.fixture(scope="module")
def user_code_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # the default Clock of tests/support/service.py (ahead of the wall clock), as the other test modules use.
    gen = _world(tmp_path_factory.mktemp("user-code"), Clock(), backchannel_user_code_parameter_supported=True)
    world = next(gen)
    world.provider.set_user_code(world.alice, "4711")
    enroll(world.provider, world.client, "dave", world.authenticator)
    yield world
    yield from gen


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_bad_input(case: Case, request: pytest.FixtureRequest) -> None:
    world: World = request.getfixturevalue(f"{case.world}_world")
    call = case.build(world)
    response = world.send(call)
    assert response.headers.get("cache-control") == "no-store", (response.status_code, response.text)
    assert response.headers.get("pragma") == "no-cache"
    assert response.status_code == case.status, response.text
    body = response.json()
    if case.error is None:
        if case.keys is not None:
            assert set(body) == case.keys, body
        for key, value in case.body.items():
            assert body[key] == value, body
        return
    assert set(body) == {"error", "error_description"}, body
    assert body["error"] == case.error, body
    if isinstance(case.description, re.Pattern):
        assert case.description.fullmatch(body["error_description"]), body
    else:
        assert body["error_description"] == case.description, body
    # RFC 9110 11.6.1 / RFC 6749 5.2: every 401 invalid_client carries the Basic challenge,
    # whichever authentication method the client used.
    challenge = case.challenge if case.challenge is not None else case.error == "invalid_client"
    if challenge:
        assert response.headers.get("www-authenticate") == BASIC_CHALLENGE
    else:
        assert "www-authenticate" not in response.headers


def test_table_is_well_formed() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 100
    for case in CASES:
        assert (case.error is None) == (case.description is None), case.id
