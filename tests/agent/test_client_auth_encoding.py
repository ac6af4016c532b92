"""The agent authenticates as RFC 6749 2.3.1 says, and reports the provider's errors exactly."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from ciba_service.agent import AgentError, CibaAgent
from ciba_service.config import ClientConfig
from ciba_service.core.security import digest_secret
from tests.support.service import ACTION, make_settings, open_env

ISSUER = "https://ciba.example.test"
SPECIAL_ID = "agent:3 é+%/"
SPECIAL_SECRET = "p@ss:wörd +/=%&?#"


def _recording(seen: list[httpx.Request], token_answer: httpx.Response) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200, json={"backchannel_authentication_endpoint": f"{ISSUER}/bc", "token_endpoint": f"{ISSUER}/token"}
            )
        seen.append(request)
        return token_answer

    return httpx.MockTransport(handle)


def test_basic_credentials_are_form_urlencoded_before_base64() -> None:
    seen: list[httpx.Request] = []
    agent = CibaAgent(
        issuer=ISSUER,
        client_id=SPECIAL_ID,
        client_secret=SPECIAL_SECRET,
        transport=_recording(seen, httpx.Response(400, json={"error": "authorization_pending"})),
    )
    with pytest.raises(AgentError) as pending:
        agent.poll_once("req-1")
    assert (pending.value.error, pending.value.status) == ("authorization_pending", 400)
    scheme, _, encoded = seen[0].headers["authorization"].partition(" ")
    assert scheme == "Basic"
    # ':' in the id and '+', '%', ' ' in the secret survive only because each part is encoded.
    assert base64.b64decode(encoded).decode() == "agent%3A3+%C3%A9%2B%25%2F:p%40ss%3Aw%C3%B6rd+%2B%2F%3D%25%26%3F%23"
    assert parse_qs(seen[0].content.decode()) == {
        "grant_type": ["urn:openid:params:grant-type:ciba"],
        "auth_req_id": ["req-1"],
    }


def test_client_secret_post_sends_the_credentials_in_the_form() -> None:
    seen: list[httpx.Request] = []
    answer = httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 60})
    agent = CibaAgent(
        issuer=ISSUER,
        client_id="a",
        client_secret="s",
        auth_method="client_secret_post",
        transport=_recording(seen, answer),
    )
    assert agent.poll_once("req-1")["access_token"] == "at"
    assert "authorization" not in seen[0].headers
    form = parse_qs(seen[0].content.decode())
    assert form["client_id"] == ["a"] and form["client_secret"] == ["s"]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (httpx.Response(200, json={"token_type": "Bearer"}), "server_error"),  # no access_token
        (httpx.Response(200, text="not json"), "server_error"),
        (httpx.Response(503, json=["not", "an", "object"]), "server_error"),
        (httpx.Response(401, json={"error": "invalid_client", "error_description": "bad"}), "invalid_client"),
    ],
)
def test_token_answers_that_are_not_tokens_are_errors(answer: httpx.Response, error: str) -> None:
    agent = CibaAgent(issuer=ISSUER, client_id="a", client_secret="s", transport=_recording([], answer))
    with pytest.raises(AgentError) as refused:
        agent.poll_once("req-1")
    assert refused.value.error == error


def test_unsupported_auth_method_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="private_key_jwt"):
        CibaAgent(issuer=ISSUER, client_id="a", client_secret="s", auth_method="private_key_jwt")


def test_special_characters_authenticate_against_the_service(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.clients.append(ClientConfig(client_id=SPECIAL_ID, client_secret_hash=digest_secret(SPECIAL_SECRET)))
    with open_env(settings) as env:
        agent = CibaAgent(issuer=env.settings.issuer, client_id=SPECIAL_ID, client_secret=SPECIAL_SECRET)
        agent._http = env.client  # the service's ASGI app, in process
        pending = agent.request(login_hint="alice", authorization_details=ACTION, binding_message="BM-1")
        with pytest.raises(AgentError) as waiting:
            agent.poll_once(pending.auth_req_id)
        assert waiting.value.error == "authorization_pending"
