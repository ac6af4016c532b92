"""The agent side: what an agent (or the user's device, in development) imports.

- :class:`CibaAgent`: the CIBA client (poll, ping, push; DPoP-bound tokens).
- :class:`NotificationInbox`: the client notification endpoint for ping and push.
- :mod:`ciba_service.agent.device`: the user's decoupled device over HTTP (fetch the approval
  view, check its challenge, approve or deny; enroll).
- :mod:`ciba_service.agent.softauthn`: a software WebAuthn authenticator, for development and
  tests only (it holds its keys in memory).
"""

from ciba_service.agent.client import AgentError, CibaAgent, PendingRequest
from ciba_service.agent.inbox import NotificationInbox

__all__ = ["AgentError", "CibaAgent", "NotificationInbox", "PendingRequest"]
