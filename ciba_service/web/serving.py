"""Run ASGI apps on a background thread (the demo, tests, and embedding in other tools)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HOT_PATHS", "BackgroundServer", "OneWriteHttpToolsProtocol", "free_port"]

# The endpoints web/hot_path.py answers (POST).
HOT_PATHS = frozenset({"/bc-authorize", "/token"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BackgroundServer:
    def __init__(self, app: FastAPI, *, port: int, host: str = "127.0.0.1", http: Any = "auto") -> None:
        self.port = port
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", http=http)
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
            and self.scope["path"] in HOT_PATHS
        ):
            cycle.transport = _OneWrite(cycle.transport)  # type: ignore[assignment]
