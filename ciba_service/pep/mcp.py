"""The MCP guard: passkey approval for the sensitive tools of a server built with the official
MCP Python SDK (``mcp``, 2.x: protocol revisions up to 2026-07-28).

``McpGuard(policy=..., gate=...).protect(server)`` checks every tool's mapping at start and
installs itself as server middleware on ``tools/call``:

- a free tool runs as before; a denied one answers an error result;
- a sensitive call without a covering approval starts one (:class:`~ciba_service.pep.gate.
  ApprovalGate`: the server is the confidential CIBA client; the user is the session's
  authenticated subject) and answers with the approval link by **URL-mode elicitation**:

  * 2026-07-28 sessions: an ``InputRequiredResult`` whose ``inputRequests`` hold one URL-mode
    ``elicitation/create`` and whose ``requestState`` names the pending approval (sealed by the
    SDK's request-state boundary, bound to the tool, its arguments and the principal); the
    client opens the link for the user and retries with the state;
  * 2025-11-25 sessions: the ``-32042`` URL-elicitation-required error (``elicitationId`` = the
    pending approval); the client retries the same call once the user is done;

- the retried call waits (at most ``wait`` seconds per round) for the user's decision, then runs
  once, with the arguments checked against the approved entry by the resource-server verifier;
  the tool reads the verified approval with :func:`current_approval`.

Every refusal is a tool error result (``isError``) whose text says why and whose ``_meta``
carries the refusal (``error``, ``error_description``, the ``authorization_details`` the call
needs) and an RFC 9470-style ``WWW-Authenticate`` challenge naming them.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import UrlElicitationRequiredError
from mcp_types import (
    CallToolResult,
    ElicitRequest,
    ElicitRequestURLParams,
    InputRequiredResult,
    TextContent,
)
from mcp_types.version import is_version_at_least

from ciba_service.pep.gate import ApprovalGate, ApprovalRefused, PendingApproval, RefusalCode, VerifiedApproval
from ciba_service.pep.mapping import Decision, Evaluation, safe_words
from ciba_service.pep.policy import Policy
from ciba_service.pep.templates import EvaluationError
from ciba_service.rs import InsufficientAuthorization

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

__all__ = [
    "APPROVAL_META",
    "INPUT_KEY",
    "REFUSAL_META",
    "McpGuard",
    "SubjectResolver",
    "authenticated_subject",
    "current_approval",
    "fixed_subject",
]

INPUT_KEY = "ciba_approval"  # the key of our elicitation in inputRequests / inputResponses
REFUSAL_META = "dev.ciba-service/refusal"
APPROVAL_META = "dev.ciba-service/approval"
_STATE_KEY = "ciba"
_INPUT_REQUIRED_VERSION = "2026-07-28"

SubjectResolver = Callable[[ServerRequestContext[Any, Any]], str | None]

_current: contextvars.ContextVar[VerifiedApproval | None] = contextvars.ContextVar("ciba_approval", default=None)


def current_approval() -> VerifiedApproval:
    """Inside a guarded tool: the verified approval this run was allowed by."""
    approval = _current.get()
    if approval is None:
        raise LookupError("no approval: this call was not approved through the guard")
    return approval


def authenticated_subject(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The ``sub`` of the session's access token (HTTP transports with the SDK's auth)."""
    token = get_access_token()
    return token.subject if token is not None else None


def fixed_subject(username: str) -> SubjectResolver:
    """Every call is on behalf of ``username``: for stdio, where the server runs as the user
    who launched it and no transport authentication exists."""

    def resolve(ctx: ServerRequestContext[Any, Any]) -> str | None:
        return username

    return resolve


