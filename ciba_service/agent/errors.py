"""What the agent side raises instead of a token, one class per outcome an agent handles
differently::

    AuthorizationError             the authorization was not obtained (``error``, ``description``, ``status``)
    ├── AgentError                 the provider answered with an OAuth error (CIBA 11, RFC 6749 5.2)
    │   ├── AccessDenied           ``access_denied``: the user (or policy) said no
    │   └── RequestExpired         ``expired_token``: nobody decided in time; or ``wait_timeout``:
    │                              the caller's own deadline passed first (not a registered code)
    └── ServiceUnreachable         no answer at all (connection refused, timeout, broken connection);
                                   ``error`` is ``temporarily_unavailable``

``ServiceUnreachable`` is also an ``httpx.TransportError``: code written against the client's
earlier behaviour (transport errors as httpx exceptions, ``pep.gate`` for one) keeps treating
it as transient. An answer that is not OAuth (a proxy's 502 page) is an ``AgentError`` with
``server_error``.
"""

from __future__ import annotations

import httpx

__all__ = [
    "AccessDenied",
    "AgentError",
    "AuthorizationError",
    "RequestExpired",
    "ServiceUnreachable",
    "agent_error",
]


class AuthorizationError(Exception):
    """The authorization was not obtained."""

    error: str = "server_error"
    description: str | None = None
    status: int | None = None


class AgentError(AuthorizationError):
    """The provider answered with an OAuth error."""

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


class ServiceUnreachable(httpx.TransportError, AuthorizationError):
    """No answer from the provider: the agent cannot tell whether anything was decided; retry."""

    def __init__(self, description: str) -> None:
        super().__init__(f"temporarily_unavailable: {description}")
        self.error = "temporarily_unavailable"
        self.description = description
        self.status = None


def agent_error(error: str, description: str | None = None, status: int | None = None) -> AgentError:
    """The exception for an OAuth error answer: the subclass an agent catches for its code."""
    if error == "access_denied":
        return AccessDenied(error, description, status)
    if error == "expired_token":
        return RequestExpired(error, description, status)
    return AgentError(error, description, status)
