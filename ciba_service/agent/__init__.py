"""The agent side: what an agent (or the user's device, in development) imports.

- :class:`CibaAgent`, :class:`AsyncCibaAgent`: the CIBA client (poll, ping, push; DPoP-bound
  tokens), synchronous and asynchronous.
- :class:`NotificationInbox`: the client notification endpoint for ping and push.
- the errors (:mod:`ciba_service.agent.errors`): :class:`AgentError` and one subclass per
  outcome an agent handles differently.
- :mod:`ciba_service.agent.device`: the user's decoupled device over HTTP (fetch the approval
  view, check its challenge, approve or deny; enroll).
- :mod:`ciba_service.agent.softauthn`: a software WebAuthn authenticator, for development and
  tests only (it holds its keys in memory).
"""

from ciba_service.agent.client import AsyncCibaAgent, CibaAgent, PendingRequest
from ciba_service.agent.errors import AccessDenied, AgentError, RequestExpired, ServiceUnreachable
from ciba_service.agent.inbox import NotificationInbox

__all__ = [
    "AccessDenied",
    "AgentError",
    "AsyncCibaAgent",
    "CibaAgent",
    "NotificationInbox",
    "PendingRequest",
    "RequestExpired",
    "ServiceUnreachable",
]
