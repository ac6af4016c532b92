"""RFC 7662 token introspection for the tokens this service mints (embedded mode)."""

from __future__ import annotations

from typing import Any

import jwt

from ciba_service.core.errors import UnauthorizedClient
from ciba_service.core.params import Params
from ciba_service.server.context import ServerContext

__all__ = ["introspect"]


def introspect(context: ServerContext, params: Params, authorization: str | None) -> dict[str, Any]:
    caller = context.authenticate_client(params, authorization)
    if not caller.client.introspection:
        raise UnauthorizedClient("this client may not introspect tokens")
    token = params.required("token")
    try:
        claims = context.decode_own(token, typ="at+jwt", require=["exp", "jti"], what="an access token")
    except jwt.PyJWTError:
        return {"active": False}
    if not isinstance(claims["exp"], int | float) or context.now() >= claims["exp"]:
        return {"active": False}  # judged by the service's clock, like everything else
    request = context.store.find_request_by_jti(str(claims["jti"]))
    if request is None or request.revoked:
        return {"active": False}
    return {"active": True, "token_type": "Bearer", **claims}
