"""POST /bc-authorize and /token answered by the HTTP connection itself
(:class:`~ciba_service.web.serving.HotPathHttpToolsProtocol`, what ``ciba-service serve`` runs),
over raw sockets: the HTTP cases a connection must get right (keep-alive, pipelining, HTTP/1.0,
``Connection: close``, chunked and oversized bodies, ``Expect: 100-continue``, a client that
leaves mid-body, a failing store), each answered as the ASGI path answers it. Whether a request
took the connection's path or the ASGI one is observed, not assumed: the ASGI entry is counted."""

from __future__ import annotations

import asyncio
import contextvars
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from ciba_service.config import load_settings
from ciba_service.core.security import auth_req_id_key, digest_secret
from ciba_service.server.wiring import build_provider
from ciba_service.store import SQLiteStore, StoreUnavailable
from ciba_service.web.app import create_app
from ciba_service.web.hot_path import OAuthHotPath, Rendered
from ciba_service.web.serving import BackgroundServer, HotPathHttpToolsProtocol, free_port
from tests.support.service import AGENT_ID, AGENT_SECRET, CIBA, Env, make_settings, open_env

ACTION = [{"type": "iam_policy", "actions": ["update"], "identifier": "policy-42"}]
BASIC = "Basic " + __import__("base64").b64encode(f"{AGENT_ID}:{AGENT_SECRET}".encode()).decode()
BC_BODY = urlencode(
    {"scope": "openid", "login_hint": "alice", "binding_message": "BM-1", "authorization_details": json.dumps(ACTION)}
).encode()


class Served:
    def __init__(self, env: Env, port: int, asgi_calls: list[str], server: Any) -> None:
        self.env = env
        self.port = port
        self.server = server  # the uvicorn.Server
        self.asgi_calls = asgi_calls  # paths the ASGI hot path answered

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return sock


