"""An OpenID AuthZEN 1.0 policy decision point over the tool-call mapping: the Access
Evaluation API (one request) and the Access Evaluations API (a batch with defaults and
``options.evaluations_semantic``), framework-free; ``ciba_service.web.authzen`` serves it.

How a request names a tool call::

    {"subject":  {"type": "user", "id": "alice"},
     "action":   {"name": "call"},
     "resource": {"type": "tool", "id": "transfer", "properties": {"arguments": {...}}},
     "context":  {"approval_token": "<access token, optional>"}}

The decision comes from the same :class:`~ciba_service.pep.policy.Policy` as the MCP guard:

- a free call: ``{"decision": true}``; a denied one: ``false`` with a reason;
- a call that needs approval, with ``context.approval_token`` covering it (verified as a
  resource server would, and one use of it consumed): ``true``, naming the receipt;
- without one: ``false`` with ``context.id = "approval_required"``, the words for the user
  (``reason_user``) and ``context.approval_required``: the ``authorization_details`` to request,
  the ``backchannel_authentication_endpoint``, the ``login_hint`` and the grant type, so the PEP
  can run the CIBA flow and ask again with the token.

Malformed requests are :class:`AuthZenError` (HTTP 400 with a message) for a single
evaluation; inside a batch, that evaluation alone answers ``false`` with
``context.error = {"status": 400, "message": ...}`` (AuthZEN 1.0, "Errors").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ciba_service.pep.gate import requested_action
from ciba_service.pep.mapping import Decision, safe_words
from ciba_service.pep.policy import Policy
from ciba_service.pep.templates import EvaluationError
from ciba_service.rs import InsufficientAuthorization, InvalidToken, ResourceError, TokenVerifier

__all__ = [
    "CALL_ACTION",
    "CIBA_GRANT_TYPE",
    "SEMANTICS",
    "TOOL_RESOURCE",
    "AuthZenError",
    "PolicyDecisionPoint",
]

CALL_ACTION = "call"
TOOL_RESOURCE = "tool"
CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"
SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
MAX_EVALUATIONS = 64
_MAX_ID = 256


class AuthZenError(Exception):
    """The request as a whole is malformed: HTTP ``status`` with ``message`` as the body."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, kw_only=True)
class _Call:
    subject: str
    tool: str
    arguments: Mapping[str, Any]
    token: str | None


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AuthZenError(f"{where} must be an object")
    return value


def _identifier(entity: Mapping[str, Any], key: str, where: str) -> str:
    value = entity.get(key)
    if not isinstance(value, str) or not value:
        raise AuthZenError(f"{where}.{key} must be a non-empty string")
    if len(value) > _MAX_ID or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        # Identifiers end up in logs and as a login_hint: bounded, no control characters.
        raise AuthZenError(f"{where}.{key} is too long or contains control characters")
    return value


def _parse(request: Mapping[str, Any]) -> _Call:
    """The four entities of one evaluation (AuthZEN 1.0 section 6.1), checked."""
    for name in ("subject", "action", "resource"):
        if name not in request:
            raise AuthZenError(f"{name} is required")
    subject = _object(request["subject"], "subject")
    _identifier(subject, "type", "subject")
    subject_id = _identifier(subject, "id", "subject")
    action = _object(request["action"], "action")
    action_name = _identifier(action, "name", "action")
    resource = _object(request["resource"], "resource")
    resource_type = _identifier(resource, "type", "resource")
    tool = _identifier(resource, "id", "resource")
    for entity, where in ((subject, "subject"), (action, "action"), (resource, "resource")):
        if "properties" in entity:
            _object(entity["properties"], f"{where}.properties")
    if resource_type != TOOL_RESOURCE:
        raise AuthZenError(f"resource.type must be {TOOL_RESOURCE!r} (a tool call)")
    if action_name != CALL_ACTION:
        raise AuthZenError(f"action.name must be {CALL_ACTION!r}")
    properties = resource.get("properties") or {}
    arguments = properties.get("arguments", {})
    if not isinstance(arguments, Mapping):
        raise AuthZenError("resource.properties.arguments must be an object")
    context = _object(request.get("context") or {}, "context")
    token = context.get("approval_token")
    if token is not None and (not isinstance(token, str) or not token):
        raise AuthZenError("context.approval_token must be a non-empty string")
    return _Call(subject=subject_id, tool=tool, arguments=arguments, token=token)


def _reason(reason_id: str, user: str, admin: str | None = None) -> dict[str, Any]:
    # The Reason Object of AuthZEN 1.0 section 6.2.2: id, reason_user, reason_admin.
    context: dict[str, Any] = {"id": reason_id, "reason_user": {"en": safe_words(user)}}
    if admin is not None:
        context["reason_admin"] = {"en": safe_words(admin)}
    return context


