"""New requests on SQLite are committed in groups by the hot path (web/hot_path.py, _GroupCommit):
the /bc-authorize requests handled in one turn of the event loop are written in one transaction,
each answered only once it committed; if the group fails, each is written on its own and gets the
answer it would have had alone."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import pytest

from ciba_service.core.model import BackchannelRequest, OutboxEntry
from ciba_service.core.security import auth_req_id_key
from ciba_service.store import StoreUnavailable
from ciba_service.store.sqlite import SQLiteStore
from ciba_service.web.app import create_app
from tests.support.service import AGENT_ID, AGENT_SECRET, Env

ACTION = [{"type": "iam_policy", "actions": ["update"], "identifier": "policy-42"}]
_BODY = urlencode(
    {"scope": "openid", "login_hint": "alice", "binding_message": "BM-1", "authorization_details": json.dumps(ACTION)}
).encode()
_Items = Sequence[tuple[BackchannelRequest, OutboxEntry | None]]


def _call(app: Any, body: bytes, on_start: Callable[[], None] = lambda: None) -> Callable[[], Any]:
    """One raw ASGI /bc-authorize call, returning (status, JSON body); ``on_start`` runs when the
    answer starts."""
    authorization = "Basic " + base64.b64encode(f"{AGENT_ID}:{AGENT_SECRET}".encode()).decode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/bc-authorize",
        "headers": [
            (b"authorization", authorization.encode()),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ],
        "query_string": b"",
        "http_version": "1.1",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
        "state": {},
    }

    async def run() -> tuple[int, dict[str, Any]]:
        answer: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                on_start()
                answer["status"] = message["status"]
            else:
                answer["body"] = json.loads(message["body"])

        await app(scope, receive, send)
        return answer["status"], answer["body"]

    return run


def _together(env: Env, count: int) -> list[tuple[int, dict[str, Any]]]:
    """``count`` requests started in the same turn of the event loop, as uvicorn starts the
    requests of the connections that became readable together."""
    app = create_app(env.provider)
    body = _BODY

    async def main() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*[_call(app, body)() for _ in range(count)]))

    return asyncio.run(main())


def _spy(env: Env, monkeypatch: pytest.MonkeyPatch, *, fail: Callable[[_Items], bool]) -> list[int]:
    """Records the size of every add_requests call; raises StoreUnavailable where ``fail`` says."""
    store = env.provider.store
    assert isinstance(store, SQLiteStore)
    real = store.add_requests
    sizes: list[int] = []

    def add_requests(items: _Items) -> None:
        sizes.append(len(items))
        if fail(items):
            raise StoreUnavailable("disk I/O error")
        real(items)

    monkeypatch.setattr(store, "add_requests", add_requests)
    return sizes


def _stored(env: Env, answer: dict[str, Any]) -> bool:
    return env.provider.store.find_request_by_auth_req_id(auth_req_id_key(answer["auth_req_id"])) is not None


def test_requests_of_one_turn_are_committed_in_one_transaction(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = _spy(env, monkeypatch, fail=lambda items: False)
    answers = _together(env, 4)
    assert [status for status, _ in answers] == [200] * 4
    assert sizes == [4]
    assert len({body["auth_req_id"] for _, body in answers}) == 4
    assert all(_stored(env, body) for _, body in answers)
    # With a notifier that delivers, each request's outbox entry went into the same transaction.
    assert len(env.notifier.notices) == 4


def test_a_failed_group_is_written_request_by_request(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = _spy(env, monkeypatch, fail=lambda items: len(items) > 1)
    answers = _together(env, 3)
    assert [status for status, _ in answers] == [200] * 3
    assert sizes == [3, 1, 1, 1]
    assert all(_stored(env, body) for _, body in answers)


def test_a_request_the_store_refuses_is_answered_503_and_not_kept(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first request fails alone as well: it gets the store's error, the others their ids.
    refused: list[str] = []

    def fail(items: _Items) -> bool:
        if len(items) > 1:
            return True
        if not refused:
            refused.append(items[0][0].request_id)
        return items[0][0].request_id in refused

    _spy(env, monkeypatch, fail=fail)
    answers = _together(env, 3)
    assert [status for status, _ in answers] == [503, 200, 200]
    assert answers[0][1]["error"] == "temporarily_unavailable"
    assert all(_stored(env, body) for _, body in answers[1:])
    assert env.provider.store.get_request(refused[0]) is None


def test_no_request_is_answered_before_it_is_committed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    committed: list[str] = []
    store = env.provider.store
    assert isinstance(store, SQLiteStore)
    real = store.add_requests

    def add_requests(items: _Items) -> None:
        real(items)
        committed.extend(r.request_id for r, _ in items)

    monkeypatch.setattr(store, "add_requests", add_requests)
    app = create_app(env.provider)
    body = _BODY
    seen_at_answer: list[int] = []

    async def main() -> None:
        async def one() -> None:
            status, _ = await _call(app, body, lambda: seen_at_answer.append(len(committed)))()
            assert status == 200

        await asyncio.gather(*[one() for _ in range(3)])

    asyncio.run(main())
    assert seen_at_answer == [3, 3, 3]  # every answer came after the group's commit
