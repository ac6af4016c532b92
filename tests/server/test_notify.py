"""Notifiers: the console and webhook deliveries of the approval link."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx
import pytest
import respx

from ciba_service.server.delivery import NotificationSender, shown
from ciba_service.server.notify import ApprovalNotice, ConsoleNotifier, NullNotifier, WebhookNotifier
from tests.support.service import Env

NOTICE = ApprovalNotice(
    username="alice",
    client_id="agent-1",
    client_name="Agent One",
    binding_message="BM-1",
    actions=["update IAM policy policy-42 (where: https://iam.example.test/)"],
    approval_url="http://localhost:8000/approve/abc",
    expires_at=1_800_000_300,
)


def test_console_notifier_prints_link_and_action() -> None:
    out = io.StringIO()
    ConsoleNotifier(out).notify(NOTICE)
    text = out.getvalue()
    assert "Agent One asks alice to approve" in text
    assert "update IAM policy policy-42 (where: https://iam.example.test/)" in text
    assert "binding message: BM-1" in text
    assert "http://localhost:8000/approve/abc" in text


HOOK = "https://hooks.example.test/ciba/T0K3N-in-path"
NOW = NOTICE.expires_at - 300  # the notifier's clock in these tests: the notice is fresh


def _webhook(**kwargs: Any) -> tuple[WebhookNotifier, list[float]]:
    sleeps: list[float] = []
    options: dict[str, Any] = {"attempts": 4, "backoff": 0.25, "sleep": sleeps.append, "clock": lambda: NOW}
    return WebhookNotifier(HOOK, **{**options, **kwargs}), sleeps


def test_webhook_posts_json(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(HOOK).mock(return_value=httpx.Response(204))
    notifier, sleeps = _webhook()
    result = notifier.deliver(NOTICE)
    assert (result.delivered, result.attempts) == (True, 1)  # nothing retried after a 2xx
    assert route.call_count == 1
    assert sleeps == []
    body = json.loads(route.calls[0].request.content)
    assert body["event"] == "approval_requested"
    assert body["approval_url"] == NOTICE.approval_url
    assert body["actions"] == NOTICE.actions


def test_webhook_retries_transient_failures_then_delivers_once(respx_mock: respx.MockRouter) -> None:
    # A chat bridge restarting must not cost the user the approval link.
    route = respx_mock.post(HOOK).mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ReadTimeout("slow"),
            httpx.Response(503),
            httpx.Response(204),
        ]
    )
    notifier, sleeps = _webhook()
    result = notifier.deliver(NOTICE)
    assert (result.delivered, result.attempts, result.status_code) == (True, 4, 204)
    assert route.call_count == 4
    assert sleeps == [0.25, 0.5, 1.0]  # exponential backoff


def test_webhook_retries_429(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(HOOK).mock(side_effect=[httpx.Response(429), httpx.Response(200)])
    notifier, _ = _webhook()
    assert notifier.deliver(NOTICE).delivered
    assert route.call_count == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_webhook_4xx_is_final(respx_mock: respx.MockRouter, status: int) -> None:
    # A refusal is not transient: retrying it only hammers the receiver.
    route = respx_mock.post(HOOK).mock(return_value=httpx.Response(status))
    notifier, sleeps = _webhook()
    result = notifier.deliver(NOTICE)
    assert (result.delivered, result.attempts, result.reason) == (False, 1, "refused")
    assert route.call_count == 1
    assert sleeps == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_webhook_redirect_is_not_followed_nor_retried(respx_mock: respx.MockRouter, status: int) -> None:
    # Following it would hand the approval link to whoever the Location names.
    route = respx_mock.post(HOOK).mock(return_value=httpx.Response(status, headers={"Location": "https://evil.test/"}))
    evil = respx_mock.route(host="evil.test").mock(return_value=httpx.Response(200))
    notifier, _ = _webhook()
    result = notifier.deliver(NOTICE)
    assert (result.delivered, result.attempts, result.reason) == (False, 1, "redirect not followed")
    assert route.call_count == 1
    assert evil.call_count == 0


@pytest.mark.parametrize(
    "outcome", [httpx.Response(500), httpx.ConnectError("refused"), httpx.ReadTimeout("slow")], ids=str
)
def test_webhook_giving_up_is_logged_and_never_raises(
    respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture, outcome: httpx.Response | Exception
) -> None:
    route = respx_mock.post(HOOK)
    if isinstance(outcome, Exception):
        route.mock(side_effect=outcome)
    else:
        route.mock(return_value=outcome)
    notifier, sleeps = _webhook(executor=ThreadPoolExecutor(max_workers=1))
    # INFO on the root logger, not only on "ciba_service": httpx's own INFO record of each
    # request ("HTTP Request: POST <full URL>") must be able to reach caplog for the check below.
    caplog.set_level(logging.INFO)
    notifier.notify(NOTICE)  # the Notifier contract: never raises
    notifier.close()  # waits for the queued delivery
    assert route.call_count == 4  # bounded
    assert sleeps == [0.25, 0.5, 1.0]
    [gave_up] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert gave_up.getMessage().startswith(
        "webhook https://hooks.example.test/…: approval link for alice not delivered"
    )
    assert "T0K3N" not in caplog.text  # the URL's secret path stays out of the logs


def test_webhook_notify_does_not_block_the_caller() -> None:
    # notify() runs on the request path (after /bc-authorize answered, on the server's shared
    # thread pool); retries of a slow webhook must not hold that thread.
    release = threading.Event()
    delivered: list[dict[str, Any]] = []

    def slow(request: httpx.Request) -> httpx.Response:
        release.wait(5)
        delivered.append(json.loads(request.content))
        return httpx.Response(204)

    notifier = WebhookNotifier(HOOK, client=httpx.Client(transport=httpx.MockTransport(slow)), clock=lambda: NOW)
    started = time.monotonic()
    notifier.notify(NOTICE)
    assert time.monotonic() - started < 0.5
    assert delivered == []
    release.set()
    notifier.close()
    assert [d["approval_url"] for d in delivered] == [NOTICE.approval_url]


def test_webhook_2xx_then_a_dropped_body_is_delivered_once() -> None:
    # Stops a double delivery: a 2xx whose body then failed to arrive was retried.
    calls: list[httpx.Request] = []

    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"{"
            raise httpx.ReadError("connection dropped mid-body")

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, stream=Broken())

    notifier, sleeps = _webhook(client=httpx.Client(transport=httpx.MockTransport(handler)))
    result = notifier.deliver(NOTICE)
    assert (result.delivered, result.attempts, result.status_code) == (True, 1, 200)
    assert len(calls) == 1 and sleeps == []


def test_webhook_skips_an_expired_notice(respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture) -> None:
    # Stops an approval link from reaching the user after its request expired.
    route = respx_mock.post(HOOK).mock(return_value=httpx.Response(204))
    notifier, _ = _webhook(clock=lambda: NOTICE.expires_at)
    caplog.set_level(logging.INFO)
    result = notifier.deliver(NOTICE)
    assert (result.delivered, result.attempts, result.reason) == (False, 0, "stale")
    assert route.call_count == 0
    assert "approval link for alice not delivered, the request expired" in caplog.text
    assert "T0K3N" not in caplog.text


def test_webhook_stops_retrying_once_the_notice_expires(respx_mock: respx.MockRouter) -> None:
    # Stops retries (and a late success) from delivering a link that expired meanwhile.
    route = respx_mock.post(HOOK).mock(return_value=httpx.Response(503))
    now = [float(NOW)]
    notifier, _ = _webhook(clock=lambda: now[0], sleep=lambda seconds: now.__setitem__(0, NOTICE.expires_at))
    result = notifier.deliver(NOTICE)
    assert (result.delivered, result.attempts, result.reason) == (False, 1, "stale")
    assert route.call_count == 1


def _blocked_webhook(**kwargs: Any) -> tuple[WebhookNotifier, ThreadPoolExecutor, threading.Event, list[str]]:
    """A notifier whose one worker blocks in the first POST until the event is set."""
    started, release = threading.Event(), threading.Event()
    posted: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content)["binding_message"])
        started.set()
        release.wait(5)
        return httpx.Response(503)

    executor = ThreadPoolExecutor(max_workers=1)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    notifier, _ = _webhook(client=client, executor=executor, attempts=2, **kwargs)
    notifier.notify(replace(NOTICE, binding_message="in-flight"))
    assert started.wait(5)
    return notifier, executor, release, posted


def test_webhook_backlog_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    # Stops an unbounded backlog: a client looping on /bc-authorize against a hanging bridge.
    notifier, executor, release, posted = _blocked_webhook(max_queued=3)
    caplog.set_level(logging.INFO)
    for n in range(5):
        notifier.notify(replace(NOTICE, binding_message=f"q{n}"))
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert (
        dropped
        == ["webhook https://hooks.example.test/…: approval link for alice dropped, 3 notices already queued"] * 2
    )
    release.set()
    notifier.close()
    assert posted == ["in-flight", "in-flight", "q0", "q0", "q1", "q1", "q2", "q2"]  # 2 attempts each
    executor.shutdown()
    assert "T0K3N" not in caplog.text


def test_webhook_close_without_wait_cancels_the_backlog() -> None:
    # Stops a shutdown from waiting out ~22 s of attempts per queued notice.
    notifier, executor, release, posted = _blocked_webhook()
    for n in range(3):
        notifier.notify(replace(NOTICE, binding_message=f"q{n}"))
    started = time.monotonic()
    notifier.close(wait=False)
    assert time.monotonic() - started < 1
    release.set()
    executor.shutdown(wait=True)
    assert posted == ["in-flight"]  # queued ones cancelled, the in-flight one not retried
    notifier.notify(NOTICE)  # closed: logged, never raises


def test_every_notifier_can_be_closed(caplog: pytest.LogCaptureFixture) -> None:
    # The app's lifespan calls notifier.close(wait=False) on whatever notifier it has; a second
    # close (wait=True, as a caller shutting down cleanly would) must be harmless.
    module = sys.modules[WebhookNotifier.__module__]
    defined = {
        cls
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, module.Notifier) and cls is not module.Notifier
    }
    assert defined == {NullNotifier, ConsoleNotifier, WebhookNotifier}  # a new notifier: add it below

    # NullNotifier and ConsoleNotifier hold nothing: close() returns at once and releases nothing
    # it does not own (the console's stream is the caller's), and a late notice never raises.
    out = io.StringIO()
    for notifier in (NullNotifier(), ConsoleNotifier(out)):
        started = time.monotonic()
        assert notifier.close(wait=False) is None
        assert notifier.close() is None
        assert time.monotonic() - started < 0.5
        notifier.notify(NOTICE)
    assert not out.closed

    # WebhookNotifier: close() shuts its pool down; a notice after it is logged, never posted.
    posted: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        posted.append(request)
        return httpx.Response(204)

    client = httpx.Client(transport=httpx.MockTransport(receiver))
    executor = ThreadPoolExecutor(max_workers=1)
    webhook, _ = _webhook(client=client, executor=executor)
    started = time.monotonic()
    assert webhook.close(wait=False) is None
    assert webhook.close() is None
    assert time.monotonic() - started < 0.5
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(lambda: None)
    own, _ = _webhook(client=client)  # with its own pool (the default), close() shuts that one down alike
    own.close()
    caplog.set_level(logging.INFO)
    webhook.notify(NOTICE)  # never raises
    own.notify(NOTICE)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "webhook https://hooks.example.test/…: not delivered, the notifier is closed"
    ] * 2
    assert posted == []


def test_backchannel_request_notifies_with_approval_link_not_auth_req_id(env: Env) -> None:
    response = env.bc_authorize()
    assert response.status_code == 200
    auth_req_id = response.json()["auth_req_id"]
    [notice] = env.notifier.notices
    assert auth_req_id not in notice.approval_url
    assert notice.approval_url == f"http://localhost:8000/approve/{env.request_for(auth_req_id).approval_id}"
    assert notice.actions == ["update IAM policy policy-42 (where: https://iam.example.test/)"]
    assert notice.binding_message == "BM-1"


def test_ping_push_logs_do_not_show_the_endpoint_path(caplog: pytest.LogCaptureFixture) -> None:
    # A client's notification endpoint may hold a secret in its path (as chat webhooks do).
    caplog.set_level(logging.INFO)
    http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(503)))
    sender = NotificationSender(http=http, timeout=1.0, attempts=2, backoff=0.0, sleep=lambda _: None)
    result = sender.send("https://user:pw@agent.example.test/cb/S3CR3T-path?k=S3CR3T", bearer="b", payload={})
    assert not result.delivered and result.attempts == 2
    assert "agent.example.test" in caplog.text
    assert "S3CR3T" not in caplog.text and "pw@" not in caplog.text
    assert shown("https://user:pw@agent.example.test:8443/cb/S3CR3T") == "https://agent.example.test:8443/…"
