"""Client secrets without a per-request KDF: generated secrets as one SHA-256, legacy scrypt
hashes verified once and cached, failures per client limited so nobody can burn CPU."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ciba_service.config import ClientConfig
from ciba_service.core import security
from ciba_service.core.security import digest_secret, hash_secret, is_slow_hash, verify_secret
from ciba_service.server.client_secrets import ClientSecretVerifier
from tests.support.service import AGENT_ID, Clock, make_settings, open_env


class CountingKdf:
    """Counts scrypt runs (the cost the limits are about)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = security.hashlib.scrypt

        def scrypt(*args: object, **kwargs: object) -> bytes:
            self.calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(security.hashlib, "scrypt", scrypt)


def test_digest_round_trip_and_refusals() -> None:
    stored = digest_secret("a" * 43)
    assert stored.startswith("sha256$") and not is_slow_hash(stored)
    assert verify_secret("a" * 43, stored)
    assert not verify_secret("a" * 42, stored)
    assert not verify_secret("", stored)
    assert not verify_secret("a" * 43, "sha256$")  # an empty digest matches nothing
    assert not verify_secret("a" * 43, "md5$whatever")


def test_legacy_scrypt_hash_still_verifies() -> None:
    stored = hash_secret("typed-by-a-person")
    assert is_slow_hash(stored)
    assert verify_secret("typed-by-a-person", stored)
    assert not verify_secret("typed-by-a-persoN", stored)


def test_fast_digest_runs_no_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = ClientSecretVerifier()
    stored = digest_secret("s" * 43)
    kdf = CountingKdf(monkeypatch)
    assert verifier.verify("c", "s" * 43, stored)
    assert not verifier.verify("c", "wrong", stored)
    assert not verifier.verify("unknown", "anything", None)  # unknown client: no KDF either
    assert kdf.calls == 0


def test_scrypt_success_is_cached_per_presented_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(0)
    verifier = ClientSecretVerifier(success_ttl=300, clock=clock)
    stored = hash_secret("legacy")
    kdf = CountingKdf(monkeypatch)
    for _ in range(20):  # a polling agent
        assert verifier.verify("c", "legacy", stored)
    assert kdf.calls == 1
    assert not verifier.verify("c", "legacy2", stored)  # another secret is checked, not cached
    assert kdf.calls == 2
    assert verifier.verify("other", "legacy", stored)  # the cache is per client: computed again
    assert kdf.calls == 3
    clock.advance(301)
    assert verifier.verify("c", "legacy", stored)  # bounded time: checked again
    assert kdf.calls == 4


def test_rotated_hash_is_not_served_from_the_cache() -> None:
    verifier = ClientSecretVerifier()
    old = hash_secret("old-secret")
    assert verifier.verify("c", "old-secret", old)
    assert not verifier.verify("c", "old-secret", hash_secret("new-secret"))


def test_failures_are_limited_and_cost_nothing_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(0)
    verifier = ClientSecretVerifier(failure_limit=3, failure_window=60, clock=clock)
    stored = hash_secret("right")
    assert verifier.verify("c", "right", stored)  # the real agent, before the attack
    kdf = CountingKdf(monkeypatch)
    for i in range(50):
        assert not verifier.verify("c", f"guess-{i}", stored)
    assert kdf.calls == 3  # only the budget was ever computed
    assert verifier.verify("c", "right", stored)  # cached: the real agent keeps working
    assert not verifier.verify("c", "right-but-uncached", stored)
    # A right secret not yet known is refused during the lockout (fails closed) ...
    fresh = ClientSecretVerifier(failure_limit=1, failure_window=60, clock=clock)
    assert not fresh.verify("d", "nope", stored)
    assert not fresh.verify("d", "right", stored)
    # ... and accepted once the window has passed.
    clock.advance(61)
    assert fresh.verify("d", "right", stored)


def test_token_endpoint_with_a_legacy_client_pays_the_kdf_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = ClientConfig(client_id="legacy-agent", client_secret_hash=hash_secret("legacy-secret"))
    settings = make_settings(tmp_path)
    settings.clients.append(legacy)
    with open_env(settings) as env:
        kdf = CountingKdf(monkeypatch)
        for _ in range(5):
            response = env.bc_authorize(auth=("legacy-agent", "legacy-secret"))
            assert response.status_code == 200, response.text
        assert kdf.calls == 1
        bad = env.bc_authorize(auth=("legacy-agent", "wrong"))
        assert bad.status_code == 401
        assert bad.json()["error"] == "invalid_client"
        # The agents with generated secrets never run the KDF at all.
        assert env.bc_authorize(auth=(AGENT_ID, "nope")).status_code == 401
        assert kdf.calls == 2


def test_cli_generated_secret_is_a_digest() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ciba_service", "clients", "hash-secret"], capture_output=True, text=True, check=True
    )
    stored = tomllib.loads(result.stdout)["client_secret_hash"]  # stdout is TOML to paste
    secret = result.stderr.strip().rsplit(": ", 1)[1]  # the secret is shown once, on stderr
    assert stored.startswith("sha256$")
    assert len(secret) >= 43  # 256 bits, base64url
    assert verify_secret(secret, stored)
