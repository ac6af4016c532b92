"""The backchannel authentication endpoint (CIBA Core 1.0, section 7), as a list of small
named checks. :func:`validate_backchannel_request` runs them top to bottom in the order of
the spec section; each raises exactly one protocol error."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from .client_auth import AuthenticatedClient
from .config import Settings
from .errors import (
    InvalidBindingMessage,
    InvalidRequest,
    InvalidScope,
    UnauthorizedClient,
)
from .params import Params
from .rar import TypeRegistry, parse_authorization_details

__all__ = [
    "CIBA_GRANT_TYPE",
    "ValidatedBackchannelRequest",
    "check_binding_message",
    "check_client_may_use_ciba",
    "check_hint",
    "check_requested_expiry",
    "check_scope",
    "check_unsupported_parameters",
    "validate_backchannel_request",
]

CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"


@dataclass(frozen=True, kw_only=True)
class ValidatedBackchannelRequest:
    client: AuthenticatedClient
    scope: str
    login_hint: str
    binding_message: str | None
    expires_in: int
    authorization_details: list[dict[str, Any]]


def check_client_may_use_ciba(client: AuthenticatedClient) -> None:
    if CIBA_GRANT_TYPE not in client.client.grant_types:
        raise UnauthorizedClient(f"client '{client.client.client_id}' may not use the CIBA grant")


def check_unsupported_parameters(params: Params) -> None:
    # Refused rather than ignored: a client that signs its request object, or relies on a
    # user_code, would otherwise believe a protection is in place when it is not.
    if "request" in params:
        raise InvalidRequest("signed authentication requests ('request') are not supported")
    if "request_uri" in params:
        raise InvalidRequest("'request_uri' is not supported")
    if "user_code" in params:
        raise InvalidRequest("'user_code' is not supported by this provider")


def check_scope(params: Params, client: AuthenticatedClient) -> str:
    scope = params.optional("scope")
    if scope is None:
        raise InvalidRequest("missing required parameter 'scope'")
    scopes = scope.split(" ")
    if any(s == "" for s in scopes):
        raise InvalidScope("scope has empty values; separate scopes with single spaces")
    # CIBA 7.1: "The scope MUST include openid".
    if "openid" not in scopes:
        raise InvalidScope("scope must include 'openid'")
    allowed = set(client.client.scopes) | {"openid"}
    unknown = [s for s in scopes if s not in allowed]
    if unknown:
        raise InvalidScope(f"scope '{unknown[0]}' is not allowed for this client")
    return " ".join(dict.fromkeys(scopes))


def check_hint(params: Params) -> str:
    # CIBA 7.1: exactly one of login_hint_token, id_token_hint, login_hint.
    present = [h for h in ("login_hint", "login_hint_token", "id_token_hint") if h in params]
    if not present:
        raise InvalidRequest("one of login_hint, login_hint_token or id_token_hint is required")
    if len(present) > 1:
        raise InvalidRequest(f"only one hint may be given, got {', '.join(present)}")
    if present[0] != "login_hint":
        raise InvalidRequest(f"'{present[0]}' is not supported; use login_hint")
    return params.required("login_hint")


def check_binding_message(params: Params, *, max_length: int) -> str | None:
    message = params.optional("binding_message")
    if message is None:
        return None
    # CIBA 7.1: the message is shown on both devices so the user can match them; it must be
    # short and plain. Control and format characters (bidi overrides, zero-width) could make
    # the text shown differ from the text signed, so they are refused outright.
    if len(message) > max_length:
        raise InvalidBindingMessage(f"binding_message is longer than {max_length} characters")
    for char in message:
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):
            raise InvalidBindingMessage(
                f"binding_message contains a control or format character (U+{ord(char):04X})"
            )
    if not message.strip():
        raise InvalidBindingMessage("binding_message is blank")
    if message != message.strip():
        raise InvalidBindingMessage("binding_message has leading or trailing whitespace")
    return message


def check_requested_expiry(params: Params, *, default: int, maximum: int) -> int:
    raw = params.optional("requested_expiry")
    if raw is None:
        return default
    # CIBA 7.1: "a positive integer"; forms send it as a string of digits.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise InvalidRequest("requested_expiry must be a positive integer number of seconds")
    value = int(raw)
    if value <= 0:
        raise InvalidRequest("requested_expiry must be a positive integer number of seconds")
    if value > maximum:
        raise InvalidRequest(f"requested_expiry exceeds the maximum of {maximum} seconds")
    return value


def check_authorization_details(
    params: Params, client: AuthenticatedClient, *, registry: TypeRegistry, settings: Settings
) -> list[dict[str, Any]]:
    raw = params.optional("authorization_details")
    if raw is None:
        # This provider only issues tokens for an approved action; a token without
        # authorization_details would be standing privilege again.
        raise InvalidRequest("authorization_details is required: tokens are issued per action")
    allowed = client.client.authorization_details_types or None
    return parse_authorization_details(
        raw,
        registry=registry,
        allowed_types=allowed,
        max_entries=settings.max_authorization_details,
        max_bytes=settings.max_authorization_details_bytes,
    )


def validate_backchannel_request(
    *,
    params: Params,
    client: AuthenticatedClient,
    settings: Settings,
    registry: TypeRegistry,
) -> ValidatedBackchannelRequest:
    """Run every check of CIBA 7.1/7.2 (and RFC 9396 5) in order."""
    check_client_may_use_ciba(client)
    check_unsupported_parameters(params)
    scope = check_scope(params, client)
    login_hint = check_hint(params)
    binding_message = check_binding_message(params, max_length=settings.binding_message_max_length)
    expires_in = check_requested_expiry(
        params, default=settings.request_expiry_default, maximum=settings.request_expiry_max
    )
    details = check_authorization_details(params, client, registry=registry, settings=settings)
    return ValidatedBackchannelRequest(
        client=client,
        scope=scope,
        login_hint=login_hint,
        binding_message=binding_message,
        expires_in=expires_in,
        authorization_details=details,
    )
