"""The agent side: what an agent (or the user's device, in development) imports.

- :class:`CibaAgent`, :class:`AsyncCibaAgent`: the CIBA client (poll, ping, push; DPoP-bound
  tokens), synchronous and asynchronous.
- :func:`authorize`, :func:`authorize_async`: ask for one exact action, get its token
  (:class:`Approval`) or a precise error; :func:`requires_approval`, a decorator for tool
  functions; :func:`start`, :func:`check`, :func:`resume` (:class:`PendingApproval`) to pause an
  agent graph while the user decides and resume it after (``ciba_service.agent.langgraph``).
- :class:`NotificationInbox`: the client notification endpoint for ping and push.
- the errors (:mod:`ciba_service.agent.errors`): :class:`AuthorizationError` and one subclass
  per outcome an agent handles differently.
- :mod:`ciba_service.agent.device`: the user's decoupled device over HTTP (fetch the approval
  view, check its challenge, approve or deny; enroll).
- :mod:`ciba_service.agent.terminal`: the terminal approver (``ciba-service approve``): the
  user's device with a FIDO2 security key over CTAP2.
- :mod:`ciba_service.agent.softauthn`: a software WebAuthn authenticator, for development and
  tests only (it holds its keys in memory).
"""

from ciba_service.agent.client import AsyncCibaAgent, CibaAgent, PendingRequest
from ciba_service.agent.errors import AccessDenied, AgentError, AuthorizationError, RequestExpired, ServiceUnreachable
from ciba_service.agent.inbox import NotificationInbox
from ciba_service.agent.sdk import (
    Approval,
    PendingApproval,
    authorize,
    authorize_async,
    check,
    requires_approval,
    resume,
    start,
)

__all__ = [
    "AccessDenied",
    "AgentError",
    "Approval",
    "AsyncCibaAgent",
    "AuthorizationError",
    "CibaAgent",
    "NotificationInbox",
    "PendingApproval",
    "PendingRequest",
    "RequestExpired",
    "ServiceUnreachable",
    "authorize",
    "authorize_async",
    "check",
    "requires_approval",
    "resume",
    "start",
]
