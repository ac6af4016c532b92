"""CIBA 7.1 ``user_code``, and the limit on guessing it online: after
``user_code_max_failures`` wrong codes for a user within ``user_code_failure_window`` seconds,
that user's requests are refused without the code being checked."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ciba_service.server import user_code as user_code_mod
from ciba_service.server.user_code import AttemptLimiter
from ciba_service.store import SQLiteStore
from tests.support.redis import fresh_prefix
from tests.support.service import ACTION, AGENT_ID, AGENT_SECRET, Env, enroll, make_settings, open_env

WRONG = "user_code is not valid for this user"
BLOCKED = "too many failed user_code attempts for this user; attempts are temporarily blocked"


def _env(tmp_path: Path, **overrides: Any) -> Iterator[Env]:
    settings = make_settings(tmp_path, backchannel_user_code_parameter_supported=True, **overrides)
    with open_env(settings, username=None) as env:
        for name, code in (("alice", "4711"), ("bob", "0815")):
            enroll(env.provider, env.client, name, env.authenticator)
            user = env.provider.store.find_user(name)
            assert user is not None
            env.provider.set_user_code(user, code)
        yield env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from _env(tmp_path)


def request(env: Env, code: str, *, user: str = "alice") -> Any:
    body = {
        "scope": "openid",
        "login_hint": user,
        "binding_message": "BM-1",
        "authorization_details": json.dumps(ACTION),
        "user_code": code,
    }
    return env.client.post("/bc-authorize", data=body, auth=(AGENT_ID, AGENT_SECRET))


def assert_refused(response: Any, description: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_user_code", "error_description": description}


def fail(env: Env, times: int, *, user: str = "alice") -> None:
    for _ in range(times):
        assert_refused(request(env, "0000", user=user), WRONG)


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every user_code the provider checks against a stored hash."""
    seen: list[str] = []
    real: Callable[[str, str], bool] = user_code_mod.verify_secret

    def counting(secret: str, stored: str) -> bool:
        seen.append(secret)
        return real(secret, stored)

    monkeypatch.setattr(user_code_mod, "verify_secret", counting)
    return seen


def test_the_right_code_is_refused_while_blocked(env: Env, verifications: list[str]) -> None:
    fail(env, 5)
    verifications.clear()
    # the right code and a wrong one get the same answer: a blocked guess learns nothing...
    assert_refused(request(env, "4711"), BLOCKED)
    assert_refused(request(env, "1234"), BLOCKED)
    # ...and the code is not even checked (no oracle, no scrypt work for the guesser)
    assert verifications == []
    assert len(env.notifier.notices) == 0  # the user is not bothered either


def test_after_the_window_the_right_code_works(env: Env) -> None:
    fail(env, 5)
    env.clock.advance(899)
    assert_refused(request(env, "4711"), BLOCKED)
    env.clock.advance(1)
    assert request(env, "4711").status_code == 200


def test_the_window_slides(env: Env) -> None:
    fail(env, 1)
    env.clock.advance(600)
    fail(env, 4)
    assert_refused(request(env, "4711"), BLOCKED)
    env.clock.advance(300)  # the first failure has aged out: one more try
    fail(env, 1)
    assert_refused(request(env, "4711"), BLOCKED)
    env.clock.advance(600)  # the burst of four has aged out; one failure remains
    assert request(env, "4711").status_code == 200


def test_a_success_does_not_count_nor_reset(env: Env) -> None:
    fail(env, 4)
    for _ in range(3):
        assert request(env, "4711").status_code == 200
    # successes left the count at 4: the fifth failure blocks (a reset would have allowed 5 more)
    fail(env, 1)
    assert_refused(request(env, "4711"), BLOCKED)


def test_other_users_are_unaffected(env: Env) -> None:
    fail(env, 5)
    assert_refused(request(env, "4711"), BLOCKED)
    assert request(env, "0815", user="bob").status_code == 200
    assert_refused(request(env, "0000", user="bob"), WRONG)


def test_a_missing_code_is_not_a_guess(env: Env) -> None:
    body = {"scope": "openid", "login_hint": "alice", "authorization_details": json.dumps(ACTION)}
    for _ in range(6):
        response = env.client.post("/bc-authorize", data=body, auth=(AGENT_ID, AGENT_SECRET))
        assert response.json()["error"] == "missing_user_code"
    assert request(env, "4711").status_code == 200


def test_the_limit_and_window_are_configurable(tmp_path: Path) -> None:
    for env in _env(tmp_path, user_code_max_failures=2, user_code_failure_window=60):
        fail(env, 2)
        assert_refused(request(env, "4711"), BLOCKED)
        env.clock.advance(60)
        assert request(env, "4711").status_code == 200


def test_guesses_in_flight_use_up_the_budget(tmp_path: Path) -> None:
    # An attempt is recorded before the (slow) check: five guesses in flight use up the budget,
    # and only a success is forgotten.
    store = SQLiteStore(tmp_path / "s.sqlite3")
    limiter = AttemptLimiter(store, limit=5, window=900, namespace="user_code")
    attempts = [limiter.acquire("u", now=0) for _ in range(5)]
    assert None not in attempts
    assert limiter.acquire("u", now=0) is None
    assert limiter.acquire("other", now=0) is not None
    limiter.release("u", str(attempts[0]), failed=False)  # a success frees its slot
    retry = limiter.acquire("u", now=1)
    assert retry is not None
    for attempt in [*attempts[1:], retry]:
        limiter.release("u", str(attempt), failed=True)
    assert limiter.acquire("u", now=899) is None  # five failures, at 0 and 1, in the window
    assert limiter.acquire("u", now=900) is not None  # the four at 0 have left it
    store.close()


def test_the_limit_holds_across_instances_sharing_redis(tmp_path: Path, redis_url: str) -> None:
    # Guessing on several instances behind a load balancer gets no more tries than on one.
    shared = {"store": "redis", "redis_url": redis_url, "redis_prefix": fresh_prefix()}
    for a in _env(tmp_path, **shared):  # enrolls alice with her code in the shared store
        with open_env(a.settings, clock=a.clock, username=None) as b:
            fail(a, 3)
            fail(b, 2)
            assert_refused(request(a, "4711"), BLOCKED)
            assert_refused(request(b, "4711"), BLOCKED)
            a.clock.advance(900)
            assert request(b, "4711").status_code == 200
