"""Routes for agents and resource servers: discovery, JWKS, the backchannel authentication
endpoint, the token endpoint and introspection. The same routes in both modes; what each
answers is the provider's (a mode that does not serve one answers NotOffered).

``/bc-authorize`` and ``/token`` are what agents call in a loop: the app answers their POSTs in
:class:`~ciba_service.web.hot_path.OAuthHotPath`, in front of FastAPI. Their routes here declare
them (the OpenAPI document, 405 for other methods) and serve them in an app built without that
layer; both go through :func:`bc_authorize_answer` and :func:`token_answer`, so there is one
translation from the provider's results to HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse

from ciba_service.core.params import Params
from ciba_service.server.provider import Provider
from ciba_service.web import openapi
from ciba_service.web.http import NO_STORE, FormParams, offload, relayed_headers

__all__ = ["Answer", "bc_authorize_answer", "oauth_routes", "token_answer"]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    # Work to do once the answer is sent (the user's notice), off the request's latency.
    after: Callable[[], None] | None = None


def bc_authorize_answer(provider: Provider, params: Params, authorization: str | None) -> Answer:
    result = provider.backchannel_authenticate(params, authorization)
    after = None
    if result.notice is not None and result.request is not None:
        # After answering: the notice is in the store's outbox already, so if this process
        # dies first, another sweep sends it (see server/outbox.py).
        request_id, notice = result.request.request_id, result.notice

        def after() -> None:
            provider.send_notice(request_id, notice)

    headers = relayed_headers(result.status_code) if result.relayed else NO_STORE
    return Answer(result.status_code, result.response, headers, after)


def token_answer(
    provider: Provider, params: Params, authorization: str | None, dpop_proofs: list[str] | None
) -> Answer:
    result = provider.token(params, authorization, dpop_proofs)
    headers = relayed_headers(result.status_code) if result.relayed else NO_STORE
    return Answer(result.status_code, result.body, headers)


def oauth_routes(provider: Provider) -> APIRouter:
    router = APIRouter()

    @router.get("/.well-known/openid-configuration")
    async def discovery() -> JSONResponse:
        return JSONResponse(provider.discovery())

    @router.get("/jwks.json")
    async def jwks() -> JSONResponse:
        return JSONResponse(provider.jwks(), headers={"Cache-Control": "max-age=300"})

    @router.post("/bc-authorize", openapi_extra=openapi.BC_AUTHORIZE)
    async def bc_authorize(request: Request, params: FormParams, tasks: BackgroundTasks) -> JSONResponse:
        answer = await offload(bc_authorize_answer)(provider, params, request.headers.get("authorization"))
        if answer.after is not None:
            tasks.add_task(answer.after)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    @router.post("/token", openapi_extra=openapi.TOKEN)
    async def token(request: Request, params: FormParams) -> JSONResponse:
        answer = await offload(token_answer)(
            provider, params, request.headers.get("authorization"), request.headers.getlist("dpop")
        )
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    @router.post("/introspect", openapi_extra=openapi.INTROSPECT)
    async def introspect(request: Request, params: FormParams) -> JSONResponse:
        """RFC 7662 token introspection, for resource servers registered as clients."""
        body = await offload(provider.introspect)(params, request.headers.get("authorization"))
        return JSONResponse(body, headers=NO_STORE)

    return router
