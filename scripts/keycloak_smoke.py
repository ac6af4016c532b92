#!/usr/bin/env python3
"""End-to-end smoke test of the Keycloak side of ciba_service's "keycloak mode".

It proves the whole Keycloak protocol path WITHOUT the Python service:

* a stub of the CIBA HTTP authentication channel (default http://localhost:8000/keycloak/auth-channel,
  taken from CIBA_CHANNEL_URI) records Keycloak's channel POST and answers 201;
* the "agent" (client demo-agent, client_secret_basic) calls the backchannel authentication endpoint
  with login_hint=alice, a binding_message and an extra parameter ``intent``;
* the stub plays the approver and calls ``/ext/ciba/auth/callback`` with the channel bearer token and
  ``authorization_details`` / ``approval`` as JSON strings;
* the agent polls the token endpoint and the access token must carry both as structured JSON claims
  (the ciba-session-note-json-mapper extension), with ``aud`` containing ``resource-api``;
* round S: a second agent, ``spiffe-agent``, has no secret at all: it authenticates at the CIBA and
  token endpoints with a SPIFFE JWT-SVID (``client_assertion_type``
  ``urn:ietf:params:oauth:client-assertion-type:jwt-spiffe``, ``sub`` spiffe://example.test/agent/ops)
  signed by a key of the trust domain's bundle, which the stub serves at CIBA_SPIFFE_BUNDLE_URI
  (default: the channel URI's origin + ``/spiffe/bundle``) with a key made for this run; SVIDs with
  another SPIFFE ID, another key, another audience, expired, or of the wrong assertion type are
  refused.

Along the way it registers a passkey for alice the way a browser would (password login, then the
``webauthn-register-passwordless`` required action, answered by a software authenticator), reads it
back through the admin API as the ``ciba-companion`` service account (view-users only), and records the
observed semantics of the callback (UNAUTHORIZED, CANCELLED, a duplicate callback, invalid JSON, a
failing channel). Every observation is printed as a FACT line.

Run against a Keycloak started by ``scripts/keycloak.sh start``:

    .venv/bin/python scripts/keycloak_smoke.py

Environment: KC_HTTP_PORT (8180), CIBA_CHANNEL_URI (http://localhost:8000/keycloak/auth-channel),
CIBA_SPIFFE_BUNDLE_URI (the channel URI's origin + /spiffe/bundle: what scripts/keycloak.sh gave Keycloak),
KC_BOOTSTRAP_ADMIN_USERNAME / KC_BOOTSTRAP_ADMIN_PASSWORD (admin/admin, the DEV-ONLY admin).
Exit status 0 when every check passed, 1 otherwise.

All secrets below are DEVELOPMENT FIXTURES from realm-export/agents-realm.json.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# --------------------------------------------------------------------------------------------
# configuration (dev fixtures)
# --------------------------------------------------------------------------------------------
KC_PORT = int(os.environ.get("KC_HTTP_PORT", "8180"))
KC = f"http://localhost:{KC_PORT}"
REALM = "agents"
ISSUER = f"{KC}/realms/{REALM}"
OIDC = f"{ISSUER}/protocol/openid-connect"
CHANNEL_URI = os.environ.get("CIBA_CHANNEL_URI", "http://localhost:8000/keycloak/auth-channel")
AGENT = ("demo-agent", "dev-only-demo-agent-secret")  # DEVELOPMENT FIXTURE
COMPANION = ("ciba-companion", "dev-only-ciba-companion-secret")  # DEVELOPMENT FIXTURE
ALICE = ("alice", "alice-dev-password")  # DEVELOPMENT FIXTURE
DEV_ADMIN = (
    os.environ.get("KC_BOOTSTRAP_ADMIN_USERNAME", "admin"),
    os.environ.get("KC_BOOTSTRAP_ADMIN_PASSWORD", "admin"),
)  # DEV-ONLY bootstrap admin of the master realm
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
# SPIFFE (round S): the realm's identity provider "spiffe-example-test" trusts the JWT-SVIDs of trust
# domain example.test, verified with the keys of the bundle Keycloak fetches from SPIFFE_BUNDLE_URI.
_channel = urllib.parse.urlsplit(CHANNEL_URI)
SPIFFE_BUNDLE_URI = os.environ.get("CIBA_SPIFFE_BUNDLE_URI", f"{_channel.scheme}://{_channel.netloc}/spiffe/bundle")
SPIFFE_IDP = "spiffe-example-test"
SPIFFE_AGENT = "spiffe-agent"
SPIFFE_ID = "spiffe://example.test/agent/ops"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------
PASSED: list[str] = []
FAILED: list[str] = []


def check(cond: bool, what: str, detail: Any = None) -> bool:
    if cond:
        PASSED.append(what)
        print(f"  ok    {what}")
    else:
        FAILED.append(what)
        print(f"  FAIL  {what}" + (f": {detail}" if detail is not None else ""))
    return cond


def fact(name: str, value: Any) -> None:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, indent=2, sort_keys=True)
        print(f"FACT {name}:\n{_indent(value)}")
    else:
        print(f"FACT {name}: {value}")


def _indent(s: str) -> str:
    return "\n".join("    " + line for line in s.splitlines())


def section(title: str) -> None:
    print(f"\n== {title}")


def redact(token: str | None) -> str:
    return "<none>" if not token else f"{token[:10]}...<redacted {len(token)} chars>"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(token: str) -> tuple[dict, dict]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


# --------------------------------------------------------------------------------------------
# the CIBA HTTP authentication channel stub
# --------------------------------------------------------------------------------------------
class Channel:
    """Records every channel POST; answers with ``status`` (201 = accepted)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 201
        self.event = threading.Event()
        self.lock = threading.Lock()

    def take(self, timeout: float = 10.0) -> dict | None:
        if not self.event.wait(timeout):
            return None
        with self.lock:
            req = self.requests.pop(0)
            if not self.requests:
                self.event.clear()
            return req


