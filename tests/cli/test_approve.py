"""``ciba-service enroll-key`` and ``ciba-service approve`` as a user runs them, against the
service over real HTTP, with a software CTAP2 security key in place of the USB one (the CLI's
key discovery and PIN prompt are the two things replaced; everything else is the command).
The token the agent then gets is accepted by the resource server for that action only."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from typer.testing import CliRunner

from ciba_service import cli
from ciba_service.agent import CibaAgent
from ciba_service.config import ClientConfig, load_settings
from ciba_service.core.protocol import terminal_origin
from ciba_service.core.security import digest_secret
from ciba_service.rs import InsufficientAuthorization, JwksCache, RequestedAction, TokenVerifier
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port
from tests.support.ctap2 import SoftCtap2Device
from tests.support.service import ACTION, RecordingNotifier

PIN = "271828"
EXACT = RequestedAction(
    type="iam_policy", actions=["update"], identifier="policy-42", locations=["https://iam.example.test/"]
)


@dataclass
class Served:
    base: str
    provider: Provider
    notifier: RecordingNotifier
    key: SoftCtap2Device
    pins: list[str | None]

    def agent(self) -> CibaAgent:
        return CibaAgent(issuer=self.base, client_id="term-agent", client_secret="term-secret")


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    port = free_port()
    base = f"http://localhost:{port}"
    settings = load_settings(
        issuer=base,
        data_dir=tmp_path,
        poll_interval=1,
        approval_origins=[terminal_origin(base)],
        clients=[
            ClientConfig(client_id="term-agent", name="Terminal agent", client_secret_hash=digest_secret("term-secret"))
        ],
    )
    notifier = RecordingNotifier()
    provider = build_provider(settings, notifier=notifier)
    key = SoftCtap2Device(pin=PIN)
    pins: list[str | None] = []
    # The two seams: the USB key discovery and the PIN prompt (which reads /dev/tty).
    monkeypatch.setattr(cli, "_security_keys", lambda: [key])
    monkeypatch.setattr(cli, "_read_pin", lambda: pins.pop(0) if pins else PIN)
    with BackgroundServer(create_app(provider), port=port):
        yield Served(base=base, provider=provider, notifier=notifier, key=key, pins=pins)
    provider.store.close()


def run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(cli.app, list(args), input=input)


def enroll_alice(served: Served) -> None:
    _, link = served.provider.add_user(username="alice")
    result = run("enroll-key", link)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "enrolled", "username": "alice"}


def request(served: Served, agent: CibaAgent, message: str) -> tuple[Any, str]:
    pending = agent.request(login_hint="alice", authorization_details=ACTION, binding_message=message)
    deadline = time.monotonic() + 5  # the service notifies the user after answering the agent
    while not served.notifier.notices:
        assert time.monotonic() < deadline, "the user was not notified"
        time.sleep(0.01)
    return pending, served.notifier.notices.pop().approval_url


def test_approve_in_the_terminal_then_the_resource_server_accepts_that_action_only(served: Served) -> None:
    enroll_alice(served)
    agent = served.agent()
    pending, link = request(served, agent, "TERM-42")
    tokens: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: tokens.append(agent.wait(pending)))
    waiter.start()
    result = run("approve", link, input="y\n")
    waiter.join(timeout=20)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["status"] == "approved"  # (the runner echoes "y")
    shown = result.stderr
    assert "Terminal agent (term-agent) asks alice to approve" in shown
    assert "binding message: TERM-42" in shown
    assert "identifier: policy-42" in shown and "locations: https://iam.example.test/" in shown
    assert "Touch your security key to approve." in shown

    verifier = TokenVerifier(issuer=served.base, audience="resource-api", keys=JwksCache(f"{served.base}/jwks.json"))
    access_token = tokens[0]["access_token"]
    with pytest.raises(InsufficientAuthorization):  # another action: refused, and nothing is spent
        verifier.verify(access_token, RequestedAction(type="iam_policy", actions=["update"], identifier="policy-43"))
    assert verifier.verify(access_token, EXACT).entry == ACTION[0]
    agent.close()


def test_wrong_pin_in_the_terminal_approves_nothing(served: Served) -> None:
    enroll_alice(served)
    agent = served.agent()
    _pending, link = request(served, agent, "TERM-43")
    served.pins.append("000000")
    result = run("approve", link, "--yes")
    assert result.exit_code == 1
    assert "not approved: wrong PIN (7 attempts left before the key blocks)" in result.stderr
    assert result.stdout == ""
    assert served.provider.store.find_request_by_approval_id(link.rsplit("/", 1)[1]).status.value == "pending"  # type: ignore[union-attr]
    agent.close()


def test_answering_no_sends_nothing(served: Served) -> None:
    enroll_alice(served)
    agent = served.agent()
    _, link = request(served, agent, "TERM-44")
    calls = len(served.key.calls)
    result = run("approve", link, input="n\n")
    assert result.exit_code == 1
    assert "not approved; nothing was sent" in result.stderr
    assert len(served.key.calls) == calls
    agent.close()


def test_deny_in_the_terminal(served: Served) -> None:
    enroll_alice(served)
    agent = served.agent()
    pending, link = request(served, agent, "TERM-45")
    result = run("approve", link, "--deny")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "denied"}
    with pytest.raises(Exception, match="access_denied"):
        agent.wait(pending)
    agent.close()


def test_a_key_that_is_not_enrolled_is_refused_in_the_terminal(served: Served) -> None:
    enroll_alice(served)
    served.key.credentials.clear()
    agent = served.agent()
    _, link = request(served, agent, "TERM-46")
    result = run("approve", link, "--yes")
    assert result.exit_code == 1
    assert "not approved: this key holds no passkey of the requested user for this service" in result.stderr
    agent.close()


def test_no_security_key_is_reported(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    enroll_alice(served)
    monkeypatch.setattr(cli, "_security_keys", list)
    agent = served.agent()
    _, link = request(served, agent, "TERM-47")
    result = run("approve", link, "--yes")
    assert result.exit_code == 1
    assert "not approved: no FIDO2 security key found" in result.stderr
    agent.close()


def test_a_tampered_request_is_refused_in_the_terminal(served: Served) -> None:
    """Between the terminal and the service, a proxy swaps the action in the binding document."""
    enroll_alice(served)
    proxy = FastAPI()

    @proxy.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request) -> Response:
        async with httpx.AsyncClient() as http:
            upstream = await http.request(request.method, f"{served.base}/{path}", content=await request.body())
        body = upstream.content
        if path.endswith("/details"):
            view = upstream.json()
            view["binding_document"]["authorization_details"][0]["identifier"] = "policy-1"
            view["entries"][0]["detail"]["identifier"] = "policy-1"
            body = json.dumps(view).encode()
        return Response(body, status_code=upstream.status_code, media_type="application/json")

    port = free_port()
    agent = served.agent()
    _, link = request(served, agent, "TERM-48")
    calls = len(served.key.calls)
    with BackgroundServer(proxy, port=port):
        result = run("approve", link.replace(served.base, f"http://localhost:{port}"), "--yes")
    assert result.exit_code == 1
    assert "not approved: refused: challenge is not SHA-256(JCS(binding document))" in result.stderr
    assert len(served.key.calls) == calls  # the key was never asked
    agent.close()


def test_a_service_that_does_not_accept_the_terminal_origin_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    base = f"http://localhost:{port}"
    settings = load_settings(issuer=base, data_dir=tmp_path)  # no approval_origins
    provider = build_provider(settings, notifier=RecordingNotifier())
    monkeypatch.setattr(cli, "_security_keys", lambda: [SoftCtap2Device(pin=PIN)])
    monkeypatch.setattr(cli, "_read_pin", lambda: PIN)
    with BackgroundServer(create_app(provider), port=port):
        _, link = provider.add_user(username="alice")
        result = run("enroll-key", link)
    provider.store.close()
    assert result.exit_code == 1
    assert f'Unexpected client data origin "ciba-cli:{base}", expected "{base}"' in result.stderr
