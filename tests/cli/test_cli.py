"""The console script, as a user runs it: config file, serve, users add, agent request, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import jwt
import pytest

from ciba_service.agent import device
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.core.security import hash_secret
from ciba_service.web.serving import free_port

CLI = [sys.executable, "-m", "ciba_service"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_demo_json_ends_with_four_true_booleans() -> None:
    result = run("demo", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["approved"] is True
    assert summary["token_accepted"] is True
    assert summary["replay_refused"] is True
    assert summary["other_action_refused"] is True
    assert summary["authorization_details"][0]["identifier"] == "policy-42"


def test_hash_secret_round_trip() -> None:
    result = subprocess.run(
        [*CLI, "clients", "hash-secret", "--stdin"], input="s3cret\n", capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    stored = tomllib.loads(result.stdout)["client_secret_hash"]  # valid TOML, pasted as is
    assert stored.startswith("scrypt$")
    from ciba_service.core.security import verify_secret

    assert verify_secret("s3cret", stored)


def test_bad_config_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("access_token_lifetime = 900\n")
    result = run("users", "list", "--config", str(config))
    assert result.returncode == 2
    assert "access_token_lifetime" in result.stderr


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def served(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    port = free_port()
    config = tmp_path / "ciba.toml"
    config.write_text(
        f'issuer = "http://localhost:{port}"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
        "poll_interval = 1\n"
        "[[clients]]\n"
        'client_id = "cli-agent"\n'
        f'client_secret_hash = "{hash_secret("cli-secret")}"\n'
        'authorization_details_types = ["iam_policy"]\n'
    )
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(config), "--port", str(port), "--workers", str(request.param)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://localhost:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.1)
    yield base, config, tmp_path / "serve.log"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_serve_users_add_and_agent_request(served) -> None:  # type: ignore[no-untyped-def]
    base, config, log_path = served
    added = run("users", "add", "carol", "--config", str(config))
    assert added.returncode == 0, added.stderr
    link = added.stdout.strip()
    assert link.startswith(f"{base}/enroll/")
    authenticator = SoftAuthenticator()
    with httpx.Client(timeout=10) as http:
        device.enroll(http, link, authenticator)
        details = json.dumps([{"type": "iam_policy", "actions": ["read"], "identifier": "p-7"}])
        agent = subprocess.Popen(
            [
                *CLI,
                "agent",
                "request",
                "--issuer",
                base,
                "--client-id",
                "cli-agent",
                "--login-hint",
                "carol",
                "-a",
                details,
                "--binding-message",
                "CLI-1",
                "--show-claims",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CIBA_AGENT_CLIENT_SECRET": "cli-secret"},
        )
        # The console notifier prints the approval link in the service's log.
        deadline = time.monotonic() + 20
        url = None
        while url is None:
            for line in log_path.read_text().splitlines():
                if "open: " in line:
                    url = line.split("open: ", 1)[1].strip()
            assert time.monotonic() < deadline, "no approval link was printed"
            time.sleep(0.1)
        assert device.approve(http, url, authenticator)["status"] == "approved"
        out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    token = out.strip().splitlines()[-1]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["authorization_details"] == json.loads(details)
    assert '"authorization_details"' in err  # --show-claims
    users = run("users", "list", "--config", str(config))
    assert "carol" in users.stdout and "passkeys=1" in users.stdout


def test_access_log_redacts_enrollment_tokens_and_approval_ids() -> None:
    import logging

    from ciba_service.web.app import RedactLinkSecrets

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/enroll/SECRET-TOKEN/details", "1.1", 200),
        None,
    )
    RedactLinkSecrets().filter(record)
    assert "SECRET-TOKEN" not in record.getMessage()
    assert "/enroll/[redacted]/details" in record.getMessage()
