"""Coding-agent hooks: stop a sensitive tool call in the agent's runtime until the user
approves it with a passkey.

- :mod:`~ciba_service.hooks.policy`: :class:`ToolPolicy` (the interface every hook asks: one
  :data:`Decision` per tool call) and :class:`HookPolicy`, which implements it on
  ``ciba_service.pep``'s tool-call mapping (the engine of the MCP guard and the AuthZEN PDP too).
- :mod:`~ciba_service.hooks.guard`: :class:`Guard`, the decision whatever the agent (policy,
  backchannel request, wait, token check; fails closed).
- :mod:`~ciba_service.hooks.wire`: what every hook does around the decision (read the event,
  answer, deny on any failure); a :class:`~ciba_service.hooks.wire.Dialect` per agent:
- :mod:`~ciba_service.hooks.claude_code`: Claude Code's ``PreToolUse`` wire format
  (``ciba-service hook claude-code``);
- :mod:`~ciba_service.hooks.copilot`: GitHub Copilot CLI's ``preToolUse`` wire format
  (``ciba-service hook copilot``).

The hooks speak HTTP to the service like any agent (``ciba_service.agent``) and check the token
with the resource-server library (``ciba_service.rs``); they never import the service itself.
"""

from ciba_service.hooks.guard import Guard, ServiceConfig, Verdict
from ciba_service.hooks.policy import (
    Decision,
    Denied,
    Free,
    HookPolicy,
    NeedsApproval,
    PolicyError,
    ToolCall,
    ToolPolicy,
)

__all__ = [
    "Decision",
    "Denied",
    "Free",
    "Guard",
    "HookPolicy",
    "NeedsApproval",
    "PolicyError",
    "ServiceConfig",
    "ToolCall",
    "ToolPolicy",
    "Verdict",
]
