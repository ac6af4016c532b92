"""Notifiers: the console and webhook deliveries of the approval link."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import respx

from ciba_service.notify import ApprovalNotice, ConsoleNotifier, WebhookNotifier
from tests.conftest import Env

NOTICE = ApprovalNotice(
    username="alice",
    client_id="agent-1",
    client_name="Agent One",
    binding_message="BM-1",
    actions=["update IAM policy policy-42 (also: locations=https://iam.example.test/)"],
    approval_url="http://localhost:8000/approve/abc",
    expires_at=1_800_000_300,
)


def test_console_notifier_prints_link_and_action() -> None:
    out = io.StringIO()
    ConsoleNotifier(out).notify(NOTICE)
    text = out.getvalue()
    assert "Agent One asks alice to approve" in text
    assert "update IAM policy policy-42 (also: locations=https://iam.example.test/)" in text
    assert "binding message: BM-1" in text
    assert "http://localhost:8000/approve/abc" in text


HOOK = "https://hooks.example.test/ciba/T0K3N-in-path"


def _webhook(**kwargs: Any) -> tuple[WebhookNotifier, list[float]]:
    sleeps: list[float] = []
    return WebhookNotifier(HOOK, attempts=4, backoff=0.25, sleep=sleeps.append, **kwargs), sleeps


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
    with caplog.at_level(logging.INFO, logger="ciba_service"):
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

    notifier = WebhookNotifier(HOOK, client=httpx.Client(transport=httpx.MockTransport(slow)))
    started = time.monotonic()
    notifier.notify(NOTICE)
    assert time.monotonic() - started < 0.5
    assert delivered == []
    release.set()
    notifier.close()
    assert [d["approval_url"] for d in delivered] == [NOTICE.approval_url]


def test_backchannel_request_notifies_with_approval_link_not_auth_req_id(env: Env) -> None:
    response = env.bc_authorize()
    assert response.status_code == 200
    auth_req_id = response.json()["auth_req_id"]
    [notice] = env.notifier.notices
    assert auth_req_id not in notice.approval_url
    assert notice.approval_url == f"http://localhost:8000/approve/{env.request_for(auth_req_id).approval_id}"
    assert notice.actions == ["update IAM policy policy-42 (also: locations=https://iam.example.test/)"]
    assert notice.binding_message == "BM-1"
