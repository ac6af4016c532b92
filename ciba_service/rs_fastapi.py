"""FastAPI glue for the resource-server verifier.

::

    verifier = TokenVerifier(issuer=..., audience="resource-api", keys=JwksCache(jwks_uri))
    install_error_handler(app)

    def policy_update(policy_id: str) -> RequestedAction:
        return RequestedAction(type="iam_policy", actions=["update"], identifier=policy_id)

    @app.put("/policies/{policy_id}")
    def update(policy_id: str, token: Approved = Depends(require_action(verifier, policy_update))): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from .resource import MissingToken, RequestedAction, ResourceError, TokenVerifier, VerifiedToken

__all__ = ["bearer_token", "install_error_handler", "require_action"]


def bearer_token(request: Request, *, realm: str) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise MissingToken("a bearer token approved for this action is required", realm=realm)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingToken("use the Bearer authentication scheme", realm=realm)
    return token.strip()


def require_action(verifier: TokenVerifier, action_for: Callable[..., RequestedAction]) -> Callable[..., Any]:
    """A dependency that verifies the bearer token for the action built by ``action_for``
    from the path parameters of the call."""

    async def dependency(request: Request) -> VerifiedToken:
        action = action_for(**request.path_params)
        token = bearer_token(request, realm=verifier.realm)
        # The JWKS fetch may block on first use; keep it off the event loop.
        return await run_in_threadpool(verifier.verify, token, action)

    return dependency


def install_error_handler(app: FastAPI) -> None:
    @app.exception_handler(ResourceError)
    async def _resource_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ResourceError)
        return JSONResponse(
            exc.body(),
            status_code=exc.status_code,
            headers={"WWW-Authenticate": exc.www_authenticate(), "Cache-Control": "no-store"},
        )
