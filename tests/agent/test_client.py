"""CibaAgent and AsyncCibaAgent against a scripted provider (httpx.MockTransport): client
authentication, the polling rules of CIBA 11, and one precise error per outcome."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from urllib.parse import parse_qs

import httpx
import pytest

from ciba_service.agent import (
    AccessDenied,
    AgentError,
    AsyncCibaAgent,
    CibaAgent,
    RequestExpired,
    ServiceUnreachable,
)
from tests.support.service import ACTION

ISSUER = "https://op.example.test"
META = {"backchannel_authentication_endpoint": f"{ISSUER}/bc", "token_endpoint": f"{ISSUER}/token"}
Handler = Callable[[httpx.Request], httpx.Response]


class Provider:
    """Answers discovery, /bc with a fixed auth_req_id, and /token from a script."""

    def __init__(self, *token_answers: httpx.Response) -> None:
        self.token_answers = list(token_answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=META)
        if request.url.path == "/bc":
            return httpx.Response(200, json={"auth_req_id": "req-1", "expires_in": 60, "interval": 2})
        return self.token_answers.pop(0)

    def form(self, index: int) -> dict[str, list[str]]:
        return parse_qs(self.requests[index].content.decode())


def pending_error(error: str, status: int = 400, description: str | None = None) -> httpx.Response:
    body = {"error": error} | ({"error_description": description} if description else {})
    return httpx.Response(status, json=body)


def token() -> httpx.Response:
    return httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 60})


def sync_agent(provider: Handler, sleeps: list[float], **kwargs: str) -> CibaAgent:
    return CibaAgent(
        issuer=ISSUER,
        client_id="a:gent",
        client_secret="s e/cret",
        transport=httpx.MockTransport(provider),
        sleep=sleeps.append,
        **kwargs,  # type: ignore[arg-type]
    )


def test_basic_client_authentication_form_encodes_id_and_secret() -> None:
    provider = Provider(token())
    agent = sync_agent(provider, [])
    agent.wait(agent.request(login_hint="alice", authorization_details=ACTION))
    header = provider.requests[1].headers["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == "a%3Agent:s+e%2Fcret"
    assert "client_secret" not in provider.form(1)
    assert json.loads(provider.form(1)["authorization_details"][0]) == ACTION


def test_post_client_authentication_puts_the_secret_in_the_form() -> None:
    provider = Provider(token())
    agent = sync_agent(provider, [], auth_method="client_secret_post")
    agent.wait(agent.request(login_hint="alice", authorization_details=ACTION))
    assert "Authorization" not in provider.requests[2].headers
    assert provider.form(2)["client_secret"] == ["s e/cret"]
    assert provider.form(2)["grant_type"] == ["urn:openid:params:grant-type:ciba"]


def test_unknown_auth_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported client authentication method 'none'"):
        CibaAgent(issuer=ISSUER, client_id="a", client_secret="s", auth_method="none")


def test_pending_then_slow_down_then_token() -> None:
    sleeps: list[float] = []
    provider = Provider(pending_error("authorization_pending"), pending_error("slow_down"), token())
    agent = sync_agent(provider, sleeps)
    answer = agent.wait(agent.request(login_hint="alice", authorization_details=ACTION))
    assert answer["access_token"] == "at"
    assert sleeps == [2, 7]  # CIBA 11 / RFC 8628 3.5: slow_down adds 5 s for good


@pytest.mark.parametrize(
    ("answer", "kind", "error"),
    [
        (pending_error("access_denied", description="the user said no"), AccessDenied, "access_denied"),
        (pending_error("expired_token"), RequestExpired, "expired_token"),
        (pending_error("invalid_grant"), AgentError, "invalid_grant"),
        (httpx.Response(502, text="<html>bad gateway</html>"), AgentError, "server_error"),
        (httpx.Response(400, text="not json"), AgentError, "server_error"),
        (httpx.Response(200, json={"token_type": "Bearer"}), AgentError, "server_error"),
        (httpx.Response(503, json={"error": "temporarily_unavailable"}), AgentError, "temporarily_unavailable"),
    ],
)
def test_each_outcome_raises_its_own_error(answer: httpx.Response, kind: type[AgentError], error: str) -> None:
    agent = sync_agent(Provider(answer), [])
    with pytest.raises(kind) as raised:
        agent.wait(agent.request(login_hint="alice", authorization_details=ACTION))
    assert type(raised.value) is kind
    assert raised.value.error == error


def test_access_denied_keeps_the_description_and_status() -> None:
    agent = sync_agent(Provider(pending_error("access_denied", 400, "the user said no")), [])
    with pytest.raises(AccessDenied) as raised:
        agent.wait(agent.request(login_hint="alice", authorization_details=ACTION))
    assert (raised.value.description, raised.value.status) == ("the user said no", 400)


def test_unreachable_provider_is_service_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    agent = sync_agent(refuse, [])
    with pytest.raises(ServiceUnreachable, match="ConnectError") as raised:
        agent.request(login_hint="alice", authorization_details=ACTION)
    assert raised.value.error == "temporarily_unavailable"
    # a transport error, not an OAuth answer: callers treating httpx errors as transient still do
    assert isinstance(raised.value, httpx.TransportError)
    assert not isinstance(raised.value, AgentError)


def test_redirects_are_not_followed() -> None:
    # a redirected token request would carry the client's credentials elsewhere
    provider = Provider(httpx.Response(307, headers={"Location": "https://evil.example/token"}))
    agent = sync_agent(provider, [])
    with pytest.raises(AgentError):
        agent.wait(agent.request(login_hint="alice", authorization_details=ACTION))
    assert all(r.url.host == "op.example.test" for r in provider.requests)


def test_own_timeout_ends_the_wait_with_wait_timeout() -> None:
    provider = Provider(*[pending_error("authorization_pending") for _ in range(10)])
    agent = sync_agent(provider, [])
    pending = agent.request(login_hint="alice", authorization_details=ACTION)
    with pytest.raises(RequestExpired) as raised:
        agent.wait(pending, timeout=0)
    assert raised.value.error == "wait_timeout"


def test_async_agent_polls_and_raises_like_the_sync_one() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run(provider: Provider) -> dict[str, object]:
        async with AsyncCibaAgent(
            issuer=ISSUER, client_id="a", client_secret="s", transport=httpx.MockTransport(provider), sleep=sleep
        ) as agent:
            return await agent.wait(await agent.request(login_hint="alice", authorization_details=ACTION))

    assert asyncio.run(run(Provider(pending_error("slow_down"), token())))["access_token"] == "at"
    assert sleeps == [7]
    with pytest.raises(AccessDenied):
        asyncio.run(run(Provider(pending_error("access_denied"))))
