"""FastAPI glue for the resource-server verifier.

::

    verifier = TokenVerifier(issuer=..., audience="resource-api", keys=JwksCache(jwks_uri))
    install_error_handler(app)

    def policy_update(policy_id: str) -> RequestedAction:
        return RequestedAction(type="iam_policy", actions=["update"], identifier=policy_id)

    @app.put("/policies/{policy_id}")
    def update(policy_id: str, token: VerifiedToken = Depends(require_action(verifier, policy_update))):
        ...

``action_for`` receives the path parameters it names; it may also take ``request`` (the
Starlette request, e.g. to read the body) and may be ``async``. If the action it builds
cannot be an ``authorization_details`` entry (:class:`InvalidRequestedAction`, e.g. a NaN read
from the body), the answer is ``400 invalid_request``. The dependency hands the
``Authorization`` header, the method, the URL and the ``DPoP`` header to
:meth:`TokenVerifier.verify_request`, so DPoP-bound tokens work without extra code.

With server-provided DPoP nonces (``TokenVerifier(dpop_nonces=DPoPNonces(key))``) the
``DPoP-Nonce`` header is set for you: on the ``401 use_dpop_nonce`` answer (by the error
handler, from :meth:`ResourceError.headers`) and on a successful answer when the agent should
move to a newer nonce (a route that returns its own ``Response`` object sets it from
``token.dpop_nonce`` itself: FastAPI merges dependency headers only into responses it builds).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ciba_service.rs.errors import InvalidRequest, MissingToken, ResourceError
from ciba_service.rs.matching import InvalidRequestedAction, RequestedAction
from ciba_service.rs.verifier import TokenVerifier, VerifiedToken

__all__ = ["bearer_token", "install_error_handler", "request_url", "require_action"]

ActionFactory = Callable[..., RequestedAction | Awaitable[RequestedAction]]


def request_url(request: Request, *, public_url: str | None = None) -> str:
    """The URL the agent called, for DPoP ``htu``. Behind a proxy, pass the public origin
    (``https://api.example.com``): the ``Host`` header is the caller's to choose, and a proof
    must only be accepted for the URL this server really answers at."""
    if public_url is None:
        return str(request.url)
    return public_url.rstrip("/") + request.url.path


def bearer_token(request: Request, *, realm: str) -> str:
    """The bearer token of a request (kept for callers that verify by hand; the dependency
    below also accepts the DPoP scheme)."""
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MissingToken("a bearer token approved for this action is required", realm=realm)
    return token.strip()


def _accepted_parameters(action_for: ActionFactory) -> tuple[frozenset[str], bool]:
    parameters = inspect.signature(action_for).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return frozenset(p.name for p in parameters), takes_any


def require_action(
    verifier: TokenVerifier, action_for: ActionFactory, *, public_url: str | None = None
) -> Callable[[Request, Response], Awaitable[VerifiedToken]]:
    """A dependency that verifies the call's access token for the action built by
    ``action_for`` (from the path parameters it names, and ``request`` if it asks for it)."""
    names, takes_any = _accepted_parameters(action_for)

    async def dependency(request: Request, response: Response) -> VerifiedToken:
        kwargs: dict[str, Any] = {
            name: value for name, value in request.path_params.items() if takes_any or name in names
        }
        if "request" in names:
            kwargs["request"] = request
        try:
            built = action_for(**kwargs)
            action = await built if inspect.isawaitable(built) else built
        except InvalidRequestedAction as exc:
            # The action is usually built from the request (its body, its path): a value the
            # caller sent that JSON cannot carry (NaN, 1e999) is the caller's error, a 400,
            # not a 500.
            raise InvalidRequest(
                f"the request cannot be checked against an approval: {exc}", realm=verifier.realm
            ) from None
        # The JWKS fetch, Redis and introspection may block: keep them off the event loop.
        verified = await run_in_threadpool(
            verifier.verify_request,
            action,
            authorization=request.headers.get("authorization"),
            method=request.method,
            url=request_url(request, public_url=public_url),
            dpop=request.headers.getlist("dpop"),
        )
        if verified.dpop_nonce is not None:
            # RFC 9449 9: a new nonce may come with a successful answer; the agent uses it next.
            response.headers["DPoP-Nonce"] = verified.dpop_nonce
        return verified

    return dependency


def install_error_handler(app: FastAPI) -> None:
    """Render every :class:`ResourceError` with its status, JSON body and challenge."""

    @app.exception_handler(ResourceError)
    async def _resource_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ResourceError)
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())