class PolicyDecisionPoint:
    """``subject_matches(subject_id, claims)``: whether a token's claims are that subject's
    (the service maps its user ids to usernames)."""

    def __init__(
        self,
        *,
        policy: Policy,
        verifier: TokenVerifier,
        backchannel_authentication_endpoint: str,
        subject_matches: Callable[[str, Mapping[str, Any]], bool],
    ) -> None:
        self.policy = policy
        self.verifier = verifier
        self.backchannel_authentication_endpoint = backchannel_authentication_endpoint
        self.subject_matches = subject_matches

    def evaluation(self, body: Any) -> dict[str, Any]:
        """``POST /access/v1/evaluation``: one decision, or :class:`AuthZenError`."""
        return self._decide(_parse(_object(body, "the request body")))

    def evaluations(self, body: Any) -> dict[str, Any]:
        """``POST /access/v1/evaluations``: the batch, in request order, with the top-level
        subject/action/resource/context as defaults and the chosen semantics."""
        request = _object(body, "the request body")
        if "evaluations" not in request:
            return self.evaluation(request)  # AuthZEN 1.0 7.1: backwards compatible
        items = request["evaluations"]
        if not isinstance(items, list) or not items:
            raise AuthZenError("evaluations must be a non-empty array")
        if len(items) > MAX_EVALUATIONS:
            # Bounds the work one request can ask for (AuthZEN 1.0 security: payload size).
            raise AuthZenError(f"at most {MAX_EVALUATIONS} evaluations per request")
        options = _object(request.get("options") or {}, "options")
        semantic = options.get("evaluations_semantic", "execute_all")
        if semantic not in SEMANTICS:
            raise AuthZenError(f"options.evaluations_semantic must be one of {', '.join(SEMANTICS)}")
        defaults = {k: request[k] for k in ("subject", "action", "resource", "context") if k in request}
        results: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                result = _error(400, f"evaluations[{index}] must be an object")
            else:
                try:
                    result = self._decide(_parse({**defaults, **item}))
                except AuthZenError as exc:
                    result = _error(exc.status, exc.message)
            results.append(result)
            if semantic == "deny_on_first_deny" and not result["decision"]:
                break
            if semantic == "permit_on_first_permit" and result["decision"]:
                break
        return {"evaluations": results}

    def _decide(self, call: _Call) -> dict[str, Any]:
        try:
            evaluation = self.policy.evaluate(call.tool, call.arguments, subject=call.subject)
        except EvaluationError as exc:
            return {"decision": False, "context": _reason("invalid_arguments", f"the call was refused: {exc}")}
        if evaluation.decision is Decision.FREE:
            return {"decision": True}
        if evaluation.decision is Decision.DENY:
            return {
                "decision": False,
                "context": _reason("denied_by_policy", "the policy denies this call", evaluation.reason),
            }
        assert evaluation.entry is not None
        if call.token is None:
            return {"decision": False, "context": self._approval_required(call, evaluation.entry, evaluation.words)}
        try:
            # The subject first, before a use is consumed: Bob's approval must not allow the
            # call for Alice (the PEP names the subject), nor be burnt by trying.
            if not self.subject_matches(call.subject, self.verifier.verify_signature(call.token)):
                return self._not_covered(
                    call,
                    evaluation.entry,
                    evaluation.words,
                    "approval_wrong_subject",
                    "the approval was given by another user",
                )
            verified = self.verifier.verify(call.token, requested_action(evaluation.entry))
        except InsufficientAuthorization:
            return self._not_covered(
                call,
                evaluation.entry,
                evaluation.words,
                "approval_insufficient",
                "the approval does not cover this call",
            )
        except InvalidToken as exc:
            if "expired" in exc.description:
                reason_id, text = "approval_expired", "the approval has expired"
            elif "already been used" in exc.description:
                reason_id, text = "approval_used", "the approval has already been used"
            else:
                reason_id, text = "approval_invalid", f"the approval token is invalid: {exc.description}"
            return self._not_covered(call, evaluation.entry, evaluation.words, reason_id, text)
        except ResourceError as exc:
            return self._not_covered(call, evaluation.entry, evaluation.words, "approval_invalid", exc.description)
        approval = verified.claims.get("approval")
        receipt = approval.get("receipt") if isinstance(approval, dict) else None
        return {"decision": True, "context": {"id": "approved", "approval": {"receipt": receipt}}}

    def _approval_required(self, call: _Call, entry: dict[str, Any], words: str) -> dict[str, Any]:
        context = _reason("approval_required", f"Approval required: {words}", f"{call.tool} needs the user's approval")
        context["approval_required"] = {
            "authorization_details": [entry],
            "backchannel_authentication_endpoint": self.backchannel_authentication_endpoint,
            "grant_type": CIBA_GRANT_TYPE,
            "login_hint": call.subject,
        }
        return context

    def _not_covered(self, call: _Call, entry: dict[str, Any], words: str, reason_id: str, text: str) -> dict[str, Any]:
        context = self._approval_required(call, entry, words)
        context["id"] = reason_id
        context["reason_user"] = {"en": safe_words(text)}
        return {"decision": False, "context": context}


def _error(status: int, message: str) -> dict[str, Any]:
    return {"decision": False, "context": {"error": {"status": status, "message": message}}}
