"""Notifiers: the console and webhook deliveries of the approval link."""

from __future__ import annotations

import io
import json

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


def test_webhook_posts_json(respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post("https://hooks.example.test/ciba").mock(return_value=httpx.Response(204))
    WebhookNotifier("https://hooks.example.test/ciba").notify(NOTICE)
    assert route.call_count == 1
    body = json.loads(route.calls[0].request.content)
    assert body["event"] == "approval_requested"
    assert body["approval_url"] == NOTICE.approval_url
    assert body["actions"] == NOTICE.actions


@pytest.mark.parametrize(
    "outcome",
    [
        httpx.Response(500),
        httpx.Response(302, headers={"Location": "https://evil.test/"}),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
    ],
)
def test_webhook_failures_never_raise_nor_follow_redirects(
    respx_mock: respx.MockRouter, outcome: httpx.Response | Exception
) -> None:
    route = respx_mock.post("https://hooks.example.test/ciba")
    if isinstance(outcome, Exception):
        route.mock(side_effect=outcome)
    else:
        route.mock(return_value=outcome)
    evil = respx_mock.route(host="evil.test").mock(return_value=httpx.Response(200))
    WebhookNotifier("https://hooks.example.test/ciba").notify(NOTICE)
    assert route.call_count == 1
    assert evil.call_count == 0


def test_backchannel_request_notifies_with_approval_link_not_auth_req_id(env: Env) -> None:
    response = env.bc_authorize()
    assert response.status_code == 200
    auth_req_id = response.json()["auth_req_id"]
    [notice] = env.notifier.notices
    assert auth_req_id not in notice.approval_url
    assert notice.approval_url == f"http://localhost:8000/approve/{env.request_for(auth_req_id).approval_id}"
    assert notice.actions == ["update IAM policy policy-42 (also: locations=https://iam.example.test/)"]
    assert notice.binding_message == "BM-1"
