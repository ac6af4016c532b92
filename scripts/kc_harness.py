"""Shared by `make demo-keycloak` and the real-Keycloak tests: start/stop the pinned Keycloak
with scripts/keycloak.sh, run ciba-service in keycloak mode beside it, and (for the demo)
register a passkey in Keycloak through its own login pages with the development software
authenticator.

All secrets here are DEVELOPMENT FIXTURES from realm-export/agents-realm.json.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from ciba_service.agent.softauthn import SoftAuthenticator  # noqa: E402
from ciba_service.config import ClientConfig, load_settings  # noqa: E402
from ciba_service.core.security import b64url_encode  # noqa: E402
from ciba_service.server.notify import ApprovalNotice, Notifier  # noqa: E402
from ciba_service.server.provider import Provider  # noqa: E402
from ciba_service.server.wiring import build_provider  # noqa: E402
from ciba_service.web.app import create_app  # noqa: E402
from ciba_service.web.serving import BackgroundServer, free_port  # noqa: E402

KC_PORT = int(os.environ.get("KC_HTTP_PORT", "8180"))
KC_BASE = f"http://localhost:{KC_PORT}"
REALM = "agents"
KC_ISSUER = f"{KC_BASE}/realms/{REALM}"
OIDC = f"{KC_ISSUER}/protocol/openid-connect"
# DEVELOPMENT FIXTURES (realm-export/agents-realm.json)
AGENT_ID, AGENT_SECRET = "demo-agent", "dev-only-demo-agent-secret"
COMPANION_ID, COMPANION_SECRET = "ciba-companion", "dev-only-ciba-companion-secret"
ALICE, ALICE_PASSWORD = "alice", "alice-dev-password"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin"
KEYCLOAK_SH = REPO / "scripts" / "keycloak.sh"


def keycloak(command: str, *, channel_uri: str | None = None) -> None:
    env = dict(os.environ)
    if channel_uri:
        env["CIBA_CHANNEL_URI"] = channel_uri
    subprocess.run(["bash", str(KEYCLOAK_SH), command], check=True, env=env)


class Inbox(Notifier):
    """The user's decoupled device: receives approval links."""

    def __init__(self) -> None:
        self.notices: list[ApprovalNotice] = []

    def notify(self, notice: ApprovalNotice) -> None:
        self.notices.append(notice)

    def next(self, timeout: float = 15) -> ApprovalNotice:
        deadline = time.monotonic() + timeout
        while not self.notices:
            if time.monotonic() > deadline:
                raise TimeoutError("no approval notice arrived")
            time.sleep(0.02)
        return self.notices.pop(0)


@dataclass
class Companion:
    base: str
    provider: Provider
    inbox: Inbox


@contextmanager
def running_keycloak(port: int) -> Iterator[None]:
    """Keycloak with its channel pointing at ciba-service on ``port``; stopped afterwards."""
    started = time.monotonic()
    keycloak("start", channel_uri=f"http://localhost:{port}/keycloak/auth-channel")
    print(f"keycloak ready after {time.monotonic() - started:.1f}s", file=sys.stderr)
    try:
        yield
    finally:
        keycloak("stop")


@contextmanager
def running_companion(port: int, data_dir: Path) -> Iterator[Companion]:
    settings = load_settings(
        mode="keycloak",
        issuer=f"http://localhost:{port}",
        data_dir=data_dir,
        keycloak={
            "base_url": KC_BASE,
            "realm": REALM,
            "admin_client_id": COMPANION_ID,
            "admin_client_secret": COMPANION_SECRET,
        },
        clients=[
            ClientConfig(
                client_id=AGENT_ID, name="Demo ops agent", authorization_details_types=["iam_policy", "key_rotation"]
            )
        ],
    )
    inbox = Inbox()
    provider = build_provider(settings, notifier=inbox)
    with BackgroundServer(create_app(provider), port=port):
        yield Companion(base=f"http://localhost:{port}", provider=provider, inbox=inbox)
    provider.store.close()


def register_passkey_over_http(authenticator: SoftAuthenticator) -> None:
    """Password login to the account console; Keycloak's webauthn-register-passwordless
    required action asks for a passkey; the software authenticator answers it."""
    from keycloak_smoke import Browser, form_action, js_string

    verifier = b64url_encode(secrets.token_bytes(32))
    params = {
        "client_id": "account-console",
        "redirect_uri": f"{KC_ISSUER}/account/",
        "response_type": "code",
        "scope": "openid",
        "state": secrets.token_hex(8),
        "nonce": secrets.token_hex(8),
        "code_challenge": b64url_encode(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    browser = Browser()
    page = browser.get(f"{OIDC}/auth", params=params)
    action = form_action(page.text, "kc-form-login")
    if action is None:
        raise RuntimeError(f"no login form (HTTP {page.status_code})")
    page = browser.follow(
        browser.post(action, data={"username": ALICE, "password": ALICE_PASSWORD, "credentialId": ""}),
        f"{KC_ISSUER}/account/",
    )
    challenge, rp_id, user_id = (js_string(page.text, k) for k in ("challenge", "rpId", "userid"))
    register = form_action(page.text, "register")
    if not (challenge and register and user_id):
        raise RuntimeError("Keycloak did not ask for a passkey after the password")
    options = {
        "rp": {"id": rp_id or "localhost", "name": "keycloak"},
        "user": {"id": user_id, "name": ALICE, "displayName": ALICE},
        "challenge": challenge,
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
    }
    credential = authenticator.create(options, origin=KC_BASE)
    done = browser.follow(
        browser.post(
            register,
            data={
                "clientDataJSON": credential["response"]["clientDataJSON"],
                "attestationObject": credential["response"]["attestationObject"],
                "publicKeyCredentialId": credential["id"],
                "authenticatorLabel": "ciba-service demo software passkey",
                "transports": "internal",
                "authenticatorAttachment": "platform",
                "error": "",
            },
        ),
        f"{KC_ISSUER}/account/",
    )
    if not done.headers.get("location", "").startswith(f"{KC_ISSUER}/account/"):
        raise RuntimeError(f"passkey registration did not complete (HTTP {done.status_code})")


def admin_token() -> str:
    response = httpx.post(
        f"{KC_BASE}/realms/master/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "admin-cli", "username": ADMIN_USER, "password": ADMIN_PASSWORD},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


__all__ = [
    "AGENT_ID",
    "AGENT_SECRET",
    "KC_ISSUER",
    "OIDC",
    "Companion",
    "Inbox",
    "free_port",
    "register_passkey_over_http",
    "running_companion",
    "running_keycloak",
]
