"""The thin FastAPI layer: HTTP in, :class:`Provider` calls, HTTP out."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

import redis
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ciba_service.config import Settings
from ciba_service.core.errors import CLIENT_CHALLENGE, ApprovalError, InvalidRequest, OAuthError
from ciba_service.core.params import Params
from ciba_service.server.keycloak.provider import ChannelError, KeycloakProvider
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.web import openapi

__all__ = ["build_app", "create_app"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The approval and enrollment pages: no framing (clickjacking an Approve button), no
# referrer (the approval id in the URL must not leak to other origins), scripts only from us.
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_MAX_FORM_BYTES = 64 * 1024
_MAX_CHANNEL_BYTES = 16 * 1024


def _passthrough_headers(status: int) -> dict[str, str]:
    """Headers for an answer relayed from Keycloak (keycloak mode). Its challenge is not passed
    through, so a 401 from it (invalid_client) gets ours: every 401 must carry one (RFC 9110
    11.6.1, RFC 6749 5.2), or clients cannot tell how to retry."""
    return {**_NO_STORE, "WWW-Authenticate": CLIENT_CHALLENGE} if status == 401 else _NO_STORE


def _static(name: str) -> str:
    return resources.files("ciba_service.web").joinpath("static", name).read_text("utf-8")


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes: an unauthenticated caller must
    not make the server hold an arbitrarily large body in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def form_params(request: Request) -> Params:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidRequest("the request body must be application/x-www-form-urlencoded")
    try:
        body = await read_limited(request, _MAX_FORM_BYTES)
    except BodyTooLarge:
        raise InvalidRequest("request body too large") from None
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not UTF-8") from None
    return Params(pairs)


async def json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # Requiring JSON forces a CORS preflight, so another site cannot POST here from a form.
    if content_type != "application/json":
        raise ApprovalError("the request body must be application/json")
    try:
        body = await read_limited(request, _MAX_FORM_BYTES)
    except BodyTooLarge:
        raise ApprovalError("request body too large") from None
    try:
        value = json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise ApprovalError("request body is not JSON") from None
    if not isinstance(value, dict):
        raise ApprovalError("request body must be a JSON object")
    return value


FormParams = Annotated[Params, Depends(form_params)]
JsonBody = Annotated[dict[str, Any], Depends(json_body)]


def _keycloak_routes(
    app: FastAPI,
    provider: KeycloakProvider,
    offload: Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]]],
) -> None:
    @app.post("/keycloak/auth-channel", status_code=201)
    async def auth_channel(request: Request, tasks: BackgroundTasks) -> Response:
        """Keycloak's CIBA HTTP authentication channel (``ciba-http-auth-channel``)."""
        try:
            body = json.loads(await read_limited(request, _MAX_CHANNEL_BYTES))
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError, BodyTooLarge):
            return JSONResponse(
                {"error": "invalid_request", "error_description": "body must be a JSON object"},
                status_code=400,
            )
        try:
            notice = await offload(provider.channel)(request.headers.get("authorization"), body)
        except ChannelError as exc:
            return JSONResponse(
                {"error": "channel_refused", "error_description": exc.description},
                status_code=exc.status_code,
            )
        tasks.add_task(provider.notifier.notify, notice)
        return Response(status_code=201)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    provider = app.state.provider
    task = None
    # Keycloak mode: close expired requests (no callback, see KeycloakProvider.sweep_expired);
    # embedded: push expiry notices and any ping/push delivery a restart interrupted.
    if getattr(provider, "sweep_interval", 2.0) > 0:

        async def sweep() -> None:
            while True:
                await asyncio.sleep(provider.sweep_interval)
                try:
                    await run_in_threadpool(provider.sweep_expired)
                except Exception:  # keep sweeping; the error is logged
                    logging.getLogger("ciba_service").exception("expiry sweep failed")

        task = asyncio.create_task(sweep())
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
        # Queued approval notices are not worth delaying a shutdown for: their requests are
        # still pending in the store, and the agent can ask again.
        provider.notifier.close(wait=False)


_SECRET_PATH = re.compile(r"^/(enroll|approve)/[^/?]+")


