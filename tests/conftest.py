"""Shared fixtures: ``env``, a provider on a temporary SQLite store with its ASGI app, a
registered agent client and an enrolled user with a development software passkey (built by
tests/support/service.py); ``redis_url``, a real redis-server per test module
(tests/support/redis.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import running_redis
from tests.support.service import Env, make_settings, open_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with open_env(make_settings(tmp_path)) as opened:
        yield opened


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """One redis-server per test module; give each test its own key prefix (``fresh_prefix``)
    or flush it."""
    with running_redis() as url:
        yield url
