"""An MCP server with one free tool and two sensitive ones, guarded by ciba-service.

``build_server(guard)`` is the whole integration: an ordinary ``MCPServer`` (the official SDK),
tools that read :func:`~ciba_service.pep.mcp.current_approval`, and ``guard.protect(server)``.
``python -m examples.mcp_server`` runs it against the embedded service (``__main__.py``).
"""

from __future__ import annotations

from pathlib import Path

from mcp.server.mcpserver import MCPServer

from ciba_service.pep.mcp import McpGuard, current_approval

POLICY = Path(__file__).with_name("policy.toml")

# The deploy tool declares its own mapping (MCP tool _meta, "x-authz-mapping").
DEPLOY_MAPPING = {
    "decision": "approval",
    "type": "deployment",
    "actions": ["deploy"],
    "identifier": "{args.service}",
    "fields": {"environment": "{args.environment}", "version": "{args.version}"},
    "words": "Deploy {args.service} version {args.version} to {args.environment}",
    "rules": [{"when": [{"arg": "environment", "ne": "production"}], "decision": "free"}],
}

LEDGER: list[str] = []  # what actually ran, for the demo and the tests


def build_server(guard: McpGuard, *, name: str = "bank-ops") -> MCPServer:
    server: MCPServer = MCPServer(name)

    @server.tool()
    def get_balance(account: str) -> str:
        """The balance of an account (free: reading needs no approval)."""
        return f"{account}: 1234.56 EUR"

    @server.tool()
    def transfer(amount: float, currency: str, to: str) -> str:
        """Send money. Needs the account holder's passkey approval of this exact transfer."""
        approval = current_approval()
        LEDGER.append(f"transfer {amount} {currency} to {to}")
        return f"sent {amount} {currency} to {to}; approved by {approval.subject}, receipt {approval.receipt}"

    @server.tool(meta={"x-authz-mapping": DEPLOY_MAPPING})
    def deploy(service: str, version: str, environment: str) -> str:
        """Deploy a service version. Production deploys need a passkey approval."""
        LEDGER.append(f"deploy {service} {version} to {environment}")
        return f"deployed {service} {version} to {environment}"

    return guard.protect(server)
