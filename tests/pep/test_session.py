"""MCP over HTTP: the session token check (SessionTokenVerifier) and the RFC 9728 document."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from ciba_service.jose.jwks import StaticKeys
from ciba_service.pep.session import SessionTokenVerifier, protected_resource_metadata, with_resource_metadata
from ciba_service.rs import TokenVerifier
from tests.support.service import ACTION, BASE, Env, make_settings, open_env


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_env(make_settings(tmp_path)) as opened:
        yield opened


def session_token(env: Env) -> str:
    started = env.bc_authorize(authorization_details=json.dumps(ACTION)).json()
    env.approve(started["auth_req_id"])
    return str(env.token(started["auth_req_id"]).json()["access_token"])


def checker(env: Env, *, audience: str = "resource-api", offset: float = 0) -> SessionTokenVerifier:
    verifier = TokenVerifier(issuer=BASE, audience=audience, keys=StaticKeys(env.provider.jwks()))
    return SessionTokenVerifier(verifier=verifier, clock=lambda: env.clock() + offset)


def test_valid_session_token_names_the_user(env: Env) -> None:
    token = session_token(env)
    access = checker(env).check(token)
    assert access is not None
    user = env.provider.store.find_user("alice")
    assert user is not None and access.subject == user.user_id  # no preferred_username: sub
    assert access.client_id == "agent-1"


def test_refused_session_tokens(env: Env) -> None:
    token = session_token(env)
    assert checker(env, audience="another-api").check(token) is None
    assert checker(env, offset=3600).check(token) is None
    assert checker(env).check(token[:-4] + "AAAA") is None
    assert checker(env).check("not-a-jwt") is None


async def test_resource_metadata_document() -> None:
    metadata = protected_resource_metadata(
        resource="http://localhost:8765/mcp",
        authorization_servers=[BASE],
        authorization_details_types=["payment_initiation", "deployment"],
    )

    async def inner(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = with_resource_metadata(inner, metadata)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost:8765") as client:
        document = await client.get("/.well-known/oauth-protected-resource/mcp")
        other = await client.get("/mcp")
    assert document.json() == {
        "resource": "http://localhost:8765/mcp",
        "authorization_servers": [BASE],
        "bearer_methods_supported": ["header"],
        "authorization_details_types_supported": ["deployment", "payment_initiation"],
    }
    assert other.status_code == 418
