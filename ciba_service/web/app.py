"""The app factory: the routes by audience (agents and resource servers, the user's device,
Keycloak), one exception handler per error family, the background sweep, log redaction."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from ciba_service.config import Settings, load_settings
from ciba_service.core.errors import ApprovalError, OAuthError
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.store import StoreUnavailable
from ciba_service.web.approval import approval_routes
from ciba_service.web.authzen import pep_routes
from ciba_service.web.hot_path import OAuthHotPath
from ciba_service.web.http import error_answer
from ciba_service.web.keycloak import keycloak_routes
from ciba_service.web.metrics import Metrics, MetricsMiddleware
from ciba_service.web.oauth import oauth_routes

__all__ = ["RedactLinkSecrets", "app_from_environment", "build_app", "create_app"]

log = logging.getLogger("ciba_service")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    provider: Provider = app.state.provider
    task = None
    # Keycloak mode: close expired requests (no callback, see keycloak/callback.py);
    # embedded: push expiry notices and any ping/push delivery a restart interrupted. Both: the
    # users' notices left undelivered (server/outbox.py), whichever instance wrote them.
    if provider.sweep_interval > 0:

        async def sweep() -> None:
            while True:
                await asyncio.sleep(provider.sweep_interval)
                try:
                    await run_in_threadpool(provider.sweep_expired)
                except Exception:  # keep sweeping; the error is logged
                    log.exception("expiry sweep failed")

        task = asyncio.create_task(sweep())
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
        # Queued approval notices are not worth delaying a shutdown for: each stays in the
        # store's outbox until delivered, and a sweep (here after a restart, or on another
        # instance) sends it once its lease has run out.
        provider.notifier.close(wait=False)
        # The issuer's own connections (keycloak mode: its HTTP client to Keycloak).
        provider.close()


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


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    async def _render(request: Request, exc: Exception) -> Response:
        status, body, headers, outcome = error_answer(exc)
        request.state.oauth_error = outcome  # the outcome label of the request metric
        if isinstance(exc, StoreUnavailable):
            metrics.store_errors.inc()
            log.error("store unavailable: %s", exc.__cause__ or exc)
        return JSONResponse(body, status_code=status, headers=headers)

    app.add_exception_handler(OAuthError, _render)
    app.add_exception_handler(ApprovalError, _render)
    app.add_exception_handler(StoreUnavailable, _render)

    @app.exception_handler(Exception)
    async def _server_error(_: Request, exc: Exception) -> Response:
        status, body, headers, _outcome = error_answer(exc)
        return JSONResponse(body, status_code=status, headers=headers)


class _App(FastAPI):
    """FastAPI, with the POSTs of web/hot_path.py answered before FastAPI's own per-request work
    (its telemetry check, which looks up OpenTelemetry's global providers and the environment on
    every request, and its error and body-limit middleware, which the hot path does without:
    it renders its own errors and limits its own body). Everything else is FastAPI's."""

    hot_path: OAuthHotPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot_path = self.hot_path
        if hot_path is not None and scope["type"] == "http" and scope["method"] == "POST":
            await hot_path(scope, receive, send)  # other paths go on to FastAPI
            return
        await super().__call__(scope, receive, send)

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(provider: Provider) -> FastAPI:
    app = _App(
        title="ciba-service",
        summary="Just-in-time, passkey-approved authorization for AI agents (OpenID CIBA + RFC 9396)",
        version="0.1.0",
        lifespan=_lifespan,
    )
    app.state.provider = provider
    _install_log_redaction()
    metrics = Metrics(count_pending=lambda: provider.store.count_pending(now=provider.now()))
    provider.context.events = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Operational data (request rates, pending count): expose it to the scraper only, e.g. by
    # not routing /metrics at the reverse proxy (README, "Metrics").
    app.add_route("/metrics", metrics.render, methods=["GET"], include_in_schema=False)
    _install_error_handlers(app, metrics)
    # In front of FastAPI itself: /bc-authorize and /token (what agents call in a loop) are
    # answered without FastAPI's per-request work, routing, dependencies and thread hop
    # (web/hot_path.py; _App).
    app.hot_path = OAuthHotPath(app._fastapi, provider=provider, metrics=metrics)
    app.include_router(oauth_routes(provider))
    app.include_router(approval_routes(provider))
    app.include_router(keycloak_routes(provider))
    app.include_router(pep_routes(provider))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def build_app(settings: Settings) -> FastAPI:
    """The ASGI app for ``settings`` (what ``ciba-service serve`` runs)."""
    return create_app(build_provider(settings))


def app_from_environment() -> FastAPI:
    """The app for ``$CIBA_CONFIG`` and ``CIBA_*`` variables: what each worker process of
    ``ciba-service serve --workers N`` builds (uvicorn imports it by name)."""
    return build_app(load_settings())
