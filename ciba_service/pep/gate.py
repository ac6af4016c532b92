"""The approval gate: what every enforcement point on the agent's side does with a call that
needs the user's approval, independent of the transport (MCP, a gateway, a hook).

1. :meth:`ApprovalGate.start`: as a confidential CIBA client, send the backchannel request for
   the call's ``authorization_details`` entry for the user, and fetch the approval link to relay
   to the user (:class:`ServiceApprovalLinks`, the service's ``/pep/approval-link``).
2. :meth:`ApprovalGate.poll`: the token once the user approved with the passkey, or a refusal
   (denied, expired).
3. :meth:`ApprovalGate.redeem`: check the call about to run against the approval, with the
   resource-server verifier (:class:`~ciba_service.rs.TokenVerifier`): same user, same tool, same
   arguments, the entry built from the *executed* arguments covered by the token, the token
   unexpired and used once. Only then does the call run, with a :class:`VerifiedApproval`.

Every refusal is an :class:`ApprovalRefused` with a ``code`` and a message meant for the client.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from ciba_service.agent import AgentError, CibaAgent
from ciba_service.pep.mapping import Decision, Evaluation, new_binding_message, safe_words
from ciba_service.rfc9396 import RESERVED_FIELDS
from ciba_service.rs import (
    InsufficientAuthorization,
    InvalidToken,
    RequestedAction,
    ResourceError,
    ResourceUnavailable,
    TokenVerifier,
)

__all__ = [
    "ApprovalGate",
    "ApprovalLinks",
    "ApprovalRefused",
    "PendingApproval",
    "RefusalCode",
    "ServiceApprovalLinks",
    "VerifiedApproval",
    "arguments_digest",
    "requested_action",
]


class RefusalCode(enum.StrEnum):
    DENIED = "access_denied"  # the user denied on the approval page
    EXPIRED = "expired"  # the request expired undecided, or the approval's token expired
    DECLINED = "declined"  # the client (the user) declined to open the approval link
    USED = "already_used"  # the approval was used already
    CHANGED = "arguments_changed"  # the call differs from what was approved
    WRONG_USER = "wrong_user"  # another user's approval
    UNKNOWN = "unknown_approval"  # no such pending approval (or it was forgotten)
    PENDING = "approval_pending"  # still waiting for the user
    TOO_MANY = "too_many_pending"  # flood guard
    NO_SUBJECT = "no_subject"  # no authenticated user to ask
    INVALID = "invalid_request"  # the service refused the request (e.g. hostile arguments)
    POLICY = "denied_by_policy"
    UNAVAILABLE = "temporarily_unavailable"


class ApprovalRefused(Exception):
    """The call does not run; ``message`` says why, in words a client can show."""

    def __init__(self, code: RefusalCode, message: str, *, required: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.required = required

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code.value, "error_description": self.message}
        if self.required is not None:
            body["authorization_details"] = [self.required]
        return body


@dataclass(frozen=True, kw_only=True)
class VerifiedApproval:
    """What the tool receives: who approved what, and the evidence."""

    subject: str  # the user the approval was asked of (the login_hint)
    tool: str
    entry: dict[str, Any]  # the approved authorization_details entry that covered this call
    receipt: str | None  # the approval receipt id (re-verifiable at the service)
    challenge: str | None  # base64url SHA-256 the passkey signed
    approved_at: int | None
    claims: dict[str, Any] = field(repr=False)


@dataclass(kw_only=True)
class PendingApproval:
    pending_id: str  # 128-bit random; what the client echoes (MCP request state, elicitation id)
    subject: str
    tool: str
    digest: str  # of the exact arguments approved
    evaluation: Evaluation
    auth_req_id: str
    approval_url: str
    binding_message: str
    expires_at: float
    interval: int
    token: str | None = None
    used: bool = False
    refused: ApprovalRefused | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def entry(self) -> dict[str, Any]:
        assert self.evaluation.entry is not None
        return self.evaluation.entry


class ApprovalLinks(Protocol):
    def approval_url(self, auth_req_id: str) -> str: ...


class ServiceApprovalLinks:
    """Asks the service (``POST /pep/approval-link``, client authentication as at ``/token``)
    for the approval page of a request this client made, to relay to its user. The service
    answers only clients registered in ``pep_clients``."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._url = f"{issuer.rstrip('/')}/pep/approval-link"
        kwargs: dict[str, Any] = {"transport": transport} if transport is not None else {}
        self._http = httpx.Client(auth=(client_id, client_secret), timeout=timeout, **kwargs)

    def approval_url(self, auth_req_id: str) -> str:
        response = self._http.post(self._url, data={"auth_req_id": auth_req_id})
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body.get("approval_url"), str):
            raise ApprovalRefused(
                RefusalCode.UNAVAILABLE,
                f"the approval link could not be obtained ({body.get('error', response.status_code)})",
            )
        return str(body["approval_url"])

    def close(self) -> None:
        self._http.close()


