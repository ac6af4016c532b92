"""Protocol errors, one class per registered error code.

Exception hierarchy::

    OAuthError                      an error the OAuth/CIBA endpoints answer with
    ├── InvalidRequest              RFC 6749 5.2 / CIBA 13
    ├── InvalidClient               401, always with WWW-Authenticate: Basic
    ├── UnauthorizedClient
    ├── InvalidScope
    ├── UnknownUserId               CIBA 13
    ├── ExpiredLoginHintToken       CIBA 13
    ├── MissingUserCode             CIBA 13
    ├── InvalidUserCode             CIBA 13
    ├── InvalidBindingMessage       CIBA 13
    ├── InvalidAuthorizationDetails RFC 9396 5
    ├── UnsupportedGrantType
    ├── InvalidGrant
    ├── AuthorizationPending        CIBA 11 (poll mode)
    ├── SlowDown
    ├── ExpiredToken
    ├── AccessDenied
    ├── InvalidDPoPProof            RFC 9449 5
    ├── TemporarilyUnavailable      503, the upstream IdP or the store could not be reached
    └── NotOffered                  an endpoint this mode does not serve (invalid_request, 404)
    ApprovalError                   the approval page's failures (not OAuth codes)
    ├── ApprovalNotFound
    ├── ApprovalAlreadyDecided
    ├── ApprovalExpired
    └── AssertionRejected
    EnrollmentError
    ChannelError                    a refused Keycloak authentication-channel call

Each class carries ``error``, ``status_code`` and renders its own body and headers,
so one exception handler in the web layer serves every endpoint.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessDenied",
    "ApprovalAlreadyDecided",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalNotFound",
    "AssertionRejected",
    "AuthorizationPending",
    "CLIENT_CHALLENGE",
    "ChannelError",
    "EnrollmentError",
    "ExpiredLoginHintToken",
    "ExpiredToken",
    "InvalidAuthorizationDetails",
    "InvalidBindingMessage",
    "InvalidClient",
    "InvalidDPoPProof",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "InvalidUserCode",
    "MissingUserCode",
    "NotOffered",
    "OAuthError",
    "SlowDown",
    "TemporarilyUnavailable",
    "UnauthorizedClient",
    "UnknownUserId",
    "UnsupportedGrantType",
]


class OAuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749 section 5.2)."""

    error: ClassVar[str] = "invalid_request"
    status_code: ClassVar[int] = 400

    def __init__(self, description: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.extra_headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        # RFC 6749 5.1: responses carrying credentials or errors must not be cached.
        return {"Cache-Control": "no-store", "Pragma": "no-cache", **self.extra_headers}


class InvalidRequest(OAuthError):
    error = "invalid_request"


# The challenge every invalid_client answer carries. RFC 6749 5.2 requires it when the client
# used Basic, and RFC 9110 11.6.1 requires a WWW-Authenticate on every 401: without one some
# HTTP stacks treat the answer as malformed or retry blindly. No scheme is registered for
# client_secret_post or client assertions (private_key_jwt, JWT-SVID), so those get Basic too:
# it is the one scheme a client can retry this endpoint with.
CLIENT_CHALLENGE = 'Basic realm="ciba-service"'


class InvalidClient(OAuthError):
    """401 ``invalid_client``, always with a ``WWW-Authenticate`` challenge (see
    :data:`CLIENT_CHALLENGE`), whichever authentication method failed."""

    error = "invalid_client"
    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": CLIENT_CHALLENGE, **super().headers()}


class UnauthorizedClient(OAuthError):
    error = "unauthorized_client"


class InvalidScope(OAuthError):
    error = "invalid_scope"


class UnknownUserId(OAuthError):
    error = "unknown_user_id"


class ExpiredLoginHintToken(OAuthError):
    error = "expired_login_hint_token"


class MissingUserCode(OAuthError):
    error = "missing_user_code"


class InvalidUserCode(OAuthError):
    error = "invalid_user_code"


class InvalidBindingMessage(OAuthError):
    error = "invalid_binding_message"


class InvalidAuthorizationDetails(OAuthError):
    error = "invalid_authorization_details"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class InvalidGrant(OAuthError):
    error = "invalid_grant"


class AuthorizationPending(OAuthError):
    error = "authorization_pending"


class SlowDown(OAuthError):
    error = "slow_down"


class ExpiredToken(OAuthError):
    error = "expired_token"


class AccessDenied(OAuthError):
    error = "access_denied"
    status_code = 400


class InvalidDPoPProof(OAuthError):
    error = "invalid_dpop_proof"


class TemporarilyUnavailable(OAuthError):
    error = "temporarily_unavailable"
    status_code = 503


class NotOffered(OAuthError):
    """An endpoint the configured mode does not serve (e.g. introspection in keycloak mode,
    where Keycloak issues and introspects the tokens). The description names where to go; the
    discovery document of the mode does not list the endpoint."""

    error = "invalid_request"
    status_code = 404


class ChannelError(Exception):
    """A refused authentication-channel call (keycloak mode); Keycloak sees the status code."""

    def __init__(
        self,
        status_code: int,
        description: str,
        *,
        unknown_user: bool = False,
        agent_error: OAuthError | None = None,
    ) -> None:
        super().__init__(description)
        self.status_code = status_code
        self.description = description
        # The refusal means the user cannot approve: the agent is told unknown_user_id.
        self.unknown_user = unknown_user
        # The exact error the agent gets for this refusal (e.g. a client policy refusal:
        # invalid_authorization_details), when it is more than "the approval could not start".
        self.agent_error = agent_error


class ApprovalError(Exception):
    """A failure on the user side of the approval (page or CLI)."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "approval_error"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class ApprovalNotFound(ApprovalError):
    status_code = 404
    code = "not_found"


class ApprovalAlreadyDecided(ApprovalError):
    status_code = 409
    code = "already_decided"


class ApprovalExpired(ApprovalError):
    status_code = 410
    code = "expired"


class AssertionRejected(ApprovalError):
    status_code = 400
    code = "assertion_rejected"


class EnrollmentError(ApprovalError):
    code = "enrollment_error"
