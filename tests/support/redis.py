"""A real Redis for tests: ``redis-server`` (installed by ``.ci/run``) on a free port.

The ``redis_url`` fixture (tests/conftest.py) runs one server per test module; give each test
its own key prefix (:func:`fresh_prefix`) or flush it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

__all__ = ["REDIS_SERVER", "fresh_prefix", "free_port", "running_redis"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fresh_prefix() -> str:
    """A key prefix no other test uses: tests sharing one server do not see each other."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@contextmanager
def running_redis() -> Iterator[str]:
    """A redis-server of its own, without persistence; its URL while it runs."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="ciba-redis-")  # whatever it writes stays out of the tree
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir]
    process = subprocess.Popen(
        [*command, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