@pytest.fixture
def served(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    asgi_calls: list[str] = []
    asgi = OAuthHotPath.__call__
    app = create_app(env.provider)

    async def counted(self: OAuthHotPath, scope: Any, receive: Any, send: Any) -> None:
        # The served app's only: the in-process client of ``env`` has an app of its own.
        if self is app.hot_path and scope["method"] == "POST" and self.handles(scope["path"]):  # type: ignore[attr-defined]
            asgi_calls.append(scope["path"])
        await asgi(self, scope, receive, send)

    monkeypatch.setattr(OAuthHotPath, "__call__", counted)
    port = free_port()
    with BackgroundServer(app, port=port, http=HotPathHttpToolsProtocol) as background:
        yield Served(env, port, asgi_calls, background._server)


def _request(path: str, body: bytes, *, version: str = "1.1", extra: str = "", chunked: bool = False) -> bytes:
    head = (
        f"POST {path} HTTP/{version}\r\nHost: localhost\r\nAuthorization: {BASIC}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{extra}"
    )
    if chunked:
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]) if part)
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Reader:
    """HTTP/1.1 responses read off a socket one by one (Content-Length bodies only)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def response(self) -> Response:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError("closed before a response")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"repeated header {name}"
            headers[name.lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed mid-body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(status, headers, body)

    def closed(self) -> bool:
        """The server closed the connection (and sent nothing more)."""
        return not self._fill() and not self.buffer


def _token_body(auth_req_id: str) -> bytes:
    return urlencode({"grant_type": CIBA, "auth_req_id": auth_req_id}).encode()


def test_keep_alive_requests_are_answered_by_the_connection(served: Served) -> None:
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", BC_BODY))
        accepted = reader.response()
        assert accepted.status == 200
        assert accepted.headers["content-type"] == "application/json"
        assert accepted.headers["cache-control"] == "no-store" and accepted.headers["pragma"] == "no-cache"
        assert "date" in accepted.headers and "connection" not in accepted.headers
        auth_req_id = accepted.json()["auth_req_id"]
        sock.sendall(_request("/token", _token_body(auth_req_id)))
        pending = reader.response()
        assert pending.status == 400 and pending.json()["error"] == "authorization_pending"
        served.env.clock.advance(2)
        served.env.approve(auth_req_id)
        sock.sendall(_request("/token", _token_body(auth_req_id)))
        issued = reader.response()
        assert issued.status == 200 and issued.json()["authorization_details"] == ACTION
    assert served.asgi_calls == []  # none went the ASGI way
    assert served.env.provider.notifier.notices[0].username == "alice"  # type: ignore[attr-defined]


def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", BC_BODY) * 3 + _request("/token", _token_body("nope")))
        answers = [reader.response() for _ in range(4)]
    assert [a.status for a in answers] == [200, 200, 200, 400]
    assert len({a.json()["auth_req_id"] for a in answers[:3]}) == 3
    assert answers[3].json()["error"] == "invalid_grant"
    for answer in answers[:3]:
        assert served.env.request_for(answer.json()["auth_req_id"]) is not None  # each was committed
    # The first is answered by the connection; those behind one still being answered queue in
    # uvicorn's pipeline and go the ASGI way, in order.
    assert len(served.asgi_calls) <= 3


@pytest.mark.parametrize(
    ("version", "extra"), [("1.0", ""), ("1.1", "Connection: close\r\n")], ids=["http-1.0", "connection-close"]
)
def test_a_connection_the_client_closes_after_one_request_is_closed(served: Served, version: str, extra: str) -> None:
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", BC_BODY, version=version, extra=extra))
        answer = reader.response()
        assert answer.status == 200 and answer.headers["connection"] == "close"
        assert reader.closed()
    assert served.asgi_calls == []


def test_a_chunked_body_is_read_whole(served: Served) -> None:
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", BC_BODY, chunked=True))
        answer = reader.response()
    assert answer.status == 200, answer.body
    assert served.env.request_for(answer.json()["auth_req_id"]).binding_message == "BM-1"
    assert served.asgi_calls == []


def test_a_chunked_body_over_the_limit_is_refused_and_the_connection_goes_on(served: Served) -> None:
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", b"a=" + b"x" * 70_000, chunked=True))
        refused = reader.response()
        assert refused.status == 400
        assert refused.json() == {"error": "invalid_request", "error_description": "request body too large"}
        sock.sendall(_request("/bc-authorize", BC_BODY))
        assert reader.response().status == 200
    assert served.asgi_calls == []


def test_a_declared_length_over_the_limit_is_refused_before_the_body_and_closes(served: Served) -> None:
    with served.connect() as sock:
        reader = Reader(sock)
        head = _request("/bc-authorize", b"").replace(b"Content-Length: 0", b"Content-Length: 10000000000")
        sock.sendall(head)  # and not one byte of the announced 10 GB
        refused = reader.response()
        assert refused.status == 400 and refused.headers["connection"] == "close"
        assert refused.json() == {"error": "invalid_request", "error_description": "request body too large"}
        assert reader.closed()
    assert served.asgi_calls == []


def test_expect_100_continue_goes_the_asgi_way_with_the_same_answer(served: Served) -> None:
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", b"", extra="Expect: 100-continue\r\n").rsplit(b"Content-Length", 1)[0])
        sock.sendall(f"Content-Length: {len(BC_BODY)}\r\n\r\n".encode())
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(BC_BODY)
        answer = reader.response()
    assert answer.status == 200 and "auth_req_id" in answer.json()
    assert served.asgi_calls == ["/bc-authorize"]


def test_a_client_that_leaves_mid_body_costs_nothing(served: Served) -> None:
    with served.connect() as sock:
        sock.sendall(_request("/bc-authorize", BC_BODY)[:-20])
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", BC_BODY))
        assert reader.response().status == 200
    assert served.env.provider.store.count_pending(now=served.env.provider.now()) == 1


def test_bad_input_is_answered_as_through_asgi(served: Served) -> None:
    cases = [
        (b"scope=openid&scope=openid", "invalid_request"),
        (b"login_hint=%FF", "invalid_request"),
        (b"\xff\xfe", "invalid_request"),
        (BC_BODY.replace(b"login_hint=alice", b"login_hint=nobody"), "unknown_user_id"),
    ]
    for body, error in cases:
        with served.connect() as sock:
            sock.sendall(_request("/bc-authorize", body))
            over_socket = Reader(sock).response()
        in_process = served.env.client.post(
            "/bc-authorize",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
            auth=(AGENT_ID, AGENT_SECRET),
        )
        assert (over_socket.status, over_socket.json()) == (in_process.status_code, in_process.json())
        assert over_socket.json()["error"] == error
    with served.connect() as sock:
        raw = _request("/bc-authorize", BC_BODY).replace(b"application/x-www-form-urlencoded", b"text/plain")
        sock.sendall(raw)
        wrong_type = Reader(sock).response()
    assert wrong_type.status == 400
    assert wrong_type.json()["error_description"] == "the request body must be application/x-www-form-urlencoded"
    assert served.asgi_calls == []


def test_a_store_that_fails_the_commit_is_answered_503_and_keeps_nothing(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*_: Any, **__: Any) -> None:
        raise StoreUnavailable("disk full")

    monkeypatch.setattr(served.env.provider.store, "add_requests", down)
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", BC_BODY))
        refused = reader.response()
    assert refused.status == 503 and refused.json()["error"] == "temporarily_unavailable"
    assert refused.headers["retry-after"] == "5"
    assert served.env.provider.store.count_pending(now=served.env.provider.now()) == 0


def test_a_header_with_a_line_break_never_reaches_the_wire(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # Response splitting: were a header value ever to carry CR LF (a bug upstream), its text
    # would start headers or a second response of its own; the connection answers a 500 instead.
    render = OAuthHotPath.render

    def split(self: OAuthHotPath, result: Any) -> Rendered:
        rendered = render(self, result)
        if rendered.status == 200:
            return rendered._replace(headers={**rendered.headers, "X-Note": "a\r\nSet-Cookie: stolen=1"})
        return rendered

    monkeypatch.setattr(OAuthHotPath, "render", split)
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/bc-authorize", BC_BODY))
        answer = reader.response()
    assert answer.status == 500 and answer.json()["error"] == "server_error"
    assert "set-cookie" not in answer.headers and "x-note" not in answer.headers


def test_every_request_acknowledged_before_kill_9_is_in_the_store(tmp_path: Path) -> None:
    """``ciba-service serve`` as run (this protocol, group commits on SQLite), killed with
    SIGKILL in the middle of a burst of concurrent requests: each answered 200 is found after."""
    port = free_port()
    data = tmp_path / "data"
    with open_env(make_settings(data)):
        pass  # alice and her passkey, in the data directory the service will use
    config = tmp_path / "ciba.toml"
    config.write_text(
        f'issuer = "http://localhost:{port}"\ndata_dir = "{data}"\nnotifier = "none"\n'
        f'[[clients]]\nclient_id = "{AGENT_ID}"\nclient_secret_hash = "{digest_secret(AGENT_SECRET)}"\n'
    )
    assert build_provider(load_settings(config)).serves_inline  # the connection's own hot path
    process = subprocess.Popen(
        [sys.executable, "-m", "ciba_service", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not _healthy(port):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        acknowledged = asyncio.run(_burst_then_kill(port, process, total=400, kill_after=150))
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    assert len(acknowledged) >= 150
    store = SQLiteStore(data / "ciba.sqlite3")
    try:
        missing = [i for i in acknowledged if store.find_request_by_auth_req_id(auth_req_id_key(i)) is None]
    finally:
        store.close()
    assert missing == []


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


async def _burst_then_kill(port: int, process: subprocess.Popen[bytes], *, total: int, kill_after: int) -> list[str]:
    acknowledged: list[str] = []
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", auth=(AGENT_ID, AGENT_SECRET), limits=limits, timeout=10
    ) as client:
        form = dict(parse_qsl(BC_BODY.decode()))
        sent = [asyncio.ensure_future(client.post("/bc-authorize", data=form)) for _ in range(total)]
        for answer in asyncio.as_completed(sent):
            try:
                response = await answer
            except httpx.HTTPError:
                continue  # in flight when the process died: no promise was made
            if response.status_code == 200:
                acknowledged.append(response.json()["auth_req_id"])
            if len(acknowledged) == kill_after:
                process.send_signal(signal.SIGKILL)  # others are mid-commit or mid-answer
    return acknowledged


def test_a_client_that_does_not_read_its_answers_is_held_back(served: Served) -> None:
    # Back pressure: requests pipelined by a client that never reads would otherwise have their
    # answers buffered without bound on the server (~270 bytes each, tens of MB a second).
    one = b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"
    burst = one * 2000
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.connect(("127.0.0.1", served.port))
        sock.setblocking(False)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # as much as the server takes in, answers never read
            try:
                sock.send(burst)
            except BlockingIOError:
                time.sleep(0.01)
        buffered = [c.transport.get_write_buffer_size() for c in served.server.server_state.connections]
        assert buffered and max(buffered) < 256 * 1024, buffered  # the transport's high-water mark is 64 KB
        sock.setblocking(True)
        sock.settimeout(10)
        reader = Reader(sock)
        first = [reader.response() for _ in range(50)]  # in order, whole, once the client reads
    assert {(a.status, a.json()["error"]) for a in first} == {(400, "invalid_request")}
    with served.connect() as other:  # and the server serves others meanwhile
        other.sendall(_request("/bc-authorize", BC_BODY))
        assert Reader(other).response().status == 200


def test_a_request_behind_an_inline_answer_is_not_cut_by_the_keep_alive_timeout(env: Env) -> None:
    app = create_app(env.provider)

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(1.0)
        return {"slow": True}

    port = free_port()
    server = BackgroundServer(app, port=port, http=HotPathHttpToolsProtocol)
    server._server.config.timeout_keep_alive = 0.3  # type: ignore[assignment]  # shorter than /slow
    with server, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = Reader(sock)
        # One segment: the first is answered inline at once, the second starts through ASGI.
        sock.sendall(_request("/token", _token_body("nope")) + b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.response().status == 400
        assert reader.response().json() == {"slow": True}


def test_an_upgrade_request_to_a_hot_path_is_left_to_uvicorn(served: Served) -> None:
    upgrade = (
        b"POST /token HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with served.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert Reader(sock).response().status == 200
        sock.sendall(upgrade)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    # uvicorn hands it to its websocket protocol (which refuses the POST); no parser error.
    assert answer.startswith(b"HTTP/1.1 ") and not answer.startswith(b"HTTP/1.1 400 ")


def test_work_after_the_answer_that_fails_leaves_the_connection_alone(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("metrics backend down")

    monkeypatch.setattr(OAuthHotPath, "finish", broken)
    with served.connect() as sock:
        reader = Reader(sock)
        sock.sendall(_request("/token", _token_body("one")) + _request("/token", _token_body("two")))
        assert [reader.response().status for _ in range(2)] == [400, 400]
        sock.sendall(_request("/bc-authorize", BC_BODY))
        assert reader.response().status == 200


_LEAK: contextvars.ContextVar[str | None] = contextvars.ContextVar("leak", default=None)


def test_each_request_runs_in_a_context_of_its_own(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # As each ASGI request runs in a task of its own: a context variable one request's code sets
    # (and forgets to reset) must not be seen by the next request on the same loop.
    seen: list[str | None] = []
    start = OAuthHotPath.start

    def spying(self: OAuthHotPath, path: str, headers: Any, body: bytes | None) -> Any:
        seen.append(_LEAK.get())
        _LEAK.set("from an earlier request")
        return start(self, path, headers, body)

    monkeypatch.setattr(OAuthHotPath, "start", spying)
    with served.connect() as sock:
        reader = Reader(sock)
        for _ in range(3):
            sock.sendall(_request("/token", _token_body("nope")))
            assert reader.response().status == 400
    assert seen == [None, None, None]
    assert served.asgi_calls == []
