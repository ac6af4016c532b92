"""What ``ciba-service serve`` runs uvicorn with (:class:`HotPathHttpToolsProtocol`), and ASGI apps
on a background thread (the demo, tests, and embedding in other tools)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httptools
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE, HttpToolsProtocol

from ciba_service.core.errors import InvalidRequest
from ciba_service.store import StoreUnavailable
from ciba_service.web.hot_path import Headers, OAuthHotPath, Rendered
from ciba_service.web.http import MAX_FORM_BYTES, BodyTooLarge, check_declared_length
from ciba_service.web.oauth import Answer

__all__ = ["HOT_PATHS", "BackgroundServer", "HotPathHttpToolsProtocol", "OneWriteHttpToolsProtocol", "free_port"]

log = logging.getLogger("ciba_service")

# The endpoints web/hot_path.py answers (POST).
HOT_PATHS = frozenset({"/bc-authorize", "/token"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BackgroundServer:
    def __init__(
        self, app: FastAPI, *, port: int, host: str = "127.0.0.1", http: Any = "auto", access_log: bool = False
    ) -> None:
        self.port = port
        self._server = uvicorn.Server(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", lifespan="on", http=http, access_log=access_log
            )
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class _OneWrite:
    """A transport that holds a response's status line and headers until its body is written,
    then sends both in one ``write`` (one ``send()`` system call, one wake-up of the client)."""

    __slots__ = ("_held", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is None:
            self._held = data
            return
        held, self._held = self._held, b""
        self._transport.write(held + data if held else data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (httptools is a dependency), sending the answers of
    :data:`HOT_PATHS` (POSTs answered by web/hot_path.py: always a start and one complete body)
    in one write instead of two. The first of two writes to a socket wakes the client for half
    an answer; under load that write was ~30% of the hot path's time. Other responses (streams,
    100-continue) are left alone. Module level: ``--workers`` pickles it into each worker's
    configuration. What ``ciba-service serve`` passes uvicorn as ``http``."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and not self.expect_100_continue
            and self.scope["method"] == "POST"
            # An upgrade request has no path in its scope yet (uvicorn hands it to the
            # websocket protocol): .get, or a KeyError would escape the parser's callback.
            and self.scope.get("path") in HOT_PATHS
        ):
            cycle.transport = _OneWrite(cycle.transport)  # type: ignore[assignment]


class _Answered:
    """A do-nothing event: uvicorn's connection code sets the cycle's ``message_event`` when
    the connection is lost; a hot-path request has nobody waiting on one."""

    __slots__ = ()

    def set(self) -> None:
        return None


_ANSWERED = _Answered()


class _HotCycle:
    """Stands in for uvicorn's ``RequestResponseCycle`` while a hot-path request is read and
    answered on its connection: uvicorn's connection code (a lost connection, a shutdown, the
    next pipelined request) reads and sets these attributes."""

    __slots__ = ("body", "disconnected", "headers", "keep_alive", "path", "response_complete", "size", "started")
    message_event = _ANSWERED

    def __init__(self, path: str, headers: Headers, *, keep_alive: bool) -> None:
        self.path = path
        self.headers = headers
        self.keep_alive = keep_alive
        self.started = time.perf_counter()
        self.body: list[bytes] | None = []  # None: past the limit, the rest is read and dropped
        self.size = 0
        self.disconnected = False
        self.response_complete = False


def _hot_path_of(app: Any) -> OAuthHotPath | None:
    """The hot path of the app uvicorn serves, through the middleware it wraps the app in
    (each keeps the app it wraps as ``app``), if it has one and it serves inline."""
    for _ in range(8):
        hot_path = getattr(app, "hot_path", None)
        if isinstance(hot_path, OAuthHotPath):
            return hot_path if hot_path.inline else None
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


# The parts of uvicorn's httptools connection the hot path relies on (uvicorn 0.30 to 0.54 have
# them). Should a uvicorn lack one, the connection serves every request the ASGI way.
_UVICORN_PARTS = ("cycle", "pipeline", "server_state", "parser", "headers", "expect_100_continue", "flow")


class HotPathHttpToolsProtocol(OneWriteHttpToolsProtocol):
    """What ``ciba-service serve`` runs uvicorn with: uvicorn's httptools connection, which also
    answers POST ``/bc-authorize`` and ``/token`` itself, from the parser's callbacks, when the
    app's hot path serves inline (embedded mode on SQLite): the provider is called as the last
    byte of the request is parsed and the answer is written in one ``write``. No ASGI scope,
    task, receive/send messages or middleware for the two requests agents make in a loop;
    under load that machinery was a third of their time (README "Performance").

    The HTTP is still uvicorn's and httptools': the parsing, keep-alive and its timeout,
    ``Connection: close``, HTTP/1.0, pipelining (a request that arrives while another is in
    progress on the connection queues in uvicorn's pipeline and is answered through ASGI, in
    order), flow control, lost connections and graceful shutdown. What the hot path answers is
    the same as through ASGI (:class:`~ciba_service.web.hot_path.OAuthHotPath`'s ``start``,
    ``render`` and ``finish``, shared by both; the real-socket tests compare them). The request
    goes the ASGI way whenever this connection cannot answer it alike: another provider (Redis,
    Keycloak: their calls hop to a thread), ``Expect: 100-continue``, an upgrade, a
    percent-encoded or prefixed path, a concurrency limit, or the access log (which uvicorn
    writes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        # The access log, when asked for (``serve --access-log``), is uvicorn's to write.
        plain = self.limit_concurrency is None and not config.access_log and not self.root_path
        self._held: tuple[OAuthHotPath, _HotCycle, Answer | BaseException] | None = None
        fits = all(hasattr(self, name) for name in _UVICORN_PARTS)
        self._hot = _hot_path_of(config.loaded_app) if plain and fits else None

    def on_headers_complete(self) -> None:
        hot = self._hot
        if (
            hot is not None
            and (self.cycle is None or self.cycle.response_complete)  # else: pipelined, uvicorn queues it
            and not self.expect_100_continue
            and self.parser.get_method() == b"POST"
            and not self.parser.should_upgrade()
        ):
            path = httptools.parse_url(self.url).path
            if b"%" not in path and hot.handles(raw := path.decode("ascii")):
                http_version = self.parser.get_http_version()
                keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
                headers = Headers(self.headers)
                cycle = _HotCycle(raw, headers, keep_alive=keep_alive)
                self.cycle = cycle  # type: ignore[assignment]
                try:
                    check_declared_length(headers.content_length, MAX_FORM_BYTES)
                except BodyTooLarge:
                    # Refused before a byte of the body is read, and the connection closed
                    # after the answer: reading (and dropping) a declared 10 GB is not our job.
                    cycle.body = None
                    cycle.keep_alive = False
                    self._send_answer(hot, cycle, InvalidRequest("request body too large"))
                return
        super().on_headers_complete()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # A request began: no keep-alive timeout may run meanwhile. uvicorn cancels it when data
        # arrives, but an answer given inline for the request before this one, in the same data,
        # has just armed it (on_response_complete); left armed, it would close the connection
        # under this request should it take longer than the timeout.
        self._unset_keepalive_if_required()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _HotCycle):
            super().on_body(body)
            return
        if cycle.body is None:
            return
        cycle.size += len(body)
        if cycle.size > MAX_FORM_BYTES:
            cycle.body = None  # too large: answered so once it is all read, without keeping it
        else:
            cycle.body.append(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if not isinstance(cycle, _HotCycle):
            super().on_message_complete()
            return
        if cycle.response_complete:  # answered already (its declared length was too large)
            return
        hot = self._hot
        assert hot is not None  # only set with a hot path
        body = None if cycle.body is None else b"".join(cycle.body)
        try:
            # In a context of its own, as each ASGI request runs in a task of its own: a context
            # variable the request's code sets cannot leak into the next request's on this loop.
            result, committed = contextvars.copy_context().run(hot.start, cycle.path, cycle.headers, body)
        except Exception as exc:  # start answers errors itself; this would be a bug of its own
            result, committed = exc, None
        if committed is None:
            self._send_answer(hot, cycle, result)
            return

        def send_once_committed(done: asyncio.Future[None]) -> None:
            if done.cancelled():  # the loop is closing: the commit's fate is unknown
                self._send_answer(hot, cycle, StoreUnavailable("the commit was cancelled"))
            else:
                error = done.exception()
                self._send_answer(hot, cycle, result if error is None else error)

        committed.add_done_callback(send_once_committed)

    def _send_answer(self, hot: OAuthHotPath, cycle: _HotCycle, result: Answer | BaseException) -> None:
        if self.flow.write_paused and not cycle.disconnected and not self.transport.is_closing():
            # Back pressure: the client does not read its answers (the transport's buffer is
            # over its high-water mark). Hold this one, and read nothing more, until the buffer
            # drains (resume_writing), as uvicorn's send waits; otherwise a client pipelining
            # requests it never reads would grow this connection's buffer without bound.
            self._held = (hot, cycle, result)
            self.flow.pause_reading()
            return
        try:
            rendered = hot.render(result if isinstance(result, Answer | Exception) else RuntimeError(repr(result)))
            response = self._response(rendered, keep_alive=cycle.keep_alive)
            if response is None:  # a header the answer may not carry: a bug, answered as one
                rendered = hot.render(RuntimeError(f"an invalid response header in {rendered.headers!r}"))
                response = self._response(rendered, keep_alive=cycle.keep_alive)
            if not cycle.disconnected and not self.transport.is_closing():
                self.transport.write(response or b"")
        except Exception:
            # Nothing may leave a parser callback (httptools would call it a malformed request):
            # logged, and the connection closed, as uvicorn does when an app fails mid-answer.
            log.exception("Exception answering %s", cycle.path)
            cycle.response_complete = True
            self.transport.close()
            return
        cycle.response_complete = True
        if not cycle.keep_alive and not self.transport.is_closing():
            self.transport.close()
        self.on_response_complete()  # the next pipelined request, or the keep-alive timeout
        if rendered.failure is not None:
            # Answered with a 500; logged as uvicorn logs an exception of an app.
            log.error("Exception in the hot path (%s)", cycle.path, exc_info=rendered.failure)
        try:
            hot.finish(cycle.path, cycle.started, rendered.outcome, result if isinstance(result, Answer) else None)
        except Exception:
            # The answer is sent and the connection has moved on: logged, nothing else to undo.
            log.exception("Exception after answering %s", cycle.path)

    def resume_writing(self) -> None:
        super().resume_writing()
        held, self._held = self._held, None
        if held is not None:
            self._send_answer(*held)

    def connection_lost(self, exc: Exception | None) -> None:
        held, self._held = self._held, None
        super().connection_lost(exc)
        if held is not None:  # nobody to send it to: counted, and its work after done, all the same
            self._send_answer(*held)

    def _response(self, rendered: Rendered, *, keep_alive: bool) -> bytes | None:
        """The whole HTTP response, or None if a header of the answer is not one HTTP allows."""
        tail = _header_lines(tuple(rendered.headers.items()), keep_alive)
        if tail is None:
            return None
        return b"".join(
            (
                STATUS_LINE[rendered.status],
                _default_header_lines(self.server_state.default_headers),
                b"content-type: application/json\r\ncontent-length: ",
                str(len(rendered.payload)).encode(),
                tail,
                rendered.payload,
            )
        )


# What the answers' headers look like as bytes, per set of headers (a few: no-store, with a
# challenge, with Retry-After): made and checked once, not for each answer.
_HEADER_LINES: dict[tuple[tuple[tuple[str, str], ...], bool], bytes | None] = {}
_HEADER_LINES_KEPT = 256
_DEFAULTS: list[Any] = [None, b""]


def _header_lines(headers: tuple[tuple[str, str], ...], keep_alive: bool) -> bytes | None:
    """The end of a response's head after its content length: ``headers``, ``Connection:
    close`` unless ``keep_alive``, the blank line; None if a header is not one HTTP allows."""
    key = (headers, keep_alive)
    lines = _HEADER_LINES.get(key, b"")
    if lines == b"":
        content = [b"\r\n"]
        for name_text, value_text in headers:
            name, value = name_text.lower().encode("latin-1"), value_text.encode("latin-1")
            # Response splitting: a line break (or another control character) in a header's
            # name or value would let its text start headers, or a response, of its own.
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                lines = None
                break
            content += [name, b": ", value, b"\r\n"]
        else:
            if not keep_alive:
                content.append(b"connection: close\r\n")
            content.append(b"\r\n")
            lines = b"".join(content)
        if len(_HEADER_LINES) < _HEADER_LINES_KEPT:
            _HEADER_LINES[key] = lines
    return lines


def _default_header_lines(defaults: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers (``date``, ``server``) as lines; uvicorn replaces its list
    when the date changes (once a second), so the bytes are made once per list."""
    if _DEFAULTS[0] is not defaults:
        _DEFAULTS[1] = b"".join(name + b": " + value + b"\r\n" for name, value in defaults)
        _DEFAULTS[0] = defaults
    lines: bytes = _DEFAULTS[1]
    return lines