CHANNEL = Channel()


class SpiffeTrustDomain:
    """The SPIFFE trust domain example.test, played by the smoke test: a JWT-SVID signing key made
    for this run and the bundle (JWKS, ``use: jwt-svid``, as a SPIFFE bundle endpoint serves it)."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        thumb_input = json.dumps(
            {k: public_jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
        )
        self.kid = b64url(hashlib.sha256(thumb_input.encode()).digest())  # RFC 7638 thumbprint
        self.bundle = {
            "keys": [dict(public_jwk, kid=self.kid, use="jwt-svid")],
            "spiffe_refresh_hint": 300,
            "spiffe_sequence": 1,
        }
        self.fetches: list[dict] = []

    def svid(
        self,
        sub: str = SPIFFE_ID,
        *,
        aud: str | list[str] = ISSUER,
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: str | None = None,
        lifetime: int = 300,
        iat_offset: int = 0,
    ) -> str:
        """A JWT-SVID (SPIFFE JWT-SVID spec: sub = SPIFFE ID, aud, exp; no iss, as SPIRE mints them)."""
        now = int(time.time()) + iat_offset
        claims = {"sub": sub, "aud": aud, "iat": now, "exp": now + lifetime}
        return jwt.encode(claims, key or self.key, algorithm="ES256", headers={"kid": kid or self.kid, "typ": "JWT"})


SPIFFE = SpiffeTrustDomain()


class ChannelHandler(BaseHTTPRequestHandler):
    path_expected = urllib.parse.urlsplit(CHANNEL_URI).path
    bundle_path = urllib.parse.urlsplit(SPIFFE_BUNDLE_URI).path

    def do_GET(self) -> None:
        if self.path != self.bundle_path:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        SPIFFE.fetches.append({"path": self.path, "headers": dict(self.headers.items())})
        body = json.dumps(SPIFFE.bundle).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        status = CHANNEL.status if self.path == self.path_expected else 404
        with CHANNEL.lock:
            CHANNEL.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
            CHANNEL.event.set()
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # keep the output readable
        pass


def start_channel() -> ThreadingHTTPServer:
    """The channel stub on CIBA_CHANNEL_URI's port; it also serves the SPIFFE bundle (GET) there, and
    on a second listener when CIBA_SPIFFE_BUNDLE_URI names another port."""
    port = _channel.port or 80
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), ChannelHandler)
    except OSError as e:
        sys.exit(f"cannot listen on 127.0.0.1:{port} for the channel stub ({e}); is the service running?")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    bundle_port = urllib.parse.urlsplit(SPIFFE_BUNDLE_URI).port or 80
    if bundle_port != port:
        try:
            extra = ThreadingHTTPServer(("127.0.0.1", bundle_port), ChannelHandler)
        except OSError as e:
            sys.exit(f"cannot listen on 127.0.0.1:{bundle_port} for the SPIFFE bundle stub ({e})")
        threading.Thread(target=extra.serve_forever, daemon=True).start()
    return server


# --------------------------------------------------------------------------------------------
# agent and approver helpers
# --------------------------------------------------------------------------------------------
http = httpx.Client(timeout=30.0)


def backchannel(
    extra: dict | None = None, binding_message: str = "approve-iam-42", client_auth: dict | None = None
) -> httpx.Response:
    """As demo-agent (client_secret_basic), or with ``client_auth`` form parameters (an assertion)."""
    data = {"scope": "openid", "login_hint": ALICE[0], "binding_message": binding_message}
    data.update(extra or {})
    data.update(client_auth or {})
    return http.post(f"{OIDC}/ext/ciba/auth", data=data, auth=None if client_auth else AGENT)


def poll(auth_req_id: str, client_auth: dict | None = None) -> httpx.Response:
    data = {"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id, **(client_auth or {})}
    return http.post(f"{OIDC}/token", data=data, auth=None if client_auth else AGENT)


def poll_until_done(
    auth_req_id: str, interval: float, limit: float = 30.0, client_auth: dict | None = None
) -> httpx.Response:
    deadline = time.monotonic() + limit
    while True:
        r = poll(auth_req_id, client_auth)
        err = r.json().get("error") if r.status_code == 400 else None
        if err not in ("authorization_pending", "slow_down") or time.monotonic() > deadline:
            return r
        time.sleep(interval)


def callback(bearer: str, payload: dict) -> httpx.Response:
    return http.post(
        f"{OIDC}/ext/ciba/auth/callback",
        json=payload,
        headers={"Authorization": f"Bearer {bearer}"},
    )


def start_request(label: str, extra: dict | None = None) -> tuple[str, dict, dict] | None:
    """Agent request + the channel POST it causes. Returns (auth_req_id, auth response, channel req)."""
    r = backchannel(extra)
    if not check(r.status_code == 200, f"[{label}] backchannel authentication accepted (200)", r.text):
        return None
    body = r.json()
    chan = CHANNEL.take()
    if not check(chan is not None, f"[{label}] Keycloak POSTed the authentication channel"):
        return None
    return body["auth_req_id"], body, chan


def bearer_of(chan: dict) -> str:
    return chan["headers"].get("Authorization", "").removeprefix("Bearer ")


# --------------------------------------------------------------------------------------------
# a software passkey (what a browser + platform authenticator would do)
# --------------------------------------------------------------------------------------------
def cbor(obj: Any) -> bytes:
    """Just enough canonical CBOR for WebAuthn: ints, bytes, text, maps, lists."""

    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | extra]) + n.to_bytes(size, "big")
        raise ValueError(n)

    if isinstance(obj, bool):
        return b"\xf5" if obj else b"\xf4"
    if isinstance(obj, int):
        return head(0, obj) if obj >= 0 else head(1, -1 - obj)
    if isinstance(obj, bytes):
        return head(2, len(obj)) + obj
    if isinstance(obj, str):
        data = obj.encode()
        return head(3, len(data)) + data
    if isinstance(obj, list):
        return head(4, len(obj)) + b"".join(cbor(x) for x in obj)
    if isinstance(obj, dict):
        return head(5, len(obj)) + b"".join(cbor(k) + cbor(v) for k, v in obj.items())
    raise TypeError(type(obj))


class SoftPasskey:
    """ES256 discoverable credential, user present + user verified, attestation 'none'."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cred_id = secrets.token_bytes(32)
        nums = self.key.public_key().public_numbers()
        self.cose = {1: 2, 3: -7, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")}

    def register(self, challenge_b64url: str, rp_id: str, origin: str) -> dict:
        client_data = json.dumps(
            {"type": "webauthn.create", "challenge": challenge_b64url, "origin": origin, "crossOrigin": False},
            separators=(",", ":"),
        ).encode()
        flags = 0x01 | 0x04 | 0x40  # UP | UV | AT
        auth_data = (
            hashlib.sha256(rp_id.encode()).digest()
            + bytes([flags])
            + (0).to_bytes(4, "big")
            + bytes(16)  # AAGUID (none)
            + len(self.cred_id).to_bytes(2, "big")
            + self.cred_id
            + cbor(self.cose)
        )
        att_obj = cbor({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "clientDataJSON": b64url(client_data),
            "attestationObject": b64url(att_obj),
            "publicKeyCredentialId": b64url(self.cred_id),
            "authenticatorLabel": "smoke-test software passkey",
            "transports": "internal",
            "authenticatorAttachment": "platform",
            "error": "",
        }


def form_action(page: str, form_id: str) -> str | None:
    m = re.search(r"<form\b[^>]*\bid=\"" + re.escape(form_id) + r"\"[^>]*>", page)
    if not m:
        return None
    a = re.search(r'\baction="([^"]+)"', m.group(0))
    return html.unescape(a.group(1)) if a else None


def js_string(page: str, name: str) -> str | None:
    m = re.search(r"\b" + re.escape(name) + r"\s*:\s*\"((?:[^\"\\]|\\.)*)\"", page)
    return json.loads(f'"{m.group(1)}"') if m else None


class Browser:
    """A cookie-keeping HTTP client for the login pages.

    Keycloak marks its cookies ``Secure; SameSite=None`` even on http://localhost (a browser treats
    localhost as a secure context); Python's cookie jar would not send them back over plain HTTP, so
    the cookies are kept here by hand.
    """

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=30.0, follow_redirects=False)
        self.cookies: dict[str, str] = {}

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        r = self.client.request(method, url, headers=headers, **kw)
        for line in r.headers.get_list("set-cookie"):
            m = re.match(r"\s*([^=;\s]+)=([^;]*)", line)
            if m:
                self.cookies[m.group(1)] = m.group(2)
        self.client.cookies.clear()
        return r

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._send("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._send("POST", url, **kw)

    def follow(self, r: httpx.Response, stop_prefix: str) -> httpx.Response:
        """Follow Keycloak-internal redirects, stopping at the client's redirect URI."""
        for _ in range(5):
            location = r.headers.get("location", "")
            if r.status_code not in (302, 303) or not location or location.startswith(stop_prefix):
                break
            r = self.get(urllib.parse.urljoin(str(r.url), location))
        return r


def browser_register_passkey(passkey: SoftPasskey) -> bool:
    """Password login to the account console; the required action asks for a passkey; answer it."""
    verifier = b64url(secrets.token_bytes(32))
    params = {
        "client_id": "account-console",
        "redirect_uri": f"{ISSUER}/account/",
        "response_type": "code",
        "scope": "openid",
        "state": secrets.token_hex(8),
        "nonce": secrets.token_hex(8),
        "code_challenge": b64url(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    browser = Browser()
    page = browser.get(f"{OIDC}/auth", params=params)
    action = form_action(page.text, "kc-form-login")
    if not check(
        page.status_code == 200 and action is not None,
        "account console shows the password login form",
        page.status_code,
    ):
        return False
    r = browser.follow(
        browser.post(action, data={"username": ALICE[0], "password": ALICE[1], "credentialId": ""}),
        f"{ISSUER}/account/",
    )
    challenge = js_string(r.text, "challenge")
    rp_id = js_string(r.text, "rpId")
    reg_action = form_action(r.text, "register")
    if not check(
        r.status_code == 200 and challenge and reg_action,
        "after the password, the webauthn-register-passwordless required action asks for a passkey",
        f"HTTP {r.status_code}",
    ):
        return False
    fact(
        "passkey registration page",
        {
            "rpId": rp_id,
            "userVerificationRequirement": js_string(r.text, "userVerificationRequirement"),
            "residentKey": js_string(r.text, "residentKey"),
            "attestationConveyancePreference": js_string(r.text, "attestationConveyancePreference"),
            "authenticatorAttachment": js_string(r.text, "authenticatorAttachment"),
        },
    )
    r2 = browser.follow(
        browser.post(reg_action, data=passkey.register(challenge, rp_id or "localhost", KC)), f"{ISSUER}/account/"
    )
    location = r2.headers.get("location", "")
    ok = r2.status_code in (302, 303) and location.startswith(f"{ISSUER}/account/") and "code=" in location
    return check(
        ok,
        "the software passkey was accepted and the login finished (redirect with a code)",
        f"HTTP {r2.status_code} {location[:80]} {r2.text[:300] if not ok else ''}",
    )


# --------------------------------------------------------------------------------------------
# the smoke test
# --------------------------------------------------------------------------------------------
def main() -> int:
    server = start_channel()
    print(f"channel stub listening on 127.0.0.1:{server.server_port} (Keycloak calls {CHANNEL_URI})")
    print(f"Keycloak: {ISSUER}")

    section("discovery")
    disc = http.get(f"{ISSUER}/.well-known/openid-configuration").json()
    check(disc.get("issuer") == ISSUER, "issuer is the fixed hostname", disc.get("issuer"))
    check(CIBA_GRANT in disc.get("grant_types_supported", []), "CIBA grant advertised")
    fact("backchannel_authentication_endpoint", disc.get("backchannel_authentication_endpoint"))
    fact("backchannel_token_delivery_modes_supported", disc.get("backchannel_token_delivery_modes_supported"))
    fact(
        "authorization_details_types_supported (RFC 9396)",
        disc.get("authorization_details_types_supported", "<absent>"),
    )
    jwks = jwt.PyJWKClient(disc["jwks_uri"])

    # ---- admin API -------------------------------------------------------------------------
    section("admin API as the ciba-companion service account (view-users only)")
    r = http.post(f"{OIDC}/token", data={"grant_type": "client_credentials"}, auth=COMPANION)
    check(r.status_code == 200, "companion client_credentials token", r.text)
    companion_token = r.json()["access_token"]
    fact("companion token resource_access", jwt_parts(companion_token)[1].get("resource_access"))
    admin_api = httpx.Client(
        base_url=f"{KC}/admin/realms/{REALM}", timeout=30.0, headers={"Authorization": f"Bearer {companion_token}"}
    )
    users = admin_api.get("/users", params={"username": ALICE[0], "exact": "true"})
    check(
        users.status_code == 200 and len(users.json()) == 1, "companion finds alice (GET /users?username=)", users.text
    )
    alice = users.json()[0]
    alice_id = alice["id"]
    fact("alice id", alice_id)
    fact("alice requiredActions (as imported)", alice.get("requiredActions"))
    creds = admin_api.get(f"/users/{alice_id}/credentials")
    check(
        creds.status_code == 200, "companion reads alice's credentials (GET /users/{id}/credentials)", creds.status_code
    )
    fact("alice credential types before passkey registration", [c["type"] for c in creds.json()])
    denied = {p: admin_api.get(p).status_code for p in ("/clients", "/client-scopes", "/identity-provider/instances")}
    check(all(s == 403 for s in denied.values()), "companion cannot read clients, scopes or IdPs (403)", denied)
    write = admin_api.put(f"/users/{alice_id}", json={"firstName": "Mallory"})
    check(write.status_code == 403, "companion cannot modify users (PUT /users/{id} -> 403)", write.status_code)

    section("realm settings as the DEV-ONLY bootstrap admin")
    r = http.post(
        f"{KC}/realms/master/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "admin-cli", "username": DEV_ADMIN[0], "password": DEV_ADMIN[1]},
    )
    check(r.status_code == 200, "bootstrap admin token (master realm, admin-cli)", r.text)
    dev_admin = httpx.Client(
        base_url=f"{KC}/admin/realms/{REALM}",
        timeout=30.0,
        headers={"Authorization": f"Bearer {r.json().get('access_token')}"},
    )
    ra = dev_admin.get("/authentication/required-actions/webauthn-register-passwordless").json()
    check(ra.get("enabled") is True, "required action webauthn-register-passwordless is enabled", ra)
    realm_rep = dev_admin.get("").json()
    fact("realm CIBA policy", {k: v for k, v in realm_rep.get("attributes", {}).items() if k.startswith("ciba")})
    fact(
        "realm WebAuthn passwordless policy",
        {k: v for k, v in realm_rep.items() if k.startswith("webAuthnPolicyPasswordless")},
    )
    scopes = {s["name"] for s in dev_admin.get("/client-scopes").json()}
    check(
        {"basic", "acr", "authorization-details"} <= scopes,
        "default client scopes + authorization-details exist",
        sorted(scopes),
    )

    # ---- round A: alice still has her pending required action -----------------------------
    fresh = "webauthn-register-passwordless" in (alice.get("requiredActions") or [])
    pending_a = None
    passkey = SoftPasskey()
    if not fresh:
        print(
            "\n(alice has no pending required action: Keycloak was not freshly started, so the rounds"
            " that need it are skipped; 'scripts/keycloak.sh stop && scripts/keycloak.sh start' runs them)"
        )
    else:
        section("round A: CIBA while alice still has the pending required action")
        a = start_request("A")
        if a:
            auth_req_id, _, chan = a
            cb = callback(bearer_of(chan), {"status": "SUCCEED"})
            check(cb.status_code == 200, "[A] callback SUCCEED accepted", cb.text)
            time.sleep(2.1)
            r = poll(auth_req_id)
            fact("token response while alice has a pending required action", f"HTTP {r.status_code} {r.text}")
            check(
                r.status_code == 400 and r.json().get("error") == "invalid_grant",
                "[A] no token while the user has a pending required action (invalid_grant)",
                r.text,
            )
            pending_a = auth_req_id

        # ---- passkey registration ----------------------------------------------------------
        section("alice registers a passkey (browser-like password login + required action)")
        if not browser_register_passkey(passkey):
            print("  (falling back: the dev admin clears alice's required action)")
            dev_admin.put(f"/users/{alice_id}", json={"requiredActions": []})
        alice_now = admin_api.get(f"/users/{alice_id}").json()
        check(
            alice_now.get("requiredActions") == [],
            "alice has no pending required action any more",
            alice_now.get("requiredActions"),
        )
        creds = admin_api.get(f"/users/{alice_id}/credentials").json()
        fact("alice credential types after registration", [c["type"] for c in creds])
        wa = [c for c in creds if c["type"] == "webauthn-passwordless"]
        if check(len(wa) == 1, "companion sees alice's webauthn-passwordless credential"):
            rep = dict(wa[0])
            data = json.loads(rep.get("credentialData") or "{}")
            shown = dict(rep, credentialData=data)
            fact("admin API credential representation (webauthn-passwordless)", shown)
            got_id = data.get("credentialId")
            check(
                got_id is not None
                and b64url_decode(got_id.rstrip("=").replace("+", "-").replace("/", "_")) == passkey.cred_id,
                "credentialData.credentialId is the registered credential id",
                got_id,
            )
            pub = data.get("credentialPublicKey")
            check(
                pub is not None and pub.rstrip("=").replace("+", "-").replace("/", "_") == b64url(cbor(passkey.cose)),
                "credentialData.credentialPublicKey is the COSE key (base64) the service can verify with",
                pub,
            )
            spki = passkey.key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            fact("(for comparison) the passkey's SPKI, base64", base64.b64encode(spki).decode())
        if pending_a:
            r = poll_until_done(pending_a, 2)
            fact(
                "round A's auth_req_id polled again after the required action is done",
                f"HTTP {r.status_code} " + (json.dumps(sorted(r.json().keys())) if r.status_code == 200 else r.text),
            )
            check(r.status_code == 200, "[A] the approved request is redeemable once the action is done", r.text)

    # ---- round B: the happy path -----------------------------------------------------------
    section("round B: approve with authorization_details + approval")
    intent = "int_" + secrets.token_hex(6)
    authorization_details = [
        {
            "type": "iam_policy_update",
            "actions": ["update"],
            "locations": ["https://iam.example.test/"],
            "identifier": "policy-42",
            "policy": {"id": 42, "statements": [{"effect": "Allow", "action": "s3:GetObject"}]},
        }
    ]
    approval = {
        "receipt_id": "rcpt_" + secrets.token_hex(6),
        "challenge_sha256": b64url(hashlib.sha256(b"demo preimage").digest()),
        "credential_id": b64url(passkey.cred_id),
        "uv": True,
        "approved_at": int(time.time()),
    }
    r = backchannel({"intent": intent})
    check(r.status_code == 200, "[B] backchannel authentication accepted (200)", r.text)
    auth_body = r.json()
    fact(
        "backchannel authentication response",
        {k: (redact(v) if k == "auth_req_id" else v) for k, v in auth_body.items()},
    )
    auth_req_id = auth_body["auth_req_id"]
    chan = CHANNEL.take()
    if not check(chan is not None, "[B] Keycloak POSTed the authentication channel"):
        return finish(server)
    bearer = bearer_of(chan)
    fact("channel POST path", chan["path"])
    fact(
        "channel POST headers",
        {k: (f"Bearer {redact(bearer)}" if k.lower() == "authorization" else v) for k, v in chan["headers"].items()},
    )
    fact("channel POST JSON body", chan["body"])
    check(
        chan["body"].get("intent") == intent,
        "the agent's extra parameter arrives as a top-level body member under its own name ('intent')",
        chan["body"],
    )
    check(
        chan["body"].get("login_hint") == ALICE[0] and chan["body"].get("binding_message") == "approve-iam-42",
        "channel body carries login_hint (username) and binding_message",
    )
    header, claims = jwt_parts(bearer)
    fact("channel bearer token JOSE header", header)
    fact("channel bearer token claims", claims)
    try:
        key = jwks.get_signing_key_from_jwt(bearer)
        jwt.decode(bearer, key.key, algorithms=[header["alg"]], audience=ISSUER, issuer=ISSUER)
        check(True, "channel bearer token verifies with the realm JWKS (aud = iss = realm issuer)")
    except Exception as e:
        check(False, "channel bearer token verifies with the realm JWKS", repr(e))
    check(
        claims.get("sub") == alice_id and claims.get("azp") == AGENT[0],
        "bearer token: sub = alice's user id, azp = demo-agent",
        claims,
    )

    r = poll(auth_req_id)
    check(
        r.status_code == 400 and r.json().get("error") == "authorization_pending",
        "[B] before the callback: authorization_pending",
        r.text,
    )
    r = poll(auth_req_id)
    fact("second poll immediately after the first", f"HTTP {r.status_code} {r.text}")

    bad = callback(bearer[:-4] + ("AAAA" if not bearer.endswith("AAAA") else "BBBB"), {"status": "SUCCEED"})
    fact("callback with a tampered bearer token", f"HTTP {bad.status_code} {bad.text}")
    check(bad.status_code in (401, 403), "tampered channel token is refused", bad.status_code)

    payload = {
        "status": "SUCCEED",
        "authorization_details": json.dumps(authorization_details, separators=(",", ":")),
        "approval": json.dumps(approval, separators=(",", ":")),
    }
    cb = callback(bearer, payload)
    fact("callback SUCCEED response", f"HTTP {cb.status_code} {cb.text!r}")
    check(cb.status_code == 200, "[B] callback SUCCEED accepted (200)", cb.text)
    time.sleep(auth_body.get("interval", 2) + 0.1)
    r = poll_until_done(auth_req_id, auth_body.get("interval", 2))
    if not check(r.status_code == 200, "[B] token issued after approval", r.text):
        return finish(server)
    tok = r.json()
    fact("token response members", sorted(tok.keys()))
    check("refresh_token" not in tok, "no refresh token (use.refresh.tokens=false)")
    at = tok["access_token"]
    at_header, at_claims = jwt_parts(at)
    fact("access token JOSE header", at_header)
    fact("access token claims", at_claims)
    try:
        key = jwks.get_signing_key_from_jwt(at)
        jwt.decode(at, key.key, algorithms=[at_header["alg"]], audience="resource-api", issuer=ISSUER)
        check(True, "access token verifies with the realm JWKS for aud=resource-api")
    except Exception as e:
        check(False, "access token verifies with the realm JWKS", repr(e))
    check(
        at_claims.get("authorization_details") == authorization_details,
        "authorization_details is a structured JSON claim equal to what the callback sent",
        at_claims.get("authorization_details"),
    )
    check(
        at_claims.get("approval") == approval,
        "approval is a structured JSON claim equal to what was sent",
        at_claims.get("approval"),
    )
    aud = at_claims.get("aud")
    check("resource-api" in (aud if isinstance(aud, list) else [aud]), "aud contains resource-api", aud)
    check(at_header.get("typ") == "at+jwt", "JOSE typ is at+jwt (RFC 9068)", at_header.get("typ"))
    check(at_claims.get("sub") == alice_id and at_claims.get("azp") == AGENT[0], "sub = alice, azp = demo-agent")
    check(
        at_claims["exp"] - at_claims["iat"] == 120, "access token lifespan 120 s", at_claims["exp"] - at_claims["iat"]
    )
    if "id_token" in tok:
        idt = jwt_parts(tok["id_token"])[1]
        check("authorization_details" not in idt, "ID token does not carry authorization_details")
    r = poll(auth_req_id)
    fact("auth_req_id redeemed a second time", f"HTTP {r.status_code} {r.text}")
    check(r.status_code == 400, "auth_req_id is single use", r.text)

    # ---- round C/D: denial -----------------------------------------------------------------
    for label, status in (("C", "UNAUTHORIZED"), ("D", "CANCELLED")):
        section(f"round {label}: callback {status}")
        got = start_request(label)
        if got:
            rid, body, chan = got
            cb = callback(bearer_of(chan), {"status": status})
            check(cb.status_code == 200, f"[{label}] callback {status} accepted (200)", cb.text)
            time.sleep(body.get("interval", 2) + 0.1)
            r = poll_until_done(rid, body.get("interval", 2))
            fact(f"token endpoint after {status}", f"HTTP {r.status_code} {r.text}")
            check(
                r.status_code == 400 and r.json().get("error") == "access_denied",
                f"[{label}] agent gets access_denied",
                r.text,
            )

    # ---- round E: invalid JSON is dropped, never a string ----------------------------------
    section("round E: approval is not valid JSON")
    got = start_request("E")
    if got:
        rid, body, chan = got
        cb = callback(
            bearer_of(chan),
            {"status": "SUCCEED", "authorization_details": json.dumps(authorization_details), "approval": "{not json"},
        )
        check(cb.status_code == 200, "[E] callback accepted", cb.text)
        time.sleep(body.get("interval", 2) + 0.1)
        r = poll_until_done(rid, body.get("interval", 2))
        if check(r.status_code == 200, "[E] token issued", r.text):
            c = jwt_parts(r.json()["access_token"])[1]
            check("approval" not in c, "invalid JSON note -> claim omitted (no string fallback)", c.get("approval"))
            check(c.get("authorization_details") == authorization_details, "the valid claim is still there")

    # ---- round F: duplicate callback -------------------------------------------------------
    section("round F: the callback is sent twice")
    got = start_request("F")
    if got:
        rid, body, chan = got
        first = callback(bearer_of(chan), {"status": "SUCCEED"})
        second = callback(bearer_of(chan), {"status": "SUCCEED"})
        fact(
            "duplicate callback",
            {"first": f"HTTP {first.status_code}", "second": f"HTTP {second.status_code} {second.text}"},
        )
        check(first.status_code == 200 and second.status_code == 403, "a second callback is refused (403)")
        time.sleep(body.get("interval", 2) + 0.1)
        r = poll(rid)
        fact("agent's poll after a duplicate callback", f"HTTP {r.status_code} {r.text}")

    # ---- round G: the channel refuses ------------------------------------------------------
    section("round G: the authentication channel answers 500")
    CHANNEL.status = 500
    r = backchannel()
    CHANNEL.take(5)
    CHANNEL.status = 201
    fact("backchannel authentication when the channel does not answer 201", f"HTTP {r.status_code} {r.text}")
    check(r.status_code == 503, "agent gets 503 when the channel does not accept", r.status_code)

    # ---- round H: parameter limits ---------------------------------------------------------
    section("round H: Keycloak's limits on what the agent can send")
    r = backchannel({"intent": "x" * 201, "short": "ok"})
    chan = CHANNEL.take()
    if check(r.status_code == 200 and chan is not None, "[H] request accepted"):
        fact(
            "channel body with a 201-character extra parameter",
            {k: (v if len(str(v)) < 60 else f"<{len(v)} chars>") for k, v in chan["body"].items()},
        )
        check(
            "intent" not in chan["body"] and chan["body"].get("short") == "ok",
            "extra parameters over 200 characters are dropped silently",
        )
    r = backchannel({"login_hint": "alice@example.test"})
    chan = CHANNEL.take()
    if check(r.status_code == 200 and chan is not None, "[H] login_hint by email accepted"):
        fact("channel login_hint when the agent sent alice@example.test", chan["body"].get("login_hint"))
        check(chan["body"].get("login_hint") == ALICE[0], "the channel always gets the username as login_hint")
    r = backchannel(binding_message="approve IAM 42")
    fact("binding_message with spaces", f"HTTP {r.status_code} {r.text}")
    check(
        r.status_code == 400 and r.json().get("error") == "invalid_binding_message",
        "binding_message must match ^[a-zA-Z0-9-._+/!?#]{1,50}$",
        r.text,
    )
    r = backchannel({f"p{i}": str(i) for i in range(7)})
    chan = CHANNEL.take()
    if chan:
        extras = sorted(k for k in chan["body"] if re.fullmatch(r"p\d", k))
        fact("extra parameters forwarded out of 7 sent", extras)
        check(len(extras) == 5, "at most 5 extra parameters are forwarded", extras)

    spiffe_round(dev_admin, jwks, alice_id)
    return finish(server)


def spiffe_assertion(svid: str, assertion_type: str = JWT_SPIFFE) -> dict:
    return {"client_assertion_type": assertion_type, "client_assertion": svid}


def refused(r: httpx.Response) -> bool:
    """Keycloak's answer to a failed client authentication: 400/401 invalid_client."""
    try:
        err = r.json().get("error")
    except ValueError:
        err = None
    return r.status_code in (400, 401) and err in ("invalid_client", "unauthorized_client")


def spiffe_round(dev_admin: httpx.Client, jwks: jwt.PyJWKClient, alice_id: str) -> None:
    """Round S: spiffe-agent authenticates with SPIFFE JWT-SVIDs (feature "spiffe")."""
    section("round S: spiffe-agent authenticates with a SPIFFE JWT-SVID (no client secret)")
    idp = dev_admin.get(f"/identity-provider/instances/{SPIFFE_IDP}")
    if not check(idp.status_code == 200, f"identity provider {SPIFFE_IDP} exists (feature spiffe on)", idp.text):
        return
    idp_rep = idp.json()
    fact("SPIFFE identity provider (as imported)", {k: idp_rep.get(k) for k in ("providerId", "types", "config")})
    check(
        idp_rep.get("providerId") == "spiffe" and idp_rep["config"].get("trustDomain") == "spiffe://example.test",
        "identity provider type spiffe, trust domain spiffe://example.test",
    )
    if not check(
        idp_rep["config"].get("bundleEndpoint") == SPIFFE_BUNDLE_URI,
        f"its bundle endpoint is the one this stub serves ({SPIFFE_BUNDLE_URI})",
        f"{idp_rep['config'].get('bundleEndpoint')} (start Keycloak with the same CIBA_CHANNEL_URI /"
        " CIBA_SPIFFE_BUNDLE_URI as this test)",
    ):
        return
    clients = dev_admin.get("/clients", params={"clientId": SPIFFE_AGENT}).json()
    stored_secret = "not-the-secret"
    if check(len(clients) == 1, f"client {SPIFFE_AGENT} exists"):
        c = clients[0]
        attrs = c.get("attributes", {})
        fact(
            f"{SPIFFE_AGENT} client authentication",
            {
                "clientAuthenticatorType": c.get("clientAuthenticatorType"),
                "jwt.credential.issuer": attrs.get("jwt.credential.issuer"),
                "jwt.credential.sub": attrs.get("jwt.credential.sub"),
                "oidc.ciba.grant.enabled": attrs.get("oidc.ciba.grant.enabled"),
            },
        )
        check(
            c.get("clientAuthenticatorType") == "federated-jwt"
            and attrs.get("jwt.credential.issuer") == SPIFFE_IDP
            and attrs.get("jwt.credential.sub") == SPIFFE_ID,
            f"{SPIFFE_AGENT}: authenticator federated-jwt, issuer {SPIFFE_IDP}, subject {SPIFFE_ID}",
        )
        # Keycloak gives every confidential client a random secret, even a federated-jwt one; the
        # client-secret authenticator must not accept it (checked below).
        secret = dev_admin.get(f"/clients/{c['id']}/client-secret")
        stored_secret = secret.json().get("value") or stored_secret
        fact(
            f"{SPIFFE_AGENT} client secret (admin API)",
            f"HTTP {secret.status_code} type={secret.json().get('type')} value={redact(stored_secret)}",
        )

    # -- the happy path: one JWT-SVID for the CIBA request and every poll (SVIDs are reusable) --
    svid = SPIFFE.svid()
    fact("JWT-SVID JOSE header", jwt.get_unverified_header(svid))
    fact("JWT-SVID claims", jwt.decode(svid, options={"verify_signature": False}))
    auth = spiffe_assertion(svid)
    r = backchannel({"intent": "int_spiffe"}, binding_message="approve-spiffe-ops", client_auth=auth)
    fact("backchannel authentication with the JWT-SVID", f"HTTP {r.status_code} {r.text[:200]}")
    if not check(r.status_code == 200, "[S] JWT-SVID authenticates spiffe-agent at the CIBA endpoint (200)", r.text):
        return
    fact(
        "bundle fetches by Keycloak so far",
        [{"path": f["path"], "User-Agent": f["headers"].get("User-Agent")} for f in SPIFFE.fetches],
    )
    check(len(SPIFFE.fetches) >= 1, "Keycloak fetched the trust domain's bundle from the bundle endpoint")
    body = r.json()
    chan = CHANNEL.take()
    if not check(chan is not None, "[S] Keycloak POSTed the authentication channel"):
        return
    check(
        chan["body"].get("binding_message") == "approve-spiffe-ops" and chan["body"].get("intent") == "int_spiffe",
        "[S] channel body carries the spiffe-agent's binding_message and intent",
        chan["body"],
    )
    bearer_claims = jwt_parts(bearer_of(chan))[1]
    check(bearer_claims.get("azp") == SPIFFE_AGENT, "[S] channel bearer token: azp = spiffe-agent", bearer_claims)

    r = poll(body["auth_req_id"], auth)
    check(
        r.status_code == 400 and r.json().get("error") == "authorization_pending",
        "[S] JWT-SVID authenticates spiffe-agent at the token endpoint (authorization_pending before approval)",
        r.text,
    )
    # Refused at the token endpoint: another key, another SPIFFE ID (the request must survive).
    other_key = ec.generate_private_key(ec.SECP256R1())
    r = poll(body["auth_req_id"], spiffe_assertion(SPIFFE.svid(key=other_key)))
    fact("token endpoint, JWT-SVID signed by another key (same kid)", f"HTTP {r.status_code} {r.text}")
    check(refused(r), "[S] token endpoint refuses a JWT-SVID signed by another key (invalid_client)", r.text)
    r = poll(body["auth_req_id"], spiffe_assertion(SPIFFE.svid("spiffe://example.test/agent/other")))
    fact("token endpoint, JWT-SVID with another SPIFFE ID", f"HTTP {r.status_code} {r.text}")
    check(refused(r), "[S] token endpoint refuses a JWT-SVID with another SPIFFE ID (invalid_client)", r.text)

    authorization_details = [{"type": "ops_restart", "actions": ["restart"], "identifier": "svc-7"}]
    cb = callback(
        bearer_of(chan),
        {"status": "SUCCEED", "authorization_details": json.dumps(authorization_details, separators=(",", ":"))},
    )
    check(cb.status_code == 200, "[S] callback SUCCEED accepted", cb.text)
    time.sleep(body.get("interval", 2) + 0.1)
    r = poll_until_done(body["auth_req_id"], body.get("interval", 2), client_auth=auth)
    if check(r.status_code == 200, "[S] token issued to spiffe-agent (same JWT-SVID reused for every poll)", r.text):
        at = r.json()["access_token"]
        at_header, at_claims = jwt_parts(at)
        fact("spiffe-agent access token claims", at_claims)
        try:
            key = jwks.get_signing_key_from_jwt(at)
            jwt.decode(at, key.key, algorithms=[at_header["alg"]], audience="resource-api", issuer=ISSUER)
            check(True, "[S] access token verifies with the realm JWKS for aud=resource-api")
        except Exception as e:
            check(False, "[S] access token verifies with the realm JWKS", repr(e))
        check(
            at_claims.get("azp") == SPIFFE_AGENT and at_claims.get("sub") == alice_id,
            "[S] access token: azp = spiffe-agent, sub = alice",
            at_claims,
        )
        check(
            at_claims.get("authorization_details") == authorization_details,
            "[S] authorization_details claim as approved",
            at_claims.get("authorization_details"),
        )
        check("refresh_token" not in r.json(), "[S] no refresh token")

    # -- refused at the CIBA endpoint (each must cause no channel POST) --
    foreign = SpiffeTrustDomain()  # another trust domain's key, with its own kid
    cases = [
        ("JWT-SVID with another SPIFFE ID of the trust domain", SPIFFE.svid("spiffe://example.test/agent/other")),
        ("JWT-SVID with a SPIFFE ID of another trust domain", SPIFFE.svid("spiffe://other.test/agent/ops")),
        ("JWT-SVID signed by another key (same kid)", SPIFFE.svid(key=other_key)),
        ("JWT-SVID signed by another key (its own kid)", foreign.svid()),
        ("JWT-SVID whose aud is not the realm issuer", SPIFFE.svid(aud="resource-api")),
        ("expired JWT-SVID", SPIFFE.svid(iat_offset=-600, lifetime=300)),
        # Keycloak's federated-jwt validator: iat at most 300 s old (IdP config fedClientAssertionMaxExp).
        ("unexpired JWT-SVID issued 400 s ago", SPIFFE.svid(iat_offset=-400, lifetime=600)),
    ]
    attempts = [(label, spiffe_assertion(t)) for label, t in cases] + [
        ("valid JWT-SVID sent as client_assertion_type jwt-bearer", spiffe_assertion(svid, JWT_BEARER)),
        ("valid JWT-SVID with client_id=demo-agent", {"client_id": AGENT[0], **spiffe_assertion(svid)}),
        (
            "spiffe-agent's own stored (auto-generated) client secret, client_secret_post",
            {"client_id": SPIFFE_AGENT, "client_secret": stored_secret},
        ),
    ]
    observed = {}
    for label, client_auth in attempts:
        r = backchannel(client_auth=client_auth)
        stray = CHANNEL.take(0.5)
        observed[label] = f"HTTP {r.status_code} {r.text}"
        check(
            refused(r) and stray is None,
            f"[S] CIBA endpoint refuses: {label}",
            observed[label],
        )
    fact("CIBA endpoint answers to refused spiffe-agent credentials", observed)
    # The JWT-SVID with the right SPIFFE ID still works after all that (no lock-out, reuse allowed).
    r = backchannel(binding_message="approve-spiffe-again", client_auth=spiffe_assertion(SPIFFE.svid()))
    CHANNEL.take(5)
    check(r.status_code == 200, "[S] a fresh valid JWT-SVID is still accepted afterwards", r.text)
    fact("bundle fetches by Keycloak in round S (unknown kid or failed signature -> refetch)", len(SPIFFE.fetches))


def finish(server: ThreadingHTTPServer) -> int:
    server.shutdown()
    print(f"\nkeycloak smoke: {len(PASSED)} checks passed, {len(FAILED)} failed")
    for f in FAILED:
        print(f"  failed: {f}")
    return 0 if not FAILED else 1


if __name__ == "__main__":
    sys.exit(main())
