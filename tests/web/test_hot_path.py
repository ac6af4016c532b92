"""/bc-authorize and /token as ``ciba-service serve`` answers them (uvicorn with
HotPathHttpToolsProtocol: the connection's own hot path, the ASGI one behind it), over a real
socket. The answers (status, body, headers) are those of the rest of the app; the bad-input and
metrics tests run the same steps in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ciba_service.core.params import Params
from ciba_service.core.security import hash_secret
from ciba_service.web.app import create_app
from ciba_service.web.http import parse_form
from ciba_service.web.serving import BackgroundServer, HotPathHttpToolsProtocol, free_port
from tests.support.service import AGENT_ID, AGENT_SECRET, CIBA, Env, make_settings, open_env

ACTION = [{"type": "iam_policy", "actions": ["update"], "identifier": "policy-42"}]


@pytest.fixture
def served(env: Env) -> Iterator[tuple[Env, httpx.Client]]:
    port = free_port()
    with (
        BackgroundServer(create_app(env.provider), port=port, http=HotPathHttpToolsProtocol),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(AGENT_ID, AGENT_SECRET)) as http,
    ):
        yield env, http


def _bc(http: httpx.Client, **fields: str) -> httpx.Response:
    body = {"scope": "openid", "login_hint": "alice", "binding_message": "BM-1"}
    body["authorization_details"] = json.dumps(ACTION)
    body.update(fields)
    return http.post("/bc-authorize", data=body)


def test_answers_over_a_real_socket_on_one_keep_alive_connection(served: tuple[Env, httpx.Client]) -> None:
    env, http = served
    accepted = _bc(http)
    assert accepted.status_code == 200
    assert accepted.headers["cache-control"] == "no-store" and accepted.headers["pragma"] == "no-cache"
    assert accepted.headers["content-type"] == "application/json"
    assert int(accepted.headers["content-length"]) == len(accepted.content)
    auth_req_id = accepted.json()["auth_req_id"]
    assert accepted.json() == {"auth_req_id": auth_req_id, "expires_in": 300, "interval": 2}
    pending = http.post("/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id})
    assert pending.status_code == 400
    assert pending.json() == {"error": "authorization_pending", "error_description": "the user has not yet decided"}
    refused = http.post("/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id}, auth=(AGENT_ID, "wrong"))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic realm=")
    assert refused.json()["error"] == "invalid_client"
    env.clock.advance(2)
    env.approve(auth_req_id)
    issued = http.post("/token", data={"grant_type": CIBA, "auth_req_id": auth_req_id})
    assert issued.status_code == 200 and issued.json()["authorization_details"] == ACTION


def test_other_methods_and_paths_still_reach_fastapi(served: tuple[Env, httpx.Client]) -> None:
    _, http = served
    assert http.get("/token").status_code == 405
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/.well-known/openid-configuration").status_code == 200
    assert http.post("/bc-authorize", content=b"scope=openid").json() == {
        "error": "invalid_request",
        "error_description": "the request body must be application/x-www-form-urlencoded",
    }


def test_a_large_body_is_refused_before_it_is_read(served: tuple[Env, httpx.Client]) -> None:
    _, http = served
    refused = http.post(
        "/bc-authorize",
        content=b"a=" + b"x" * 70_000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert refused.status_code == 400
    assert refused.json()["error_description"] == "request body too large"


def test_the_notice_is_sent_after_answering(served: tuple[Env, httpx.Client]) -> None:
    env, http = served
    assert _bc(http).status_code == 200
    notices = env.provider.notifier.notices  # type: ignore[attr-defined]
    assert len(notices) == 1 and notices[0].username == "alice"


def test_embedded_sqlite_runs_on_the_event_loop_unless_a_client_has_a_slow_secret(tmp_path: Path) -> None:
    with open_env(make_settings(tmp_path / "fast")) as env:
        assert env.provider.serves_inline
    fast = make_settings(tmp_path / "slow")
    client = fast.clients[0].model_copy(update={"client_secret_hash": hash_secret(AGENT_SECRET)})
    slow = fast.model_copy(update={"clients": [client]})
    with open_env(slow) as env:
        assert not env.provider.serves_inline  # scrypt's ~70 ms would stall every request


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab=&+%2Fé;\x00 ") | st.characters(), max_size=40))
def test_form_parsing_is_parse_qsl_with_blank_values(text: str) -> None:
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert parse_form(body).items() == Params(parse_qsl(text, keep_blank_values=True)).items()
