"""What the agent side raises, one class per outcome an agent handles differently::

    AgentError                 the authorization was not obtained (``error``, ``description``, ``status``)
    ├── AccessDenied           ``access_denied``: the user (or policy) said no
    ├── RequestExpired         ``expired_token``: nobody decided in time (or the caller's own deadline passed)
    └── ServiceUnreachable     no usable answer: connection refused, timeout, not JSON

``error`` is the OAuth error code the provider answered (CIBA 11, RFC 6749 5.2), or
``service_unreachable`` / ``wait_timeout`` when no answer decided it (not registered codes: the
provider never sends them).
"""

from __future__ import annotations

__all__ = ["AccessDenied", "AgentError", "RequestExpired", "ServiceUnreachable", "agent_error"]


class AgentError(Exception):
    """The provider answered with an OAuth error, or the authorization could not be obtained."""

    def __init__(self, error: str, description: str | None = None, status: int | None = None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status = status


class AccessDenied(AgentError):
    """``access_denied``: the user denied the request (CIBA 11)."""


class RequestExpired(AgentError):
    """``expired_token``: the request expired before a decision (CIBA 11), or ``wait_timeout``:
    the caller's own deadline passed first."""


class ServiceUnreachable(AgentError):
    """No usable answer from the provider: the agent cannot tell whether anything was decided."""

    def __init__(self, description: str) -> None:
        super().__init__("service_unreachable", description)


def agent_error(error: str, description: str | None = None, status: int | None = None) -> AgentError:
    """The exception for an OAuth error answer: the subclass an agent catches for its code."""
    if error == "access_denied":
        return AccessDenied(error, description, status)
    if error == "expired_token":
        return RequestExpired(error, description, status)
    return AgentError(error, description, status)
