"""Builders for the enforcement-point tests: the policy the tests share (a free balance
lookup, a money transfer that needs approval above 10, a production deploy that always needs
approval, a denied database drop), the service settings with two registered PEP clients, and
the service on a real loopback port for the MCP guard (which talks HTTP to it from a thread)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ciba_service.agent import CibaAgent
from ciba_service.agent.device import enroll
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig, Settings, load_settings
from ciba_service.core.security import digest_secret
from ciba_service.pep import ApprovalGate, ServiceApprovalLinks
from ciba_service.rs import JwksCache, TokenVerifier
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port
from tests.support.service import AGENT_ID, AGENT_SECRET, RecordingNotifier

PEP_ID, PEP_SECRET = "mcp-server", "test-secret-mcp-server"
GATEWAY_ID, GATEWAY_SECRET = "gateway", "test-secret-gateway"

POLICY_TOML = """
default = "deny"

[tools.get_balance]
decision = "free"

[tools.transfer]
decision = "approval"
type = "payment_initiation"
actions = ["initiate"]
words = "Transfer {args.amount} {args.currency} to {args.to}"
rules = [{ when = [{ arg = "amount", lte = 10 }], decision = "free" }]

[tools.transfer.fields]
creditorName = "{args.to}"
instructedAmount = { currency = "{args.currency}", amount = "{args.amount|string}" }

[tools.deploy]
decision = "approval"
type = "deployment"
actions = ["deploy"]
identifier = "{args.service}"
words = "Deploy {args.service} version {args.version} to {args.environment}"
fields = { environment = "{args.environment}", version = "{args.version}" }

[tools.drop_database]
decision = "deny"
"""

DEPLOYMENT_TYPE: dict[str, Any] = {
    "description": "Deploy a service",
    "template": "{actions} {identifier} version {version} to {environment}",
    "actions": ["deploy"],
    "fields": {"environment": "string", "version": "string"},
    "require_identifier": True,
}


def pep_settings(data_dir: Path, *, issuer: str, policy_path: Path | None = None, **overrides: Any) -> Settings:
    clients = [
        ClientConfig(client_id=AGENT_ID, name="Agent One", client_secret_hash=digest_secret(AGENT_SECRET)),
        ClientConfig(client_id=PEP_ID, name="Bank MCP server", client_secret_hash=digest_secret(PEP_SECRET)),
        ClientConfig(client_id=GATEWAY_ID, client_secret_hash=digest_secret(GATEWAY_SECRET), grant_types=[]),
    ]
    values: dict[str, Any] = {
        "issuer": issuer,
        "data_dir": data_dir,
        "clients": clients,
        "poll_interval": 1,
        "pep_clients": [PEP_ID, GATEWAY_ID],
        "authorization_details_types": {"deployment": DEPLOYMENT_TYPE},
    }
    if policy_path is not None:
        values["pep_policy"] = policy_path
    values.update(overrides)
    return load_settings(**values)


@dataclass
class LiveService:
    """The service on a loopback port, alice enrolled with a software passkey."""

    provider: Provider
    base: str
    notifier: RecordingNotifier
    authenticator: SoftAuthenticator
    http: httpx.Client

    def gate(self, *, requested_expiry: int | None = None, clock: Any = None) -> ApprovalGate:
        agent = CibaAgent(issuer=self.base, client_id=PEP_ID, client_secret=PEP_SECRET)
        kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
        verifier = TokenVerifier(
            issuer=self.base, audience="resource-api", keys=JwksCache(f"{self.base}/jwks.json"), **kwargs
        )
        links = ServiceApprovalLinks(issuer=self.base, client_id=PEP_ID, client_secret=PEP_SECRET)
        return ApprovalGate(agent=agent, verifier=verifier, links=links, requested_expiry=requested_expiry)


@contextmanager
def live_service(tmp_path: Path, *, enroll_alice: bool = True) -> Iterator[LiveService]:
    port = free_port()
    base = f"http://localhost:{port}"
    settings = pep_settings(tmp_path, issuer=base)
    notifier = RecordingNotifier()
    provider = build_provider(settings, notifier=notifier)  # real time: the guard really waits
    authenticator = SoftAuthenticator()
    with BackgroundServer(create_app(provider), port=port), httpx.Client(timeout=10) as http:
        if enroll_alice:  # else the test enrolls her passkey itself (the browser's authenticator)
            _, link = provider.add_user(username="alice")
            enroll(http, link, authenticator)
        _, bob_link = provider.add_user(username="bob")
        enroll(http, bob_link, SoftAuthenticator())
        yield LiveService(provider=provider, base=base, notifier=notifier, authenticator=authenticator, http=http)
    provider.store.close()
