"""OpenAPI descriptions of the form-encoded OAuth endpoints.

The handlers read the raw form themselves (repeated parameters must be detected, which a
pydantic model would hide), so their request and response shapes are declared here for the
OpenAPI document that clients and schemathesis read."""

from __future__ import annotations

from typing import Any

__all__ = ["BC_AUTHORIZE", "INTROSPECT", "TOKEN"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
}


def _form(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": properties, "required": required}
            }
        },
    }


# Every 401 (invalid_client) carries the Basic challenge, whatever the method (errors.CLIENT_CHALLENGE).
_CHALLENGE = {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "pattern": "^Basic realm="}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "OAuth error",
            "content": {"application/json": {"schema": _ERROR}},
            **({"headers": _CHALLENGE} if code == 401 else {}),
        }
        for code in codes
    }


_CLIENT_AUTH = {
    "client_id": {"type": "string"},
    "client_secret": {"type": "string"},
    "client_assertion_type": {"type": "string"},
    "client_assertion": {"type": "string"},
}

BC_AUTHORIZE: dict[str, Any] = {
    "requestBody": _form(
        {
            "scope": {"type": "string", "example": "openid"},
            "login_hint": {"type": "string"},
            "login_hint_token": {"type": "string"},
            "id_token_hint": {"type": "string"},
            "binding_message": {"type": "string"},
            "user_code": {"type": "string"},
            "requested_expiry": {"type": "string"},
            "client_notification_token": {"type": "string"},
            "acr_values": {"type": "string"},
            "authorization_details": {"type": "string", "description": "JSON array (RFC 9396)"},
            "request": {"type": "string", "description": "signed authentication request (CIBA 7.1.1)"},
            **_CLIENT_AUTH,
        },
        [],
    ),
    "responses": {
        "200": {
            "description": "Request accepted (CIBA 7.3)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["auth_req_id", "expires_in"],
                        "properties": {
                            "auth_req_id": {"type": "string"},
                            "expires_in": {"type": "integer"},
                            "interval": {"type": "integer"},
                        },
                    }
                }
            },
        },
        **_errors(400, 401, 403, 503),
    },
}

TOKEN: dict[str, Any] = {
    "requestBody": _form({"grant_type": {"type": "string"}, "auth_req_id": {"type": "string"}, **_CLIENT_AUTH}, []),
    "responses": {
        "200": {
            "description": "Token response (CIBA 10.1.1)",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["access_token", "token_type", "expires_in"],
                        "properties": {
                            "access_token": {"type": "string"},
                            "token_type": {"type": "string"},
                            "expires_in": {"type": "integer"},
                            "id_token": {"type": "string"},
                            "scope": {"type": "string"},
                            "authorization_details": {"type": "array"},
                        },
                    }
                }
            },
        },
        **_errors(400, 401, 503),
    },
}

INTROSPECT: dict[str, Any] = {
    "requestBody": _form({"token": {"type": "string"}, **_CLIENT_AUTH}, []),
    "responses": {
        "200": {
            "description": "RFC 7662 introspection response",
            "content": {
                "application/json": {
                    "schema": {"type": "object", "required": ["active"], "properties": {"active": {"type": "boolean"}}}
                }
            },
        },
        **_errors(400, 401),
    },
}
