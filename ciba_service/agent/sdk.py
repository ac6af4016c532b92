"""The SDK for agent code: ask for one exact action and get its token, in one call.

- :func:`authorize` / :func:`authorize_async`: send the backchannel request, wait (poll; or,
  with a :class:`~ciba_service.agent.NotificationInbox`, ping or push), and return an
  :class:`Approval`, or raise the precise error (:mod:`ciba_service.agent.errors`):
  ``AccessDenied``, ``RequestExpired``, ``ServiceUnreachable``, ``AgentError``.
- :func:`requires_approval`: a decorator for tool functions (sync or async) that maps the call's
  arguments to ``authorization_details``, waits for the approval and passes it to the call.
- :func:`start`, :func:`check`, :func:`resume` and :class:`PendingApproval`: the same in two
  halves, for agent graphs that pause while the human decides and resume later, perhaps in
  another process (the pending request is plain JSON in the graph's state).

The mapping from a call to ``authorization_details`` is a plain callable here, so the
declarative tool-call mapping of ``ciba_service.pep`` (which sits above this package and may not
be imported by it) plugs in from the caller's side (README, "Use the SDK"; a ``deny`` decision
must raise there, since it carries no entry and ``None`` means "free").
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar, cast

from ciba_service.agent.client import AsyncCibaAgent, CibaAgent, PendingRequest
from ciba_service.agent.errors import AccessDenied, AgentError, RequestExpired, agent_error
from ciba_service.agent.inbox import NotificationInbox

__all__ = [
    "Approval",
    "PendingApproval",
    "authorize",
    "authorize_async",
    "check",
    "requires_approval",
    "resume",
    "start",
]

_TAG = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, kw_only=True)
class Approval:
    """The token for the approved action, and what it carries."""

    access_token: str
    token_type: str
    expires_in: int | None
    authorization_details: list[dict[str, Any]]
    scope: str | None = None
    id_token: str | None = None
    auth_req_id: str = ""
    binding_message: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def headers(
        self, agent: CibaAgent | AsyncCibaAgent, *, method: str, url: str, nonce: str | None = None
    ) -> dict[str, str]:
        """The ``Authorization`` (and for a DPoP-bound token the ``DPoP``) headers for one call."""
        return agent.resource_headers(
            self.access_token, method=method, url=url, token_type=self.token_type, nonce=nonce
        )


@dataclass(frozen=True, kw_only=True)
class PendingApproval:
    """A backchannel request on its way to the user: plain JSON (:meth:`to_dict`), so a paused
    graph can keep it in its checkpoint and resume in another process. It holds the
    ``auth_req_id``, which redeems the token: keep it where the agent's credentials are kept."""

    auth_req_id: str
    expires_at: float  # epoch seconds
    interval: int
    binding_message: str | None
    authorization_details: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingApproval:
        return cls(
            auth_req_id=str(data["auth_req_id"]),
            expires_at=float(data["expires_at"]),
            interval=int(data["interval"]),
            binding_message=data.get("binding_message"),
            authorization_details=list(data["authorization_details"]),
        )

    def as_pending_request(self) -> PendingRequest:
        now = time.time()
        return PendingRequest(
            auth_req_id=self.auth_req_id,
            expires_in=max(0, int(self.expires_at - now)),
            interval=self.interval,
            started_at=time.monotonic(),
            binding_message=self.binding_message,
        )


def new_binding_message(prefix: str = "AGENT") -> str:
    """A short code to show on both screens (letters and digits: valid in every provider)."""
    head = "".join(ch for ch in prefix if ch.isascii() and ch.isalnum())[:16] or "AGENT"
    return f"{head}-{''.join(secrets.choice(_TAG) for _ in range(4))}"


def _approval(token: Mapping[str, Any], *, requested: list[dict[str, Any]], pending: PendingRequest) -> Approval:
    carried = token.get("authorization_details", requested)
    # A token for something other than what this call asked for must not be used for it (a
    # mixed-up or substituted answer): the service returns exactly the approved entries.
    if carried != requested:
        raise AgentError("invalid_grant", "the token carries other authorization_details than requested")
    access_token = token.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise AgentError("invalid_grant", "the answer carries no access_token")
    expires_in = token.get("expires_in")
    return Approval(
        access_token=access_token,
        token_type=str(token.get("token_type", "Bearer")),
        expires_in=int(expires_in) if isinstance(expires_in, int | float) else None,
        authorization_details=list(carried),
        scope=token.get("scope"),
        id_token=token.get("id_token"),
        auth_req_id=pending.auth_req_id,
        binding_message=pending.binding_message,
        raw=dict(token),
    )


