"""Poll, ping and push, each end to end over real HTTP (agent side to token), and the
notification sender's handling of misbehaving endpoints."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import respx

from ciba_service.agent import AgentError, CibaAgent, NotificationInbox, device
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig, load_settings
from ciba_service.core.security import hash_secret
from ciba_service.rs import JwksCache, RequestedAction, TokenVerifier
from ciba_service.server.delivery import NotificationSender
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port
from tests.support.service import ACTION, RecordingNotifier

EXACT = RequestedAction(
    type="iam_policy", actions=["update"], identifier="policy-42", locations=["https://iam.example.test/"]
)


@dataclass
class Live:
    base: str
    provider: Provider
    notifier: RecordingNotifier
    inbox: NotificationInbox
    authenticator: SoftAuthenticator
    http: httpx.Client

    def agent(self, client_id: str) -> CibaAgent:
        return CibaAgent(issuer=self.base, client_id=client_id, client_secret=f"secret-{client_id}")

    def next_approval_url(self) -> str:
        # the service notifies the user after answering the agent (a background task)
        deadline = time.monotonic() + 5
        while not self.notifier.notices:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return self.notifier.notices.pop().approval_url

    def approve_latest(self) -> dict[str, Any]:
        return device.approve(self.http, self.next_approval_url(), self.authenticator)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    port, cb_port = free_port(), free_port()
    base = f"http://localhost:{port}"
    endpoint = f"http://127.0.0.1:{cb_port}/cb"
    clients = [
        ClientConfig(
            client_id=mode,
            client_secret_hash=hash_secret(f"secret-{mode}"),
            backchannel_token_delivery_mode=mode,
            backchannel_client_notification_endpoint=None if mode == "poll" else endpoint,
        )
        for mode in ("poll", "ping", "push")
    ]
    settings = load_settings(issuer=base, data_dir=tmp_path, clients=clients, poll_interval=1)
    notifier = RecordingNotifier()
    provider = build_provider(settings, notifier=notifier)
    inbox = NotificationInbox()
    authenticator = SoftAuthenticator()
    with (
        BackgroundServer(create_app(provider), port=port),
        BackgroundServer(inbox.app, port=cb_port),
        httpx.Client(timeout=10) as http,
    ):
        _, link = provider.add_user(username="alice")
        device.enroll(http, link, authenticator)
        yield Live(base=base, provider=provider, notifier=notifier, inbox=inbox, authenticator=authenticator, http=http)
    provider.store.close()


def _verify(live: Live, access_token: str) -> None:
    verifier = TokenVerifier(issuer=live.base, audience="resource-api", keys=JwksCache(f"{live.base}/jwks.json"))
    assert verifier.verify(access_token, EXACT).entry == ACTION[0]


def test_poll_mode_end_to_end(live: Live) -> None:
    agent = live.agent("poll")
    pending = agent.request(login_hint="alice", authorization_details=ACTION, binding_message="POLL-1")
    live.approve_latest()
    token = agent.wait(pending)
    _verify(live, token["access_token"])


def test_ping_mode_end_to_end(live: Live) -> None:
    agent = live.agent("ping")
    pending = agent.request(  # a fresh token, expected and bound by the inbox
        login_hint="alice", authorization_details=ACTION, binding_message="PING-1", inbox=live.inbox
    )
    assert pending.client_notification_token is not None
    assert len(pending.client_notification_token) >= 43  # 256 bits
    with pytest.raises(AgentError) as info:
        agent.poll_once(pending.auth_req_id)
    assert info.value.error == "authorization_pending"
    live.approve_latest()
    ping = live.inbox.wait(pending.auth_req_id, timeout=5)
    assert ping == {"auth_req_id": pending.auth_req_id}  # CIBA 10.2: the ping carries only the id
    token = agent.poll_once(pending.auth_req_id)
    _verify(live, token["access_token"])


def test_push_mode_end_to_end(live: Live) -> None:
    agent = live.agent("push")
    pending = agent.request(
        login_hint="alice",
        authorization_details=ACTION,
        binding_message="PUSH-1",
        client_notification_token="push-bearer-1",
        inbox=live.inbox,
    )
    assert pending.interval == 5  # the server sent no interval: push clients do not poll
    live.approve_latest()
    pushed = live.inbox.wait(pending.auth_req_id, timeout=5)
    assert pushed["auth_req_id"] == pending.auth_req_id
    assert pushed["token_type"] == "Bearer"
    _verify(live, pushed["access_token"])
    id_claims = jwt.decode(pushed["id_token"], options={"verify_signature": False})
    digest = hashlib.sha256(pushed["access_token"].encode()).digest()[:16]
    assert id_claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert id_claims["urn:openid:params:jwt:claim:auth_req_id"] == pending.auth_req_id
    # a push client never redeems at the token endpoint
    with pytest.raises(AgentError) as info:
        agent.poll_once(pending.auth_req_id)
    assert info.value.error == "unauthorized_client"


def test_push_denial_and_expiry_are_pushed_as_errors(live: Live) -> None:
    agent = live.agent("push")
    denied = agent.request(
        login_hint="alice",
        authorization_details=ACTION,
        binding_message="PUSH-2",
        client_notification_token="push-bearer-2",
        inbox=live.inbox,
    )
    device.deny(live.http, live.next_approval_url())
    assert live.inbox.wait(denied.auth_req_id, timeout=5)["error"] == "access_denied"

    expiring = agent.request(
        login_hint="alice",
        authorization_details=ACTION,
        binding_message="PUSH-3",
        client_notification_token="push-bearer-2",  # reused: bound to this request as well
        requested_expiry=1,
        inbox=live.inbox,
    )
    pushed = live.inbox.wait(expiring.auth_req_id, timeout=10)  # the background sweep delivers it
    assert pushed == {
        "auth_req_id": expiring.auth_req_id,
        "error": "expired_token",
        "error_description": "the authentication request has expired",
    }


def test_a_notification_carrying_another_requests_token_is_refused(live: Live) -> None:
    # CIBA 10.2: the client_notification_token authenticates the callback for its request.
    # Whoever learned request B's token (B's logs, B's endpoint) must not complete request A.
    agent = live.agent("ping")
    first = agent.request(login_hint="alice", authorization_details=ACTION, binding_message="A-1", inbox=live.inbox)
    live.next_approval_url()
    second = agent.request(login_hint="alice", authorization_details=ACTION, binding_message="B-1", inbox=live.inbox)
    client = live.provider.settings.client("ping")
    assert client is not None and client.backchannel_client_notification_endpoint is not None
    forged = live.http.post(
        client.backchannel_client_notification_endpoint,
        json={"auth_req_id": first.auth_req_id},
        headers={"Authorization": f"Bearer {second.client_notification_token}"},
    )
    assert forged.status_code == 401
    with pytest.raises(TimeoutError):
        live.inbox.wait(first.auth_req_id, timeout=0.5)
    # the real notification for B, from the provider, still arrives
    live.approve_latest()
    assert live.inbox.wait(second.auth_req_id, timeout=5) == {"auth_req_id": second.auth_req_id}


def test_ping_to_an_endpoint_that_refuses_is_recorded_not_retried(live: Live) -> None:
    agent = live.agent("ping")
    # the inbox does not know this bearer: it answers 401
    pending = agent.request(
        login_hint="alice",
        authorization_details=ACTION,
        binding_message="PING-2",
        client_notification_token="unknown-bearer",
    )
    live.approve_latest()
    with pytest.raises(TimeoutError):
        live.inbox.wait(pending.auth_req_id, timeout=1)
    # the agent can still fetch its token by polling
    assert "access_token" in agent.poll_once(pending.auth_req_id)


# the sender, against misbehaving endpoints ----------------------------------------------
URL = "https://agent.example.test/cb"


def _sender() -> tuple[NotificationSender, list[float]]:
    sleeps: list[float] = []
    return NotificationSender(attempts=4, backoff=0.25, sleep=sleeps.append), sleeps


def test_sender_success_is_not_retried(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(URL).mock(return_value=httpx.Response(204))
    sender, sleeps = _sender()
    result = sender.send(URL, bearer="b", payload={"auth_req_id": "x"})
    assert result.delivered and result.attempts == 1 and route.call_count == 1 and sleeps == []
    assert route.calls[0].request.headers["authorization"] == "Bearer b"


@pytest.mark.parametrize("status", [401, 403, 400, 404])
def test_sender_client_errors_are_final(respx_mock: respx.MockRouter, status: int) -> None:
    route = respx_mock.post(URL).mock(return_value=httpx.Response(status))
    sender, _ = _sender()
    result = sender.send(URL, bearer="b", payload={})
    assert not result.delivered and result.status_code == status and route.call_count == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_sender_never_follows_redirects(respx_mock: respx.MockRouter, status: int) -> None:
    respx_mock.post(URL).mock(return_value=httpx.Response(status, headers={"Location": "https://evil.test/"}))
    evil = respx_mock.route(host="evil.test").mock(return_value=httpx.Response(200))
    sender, _ = _sender()
    result = sender.send(URL, bearer="b", payload={})
    assert not result.delivered and result.reason == "redirect not followed" and evil.call_count == 0


def test_sender_retries_transient_failures_with_backoff(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(URL).mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(503), httpx.ReadTimeout("slow"), httpx.Response(200)]
    )
    sender, sleeps = _sender()
    result = sender.send(URL, bearer="b", payload={})
    assert result.delivered and result.attempts == 4 and route.call_count == 4
    assert sleeps == [0.25, 0.5, 1.0]


def test_sender_gives_up_after_the_bound(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    sender, sleeps = _sender()
    result = sender.send(URL, bearer="b", payload={})
    assert not result.delivered and route.call_count == 4 and len(sleeps) == 3


class RawServer:
    """A one-thread HTTP/1.1 endpoint on loopback that answers every request with ``head`` and
    then ``drip`` one byte per ``every`` seconds (then drops the connection); counts requests."""

    def __init__(self, head: bytes, drip: bytes = b"", every: float = 1.0) -> None:
        self.head, self.drip, self.every = head, drip, every
        self.requests = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/cb"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1
                try:
                    conn.sendall(self.head)
                    for byte in self.drip:
                        if self._stop.wait(self.every):
                            break
                        conn.sendall(bytes([byte]))
                except OSError:
                    pass  # the client hung up: what a sender that stopped reading does


def test_sender_2xx_then_a_dropped_connection_is_delivered_once() -> None:
    # Stops a double delivery: the body of a 200 was read, the connection dropped mid-body, and
    # the TransportError was retried, so the receiver acted twice on one decision.
    sender, sleeps = _sender()
    with RawServer(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"partial"') as server:
        result = sender.send(server.url, bearer="b", payload={"auth_req_id": "x"})
    assert (result.delivered, result.attempts, result.status_code) == (True, 1, 200)
    assert server.requests == 1 and sleeps == []


def test_sender_a_dripping_body_does_not_hold_the_worker() -> None:
    # Stops a receiver from holding a delivery worker indefinitely: httpx's timeout bounds each
    # read, so a body dripped one byte per second never timed out. The body is not read now.
    sender, sleeps = _sender()
    started = time.monotonic()
    with RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n", drip=b"x" * 30, every=1.0) as server:
        result = sender.send(server.url, bearer="b", payload={"auth_req_id": "x"})
        elapsed = time.monotonic() - started
    assert (result.delivered, result.attempts) == (True, 1)
    assert server.requests == 1 and sleeps == []
    assert elapsed < 5  # the drip alone takes 30 s


@pytest.mark.parametrize(
    ("endpoint", "environment", "ok"),
    [
        ("https://agent.example.test/cb", "production", True),
        ("http://127.0.0.1:9000/cb", "development", True),
        ("http://localhost:9000/cb", "development", True),
        ("http://127.0.0.1:9000/cb", "production", False),
        ("http://agent.example.test/cb", "development", False),
        ("https://agent.example.test/cb#frag", "development", False),
        ("ftp://agent.example.test/cb", "development", False),
    ],
)
def test_notification_endpoint_rules(tmp_path: Path, endpoint: str, environment: str, ok: bool) -> None:
    client = ClientConfig(
        client_id="c",
        client_secret_hash="x",
        backchannel_token_delivery_mode="ping",
        backchannel_client_notification_endpoint=endpoint,
    )
    kwargs: dict[str, Any] = {"data_dir": tmp_path, "clients": [client], "environment": environment}
    if environment == "production":
        kwargs["issuer"] = "https://ciba.example.test"
    if ok:
        load_settings(**kwargs)
    else:
        with pytest.raises(ValueError, match="notification endpoint"):
            load_settings(**kwargs)