class McpGuard:
    def __init__(
        self,
        *,
        policy: Policy,
        gate: ApprovalGate,
        subject: SubjectResolver = authenticated_subject,
        wait: float = 30.0,
        realm: str = "mcp",
    ) -> None:
        self.policy = policy
        self.gate = gate
        self.subject = subject
        self.wait = wait
        self.realm = realm

    # start-up --------------------------------------------------------------------------------
    def protect(self, server: MCPServer) -> MCPServer:
        """Merge the tools' ``_meta`` mappings, check each tool's mapping against its input
        schema (a :class:`~ciba_service.pep.mapping.MappingError` names the first problem),
        and install the guard as the server's innermost middleware (inside the SDK's request
        state boundary, so it sees the state it minted in clear)."""
        # The SDK has no public synchronous tool listing; its registry holds each tool's
        # schema and _meta exactly as served by tools/list.
        tools = server._tool_manager.list_tools()
        self.policy = self.policy.with_tool_meta((tool.name, tool.meta) for tool in tools)
        for tool in tools:
            self.policy.check_tool(tool.name, tool.parameters)
        server.middleware.append(self)
        return server

    # the middleware ----------------------------------------------------------------------------
    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        params: Mapping[str, Any] = ctx.params or {}
        name = params.get("name")
        if not isinstance(name, str):
            return await call_next(ctx)  # malformed: the SDK answers the validation error
        arguments = params.get("arguments")
        arguments = {} if arguments is None else arguments
        subject = self.subject(ctx)
        try:
            evaluation = self.policy.evaluate(name, arguments, subject=subject)
        except EvaluationError as exc:
            # Hostile or ill-fitting arguments: refused, never run, the reason cleaned.
            return self._refused(ApprovalRefused(RefusalCode.INVALID, f"the call was refused: {safe_words(str(exc))}"))
        if evaluation.decision is Decision.FREE:
            return await call_next(ctx)
        if evaluation.decision is Decision.DENY:
            return self._refused(ApprovalRefused(RefusalCode.POLICY, f"the policy denies {safe_words(name)}"))
        try:
            if is_version_at_least(ctx.protocol_version, _INPUT_REQUIRED_VERSION):
                return await self._input_required_flow(ctx, call_next, params, subject, evaluation, arguments)
            return await self._elicitation_error_flow(ctx, call_next, subject, evaluation, arguments)
        except ApprovalRefused as exc:
            return self._refused(exc)

    async def _input_required_flow(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
        params: Mapping[str, Any],
        subject: str | None,
        evaluation: Evaluation,
        arguments: Any,
    ) -> HandlerResult:
        state = params.get("requestState")
        if state is None:
            started = await anyio.to_thread.run_sync(self._start, subject, evaluation, arguments)
            return InputRequiredResult(
                input_requests={INPUT_KEY: ElicitRequest(params=self._elicitation(started, with_id=False))},
                request_state=json.dumps({_STATE_KEY: started.pending_id}),
            )
        found = self.gate.find(_pending_id(state))
        if found is None:
            raise ApprovalRefused(
                RefusalCode.UNKNOWN, "this approval is unknown or was forgotten; call the tool again to ask anew"
            )
        responses = params.get("inputResponses")
        response = responses.get(INPUT_KEY) if isinstance(responses, Mapping) else None
        if isinstance(response, Mapping) and response.get("action") in ("decline", "cancel"):
            raise ApprovalRefused(
                RefusalCode.DECLINED, "the approval link was declined; nothing was run", required=evaluation.entry
            )
        record = found
        if not record.used:
            token = await anyio.to_thread.run_sync(lambda: self.gate.wait(record, timeout=self.wait))
            if token is None:
                # Still waiting for the user: the client retries with the same state (no new
                # prompt), and each round waits up to `wait` seconds again.
                return InputRequiredResult(request_state=json.dumps({_STATE_KEY: record.pending_id}))
        return await self._run(ctx, call_next, record, subject, evaluation, arguments)

    async def _elicitation_error_flow(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
        subject: str | None,
        evaluation: Evaluation,
        arguments: Any,
    ) -> HandlerResult:
        record: PendingApproval | None = None
        if subject is not None:
            record = self.gate.find_for_call(subject=subject, tool=evaluation.tool, arguments=arguments)
        if record is None:
            started = await anyio.to_thread.run_sync(self._start, subject, evaluation, arguments)
            raise self._elicitation_required(started)
        found = record
        token = await anyio.to_thread.run_sync(lambda: self.gate.wait(found, timeout=self.wait))
        if token is None:
            raise self._elicitation_required(found)
        return await self._run(ctx, call_next, found, subject, evaluation, arguments)

    async def _run(
        self,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
        record: PendingApproval,
        subject: str | None,
        evaluation: Evaluation,
        arguments: Any,
    ) -> HandlerResult:
        approval = await anyio.to_thread.run_sync(
            lambda: self.gate.redeem(record, subject=subject, evaluation=evaluation, arguments=arguments)
        )
        # Only the arguments the approval was checked against are executed: the state was
        # read from this very request, whose arguments are the ones passed on.
        token = _current.set(approval)
        try:
            result = await call_next(ctx)
        finally:
            _current.reset(token)
        if isinstance(result, dict):
            meta = dict(result.get("_meta") or {})
            meta[APPROVAL_META] = {"subject": approval.subject, "receipt": approval.receipt, "entry": approval.entry}
            result = {**result, "_meta": meta}
        return result

    # helpers ---------------------------------------------------------------------------------
    def _start(self, subject: str | None, evaluation: Evaluation, arguments: Any) -> PendingApproval:
        return self.gate.start(subject=subject, evaluation=evaluation, arguments=arguments)

    def _elicitation(self, record: PendingApproval, *, with_id: bool) -> ElicitRequestURLParams:
        message = safe_words(
            f"Approve with your passkey: {record.evaluation.words} (code {record.binding_message}). "
            "Open the link, check the code and the action, then approve or deny."
        )
        return ElicitRequestURLParams(
            message=message, url=record.approval_url, elicitation_id=record.pending_id if with_id else None
        )

    def _elicitation_required(self, record: PendingApproval) -> UrlElicitationRequiredError:
        return UrlElicitationRequiredError(
            [self._elicitation(record, with_id=True)],
            message=f"the user's approval is required (code {record.binding_message})",
        )

    def _refused(self, refusal: ApprovalRefused) -> CallToolResult:
        meta: dict[str, Any] = {REFUSAL_META: refusal.as_dict()}
        if refusal.required is not None:
            # The RFC 9470-style challenge a resource server would send for this call.
            challenge = InsufficientAuthorization(refusal.message, required=refusal.required, realm=self.realm)
            meta[REFUSAL_META]["www_authenticate"] = challenge.www_authenticate()
        return CallToolResult(
            content=[TextContent(type="text", text=f"Refused: {refusal.message}")],
            is_error=True,
            _meta=meta,
        )


def _pending_id(state: Any) -> str:
    # The state arrives unsealed by the SDK's boundary (it verified our own seal); anything
    # else (a lowlevel server without the boundary) is treated as unknown, never trusted.
    try:
        value = json.loads(state) if isinstance(state, str) else None
    except ValueError:
        return ""
    pending_id = value.get(_STATE_KEY) if isinstance(value, dict) else None
    return pending_id if isinstance(pending_id, str) else ""
