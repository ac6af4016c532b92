"""Shared pieces of the real-browser tests (imported by tests/browser/conftest.py and the tests) and of
the real-Keycloak tests (the Chromium they drive)."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from ciba_service.agent import CibaAgent
from ciba_service.config import ClientConfig, Settings, load_settings
from ciba_service.core.model import BackchannelRequest, Passkey
from ciba_service.core.security import auth_req_id_key, digest_secret
from ciba_service.server.notify import ApprovalNotice, Notifier
from ciba_service.server.provider import Provider

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AGENT_ID, AGENT_SECRET = "agent-1", "test-secret-agent-1"
UI_TIMEOUT_MS = 10_000

ACTION: list[dict[str, Any]] = [
    {
        "type": "iam_policy",
        "actions": ["update"],
        "identifier": "policy-42",
        "locations": ["https://iam.example.test/"],
    }
]


class QueueNotifier(Notifier):
    """Records every notice and lets a test wait for the next one (the web layer delivers
    notices as a background task, after the /bc-authorize response has been sent)."""

    def __init__(self) -> None:
        self.notices: list[ApprovalNotice] = []
        self._inbox: queue.Queue[ApprovalNotice] = queue.Queue()

    def notify(self, notice: ApprovalNotice) -> None:
        self.notices.append(notice)
        self._inbox.put(notice)

    def next(self, timeout: float = 5.0) -> ApprovalNotice:
        return self._inbox.get(timeout=timeout)


def make_settings(data_dir: Path, port: int, **overrides: Any) -> Settings:
    """Like tests/support/service.py's make_settings, but with the real port in the issuer."""
    clients = [
        ClientConfig(
            client_id=AGENT_ID,
            name="Agent One",
            client_secret_hash=digest_secret(AGENT_SECRET),
            scopes=["openid", "profile"],
        ),
    ]
    return load_settings(
        issuer=f"http://localhost:{port}", data_dir=data_dir, clients=clients, poll_interval=1, **overrides
    )


@dataclass
class Service:
    provider: Provider
    settings: Settings
    notifier: QueueNotifier
    base: str
    agents: list[CibaAgent] = field(default_factory=list)

    def agent(self) -> CibaAgent:
        agent = CibaAgent(issuer=self.base, client_id=AGENT_ID, client_secret=AGENT_SECRET)
        self.agents.append(agent)
        return agent

    def request(self, auth_req_id: str) -> BackchannelRequest:
        request = self.provider.store.find_request_by_auth_req_id(auth_req_id_key(auth_req_id))
        assert request is not None
        return request

    def passkeys(self, username: str) -> list[Passkey]:
        user = self.provider.store.find_user(username)
        assert user is not None
        return self.provider.store.passkeys_for(user.user_id)


@dataclass
class Device:
    """The user's browser: one page with a virtual platform authenticator."""

    context: Any
    page: Any
    cdp: Any
    authenticator_id: str

    def add_authenticator(self, *, is_user_verified: bool = True) -> str:
        result = self.cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": is_user_verified,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        self.authenticator_id = result["authenticatorId"]
        return self.authenticator_id

    def credentials(self) -> list[dict[str, Any]]:
        result = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id})
        creds: list[dict[str, Any]] = result["credentials"]
        return creds

    def sign_count(self) -> int:
        (credential,) = self.credentials()
        return int(credential["signCount"])

    def move_credentials_to_new_authenticator(self, *, is_user_verified: bool) -> None:
        """Replace the authenticator by a new one with other options, holding the same keys."""
        credentials = self.credentials()
        self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.authenticator_id})
        self.add_authenticator(is_user_verified=is_user_verified)
        for credential in credentials:
            self.cdp.send(
                "WebAuthn.addCredential",
                {"authenticatorId": self.authenticator_id, "credential": credential},
            )

    def enroll(self, service: Service, username: str = "alice") -> None:
        """Register a passkey for a new user through the enrollment page."""
        _, link = service.provider.add_user(username=username)
        self.page.goto(link)
        expect(self.page.locator("#register")).to_be_enabled()
        self.page.click("#register")
        expect(self.page.locator("#status")).to_contain_text("Passkey registered")