def _notification(note: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Push: the token or the error itself; ping: None (then redeem at the token endpoint)."""
    if "error" in note:
        description = note.get("error_description")
        raise agent_error(str(note["error"]), description if isinstance(description, str) else None)
    return note if "access_token" in note else None


def _budget(pending: PendingRequest, timeout: float | None) -> float:
    return pending.expires_in if timeout is None else min(float(pending.expires_in), timeout)


def _silence(exc: AgentError) -> AgentError:
    """What a poll after a silent inbox means: the decision it reports, or a timeout."""
    if isinstance(exc, AccessDenied | RequestExpired):
        return exc
    return RequestExpired("wait_timeout", f"no notification in time ({exc.error} at the token endpoint)")


# --- sync ------------------------------------------------------------------------------------


def authorize(
    agent: CibaAgent,
    *,
    login_hint: str,
    authorization_details: list[dict[str, Any]],
    binding_message: str | None = None,
    scope: str = "openid",
    requested_expiry: int | None = None,
    timeout: float | None = None,
    inbox: NotificationInbox | None = None,
    on_pending: Callable[[PendingRequest], None] | None = None,
) -> Approval:
    """Ask the user to approve ``authorization_details`` and return the token.

    Poll clients need nothing more; ping and push clients pass the ``inbox`` serving their
    registered notification endpoint. ``timeout`` (seconds) ends the wait before the request's
    own expiry. ``on_pending`` is called once the request is accepted (show the binding message)."""
    pending = agent.request(
        login_hint=login_hint,
        authorization_details=authorization_details,
        binding_message=binding_message,
        scope=scope,
        requested_expiry=requested_expiry,
        inbox=inbox,
    )
    if on_pending is not None:
        on_pending(pending)
    token: Mapping[str, Any]
    if inbox is None:
        token = agent.wait(pending, timeout=timeout)
    else:
        token = _wait_for_notification(agent, inbox, pending, timeout)
    return _approval(token, requested=authorization_details, pending=pending)


def _wait_for_notification(
    agent: CibaAgent, inbox: NotificationInbox, pending: PendingRequest, timeout: float | None
) -> Mapping[str, Any]:
    try:
        note = inbox.wait(pending.auth_req_id, timeout=_budget(pending, timeout))
    except TimeoutError:
        # A lost ping: the token endpoint still knows (a ping client may redeem it any time).
        try:
            return agent.poll_once(pending.auth_req_id)
        except AgentError as exc:
            raise _silence(exc) from None
    pushed = _notification(note)
    return pushed if pushed is not None else agent.poll_once(pending.auth_req_id)


def start(
    agent: CibaAgent,
    *,
    login_hint: str,
    authorization_details: list[dict[str, Any]],
    binding_message: str | None = None,
    scope: str = "openid",
    requested_expiry: int | None = None,
) -> PendingApproval:
    """The first half of :func:`authorize`: send the request, return at once (pause here)."""
    pending = agent.request(
        login_hint=login_hint,
        authorization_details=authorization_details,
        binding_message=binding_message,
        scope=scope,
        requested_expiry=requested_expiry,
    )
    return PendingApproval(
        auth_req_id=pending.auth_req_id,
        expires_at=time.time() + pending.expires_in,
        interval=pending.interval,
        binding_message=pending.binding_message,
        authorization_details=authorization_details,
    )


def check(agent: CibaAgent, pending: PendingApproval) -> Approval | None:
    """One look at the token endpoint: the approval, None while the user has not decided, or
    the error (``AccessDenied``, ``RequestExpired``, ...)."""
    request = pending.as_pending_request()
    try:
        token = agent.poll_once(pending.auth_req_id)
    except AgentError as exc:
        if exc.error in ("authorization_pending", "slow_down"):
            return None
        raise
    return _approval(token, requested=pending.authorization_details, pending=request)


def resume(agent: CibaAgent, pending: PendingApproval, *, timeout: float | None = None) -> Approval:
    """The second half: wait (poll) for the decision on a request started with :func:`start`."""
    request = pending.as_pending_request()
    token = agent.wait(request, timeout=timeout)
    return _approval(token, requested=pending.authorization_details, pending=request)


# --- async -----------------------------------------------------------------------------------


async def authorize_async(
    agent: AsyncCibaAgent,
    *,
    login_hint: str,
    authorization_details: list[dict[str, Any]],
    binding_message: str | None = None,
    scope: str = "openid",
    requested_expiry: int | None = None,
    timeout: float | None = None,
    inbox: NotificationInbox | None = None,
    on_pending: Callable[[PendingRequest], None] | None = None,
) -> Approval:
    """:func:`authorize`, awaited: the event loop keeps running while the user decides."""
    pending = await agent.request(
        login_hint=login_hint,
        authorization_details=authorization_details,
        binding_message=binding_message,
        scope=scope,
        requested_expiry=requested_expiry,
        inbox=inbox,
    )
    if on_pending is not None:
        on_pending(pending)
    token: Mapping[str, Any]
    if inbox is None:
        token = await agent.wait(pending, timeout=timeout)
    else:
        try:
            note = await asyncio.to_thread(inbox.wait, pending.auth_req_id, timeout=_budget(pending, timeout))
        except TimeoutError:
            try:
                token = await agent.poll_once(pending.auth_req_id)
            except AgentError as exc:
                raise _silence(exc) from None
        else:
            pushed = _notification(note)
            token = pushed if pushed is not None else await agent.poll_once(pending.auth_req_id)
    return _approval(token, requested=authorization_details, pending=pending)


# --- the decorator -----------------------------------------------------------------------------

Details = Callable[[Mapping[str, Any]], list[dict[str, Any]] | None]


def requires_approval(
    *,
    agent: CibaAgent | AsyncCibaAgent,
    login_hint: str | Callable[[Mapping[str, Any]], str],
    details: Details,
    binding_message: str | Callable[[Mapping[str, Any]], str] | None = None,
    parameter: str = "approval",
    timeout: float | None = None,
    inbox: NotificationInbox | None = None,
    on_pending: Callable[[PendingRequest], None] | None = None,
) -> Callable[[F], F]:
    """Guard a tool function: before each call, map its arguments (by name, defaults applied)
    to ``authorization_details`` with ``details``, have the user approve that, and call the
    function with the :class:`Approval` as its ``parameter`` keyword argument. ``details``
    returning None means the call needs no approval (``parameter`` is then None).

    Works on plain and ``async def`` functions (the latter need an :class:`AsyncCibaAgent`).
    A refusal raises before the function runs (``AccessDenied``, ``RequestExpired``, ...)."""

    def decorate(function: F) -> F:
        signature = inspect.signature(function)
        if parameter not in signature.parameters:
            raise TypeError(f"{function.__name__} must accept a '{parameter}' keyword argument for the approval")
        is_async = inspect.iscoroutinefunction(function)
        if is_async != isinstance(agent, AsyncCibaAgent):
            raise TypeError("use an AsyncCibaAgent for async functions and a CibaAgent for plain ones")

        def prepare(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
            if parameter in kwargs:
                # A caller (or a model choosing tool arguments) must not hand in its own approval.
                raise TypeError(f"'{parameter}' is supplied by the approval, not by the caller")
            bound = signature.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            arguments = {k: v for k, v in bound.arguments.items() if k != parameter}
            request = {
                "login_hint": login_hint(arguments) if callable(login_hint) else login_hint,
                "authorization_details": details(arguments),
                "binding_message": (
                    binding_message(arguments)
                    if callable(binding_message)
                    else binding_message or new_binding_message(function.__name__)
                ),
                "timeout": timeout,
                "inbox": inbox,
                "on_pending": on_pending,
            }
            return request, bound

        if is_async:

            @functools.wraps(function)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                request, _ = prepare(args, kwargs)
                approval = None
                if request["authorization_details"] is not None:
                    approval = await authorize_async(cast(AsyncCibaAgent, agent), **request)
                return await cast(Callable[..., Awaitable[Any]], function)(*args, **kwargs, **{parameter: approval})

            return cast(F, guarded_async)

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            request, _ = prepare(args, kwargs)
            approval = None
            if request["authorization_details"] is not None:
                approval = authorize(cast(CibaAgent, agent), **request)
            return function(*args, **kwargs, **{parameter: approval})

        return cast(F, guarded)

    return decorate
