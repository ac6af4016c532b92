"""Routes for the user's decoupled device: the approval page and its API, the enrollment page
and its API, and their static files."""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ciba_service.core.errors import ApprovalError
from ciba_service.server.provider import Provider
from ciba_service.web.http import NO_STORE, PAGE_HEADERS, JsonBody, offload

__all__ = ["approval_routes", "page_headers"]

_STATIC_TYPES = {
    "webauthn.js": "text/javascript",
    "strings.js": "text/javascript",
    "page.js": "text/javascript",
    "approve.js": "text/javascript",
    "enroll.js": "text/javascript",
    "style.css": "text/css",
}


def _static(name: str) -> str:
    return resources.files("ciba_service.web").joinpath("static", name).read_text("utf-8")


def page_headers(logo_url: str) -> dict[str, str]:
    """The pages' headers; a configured https logo adds exactly its origin to ``img-src``
    (config refuses any other absolute logo URL), nothing else is loosened."""
    parts = urlsplit(logo_url)
    if parts.scheme != "https" or not parts.netloc:
        return PAGE_HEADERS
    csp = PAGE_HEADERS["Content-Security-Policy"].replace(
        "img-src 'self'", f"img-src 'self' https://{parts.netloc.lower()}"
    )
    return {**PAGE_HEADERS, "Content-Security-Policy": csp}


def approval_routes(provider: Provider) -> APIRouter:
    router = APIRouter()
    headers = page_headers(provider.context.settings.logo_url)

    @router.get("/approve/{approval_id}", response_class=HTMLResponse)
    async def approval_page(approval_id: str) -> HTMLResponse:
        return HTMLResponse(_static("approve.html"), headers=headers)

    @router.get("/approve/{approval_id}/details")
    async def approval_details(approval_id: str) -> JSONResponse:
        view = await offload(provider.approval_view)(approval_id)
        return JSONResponse(view, headers=NO_STORE)

    @router.post("/approve/{approval_id}/approve")
    async def approve(approval_id: str, body: JsonBody) -> JSONResponse:
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise ApprovalError("'credential' must be the PublicKeyCredential JSON")
        result = await offload(provider.approve)(approval_id, credential)
        return JSONResponse(result, headers=NO_STORE)

    @router.post("/approve/{approval_id}/deny")
    async def deny(approval_id: str, body: JsonBody) -> JSONResponse:
        result = await offload(provider.deny)(approval_id)
        return JSONResponse(result, headers=NO_STORE)

    @router.get("/enroll/{token}", response_class=HTMLResponse)
    async def enrollment_page(token: str) -> HTMLResponse:
        return HTMLResponse(_static("enroll.html"), headers=headers)

    @router.get("/enroll/{token}/details")
    async def enrollment_details(token: str) -> JSONResponse:
        return JSONResponse(await offload(provider.enrollment_view)(token), headers=NO_STORE)

    @router.post("/enroll/{token}/options")
    async def enrollment_options(token: str, body: JsonBody) -> JSONResponse:
        return JSONResponse(await offload(provider.enrollment_options)(token), headers=NO_STORE)

    @router.post("/enroll/{token}/complete")
    async def enrollment_complete(token: str, body: JsonBody) -> JSONResponse:
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise ApprovalError("'credential' must be the PublicKeyCredential JSON")
        return JSONResponse(await offload(provider.complete_enrollment)(token, credential), headers=NO_STORE)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in _STATIC_TYPES:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return Response(
            _static(name),
            media_type=_STATIC_TYPES[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    return router
