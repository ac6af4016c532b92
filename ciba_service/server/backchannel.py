"""The backchannel authentication endpoint (CIBA Core 1.0, section 7), as a list of small
named checks. :func:`validate_backchannel_request` runs them top to bottom in the order of
the spec section; each raises exactly one protocol error.

The checks that depend on who the client is (its grant types, scopes and authorization_details
types: :func:`check_client_policy`) are separate from the ones that do not, so a mode that
learns who the client is only later (keycloak mode: Keycloak authenticates the client) can run
the first kind before and the second kind after authentication, and never tell an
unauthenticated caller what a client may request."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from ciba_service.config import ClientConfig, Settings
from ciba_service.core.errors import (
    ExpiredLoginHintToken,
    InvalidAuthorizationDetails,
    InvalidBindingMessage,
    InvalidRequest,
    InvalidScope,
    UnauthorizedClient,
)
from ciba_service.core.params import Params
from ciba_service.core.protocol import CIBA_GRANT_TYPE
from ciba_service.jose.client_assertion import ClientJwtError, ExpiredJwt, verify_client_jwt
from ciba_service.rfc9396 import TypeRegistry, is_unsafe_char, parse_authorization_details
from ciba_service.server.client_auth import AuthenticatedClient

__all__ = [
    "ValidatedBackchannelRequest",
    "check_authorization_details",
    "check_authorization_details_allowed",
    "check_binding_message",
    "check_client_may_use_ciba",
    "check_client_policy",
    "check_hint",
    "check_one_hint",
    "check_requested_expiry",
    "check_scope",
    "check_scope_allowed",
    "check_unsupported_parameters",
    "validate_backchannel_request",
]


# Parameters of the authentication request itself (CIBA 7.1); with a signed request they
# must all be inside the request object.
AUTHENTICATION_PARAMETERS = (
    "scope",
    "client_notification_token",
    "acr_values",
    "login_hint_token",
    "id_token_hint",
    "login_hint",
    "binding_message",
    "user_code",
    "requested_expiry",
    "authorization_details",
)
# Request objects may live longer than client assertions (FAPI-CIBA: at most 60 minutes).
MAX_REQUEST_OBJECT_LIFETIME = 3600
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True, kw_only=True)
class Hint:
    """Who must approve: a username (login_hint, opaque sub_id) or a user id (id_token_hint,
    iss_sub sub_id)."""

    kind: str  # "username" | "user_id"
    value: str


@dataclass(frozen=True, kw_only=True)
class RequestContext:
    """What the checks need from the provider besides the parameters."""

    issuer: str
    audiences: tuple[str, ...]
    now: int
    use_once: Callable[[str, int], bool]
    # Verifies an ID token this provider issued; returns its claims or raises PyJWTError.
    decode_id_token: Callable[[str], dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class ValidatedBackchannelRequest:
    client: AuthenticatedClient
    scope: str
    hint: Hint
    binding_message: str | None
    user_code: str | None
    expires_in: int
    authorization_details: list[dict[str, Any]]
    client_notification_token: str | None

    @property
    def login_hint(self) -> str:
        return self.hint.value


def check_client_may_use_ciba(client: AuthenticatedClient | ClientConfig) -> None:
    config = client.client if isinstance(client, AuthenticatedClient) else client
    if CIBA_GRANT_TYPE not in config.grant_types:
        raise UnauthorizedClient(f"client '{config.client_id}' may not use the CIBA grant")


def check_unsupported_parameters(params: Params, *, settings: Settings) -> None:
    # Refused rather than ignored: a client that relies on a user_code or a request_uri would
    # otherwise believe a protection is in place when it is not.
    if "request_uri" in params:
        raise InvalidRequest("'request_uri' is not supported")
    if "user_code" in params and not settings.backchannel_user_code_parameter_supported:
        raise InvalidRequest("'user_code' is not supported by this provider")


def _claim_to_param(name: str, value: Any) -> str:
    if name == "authorization_details" and isinstance(value, list):
        return json.dumps(value)
    if name == "requested_expiry" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # CIBA 7.1.1: an integer or a numeric string
    if not isinstance(value, str):
        raise InvalidRequest(f"request object claim '{name}' has the wrong JSON type")
    return value


def resolve_request_object(params: Params, client: AuthenticatedClient, context: RequestContext) -> Params:
    """CIBA 7.1.1: a signed authentication request replaces the form parameters."""
    request = params.optional("request")
    required_alg = client.client.backchannel_authentication_request_signing_alg
    if request is None:
        if required_alg is not None:
            raise InvalidRequest("this client must send signed authentication requests ('request')")
        return params
    if not client.client.jwks:
        raise InvalidRequest("the client has no registered keys to verify 'request' with")
    outside = [name for name in AUTHENTICATION_PARAMETERS if name in params]
    if outside:
        raise InvalidRequest(f"with 'request', '{outside[0]}' must be inside the request object")
    try:
        header = jwt.get_unverified_header(request)
    except jwt.PyJWTError:
        raise InvalidRequest("request object is not a well-formed JWT") from None
    if required_alg is not None and header.get("alg") != required_alg:
        raise InvalidRequest(f"request object must be signed with {required_alg}")
    client_id = client.client.client_id
    try:
        claims = verify_client_jwt(
            request,
            jwks=client.client.jwks,
            audiences=(context.issuer,),
            now=context.now,
            max_lifetime=MAX_REQUEST_OBJECT_LIFETIME,
            required=("aud", "iss", "exp", "iat", "nbf", "jti"),
            issuer=client_id,
            use_once=lambda jti, exp: context.use_once(f"request:{client_id}:{jti}", exp),
            what="request object",
            max_age_from_nbf=MAX_REQUEST_OBJECT_LIFETIME,
        )
    except ClientJwtError as exc:
        raise InvalidRequest(exc.description) from None
    pairs = [
        (name, _claim_to_param(name, value)) for name, value in claims.items() if name in AUTHENTICATION_PARAMETERS
    ]
    # Client authentication stays outside the request object (CIBA 7.1.1).
    pairs += [(k, v) for k, v in params.items() if k in ("client_id", "client_assertion", "client_assertion_type")]
    return Params(pairs)


def check_scope(params: Params, client: AuthenticatedClient | None) -> str:
    """The scope, deduplicated. With ``client`` None (not authenticated yet) only its form is
    checked; :func:`check_scope_allowed` checks it against the client later."""
    scope = params.optional("scope")
    if scope is None:
        raise InvalidRequest("missing required parameter 'scope'")
    scopes = scope.split(" ")
    if any(s == "" for s in scopes):
        raise InvalidScope("scope has empty values; separate scopes with single spaces")
    # CIBA 7.1: "The scope MUST include openid".
    if "openid" not in scopes:
        raise InvalidScope("scope must include 'openid'")
    if client is not None:
        check_scope_allowed(scope, client.client)
    return " ".join(dict.fromkeys(scopes))


def check_scope_allowed(scope: str, client: ClientConfig) -> None:
    allowed = set(client.scopes) | {"openid"}
    unknown = [s for s in scope.split(" ") if s not in allowed]
    if unknown:
        raise InvalidScope(f"scope '{unknown[0]}' is not allowed for this client")


def check_one_hint(params: Params) -> str:
    """The name of the one hint given. CIBA 7.1: exactly one of login_hint_token, id_token_hint,
    login_hint."""
    present = [h for h in ("login_hint", "login_hint_token", "id_token_hint") if h in params]
    if not present:
        raise InvalidRequest("one of login_hint, login_hint_token or id_token_hint is required")
    if len(present) > 1:
        raise InvalidRequest(f"only one hint may be given, got {', '.join(present)}")
    return present[0]


def check_hint(params: Params, client: AuthenticatedClient, context: RequestContext) -> Hint:
    which = check_one_hint(params)
    if which == "login_hint":
        return Hint(kind="username", value=params.required("login_hint"))
    if which == "id_token_hint":
        return _id_token_hint(params.required("id_token_hint"), client, context)
    return _login_hint_token(params.required("login_hint_token"), client, context)


def _id_token_hint(token: str, client: AuthenticatedClient, context: RequestContext) -> Hint:
    """An ID token this provider issued to this client (its signature, issuer and audience
    are checked; like OpenID Connect Core 3.1.2.1, an expired one is still a valid hint)."""
    try:
        claims = context.decode_id_token(token)
    except jwt.PyJWTError as exc:
        raise InvalidRequest(f"id_token_hint is not an ID token issued by this provider ({exc})") from None
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if client.client.client_id not in audiences:
        # Another client's ID token must not let this client pick the user.
        raise InvalidRequest("id_token_hint was not issued to this client")
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise InvalidRequest("id_token_hint has no subject")
    return Hint(kind="user_id", value=sub)


def _login_hint_token(token: str, client: AuthenticatedClient, context: RequestContext) -> Hint:
    """A JWT signed by the client's registered key naming the user with an RFC 9493 subject
    identifier in ``sub_id``: ``{"format": "opaque", "id": <username>}`` or
    ``{"format": "iss_sub", "iss": <this issuer>, "sub": <user id>}``."""
    if not client.client.jwks:
        raise InvalidRequest("login_hint_token needs keys registered for the client")
    try:
        claims = verify_client_jwt(
            token,
            jwks=client.client.jwks,
            audiences=(context.issuer,),
            now=context.now,
            max_lifetime=MAX_REQUEST_OBJECT_LIFETIME,
            required=("exp", "sub_id"),
            what="login_hint_token",
        )
    except ExpiredJwt:
        raise ExpiredLoginHintToken("login_hint_token has expired") from None
    except ClientJwtError as exc:
        raise InvalidRequest(exc.description) from None
    sub_id = claims.get("sub_id")
    if isinstance(sub_id, dict):
        if sub_id.get("format") == "opaque" and isinstance(sub_id.get("id"), str):
            return Hint(kind="username", value=sub_id["id"])
        if (
            sub_id.get("format") == "iss_sub"
            and sub_id.get("iss") == context.issuer
            and isinstance(sub_id.get("sub"), str)
        ):
            return Hint(kind="user_id", value=sub_id["sub"])
    raise InvalidRequest("login_hint_token sub_id must be an 'opaque' or 'iss_sub' subject identifier")


def check_client_notification_token(params: Params, client: AuthenticatedClient) -> str | None:
    token = params.optional("client_notification_token")
    mode = client.client.backchannel_token_delivery_mode
    if mode == "poll":
        return None
    # CIBA 7.1: REQUIRED for ping and push; it is the bearer token of our notification.
    if token is None:
        raise InvalidRequest(f"client_notification_token is required in {mode} mode")
    if len(token) > 1024 or not _B64TOKEN.fullmatch(token):
        raise InvalidRequest("client_notification_token must be an RFC 6750 b64token of at most 1024 characters")
    return token


def check_binding_message(params: Params, *, max_length: int) -> str | None:
    message = params.optional("binding_message")
    if message is None:
        return None
    # CIBA 7.1: the message is shown on both devices so the user can match them; it must be
    # short and plain. Control and format characters (bidi overrides, zero-width) could make
    # the text shown differ from the text signed, so they are refused outright.
    if len(message) > max_length:
        raise InvalidBindingMessage(f"binding_message is longer than {max_length} characters")
    # Printable ASCII holds no unsafe character; anything else is checked character by character.
    for char in "" if message.isascii() and message.isprintable() else message:
        if is_unsafe_char(char):
            raise InvalidBindingMessage(
                f"binding_message contains a control, format or unusual space character (U+{ord(char):04X})"
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
    params: Params, client: AuthenticatedClient | None, *, registry: TypeRegistry, settings: Settings
) -> list[dict[str, Any]]:
    """Parse and check ``authorization_details`` against the type registry and the limits; with
    a ``client``, also against the types it may request (with None, not authenticated yet,
    :func:`check_authorization_details_allowed` does that later)."""
    raw = params.optional("authorization_details")
    if raw is None:
        # This provider only issues tokens for an approved action; a token without
        # authorization_details would be standing privilege again.
        raise InvalidRequest("authorization_details is required: tokens are issued per action")
    allowed = (client.client.authorization_details_types or None) if client is not None else None
    return parse_authorization_details(
        raw,
        registry=registry,
        allowed_types=allowed,
        max_entries=settings.max_authorization_details,
        max_bytes=settings.max_authorization_details_bytes,
    )


def check_authorization_details_allowed(details: list[dict[str, Any]], client: ClientConfig) -> None:
    """Every entry's type is one the client may request (an empty list allows every type), with
    the same error as the parser gives when it checks the types itself."""
    allowed = client.authorization_details_types
    if not allowed:
        return
    for index, entry in enumerate(details):
        if entry.get("type") not in allowed:
            raise InvalidAuthorizationDetails(
                f"authorization_details[{index}]: type '{entry.get('type')}' is not allowed for this client"
            )


def check_client_policy(client: ClientConfig, *, scope: str, authorization_details: list[dict[str, Any]]) -> None:
    """What this client may ask for: the CIBA grant, its scopes, its authorization_details
    types. Only for an authenticated client: run before authentication, these answers would tell
    anyone who names a client id what that client may request."""
    check_client_may_use_ciba(client)
    check_scope_allowed(scope, client)
    check_authorization_details_allowed(authorization_details, client)


def validate_backchannel_request(
    *,
    params: Params,
    client: AuthenticatedClient,
    settings: Settings,
    registry: TypeRegistry,
    context: RequestContext,
) -> ValidatedBackchannelRequest:
    """Run every check of CIBA 7.1/7.2 (and RFC 9396 5) in order."""
    check_client_may_use_ciba(client)
    params = resolve_request_object(params, client, context)
    check_unsupported_parameters(params, settings=settings)
    scope = check_scope(params, client)
    hint = check_hint(params, client, context)
    notification_token = check_client_notification_token(params, client)
    binding_message = check_binding_message(params, max_length=settings.binding_message_max_length)
    expires_in = check_requested_expiry(
        params, default=settings.request_expiry_default, maximum=settings.request_expiry_max
    )
    details = check_authorization_details(params, client, registry=registry, settings=settings)
    return ValidatedBackchannelRequest(
        client=client,
        scope=scope,
        hint=hint,
        binding_message=binding_message,
        user_code=params.optional("user_code"),
        expires_in=expires_in,
        authorization_details=details,
        client_notification_token=notification_token,
    )
