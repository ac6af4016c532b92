"""Policy enforcement on the agent's side: where tools are called, the user's approval is asked.

- :mod:`~ciba_service.pep.templates`, :mod:`~ciba_service.pep.mapping`,
  :mod:`~ciba_service.pep.policy`: the declarative tool-call mapping (free / approval / deny;
  the ``authorization_details`` entry and the words built from a call's arguments), evaluated
  without running code; :func:`load_policy`, :class:`Policy`.
- :mod:`~ciba_service.pep.gate`: :class:`ApprovalGate`, start / poll / redeem an approval for
  one call (CIBA client + resource-server verifier), transport-independent.
- :mod:`~ciba_service.pep.mcp`: :class:`McpGuard` for servers on the official MCP Python SDK
  (URL-mode elicitation), :func:`current_approval` for the tools.
- :mod:`~ciba_service.pep.session`: MCP over HTTP (session tokens, RFC 9728 metadata).
- :mod:`~ciba_service.pep.authzen`: :class:`PolicyDecisionPoint`, the AuthZEN 1.0 evaluation
  logic the service serves (``ciba_service.web.authzen``).

The MCP pieces import the ``mcp`` SDK; they are not imported here, so the mapping and the PDP
load without it.
"""

from ciba_service.pep.authzen import AuthZenError, PolicyDecisionPoint
from ciba_service.pep.gate import (
    ApprovalGate,
    ApprovalRefused,
    PendingApproval,
    RefusalCode,
    ServiceApprovalLinks,
    VerifiedApproval,
)
from ciba_service.pep.mapping import Decision, Evaluation, MappingError, ToolMapping, compile_mapping
from ciba_service.pep.policy import META_KEY, Policy, load_policy
from ciba_service.pep.templates import EvaluationError

__all__ = [
    "META_KEY",
    "ApprovalGate",
    "ApprovalRefused",
    "AuthZenError",
    "Decision",
    "Evaluation",
    "EvaluationError",
    "MappingError",
    "PendingApproval",
    "Policy",
    "PolicyDecisionPoint",
    "RefusalCode",
    "ServiceApprovalLinks",
    "ToolMapping",
    "VerifiedApproval",
    "compile_mapping",
    "load_policy",
]
