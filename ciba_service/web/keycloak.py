"""The route Keycloak calls: its CIBA HTTP authentication channel (``ciba-http-auth-channel``).
Present in both modes; in embedded mode the provider refuses it (there is no Keycloak)."""

from __future__ import annotations

import json

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, Response

from ciba_service.core.errors import ChannelError
from ciba_service.server.provider import Provider
from ciba_service.web.http import MAX_CHANNEL_BYTES, BodyTooLarge, offload, read_limited

__all__ = ["keycloak_routes"]


def keycloak_routes(provider: Provider) -> APIRouter:
    router = APIRouter()

    @router.post("/keycloak/auth-channel", status_code=201)
    async def auth_channel(request: Request, tasks: BackgroundTasks) -> Response:
        """Keycloak's CIBA HTTP authentication channel (``ciba-http-auth-channel``)."""
        try:
            body = json.loads(await read_limited(request, MAX_CHANNEL_BYTES))
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError, BodyTooLarge):
            return JSONResponse(
                {"error": "invalid_request", "error_description": "body must be a JSON object"},
                status_code=400,
            )
        try:
            result = await offload(provider.channel)(request.headers.get("authorization"), body)
        except ChannelError as exc:
            return JSONResponse(
                {"error": "channel_refused", "error_description": exc.description},
                status_code=exc.status_code,
            )
        # After answering: the notice is in the store's outbox already (see server/outbox.py).
        tasks.add_task(provider.send_notice, result.request_id, result.notice)
        return Response(status_code=201)

    return router