def arguments_digest(tool: str, arguments: Any) -> str:
    """SHA-256 of the tool name and the canonical JSON of the arguments."""
    text = json.dumps([tool, arguments], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def requested_action(entry: dict[str, Any]) -> RequestedAction:
    """The resource-server view of an entry: what the call about to run does."""
    return RequestedAction(
        type=str(entry["type"]),
        actions=list(entry.get("actions", [])),
        locations=list(entry.get("locations", [])),
        identifier=entry.get("identifier"),
        datatypes=list(entry.get("datatypes", [])),
        privileges=list(entry.get("privileges", [])),
        fields={k: v for k, v in entry.items() if k not in RESERVED_FIELDS},
    )


class ApprovalGate:
    """Starts, polls and redeems approvals for calls. Thread-safe; blocking (HTTP to the
    service), so async callers run it in a worker thread."""

    def __init__(
        self,
        *,
        agent: CibaAgent,
        verifier: TokenVerifier,
        links: ApprovalLinks,
        requested_expiry: int | None = None,
        max_pending_per_subject: int = 5,
        max_pending: int = 10_000,
        binding_prefix: str = "MCP",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.verifier = verifier
        self.links = links
        self.requested_expiry = requested_expiry
        self.max_pending_per_subject = max_pending_per_subject
        self.max_pending = max_pending
        self.binding_prefix = binding_prefix
        self.clock = clock
        self._pending: dict[str, PendingApproval] = {}
        self._by_call: dict[tuple[str, str], str] = {}  # (subject, digest) -> pending id
        self._lock = threading.Lock()

    # bookkeeping -------------------------------------------------------------------------
    def _collect(self, now: float) -> None:
        # Records are kept a while past their request's expiry so a late retry is told
        # "expired" or "already used" rather than "unknown".
        keep_after = 600
        for pending_id in [p for p, a in self._pending.items() if a.expires_at + keep_after < now]:
            record = self._pending.pop(pending_id)
            self._by_call.pop((record.subject, record.digest), None)

    def find(self, pending_id: str) -> PendingApproval | None:
        with self._lock:
            return self._pending.get(pending_id)

    def find_for_call(self, *, subject: str, tool: str, arguments: Any) -> PendingApproval | None:
        """The open approval for exactly this call by this user (for transports whose retry
        carries nothing but the call itself)."""
        digest = arguments_digest(tool, arguments)
        with self._lock:
            pending_id = self._by_call.get((subject, digest))
            record = self._pending.get(pending_id) if pending_id else None
        if record is None or record.used:
            return None
        return record

    # 1: start ------------------------------------------------------------------------------
    def start(self, *, subject: str | None, evaluation: Evaluation, arguments: Any) -> PendingApproval:
        if evaluation.decision is not Decision.APPROVAL or evaluation.entry is None:
            raise ApprovalRefused(RefusalCode.POLICY, evaluation.reason or "this call needs no approval")
        if not subject:
            # Without an authenticated user there is nobody to ask; never a default user.
            raise ApprovalRefused(
                RefusalCode.NO_SUBJECT, "this call needs a user's approval, but the session has no authenticated user"
            )
        now = self.clock()
        with self._lock:
            self._collect(now)
            open_for_subject = sum(
                1 for a in self._pending.values() if a.subject == subject and not a.used and a.expires_at > now
            )
            # Stops a client flooding the user with approval requests (and the gate's memory).
            if open_for_subject >= self.max_pending_per_subject or len(self._pending) >= self.max_pending:
                raise ApprovalRefused(
                    RefusalCode.TOO_MANY,
                    "too many approvals are waiting for this user; finish or let them expire first",
                )
        binding_message = new_binding_message(self.binding_prefix)
        try:
            request = self.agent.request(
                login_hint=subject,
                authorization_details=[evaluation.entry],
                binding_message=binding_message,
                requested_expiry=self.requested_expiry,
            )
        except AgentError as exc:
            # The service's words may quote the (hostile) argument: cleaned before display.
            detail = safe_words(f"{exc.error}: {exc.description or ''}")
            code = (
                RefusalCode.UNAVAILABLE
                if exc.error in ("temporarily_unavailable", "server_error")
                else RefusalCode.INVALID
            )
            raise ApprovalRefused(code, f"the approval could not be requested ({detail})") from None
        except httpx.HTTPError:
            raise ApprovalRefused(RefusalCode.UNAVAILABLE, "the approval service cannot be reached") from None
        try:
            url = self.links.approval_url(request.auth_req_id)
        except httpx.HTTPError:
            raise ApprovalRefused(RefusalCode.UNAVAILABLE, "the approval service cannot be reached") from None
        record = PendingApproval(
            pending_id=secrets.token_urlsafe(16),
            subject=subject,
            tool=evaluation.tool,
            digest=arguments_digest(evaluation.tool, arguments),
            evaluation=evaluation,
            auth_req_id=request.auth_req_id,
            approval_url=url,
            binding_message=binding_message,
            expires_at=now + request.expires_in,
            interval=request.interval,
        )
        with self._lock:
            self._pending[record.pending_id] = record
            self._by_call[(subject, record.digest)] = record.pending_id
        return record

    # 2: poll -------------------------------------------------------------------------------
    def poll(self, record: PendingApproval) -> str | None:
        """The access token once approved; None while the user has not decided."""
        with record.lock:
            if record.refused is not None:
                raise record.refused
            if record.token is not None:
                return record.token
            try:
                token = self.agent.poll_once(record.auth_req_id)
            except AgentError as exc:
                if exc.error in ("authorization_pending", "slow_down"):
                    if exc.error == "slow_down":
                        record.interval += 5
                    return None
                record.refused = _refusal_for(exc, record)
                with self._lock:  # a later identical call asks afresh
                    self._by_call.pop((record.subject, record.digest), None)
                raise record.refused from None
            except httpx.HTTPError:
                raise ApprovalRefused(RefusalCode.UNAVAILABLE, "the approval service cannot be reached") from None
            record.token = str(token["access_token"])
            return record.token

    def wait(
        self, record: PendingApproval, *, timeout: float, sleep: Callable[[float], None] = time.sleep
    ) -> str | None:
        """Poll at the service's interval for at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            token = self.poll(record)
            if token is not None:
                return token
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sleep(min(record.interval, remaining))

    # 3: redeem -----------------------------------------------------------------------------
    def redeem(
        self, record: PendingApproval, *, subject: str | None, evaluation: Evaluation, arguments: Any
    ) -> VerifiedApproval:
        """Check the call about to run against the approval; consume it. Raises
        :class:`ApprovalRefused` (the call must not run) or returns the verified approval."""
        required = evaluation.entry
        if record.used:
            # A second run of an approved call: the approval allowed one.
            raise ApprovalRefused(
                RefusalCode.USED,
                "this approval has already been used; call the tool again to ask for a new approval",
                required=required,
            )
        if subject != record.subject:
            # One user's approval must never run another user's call (a shared MCP server).
            raise ApprovalRefused(RefusalCode.WRONG_USER, "this approval was given by another user", required=required)
        if evaluation.tool != record.tool or arguments_digest(evaluation.tool, arguments) != record.digest:
            # The approved call was "transfer 100 EUR to alice"; this one is something else,
            # including arguments the entry does not show.
            raise ApprovalRefused(
                RefusalCode.CHANGED,
                "the call's arguments differ from what the user approved; nothing was run",
                required=required,
            )
        if evaluation.entry is None:
            raise ApprovalRefused(RefusalCode.POLICY, evaluation.reason)
        token = self.poll(record)
        if token is None:
            raise ApprovalRefused(RefusalCode.PENDING, "the user has not approved yet", required=required)
        with record.lock:
            if record.used:
                raise ApprovalRefused(
                    RefusalCode.USED,
                    "this approval has already been used; call the tool again to ask for a new approval",
                    required=required,
                )
            try:
                # The resource server's own check, on the entry built from the arguments about
                # to be executed: signature, issuer, audience, expiry, exact match, single use.
                verified = self.verifier.verify(token, requested_action(evaluation.entry))
            except InsufficientAuthorization:
                raise ApprovalRefused(
                    RefusalCode.CHANGED, "the approval does not cover this call; nothing was run", required=required
                ) from None
            except ResourceUnavailable:
                raise ApprovalRefused(RefusalCode.UNAVAILABLE, "the replay store is unavailable; retry") from None
            except InvalidToken as exc:
                record.used = True
                if "expired" in exc.description:
                    raise ApprovalRefused(
                        RefusalCode.EXPIRED,
                        "the approval has expired; call the tool again to ask for a new approval",
                        required=required,
                    ) from None
                if "already been used" in exc.description:
                    raise ApprovalRefused(
                        RefusalCode.USED, "this approval has already been used", required=required
                    ) from None
                raise ApprovalRefused(
                    RefusalCode.INVALID, f"the approval token was refused: {exc.description}", required=required
                ) from None
            except ResourceError as exc:
                raise ApprovalRefused(RefusalCode.INVALID, exc.description, required=required) from None
            # The token's sub is the service's user id; that it is this record's user follows
            # from the token being the answer to this record's own auth_req_id.
            record.used = True
        with self._lock:
            self._by_call.pop((record.subject, record.digest), None)
        approval = verified.claims.get("approval")
        approval = approval if isinstance(approval, dict) else {}
        return VerifiedApproval(
            subject=record.subject,
            tool=record.tool,
            entry=verified.entry,
            receipt=approval.get("receipt"),
            challenge=approval.get("challenge"),
            approved_at=approval.get("approved_at"),
            claims=verified.claims,
        )


def _refusal_for(exc: AgentError, record: PendingApproval) -> ApprovalRefused:
    required = record.evaluation.entry
    if exc.error == "access_denied":
        return ApprovalRefused(RefusalCode.DENIED, "the user denied this action", required=required)
    if exc.error == "expired_token":
        return ApprovalRefused(
            RefusalCode.EXPIRED,
            "the approval request expired before the user approved it; call the tool again to ask again",
            required=required,
        )
    detail = safe_words(f"{exc.error}: {exc.description or ''}")
    return ApprovalRefused(RefusalCode.INVALID, f"the approval failed ({detail})", required=required)