class RedactLinkSecrets(logging.Filter):
    """Access logs must not hold live enrollment tokens or approval ids: whoever reads the log
    could register a passkey for the user, or deny the user's requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], _SECRET_PATH.sub(r"/\1/[redacted]", args[2]), *args[3:])
        return True


def _install_log_redaction() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactLinkSecrets) for f in access.filters):
        access.addFilter(RedactLinkSecrets())


def create_app(provider: Provider) -> FastAPI:
    app = FastAPI(
        title="ciba-service",
        summary="Just-in-time, passkey-approved authorization for AI agents (OpenID CIBA + RFC 9396)",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.state.provider = provider
    _install_log_redaction()

    @app.exception_handler(OAuthError)
    async def _oauth_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, OAuthError)
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    @app.exception_handler(redis.ResponseError)
    async def _store_unavailable(_: Request, exc: Exception) -> Response:
        # The shared store (Redis) is down, too slow, out of memory (noeviction), or read-only
        # after a failover: the caller may retry. Every guarded step is one atomic script, so
        # nothing is ever half done; but a timeout can strike after a script ran and only its
        # reply was lost, so the retry may find the step done (a redeemed auth_req_id is then
        # invalid_grant, as for any second redemption). Anything else Redis refuses is a bug.
        unavailable = not isinstance(exc, redis.ResponseError) or (
            isinstance(exc, redis.ReadOnlyError) or str(exc).startswith("OOM")
        )
        if not unavailable:
            logging.getLogger("ciba_service").error("store error: %s", exc)
            body = {"error": "server_error", "error_description": "the service's store refused a command"}
            return JSONResponse(body, status_code=500, headers=_NO_STORE)
        logging.getLogger("ciba_service").error("store unavailable: %s", exc)
        body = {"error": "temporarily_unavailable", "error_description": "the service's store cannot be reached; retry"}
        return JSONResponse(body, status_code=503, headers={**_NO_STORE, "Retry-After": "5"})

    @app.exception_handler(ApprovalError)
    async def _approval_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApprovalError)
        return JSONResponse(
            {"error": exc.code, "error_description": exc.description},
            status_code=exc.status_code,
            headers=_NO_STORE,
        )

    def offload(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        # scrypt and SQLite block; keep them off the event loop.
        async def call(*args: Any) -> Any:
            return await run_in_threadpool(fn, *args)

        return call

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> JSONResponse:
        return JSONResponse(provider.discovery())

    @app.get("/jwks.json")
    async def jwks() -> JSONResponse:
        return JSONResponse(provider.signing_key.jwks(), headers={"Cache-Control": "max-age=300"})

    @app.post("/bc-authorize", openapi_extra=openapi.BC_AUTHORIZE)
    async def bc_authorize(request: Request, params: FormParams, tasks: BackgroundTasks) -> JSONResponse:
        result = await offload(provider.backchannel_authenticate)(params, request.headers.get("authorization"))
        if result.notice is not None:
            tasks.add_task(provider.notifier.notify, result.notice)
        return JSONResponse(
            result.response, status_code=result.status_code, headers=_passthrough_headers(result.status_code)
        )

    @app.post("/token", openapi_extra=openapi.TOKEN)
    async def token(request: Request, params: FormParams) -> JSONResponse:
        if isinstance(provider, KeycloakProvider):
            status, body = await offload(provider.passthrough_token)(params, request.headers.get("authorization"))
            return JSONResponse(body, status_code=status, headers=_passthrough_headers(status))
        body = await offload(provider.token)(
            params, request.headers.get("authorization"), request.headers.getlist("dpop")
        )
        return JSONResponse(body, headers=_NO_STORE)

    if isinstance(provider, KeycloakProvider):
        _keycloak_routes(app, provider, offload)

    # the user's side -----------------------------------------------------------------
    @app.get("/approve/{approval_id}", response_class=HTMLResponse)
    async def approval_page(approval_id: str) -> HTMLResponse:
        return HTMLResponse(_static("approve.html"), headers=_PAGE_HEADERS)

    @app.get("/approve/{approval_id}/details")
    async def approval_details(approval_id: str) -> JSONResponse:
        view = await offload(provider.approval_view)(approval_id)
        return JSONResponse(view, headers=_NO_STORE)

    @app.post("/approve/{approval_id}/approve")
    async def approve(approval_id: str, body: JsonBody) -> JSONResponse:
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise ApprovalError("'credential' must be the PublicKeyCredential JSON")
        result = await offload(provider.approve)(approval_id, credential)
        return JSONResponse(result, headers=_NO_STORE)

    @app.post("/approve/{approval_id}/deny")
    async def deny(approval_id: str, body: JsonBody) -> JSONResponse:
        result = await offload(provider.deny)(approval_id)
        return JSONResponse(result, headers=_NO_STORE)

    @app.get("/enroll/{token}", response_class=HTMLResponse)
    async def enrollment_page(token: str) -> HTMLResponse:
        return HTMLResponse(_static("enroll.html"), headers=_PAGE_HEADERS)

    @app.get("/enroll/{token}/details")
    async def enrollment_details(token: str) -> JSONResponse:
        return JSONResponse(await offload(provider.enrollment_view)(token), headers=_NO_STORE)

    @app.post("/enroll/{token}/options")
    async def enrollment_options(token: str, body: JsonBody) -> JSONResponse:
        return JSONResponse(await offload(provider.enrollment_options)(token), headers=_NO_STORE)

    @app.post("/enroll/{token}/complete")
    async def enrollment_complete(token: str, body: JsonBody) -> JSONResponse:
        credential = body.get("credential")
        if not isinstance(credential, dict):
            raise ApprovalError("'credential' must be the PublicKeyCredential JSON")
        return JSONResponse(await offload(provider.complete_enrollment)(token, credential), headers=_NO_STORE)

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        allowed = {
            "webauthn.js": "text/javascript",
            "approve.js": "text/javascript",
            "enroll.js": "text/javascript",
            "style.css": "text/css",
        }
        if name not in allowed:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return Response(
            _static(name),
            media_type=allowed[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    @app.post("/introspect", openapi_extra=openapi.INTROSPECT)
    async def introspect(request: Request, params: FormParams) -> JSONResponse:
        """RFC 7662 token introspection, for resource servers registered as clients."""
        body = await offload(provider.introspect)(params, request.headers.get("authorization"))
        return JSONResponse(body, headers=_NO_STORE)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def build_app(settings: Settings) -> FastAPI:
    """The ASGI app for ``settings`` (what ``ciba-service serve`` runs)."""
    return create_app(build_provider(settings))
