"""``POST /bc-authorize`` and ``POST /token``, the two requests agents make in a loop, answered in
front of FastAPI, through either of two doors:

- ``ciba-service serve``'s HTTP connection answers them itself, from the parser's callbacks
  (:class:`~ciba_service.web.serving.HotPathHttpToolsProtocol`), when the provider serves
  inline: no ASGI scope, task, messages or middleware;
- otherwise (another provider, a pipelined request, ``Expect: 100-continue``, an app served by
  another server or a test client), :class:`OAuthHotPath` as a pure ASGI layer in front of
  FastAPI: no routing, dependency solving or request objects.

Both doors take the same three steps (:meth:`OAuthHotPath.start`, :meth:`~OAuthHotPath.render`,
:meth:`~OAuthHotPath.finish`). Where the provider says its calls never wait on a network
(:attr:`~ciba_service.server.provider.Provider.serves_inline`: embedded mode on SQLite), they run on
the event loop; otherwise they hop to a worker thread. On SQLite the new requests of one turn of
the event loop are committed together (:class:`_GroupCommit`), each answered only once committed.

It is a front door, not a second implementation: the protocol is the provider's, the translation
of its results into HTTP is :mod:`ciba_service.web.oauth`'s (:func:`bc_authorize_answer`,
:func:`token_answer`, shared with the FastAPI routes), and errors are answered by
:func:`~ciba_service.web.http.error_answer`, as the app's exception handlers answer them. The body
limit, the content-type rule and the form parsing are :mod:`ciba_service.web.http`'s. The request
metric is counted here (the metrics middleware never sees these requests): a dictionary lookup
and two lock-free increments, after the answer is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from prometheus_client import Counter
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ciba_service.core.errors import InvalidRequest
from ciba_service.core.model import BackchannelRequest, OutboxEntry
from ciba_service.core.params import Params
from ciba_service.server.provider import Provider
from ciba_service.store import StoreUnavailable
from ciba_service.store.sqlite import SQLiteStore, deferred_requests
from ciba_service.web.http import (
    MAX_FORM_BYTES,
    BodyTooLarge,
    check_declared_length,
    check_form_content_type,
    error_answer,
    parse_form,
)
from ciba_service.web.metrics import Metrics
from ciba_service.web.oauth import Answer, bc_authorize_answer, token_answer

__all__ = ["Headers", "OAuthHotPath", "Rendered"]

log = logging.getLogger("ciba_service")

# (params, headers) -> Answer, for one endpoint.
_Handler = Callable[[Params, "Headers"], Answer]


class _Disconnected(Exception):
    """The client went away before sending its whole body: nothing to answer."""


class Headers:
    """The few request headers the endpoints read (names are lower-case bytes in ASGI)."""

    __slots__ = ("authorization", "content_length", "content_type", "dpop")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.authorization: str | None = None
        self.content_type: str | None = None
        self.content_length: str | None = None
        self.dpop: list[str] = []
        for name, value in raw:
            # The first of a repeated header, as Starlette's Headers.get gives it.
            if name == b"authorization":
                if self.authorization is None:
                    self.authorization = value.decode("latin-1")
            elif name == b"content-type":
                if self.content_type is None:
                    self.content_type = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = value.decode("latin-1")
            elif name == b"dpop":
                self.dpop.append(value.decode("latin-1"))


async def _read_body(receive: Receive, limit: int, headers: Headers) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (as http.read_limited), or before
    it is read when its declared length does."""
    check_declared_length(headers.content_length, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_Row = tuple[BackchannelRequest, OutboxEntry | None]


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # the request's task was cancelled meanwhile: nobody waits
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class _GroupCommit:
    """The new requests of the SQLite store, committed in groups: the requests whose handlers
    ran in the same turn of the event loop are written in one transaction, at the start of the
    next turn, and each is answered only once that transaction committed (the durability promise
    is unchanged: an acknowledged request is in the database). A commit writes every page the
    transaction touched to the WAL; the requests' keys start with their creation time
    (core/security.time_prefix), so the requests of one group share the last pages of each index,
    and one commit for several requests costs little more than one for one. If the group's
    transaction fails, each request is written on its own, so each gets the answer it would have
    had alone."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self._waiting: list[tuple[list[_Row], asyncio.Future[None]]] = []

    def commit(self, rows: list[_Row]) -> asyncio.Future[None]:
        """A future that is done once ``rows`` are committed (its exception: why they were not)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((rows, future))
        return future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            self._store.add_requests([row for rows, _ in waiting for row in rows])
        except Exception as exc:
            if len(waiting) == 1:
                _settle(waiting[0][1], exc)
                return
            for rows, future in waiting:
                try:
                    self._store.add_requests(rows)
                except Exception as alone:
                    _settle(future, alone)
                else:
                    _settle(future, None)
            return
        for _, future in waiting:
            _settle(future, None)


def _json(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson refuses integers past 64 bits; the standard library does not
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Rendered(NamedTuple):
    """An answer ready to send: status, JSON body, extra headers, the metric's outcome label,
    and the exception to log when the answer is a 500 (a bug)."""

    status: int
    payload: bytes
    headers: dict[str, str]
    outcome: str
    failure: Exception | None


class OAuthHotPath:
    """POST ``/bc-authorize`` and ``/token``, answered in three steps that both front doors share:
    :meth:`start` (the provider's answer, or an exception, and the commit to wait for),
    :meth:`render` (the answer as status, body and headers) and :meth:`finish` (the work after
    the answer, and the metrics). The ASGI front door is :meth:`__call__`; ``ciba-service serve``
    also answers them straight from the HTTP connection (web/serving.py), for the providers that
    serve inline."""

    def __init__(self, app: ASGIApp, *, provider: Provider, metrics: Metrics) -> None:
        self.app = app
        self._provider = provider
        self._metrics = metrics
        self.inline = provider.serves_inline
        # Inline on SQLite: new requests are committed in groups (_GroupCommit).
        store = provider.context.store
        self._group = _GroupCommit(store) if self.inline and isinstance(store, SQLiteStore) else None
        self._handlers: dict[str, _Handler] = {
            "/bc-authorize": lambda params, headers: bc_authorize_answer(provider, params, headers.authorization),
            "/token": lambda params, headers: token_answer(provider, params, headers.authorization, headers.dpop),
        }
        self._latency = {path: metrics.latency.labels(path) for path in self._handlers}
        self._counters: dict[tuple[str, str], Counter] = {}

    def handles(self, path: str) -> bool:
        return path in self._handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path in self._handlers:
                await self._serve(path, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = Headers(scope["headers"])
        try:
            body: bytes | None = await _read_body(receive, MAX_FORM_BYTES, headers)
        except _Disconnected:
            return
        except BodyTooLarge:
            body = None
        if self.inline:
            result, committed = self.start(path, headers, body)
            if committed is not None:
                try:
                    await committed  # answered only once committed
                except Exception as exc:
                    result = exc
        else:
            result = await run_in_threadpool(self._answer_or_error, path, headers, body)
        rendered = self.render(result)
        raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(rendered.payload)).encode()),
            *[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in rendered.headers.items()],
        ]
        await send({"type": "http.response.start", "status": rendered.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": rendered.payload})
        answer = result if isinstance(result, Answer) else None
        if answer is not None and answer.after is not None and not self.inline:
            await run_in_threadpool(answer.after)
            answer = None
        self.finish(path, started, rendered.outcome, answer)
        if rendered.failure is not None:
            # As for any route: answered with a 500, then raised for the server to log (and for
            # test clients to see), after the request was counted.
            raise rendered.failure

    def start(
        self, path: str, headers: Headers, body: bytes | None
    ) -> tuple[Answer | Exception, asyncio.Future[None] | None]:
        """The answer to a request (``body`` None: it was longer than the limit), on the event
        loop (providers that serve inline), and the commit of its new rows to wait for before
        sending it, if any."""
        if self._group is None:
            return self._answer_or_error(path, headers, body), None
        rows: list[_Row] = []
        held = deferred_requests.set(rows)
        try:
            result = self._answer_or_error(path, headers, body)
        finally:
            deferred_requests.reset(held)
        return result, self._group.commit(rows) if rows else None

    def _answer_or_error(self, path: str, headers: Headers, body: bytes | None) -> Answer | Exception:
        try:
            check_form_content_type(headers.content_type)
            if body is None:
                raise InvalidRequest("request body too large")
            return self._handlers[path](parse_form(body), headers)
        except Exception as exc:
            return exc

    def render(self, result: Answer | Exception) -> Rendered:
        if isinstance(result, Answer):
            return Rendered(result.status, _json(result.body), result.headers, str(result.status), None)
        status, body, headers, outcome = error_answer(result)
        if isinstance(result, StoreUnavailable):
            self._metrics.store_errors.inc()
            log.error("store unavailable: %s", result.__cause__ or result)
        return Rendered(status, _json(body), headers, outcome, result if status == 500 else None)

    def finish(self, path: str, started: float, outcome: str, answer: Answer | None) -> None:
        """Once the answer is sent: its ``after`` work (inline: on the loop), and the metrics."""
        if answer is not None and answer.after is not None:
            answer.after()
        counter = self._counters.get((path, outcome))
        if counter is None:
            counter = self._counters[(path, outcome)] = self._metrics.requests.labels(path, outcome)
        counter.inc()
        self._latency[path].observe(time.perf_counter() - started)
