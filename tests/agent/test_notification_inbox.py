"""The agent's notification endpoint (``NotificationInbox``): each client_notification_token is
bound to its own request (CIBA 10.2, 10.3), and a notification that beats the binding is held
back, never lost and never accepted unbound."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qs

import httpx
import pytest
from fastapi.testclient import TestClient

from ciba_service.agent import AgentError, CibaAgent, NotificationInbox
from tests.support.service import ACTION

ISSUER = "https://op.example.test"


@pytest.fixture
def inbox() -> NotificationInbox:
    return NotificationInbox()


@pytest.fixture
def http(inbox: NotificationInbox) -> Iterator[TestClient]:
    with TestClient(inbox.app) as client:
        yield client


def notify(http: TestClient, auth_req_id: str, bearer: str, **extra: str) -> int:
    response = http.post(
        "/cb", json={"auth_req_id": auth_req_id, **extra}, headers={"Authorization": f"Bearer {bearer}"}
    )
    return response.status_code


def test_another_requests_token_is_refused_and_does_not_complete_the_request(
    inbox: NotificationInbox, http: TestClient
) -> None:
    inbox.expect("token-a")
    inbox.bind("token-a", "req-a")
    inbox.expect("token-b")
    inbox.bind("token-b", "req-b")
    # whoever holds B's token (B's logs, B's endpoint) must not complete, deny or feed A
    assert notify(http, "req-a", "token-b", error="access_denied") == 401
    assert "req-a" not in inbox._received  # not waited for: a timed-out wait ends the request
    assert notify(http, "req-a", "token-a") == 204
    assert inbox.wait("req-a", timeout=1) == {"auth_req_id": "req-a"}
    assert notify(http, "req-b", "token-b") == 204
    assert inbox.wait("req-b", timeout=1) == {"auth_req_id": "req-b"}


@pytest.mark.parametrize("authorization", ["", "Bearer unknown", "Basic dG9rZW4tYQ==", "Bearer "])
def test_strangers_are_refused(inbox: NotificationInbox, http: TestClient, authorization: str) -> None:
    inbox.expect("token-a")
    inbox.bind("token-a", "req-a")
    response = http.post("/cb", json={"auth_req_id": "req-a"}, headers={"Authorization": authorization})
    assert response.status_code == 401
    with pytest.raises(TimeoutError):
        inbox.wait("req-a", timeout=0.05)


def test_a_notification_before_bind_is_held_then_released_by_bind(inbox: NotificationInbox, http: TestClient) -> None:
    # The user decided before the agent recorded the auth_req_id: nothing may be lost...
    inbox.expect("token-a")
    assert notify(http, "req-a", "token-a") == 204
    # ...and nothing unbound accepted
    with pytest.raises(TimeoutError):
        inbox.wait("req-a", timeout=0.05)
    inbox.bind("token-a", "req-a")
    assert inbox.wait("req-a", timeout=1) == {"auth_req_id": "req-a"}


def test_a_held_notification_naming_another_auth_req_id_is_dropped_at_bind(
    inbox: NotificationInbox, http: TestClient
) -> None:
    inbox.expect("token-a")
    assert notify(http, "req-forged", "token-a") == 204
    inbox.bind("token-a", "req-a")
    with pytest.raises(TimeoutError):
        inbox.wait("req-forged", timeout=0.05)
    assert not inbox._received
    assert notify(http, "req-forged", "token-a") == 401  # bound now: only req-a
    assert notify(http, "req-a", "token-a") == 204
    assert inbox.wait("req-a", timeout=1) == {"auth_req_id": "req-a"}


def test_a_reused_token_held_for_the_second_request_survives_the_first_bind(
    inbox: NotificationInbox, http: TestClient
) -> None:
    inbox.expect("shared")
    inbox.expect("shared")
    assert notify(http, "req-2", "shared") == 204
    inbox.bind("shared", "req-1")
    inbox.bind("shared", "req-2")
    assert inbox.wait("req-2", timeout=1) == {"auth_req_id": "req-2"}


def test_held_notifications_are_bounded(inbox: NotificationInbox, http: TestClient) -> None:
    inbox.expect("token-a")
    for n in range(NotificationInbox.MAX_HELD):
        assert notify(http, f"req-{n}", "token-a") == 204
    assert notify(http, "req-a", "token-a") == 503  # transient: the sender retries it
    inbox.bind("token-a", "req-3")
    assert inbox.wait("req-3", timeout=1) == {"auth_req_id": "req-3"}


def test_forget_withdraws_an_expectation(inbox: NotificationInbox, http: TestClient) -> None:
    inbox.expect("token-a")
    assert notify(http, "req-a", "token-a") == 204
    inbox.forget("token-a")
    assert notify(http, "req-a", "token-a") == 401
    with pytest.raises(ValueError, match="expect"):
        inbox.bind("token-a", "req-a")


def test_a_notification_is_taken_once(inbox: NotificationInbox, http: TestClient) -> None:
    inbox.expect("token-a")
    inbox.bind("token-a", "req-a")
    assert notify(http, "req-a", "token-a") == 204
    inbox.wait("req-a", timeout=1)
    assert notify(http, "req-a", "token-a") == 401  # replayed after it was consumed


def test_malformed_body_from_a_token_holder_is_400(inbox: NotificationInbox, http: TestClient) -> None:
    inbox.expect("token-a")
    inbox.bind("token-a", "req-a")
    response = http.post("/cb", content=b"not json", headers={"Authorization": "Bearer token-a"})
    assert response.status_code == 400


def test_a_timed_out_wait_unbinds_the_request_and_refuses_late_notifications(
    inbox: NotificationInbox, http: TestClient
) -> None:
    # Stops the leak: a timed-out request kept its bound token, and a late notification for it
    # was stored, for the life of the inbox.
    inbox.expect("token-a")
    inbox.bind("token-a", "req-a")
    with pytest.raises(TimeoutError):
        inbox.wait("req-a", timeout=0.05)
    assert notify(http, "req-a", "token-a") == 401  # nobody waits for it any more
    assert inbox._bound == {} and inbox._received == {}


def test_an_oversized_notification_is_413_and_not_stored(inbox: NotificationInbox, http: TestClient) -> None:
    # Stops a token holder from making the agent buffer (and keep) an arbitrarily large body.
    inbox.expect("token-a")
    inbox.bind("token-a", "req-a")
    big = json.dumps({"auth_req_id": "req-a", "pad": "x" * NotificationInbox.MAX_BODY}).encode()
    headers = {"Authorization": "Bearer token-a"}
    assert http.post("/cb", content=big, headers=headers).status_code == 413
    # chunked, no Content-Length: the cap holds while reading
    chunks = iter([big[i : i + 4096] for i in range(0, len(big), 4096)])
    assert http.post("/cb", content=chunks, headers=headers).status_code == 413
    assert inbox._received == {}
    # a push-sized body still goes through
    assert notify(http, "req-a", "token-a", access_token="t" * 4096) == 204
    assert inbox.wait("req-a", timeout=1)["access_token"] == "t" * 4096


# CibaAgent.request(inbox=...) -----------------------------------------------------------


def _provider(answer: httpx.Response, seen: list[dict[str, list[str]]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={"backchannel_authentication_endpoint": f"{ISSUER}/bc-authorize", "token_endpoint": f"{ISSUER}/t"},
            )
        seen.append(parse_qs(request.content.decode()))
        return answer

    return httpx.MockTransport(handle)


def test_agent_request_binds_a_fresh_token_to_the_answered_auth_req_id(
    inbox: NotificationInbox, http: TestClient
) -> None:
    seen: list[dict[str, list[str]]] = []
    answer = httpx.Response(200, json={"auth_req_id": "req-1", "expires_in": 60})
    agent = CibaAgent(issuer=ISSUER, client_id="a", client_secret="s", transport=_provider(answer, seen))
    pending = agent.request(login_hint="alice", authorization_details=ACTION, inbox=inbox)
    [token] = seen[0]["client_notification_token"]
    assert token == pending.client_notification_token
    assert json.loads(seen[0]["authorization_details"][0]) == ACTION
    assert notify(http, "req-other", token) == 401
    assert notify(http, "req-1", token) == 204
    assert inbox.wait("req-1", timeout=1) == {"auth_req_id": "req-1"}


def test_agent_request_refused_withdraws_the_expectation(inbox: NotificationInbox, http: TestClient) -> None:
    answer = httpx.Response(400, json={"error": "unknown_user_id", "error_description": "no such user"})
    agent = CibaAgent(issuer=ISSUER, client_id="a", client_secret="s", transport=_provider(answer, []))
    with pytest.raises(AgentError) as refused:
        agent.request(login_hint="x", authorization_details=ACTION, client_notification_token="token-x", inbox=inbox)
    assert (refused.value.error, refused.value.description, refused.value.status) == (
        "unknown_user_id",
        "no such user",
        400,
    )
    assert notify(http, "req-1", "token-x") == 401
