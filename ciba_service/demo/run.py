"""``ciba-service demo``: the whole flow in embedded mode, over real HTTP, step by step.

Two servers run on loopback: the service (the CIBA OpenID Provider) and an example IAM API
(a resource server that knows the service only by its JWKS URL). The user's passkey is the
development software authenticator; everything else is the production code path.
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from rich.console import Console
from rich.panel import Panel

from ciba_service.agent import CibaAgent, device
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig, load_settings
from ciba_service.core.security import digest_secret, new_id
from ciba_service.demo.example_api import IAM_LOCATION, create_example_api
from ciba_service.rs import JwksCache, TokenVerifier
from ciba_service.server.notify import ApprovalNotice, Notifier
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port

__all__ = ["run_demo"]

SAMPLE_ACTION: list[dict[str, Any]] = [
    {
        "type": "iam_policy",
        "actions": ["update"],
        "identifier": "policy-42",
        "locations": [IAM_LOCATION],
    }
]


class _DeviceNotifier(Notifier):
    """Delivers the approval link to the demo's decoupled device (and prints it)."""

    def __init__(self, console: Console) -> None:
        self.inbox: queue.Queue[ApprovalNotice] = queue.Queue()
        self._console = console

    def notify(self, notice: ApprovalNotice) -> None:
        self._console.print(f"  [cyan]notification[/] to {notice.username}: {notice.approval_url}")
        self.inbox.put(notice)


@dataclass
class _Steps:
    console: Console
    quiet: bool
    results: dict[str, Any] = field(default_factory=dict)

    def step(self, title: str) -> None:
        if not self.quiet:
            self.console.rule(f"[bold]{title}")

    def say(self, text: object) -> None:
        if not self.quiet:
            self.console.print(text)


def run_demo(*, as_json: bool = False, data_dir: Path | None = None) -> dict[str, Any]:
    console = Console(stderr=as_json)
    steps = _Steps(console=console, quiet=False)
    workdir = data_dir or Path(tempfile.mkdtemp(prefix="ciba-demo-"))
    port, api_port = free_port(), free_port()
    base = f"http://localhost:{port}"
    # A fresh random secret for the demo agent: no secret lives in the repository.
    agent_secret = new_id(24)
    settings = load_settings(
        issuer=base,
        data_dir=workdir,
        poll_interval=1,
        access_token_lifetime=120,
        clients=[
            ClientConfig(
                client_id="demo-agent",
                name="Demo ops agent",
                client_secret_hash=digest_secret(agent_secret),
                authorization_details_types=["iam_policy", "key_rotation"],
            )
        ],
    )
    notifier = _DeviceNotifier(console)
    provider = build_provider(settings, notifier=notifier)
    verifier = TokenVerifier(
        issuer=settings.issuer, audience=settings.default_audience, keys=JwksCache(f"{base}/jwks.json")
    )
    summary: dict[str, Any] = {}
    with (
        BackgroundServer(create_app(provider), port=port),
        BackgroundServer(create_example_api(verifier), port=api_port),
        httpx.Client(timeout=10) as http,
    ):
        steps.step("1. The service is up (embedded mode: its own OpenID Provider)")
        meta = http.get(f"{base}/.well-known/openid-configuration").json()
        steps.say(f"  issuer {meta['issuer']}; grant {meta['grant_types_supported'][0]}")
        steps.say(f"  authorization_details types: {', '.join(meta['authorization_details_types_supported'])}")

        steps.step("2. Enroll a user with a passkey (development software authenticator)")
        _, link = provider.add_user(username="alice", display_name="Alice Example")
        steps.say(f"  one-time enrollment link: {link}")
        authenticator = SoftAuthenticator()
        device.enroll(http, link, authenticator)
        steps.say("  passkey registered (user verification required, ES256)")

        steps.step("3. The agent asks for a token for one exact action (CIBA, poll mode)")
        binding_message = f"OPS-{new_id(16)[:4].upper()}"
        agent = CibaAgent(issuer=base, client_id="demo-agent", client_secret=agent_secret)
        pending = agent.request(
            login_hint="alice", authorization_details=SAMPLE_ACTION, binding_message=binding_message
        )
        steps.say(f"  authorization_details: {json.dumps(SAMPLE_ACTION)}")
        steps.say(
            f"  binding_message {binding_message!r}; expires_in {pending.expires_in}s, interval {pending.interval}s"
        )

        steps.step("4. The user approves on the decoupled device with the passkey")
        result: dict[str, Any] = {}

        def user_device() -> None:
            notice = notifier.inbox.get(timeout=30)
            view = device.fetch_view(http, notice.approval_url)
            for entry in view["entries"]:
                steps.say(f"  the page shows: [bold]{entry['text']}[/] (binding message {view['binding_message']!r})")
            result.update(device.approve(http, notice.approval_url, authenticator))
            steps.say(f"  approved; receipt {result['receipt']}")

        approver = threading.Thread(target=user_device)
        approver.start()
        token = agent.wait(pending)
        approver.join()
        claims = jwt.decode(token["access_token"], options={"verify_signature": False})
        summary["approved"] = result.get("status") == "approved"
        steps.step("5. The agent receives a short-lived token carrying the approved action")
        steps.say(Panel(json.dumps(claims, indent=2), title="access token claims (at+jwt, ES256)"))

        steps.step("6. The resource server checks the token against the exact action")
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        first = http.put(f"http://127.0.0.1:{api_port}/policies/policy-42", headers=headers)
        steps.say(f"  PUT /policies/policy-42 -> {first.status_code} {first.json()}")
        again = http.put(f"http://127.0.0.1:{api_port}/policies/policy-42", headers=headers)
        steps.say(f"  PUT /policies/policy-42 again -> {again.status_code} {again.headers.get('www-authenticate')}")
        other = http.put(f"http://127.0.0.1:{api_port}/policies/policy-43", headers=headers)
        steps.say(f"  PUT /policies/policy-43 -> {other.status_code} {other.headers.get('www-authenticate')}")
        receipt_check = provider.verify_receipt(result["receipt"])
        steps.say(f"  receipt {result['receipt']} re-verified offline: {receipt_check['valid']}")
        agent.close()
        summary.update(
            token_accepted=first.status_code == 200,
            replay_refused=again.status_code == 401 and "already been used" in again.text,
            other_action_refused=other.status_code == 403,
            authorization_details=claims.get("authorization_details"),
        )
    provider.store.close()
    ok = all(summary[k] for k in ("approved", "token_accepted", "replay_refused", "other_action_refused"))
    steps.step("Done" if ok else "FAILED")
    if as_json:
        print(json.dumps(summary, separators=(", ", ": ")), flush=True)
    return summary
