"""One command: the embedded ciba-service on :8000 and the example MCP server on :8765/mcp.

    .venv/bin/python -m examples.mcp_server [--user alice]

It registers the MCP server as a confidential CIBA client (and PEP), creates the user and
prints their passkey enrollment link; then point any MCP client that supports URL-mode
elicitation at http://localhost:8765/mcp and call ``transfer``. The link the client opens is
the approval page; the call runs once the user approves with the passkey. Data lives in
``./.ciba-example`` (delete it to start over).
"""

from __future__ import annotations

import argparse
import secrets
import time
from pathlib import Path

import uvicorn

from ciba_service.agent import CibaAgent
from ciba_service.config import ClientConfig, load_settings
from ciba_service.core.security import digest_secret
from ciba_service.pep import ApprovalGate, ServiceApprovalLinks, load_policy
from ciba_service.pep.mcp import McpGuard, fixed_subject
from ciba_service.rs import JwksCache, TokenVerifier
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer
from examples.mcp_server.server import POLICY, build_server

DEPLOYMENT = {
    "description": "Deploy a service",
    "template": "{actions} {identifier} version {version} to {environment}",
    "actions": ["deploy"],
    "fields": {"environment": "string", "version": "string"},
    "require_identifier": True,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--user", default="alice", help="the user approvals are asked of (stdio-style fixed subject)")
    parser.add_argument("--service-port", type=int, default=8000)
    parser.add_argument("--mcp-port", type=int, default=8765)
    parser.add_argument("--data-dir", type=Path, default=Path(".ciba-example"))
    args = parser.parse_args()

    issuer = f"http://localhost:{args.service_port}"
    secret = secrets.token_urlsafe(32)  # a fresh client secret per run (development)
    settings = load_settings(
        issuer=issuer,
        data_dir=args.data_dir,
        poll_interval=1,
        clients=[
            ClientConfig(client_id="mcp-server", name="Example MCP server", client_secret_hash=digest_secret(secret))
        ],
        pep_clients=["mcp-server"],
        authorization_details_types={"deployment": DEPLOYMENT},
    )
    provider = build_provider(settings)
    with BackgroundServer(create_app(provider), port=args.service_port):
        user = provider.store.find_user(args.user)
        if user is None or not provider.store.passkeys_for(user.user_id):
            user, link = provider.add_user(username=args.user) if user is None else (user, "")
            link = link or provider.new_enrollment_link(user)
            print(f"Enroll {args.user}'s passkey first: {link}")
        agent = CibaAgent(issuer=issuer, client_id="mcp-server", client_secret=secret)
        gate = ApprovalGate(
            agent=agent,
            verifier=TokenVerifier(
                issuer=issuer, audience=settings.default_audience, keys=JwksCache(f"{issuer}/jwks.json")
            ),
            links=ServiceApprovalLinks(issuer=issuer, client_id="mcp-server", client_secret=secret),
        )
        guard = McpGuard(policy=load_policy(POLICY), gate=gate, subject=fixed_subject(args.user), wait=30)
        server = build_server(guard)
        print(f"MCP server (streamable HTTP): http://localhost:{args.mcp_port}/mcp   approvals: {issuer}")
        time.sleep(0.1)
        uvicorn.run(server.streamable_http_app(), host="127.0.0.1", port=args.mcp_port, log_level="warning")


if __name__ == "__main__":
    main()
