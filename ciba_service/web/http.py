"""Request reading and response headers shared by every route: bodies read with a limit,
form and JSON bodies parsed strictly, and the headers that keep tokens and pages safe."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ciba_service.core.errors import CLIENT_CHALLENGE, ApprovalError, InvalidRequest, OAuthError
from ciba_service.core.params import Params
from ciba_service.store import StoreUnavailable

__all__ = [
    "MAX_CHANNEL_BYTES",
    "MAX_FORM_BYTES",
    "NO_STORE",
    "PAGE_HEADERS",
    "BodyTooLarge",
    "FormParams",
    "JsonBody",
    "check_declared_length",
    "check_form_content_type",
    "error_answer",
    "parse_form",
    "offload",
    "read_limited",
    "relayed_headers",
]

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# The approval and enrollment pages: no framing (clickjacking an Approve button), no
# referrer (the approval id in the URL must not leak to other origins), scripts only from us.
PAGE_HEADERS = {
    **NO_STORE,
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
MAX_FORM_BYTES = 64 * 1024
MAX_CHANNEL_BYTES = 16 * 1024


def relayed_headers(status: int) -> dict[str, str]:
    """Headers for an answer relayed from Keycloak (keycloak mode). Its challenge is not passed
    through, so a 401 from it (invalid_client) gets ours: every 401 must carry one (RFC 9110
    11.6.1, RFC 6749 5.2), or clients cannot tell how to retry."""
    return {**NO_STORE, "WWW-Authenticate": CLIENT_CHALLENGE} if status == 401 else NO_STORE


def error_answer(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str], str]:
    """How an exception leaving a handler is answered: status, JSON body, headers, and the
    outcome label of the request metric. One place for the app's exception handlers and the hot
    path (web/hot_path.py)."""
    if isinstance(exc, OAuthError):
        return exc.status_code, exc.body(), exc.headers(), exc.error
    if isinstance(exc, ApprovalError):
        body = {"error": exc.code, "error_description": exc.description}
        return exc.status_code, body, NO_STORE, exc.code
    if isinstance(exc, StoreUnavailable):
        # The store (Redis down, too slow, out of memory under noeviction, read-only after a
        # failover; SQLite busy or failing I/O) cannot serve now: the caller may retry. Every
        # guarded step is one atomic transition, so nothing is ever half done; but a timeout can
        # strike after a Redis script ran and only its reply was lost, so the retry may find the
        # step done (a redeemed auth_req_id is then invalid_grant, as for any second redemption).
        body = {"error": "temporarily_unavailable", "error_description": "the service's store cannot be reached; retry"}
        return 503, body, {**NO_STORE, "Retry-After": "5"}, "temporarily_unavailable"
    # A bug: the client gets an OAuth-shaped 500 without internals (logged by the server).
    body = {"error": "server_error", "error_description": "the service failed to handle the request"}
    return 500, body, NO_STORE, "500"


def offload(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run a blocking provider call (scrypt, SQLite, HTTP to Keycloak) off the event loop."""

    async def call(*args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    return call


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes: an unauthenticated caller must
    not make the server hold an arbitrarily large body in memory."""
    check_declared_length(request.headers.get("content-length"), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def check_declared_length(declared: str | None, limit: int) -> None:
    """BodyTooLarge before reading when ``Content-Length`` already says the body is too large."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge


def check_form_content_type(content_type: str | None) -> None:
    if (content_type or "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise InvalidRequest("the request body must be application/x-www-form-urlencoded")


def parse_form(body: bytes) -> Params:
    """The parameters of a form body (repeated ones kept, for Params to refuse): what
    ``parse_qsl(text, keep_blank_values=True)`` gives, without its per-field overhead on fields
    that need no unquoting (tests/web/test_hot_path.py holds the two to the same answers)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not UTF-8") from None
    pairs = []
    for field in text.split("&"):
        if field:
            name, _, value = field.partition("=")
            pairs.append((_unquote_plus(name), _unquote_plus(value)))
    return Params(pairs)


def _unquote_plus(text: str) -> str:
    return unquote(text.replace("+", " ")) if "%" in text or "+" in text else text


async def form_params(request: Request) -> Params:
    check_form_content_type(request.headers.get("content-type"))
    try:
        body = await read_limited(request, MAX_FORM_BYTES)
    except BodyTooLarge:
        raise InvalidRequest("request body too large") from None
    return parse_form(body)


async def json_body(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # Requiring JSON forces a CORS preflight, so another site cannot POST here from a form.
    if content_type != "application/json":
        raise ApprovalError("the request body must be application/json")
    try:
        body = await read_limited(request, MAX_FORM_BYTES)
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
