"""Coding-agent hooks: stop a sensitive tool call in the agent's runtime until the user
approves it with a passkey.

- :mod:`~ciba_service.hooks.policy`: :class:`ToolPolicy` (the interface every hook asks: one
  :data:`Decision` per tool call) and :class:`PolicyFile`, the minimal TOML policy behind it
  until ``ciba_service.pep``'s tool-call mapping can say what it says (command patterns,
  resolved paths) and replaces it.
- :mod:`~ciba_service.hooks.guard`: :class:`Guard`, the decision whatever the agent (policy,
  backchannel request, wait, token check; fails closed).
- :mod:`~ciba_service.hooks.claude_code`: Claude Code's ``PreToolUse`` wire format
  (``ciba-service hook claude-code``).

The hooks speak HTTP to the service like any agent (``ciba_service.agent``) and check the token
with the resource-server library (``ciba_service.rs``); they never import the service itself.
"""

from ciba_service.hooks.guard import Guard, ServiceConfig, Verdict
from ciba_service.hooks.policy import (
    Decision,
    Denied,
    Free,
    NeedsApproval,
    PolicyError,
    PolicyFile,
    ToolCall,
    ToolPolicy,
)

__all__ = [
    "Decision",
    "Denied",
    "Free",
    "Guard",
    "NeedsApproval",
    "PolicyError",
    "PolicyFile",
    "ServiceConfig",
    "ToolCall",
    "ToolPolicy",
    "Verdict",
]
