"""Routes for agents and resource servers: discovery, JWKS, the backchannel authentication
endpoint, the token endpoint and introspection. The same routes in both modes; what each
answers is the provider's (a mode that does not serve one answers NotOffered)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse

from ciba_service.server.provider import Provider
from ciba_service.web import openapi
from ciba_service.web.http import NO_STORE, FormParams, offload, relayed_headers

__all__ = ["oauth_routes"]


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
        result = await offload(provider.backchannel_authenticate)(params, request.headers.get("authorization"))
        if result.notice is not None and result.request is not None:
            # After answering: the notice is in the store's outbox already, so if this process
            # dies first, another sweep sends it (see server/outbox.py).
            tasks.add_task(provider.send_notice, result.request.request_id, result.notice)
        headers = relayed_headers(result.status_code) if result.relayed else NO_STORE
        return JSONResponse(result.response, status_code=result.status_code, headers=headers)

    @router.post("/token", openapi_extra=openapi.TOKEN)
    async def token(request: Request, params: FormParams) -> JSONResponse:
        result = await offload(provider.token)(
            params, request.headers.get("authorization"), request.headers.getlist("dpop")
        )
        headers = relayed_headers(result.status_code) if result.relayed else NO_STORE
        return JSONResponse(result.body, status_code=result.status_code, headers=headers)

    @router.post("/introspect", openapi_extra=openapi.INTROSPECT)
    async def introspect(request: Request, params: FormParams) -> JSONResponse:
        """RFC 7662 token introspection, for resource servers registered as clients."""
        body = await offload(provider.introspect)(params, request.headers.get("authorization"))
        return JSONResponse(body, headers=NO_STORE)

    return router
