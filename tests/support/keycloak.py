"""A fake Keycloak for keycloak-mode tests: respx routes for its token, JWKS, admin API, CIBA
endpoint and callback, which calls the service's authentication channel like Keycloak does."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import respx
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from webauthn.helpers import encode_cbor

from ciba_service.agent.softauthn import SoftAuthenticator, _Credential
from ciba_service.core.security import b64url_encode
from tests.support.service import Clock

KC = "http://kc.test"
ISSUER = f"{KC}/realms/agents"
OIDC = f"{ISSUER}/protocol/openid-connect"
ADMIN = f"{KC}/admin/realms/agents"
USER_ID = "6b1c1e0e-5f7a-4d0e-9c59-3d1f0c2a7e11"
AGENT_AUTH = ("demo-agent", "dev-secret")


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@dataclass
class FakeKeycloak:
    """Just enough of Keycloak's CIBA and admin API, driven through respx."""

    router: respx.MockRouter
    clock: Clock
    app_client: TestClient | None = None
    realm_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    authenticator: SoftAuthenticator = field(default_factory=SoftAuthenticator)
    credentials: list[dict[str, Any]] = field(default_factory=list)
    channel_calls: list[httpx.Response] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    forwarded: list[httpx.Request] = field(default_factory=list)
    azp_override: str | None = None
    user_enabled: bool = True

    def channel_token(self, *, azp: str, sub: str = USER_ID, **override: Any) -> str:
        now = int(self.clock())
        claims = {
            "iss": ISSUER,
            "aud": ISSUER,
            "sub": sub,
            "azp": azp,
            "jti": f"auth-result-{len(self.channel_calls)}",
            "iat": now,
            "exp": now + 120,
            "typ": "Bearer",
        }
        claims.update(override)
        return jwt.encode(claims, self.realm_key, algorithm="RS256", headers={"kid": "realm-key"})

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.realm_key.public_key()))
        return {"keys": [{**jwk, "kid": "realm-key", "use": "sig", "alg": "RS256"}]}

    def register_passkey(self) -> None:
        """A passkey 'registered in Keycloak': stored the way the admin API returns it."""
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        cred = _Credential(
            credential_id=b"kc-credential-" + bytes(range(10)),
            rp_id="localhost",
            user_handle=USER_ID.encode(),
            private_key=key,
        )
        self.authenticator.credentials.append(cred)
        n = key.public_key().public_numbers()
        cose = encode_cbor({1: 2, 3: -7, -1: 1, -2: n.x.to_bytes(32, "big"), -3: n.y.to_bytes(32, "big")})
        self.credentials.append(
            {
                "id": "c1",
                "type": "webauthn-passwordless",
                "userLabel": "laptop",
                "createdDate": 1_700_000_000_000,
                "credentialData": json.dumps(
                    {
                        "aaguid": "00000000-0000-0000-0000-000000000000",
                        "credentialId": base64.b64encode(cred.credential_id).decode(),  # standard base64
                        "credentialPublicKey": b64url_encode(cose),  # base64url COSE
                        "counter": 0,
                        "attestationStatementFormat": "none",
                    }
                ),
            }
        )

    def ciba_auth(self, request: httpx.Request) -> httpx.Response:
        self.forwarded.append(request)
        form = dict(httpx.QueryParams(request.content.decode()))
        auth = request.headers.get("authorization", "")
        client_id = base64.b64decode(auth.split(" ")[1]).decode().split(":")[0] if auth else form.get("client_id", "")
        body = {
            "login_hint": form["login_hint"],
            "scope": form["scope"],
            "is_consent_required": False,
            "binding_message": form.get("binding_message"),
            "acr_values": None,
        }
        body.update(
            {
                k: v
                for k, v in form.items()
                if k not in ("scope", "login_hint", "binding_message", "client_id", "client_secret")
            }
        )
        token = self.channel_token(azp=self.azp_override or client_id)
        assert self.app_client is not None
        channel = self.app_client.post(
            "/keycloak/auth-channel", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        self.channel_calls.append(channel)
        if channel.status_code != 201:
            return httpx.Response(
                503,
                json={"error": "server_error", "error_description": "Failed to send authentication request"},
            )
        return httpx.Response(200, json={"auth_req_id": "kc-auth-req-id", "expires_in": 120, "interval": 2})

    def callback(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"].startswith("Bearer ")
        self.callbacks.append(json.loads(request.content))
        return httpx.Response(200)

    def install(self) -> None:
        r = self.router
        r.get(f"{OIDC}/certs").mock(side_effect=lambda _: httpx.Response(200, json=self.jwks()))
        r.post(f"{OIDC}/token", data={"grant_type": "client_credentials"}).mock(
            return_value=httpx.Response(200, json={"access_token": "admin-at", "expires_in": 300})
        )
        r.get(f"{ADMIN}/users/{USER_ID}").mock(
            side_effect=lambda _: httpx.Response(
                200,
                json={
                    "id": USER_ID,
                    "username": "alice",
                    "enabled": self.user_enabled,
                    "firstName": "Alice",
                    "lastName": "Example",
                    "createdTimestamp": 1_700_000_000_000,
                },
            )
        )
        r.get(f"{ADMIN}/users/{USER_ID}/credentials").mock(
            side_effect=lambda _: httpx.Response(200, json=self.credentials)
        )
        r.post(f"{OIDC}/ext/ciba/auth", name="ciba").mock(side_effect=self.ciba_auth)
        r.post(f"{OIDC}/ext/ciba/auth/callback", name="callback").mock(side_effect=self.callback)
