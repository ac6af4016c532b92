"""LangGraph: the graph pauses while the user approves, and resumes after (optional extra:
``pip install ciba-service[langgraph]``).

Two nodes go between the node that chooses tool calls (the model) and the tool node:

- :func:`request_approval_node`: for each tool call of the last AI message that the mapping
  says needs approval, send the backchannel request (:func:`~ciba_service.agent.start`) and keep
  the pending request, plain JSON, in the state (``ciba_pending``).
- :func:`await_approval_node`: pause the graph with ``interrupt`` (the checkpoint holds
  everything; the process may even stop), and when the application resumes it
  (``Command(resume=...)``, typically after the approval notification), fetch each decision from
  the service (:func:`~ciba_service.agent.resume`) into ``ciba_approvals``.

The tool reads its approval with :func:`approval_for` (``InjectedState`` and
``InjectedToolCallId``) and refuses to act without one. The resume value is only a wake-up:
what counts is the token the service returns, so whoever resumes the graph cannot approve.

Requesting and pausing are two nodes because LangGraph runs an interrupted node again from its
start on resume: a request sent in the pausing node would be sent twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.types import interrupt

from ciba_service.agent.client import CibaAgent
from ciba_service.agent.errors import AgentError
from ciba_service.agent.sdk import Approval, PendingApproval, new_binding_message, resume, start

__all__ = ["approval_for", "await_approval_node", "refusal_for", "request_approval_node"]

# For a tool call (name, arguments): its authorization_details, or None when it needs no approval.
ToolDetails = Callable[[str, Mapping[str, Any]], list[dict[str, Any]] | None]
Node = Callable[[Mapping[str, Any]], dict[str, Any]]


def _tool_calls(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = state.get("messages") or []
    last = messages[-1] if messages else None
    return [dict(call) for call in last.tool_calls] if isinstance(last, AIMessage) else []


def request_approval_node(*, agent: CibaAgent, login_hint: str, details: ToolDetails) -> Node:
    """The node that asks: one backchannel request per tool call that needs approval."""

    def request_approval(state: Mapping[str, Any]) -> dict[str, Any]:
        pending: dict[str, dict[str, Any]] = {}
        for call in _tool_calls(state):
            wanted = details(call["name"], call.get("args", {}))
            if wanted is not None:
                paused = start(
                    agent,
                    login_hint=login_hint,
                    authorization_details=wanted,
                    binding_message=new_binding_message(call["name"]),
                )
                pending[call["id"]] = paused.to_dict()
        return {"ciba_pending": pending, "ciba_approvals": {}, "ciba_refusals": {}}

    return request_approval


def await_approval_node(*, agent: CibaAgent, timeout: float | None = None) -> Node:
    """The node that pauses until resumed, then records each decision."""

    def await_approval(state: Mapping[str, Any]) -> dict[str, Any]:
        pending = {k: PendingApproval.from_dict(v) for k, v in (state.get("ciba_pending") or {}).items()}
        if not pending:
            return {}
        # Pauses here; the value the application resumes with is only a wake-up call.
        interrupt(
            {
                "approval_required": [
                    {
                        "tool_call_id": k,
                        "binding_message": p.binding_message,
                        "authorization_details": p.authorization_details,
                    }
                    for k, p in pending.items()
                ]
            }
        )
        approvals: dict[str, dict[str, Any]] = {}
        refusals: dict[str, str] = {}
        for tool_call_id, paused in pending.items():
            try:
                approval = resume(agent, paused, timeout=timeout)
            except AgentError as exc:
                refusals[tool_call_id] = f"{exc.error}: {exc.description or ''}".strip()
                continue
            approvals[tool_call_id] = {
                "access_token": approval.access_token,
                "token_type": approval.token_type,
                "authorization_details": approval.authorization_details,
                "binding_message": approval.binding_message,
            }
        return {"ciba_pending": {}, "ciba_approvals": approvals, "ciba_refusals": refusals}

    return await_approval


def approval_for(state: Mapping[str, Any], tool_call_id: str) -> Approval | None:
    """The approval of one tool call, for the tool (None: not approved; the tool must refuse)."""
    recorded = (state.get("ciba_approvals") or {}).get(tool_call_id)
    if recorded is None:
        return None
    return Approval(
        access_token=recorded["access_token"],
        token_type=recorded["token_type"],
        expires_in=None,
        authorization_details=recorded["authorization_details"],
        binding_message=recorded.get("binding_message"),
    )


def refusal_for(state: Mapping[str, Any], tool_call_id: str) -> str | None:
    """Why a tool call was not approved (``access_denied: ...``), if it was refused."""
    refusal = (state.get("ciba_refusals") or {}).get(tool_call_id)
    return str(refusal) if refusal is not None else None
