"""Builders for tests against the service: settings with three registered agent clients, a
provider on a SQLite store in a given directory, its ASGI app, and a user enrolled with a
development software passkey (:func:`open_env`). The ``env`` fixture (tests/conftest.py) is
:func:`open_env` on a temporary directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig, Settings, load_settings
from ciba_service.core.model import BackchannelRequest
from ciba_service.core.security import auth_req_id_key, digest_secret
from ciba_service.server.notify import ApprovalNotice, Notifier
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app

BASE = "http://localhost:8000"
AGENT_ID, AGENT_SECRET = "agent-1", "test-secret-agent-1"
OTHER_ID, OTHER_SECRET = "agent-2", "test-secret-agent-2"
NOCIBA_ID, NOCIBA_SECRET = "agent-no-ciba", "test-secret-no-ciba"
CIBA = "urn:openid:params:grant-type:ciba"
ACTION: list[dict[str, Any]] = [
    {
        "type": "iam_policy",
        "actions": ["update"],
        "identifier": "policy-42",
        "locations": ["https://iam.example.test/"],
    }
]


class Clock:
    """A controllable clock (seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        self.notices: list[ApprovalNotice] = []

    def notify(self, notice: ApprovalNotice) -> None:
        self.notices.append(notice)


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    clients = [
        ClientConfig(
            client_id=AGENT_ID,
            name="Agent One",
            client_secret_hash=digest_secret(AGENT_SECRET),
            scopes=["openid", "profile"],
        ),
        ClientConfig(
            client_id=OTHER_ID,
            client_secret_hash=digest_secret(OTHER_SECRET),
            authorization_details_types=["key_rotation"],
        ),
        ClientConfig(client_id=NOCIBA_ID, client_secret_hash=digest_secret(NOCIBA_SECRET), grant_types=[]),
    ]
    values: dict[str, Any] = {"issuer": BASE, "data_dir": data_dir, "clients": clients, "poll_interval": 2}
    values.update(overrides)
    return load_settings(**values)


@dataclass
class Env:
    provider: Provider
    client: TestClient
    clock: Clock
    notifier: RecordingNotifier
    authenticator: SoftAuthenticator
    settings: Settings

    def bc_authorize(
        self,
        data: dict[str, str] | None = None,
        *,
        auth: tuple[str, str] | None = (AGENT_ID, AGENT_SECRET),
        **fields: str,
    ) -> Any:
        body = {
            "scope": "openid",
            "login_hint": "alice",
            "binding_message": "BM-1",
            "authorization_details": json.dumps(ACTION),
        }
        body.update(data or {})
        body.update(fields)
        body = {k: v for k, v in body.items() if v is not None}
        return self.client.post("/bc-authorize", data=body, auth=auth)

    def token(self, auth_req_id: str, *, auth: tuple[str, str] | None = (AGENT_ID, AGENT_SECRET)) -> Any:
        return self.client.post("/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id}, auth=auth)

    def request_for(self, auth_req_id: str) -> BackchannelRequest:
        request = self.provider.store.find_request_by_auth_req_id(auth_req_id_key(auth_req_id))
        assert request is not None
        return request

    def approve(self, auth_req_id: str) -> dict[str, Any]:
        request = self.request_for(auth_req_id)
        view = self.client.get(f"/approve/{request.approval_id}/details").json()
        credential = self.authenticator.get(view["publicKey"], origin=BASE)
        response = self.client.post(f"/approve/{request.approval_id}/approve", json={"credential": credential})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def enroll(provider: Provider, client: TestClient, username: str, authenticator: SoftAuthenticator) -> None:
    _, link = provider.add_user(username=username)
    token = link.rsplit("/", 1)[1]
    options = client.post(f"/enroll/{token}/options", json={}).json()
    response = client.post(f"/enroll/{token}/complete", json={"credential": authenticator.create(options, origin=BASE)})
    assert response.status_code == 200, response.text


@contextmanager
def open_env(settings: Settings, *, clock: Clock | None = None, username: str | None = "alice") -> Iterator[Env]:
    """A provider built from ``settings`` (its store included), its app, and ``username``
    enrolled with a fresh software passkey (none when ``username`` is None)."""
    clock = clock or Clock()
    notifier = RecordingNotifier()
    provider = build_provider(settings, notifier=notifier, clock=clock)
    authenticator = SoftAuthenticator()
    with TestClient(create_app(provider), base_url=BASE) as client:
        if username is not None:
            enroll(provider, client, username, authenticator)
        yield Env(
            provider=provider,
            client=client,
            clock=clock,
            notifier=notifier,
            authenticator=authenticator,
            settings=settings,
        )
    provider.store.close()
