"""A running service and a hook run as the coding agent runs it (a subprocess, one event on
stdin), for the tests of every hook dialect (``claude-code``, ``copilot``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ciba_service.agent import device
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig, load_settings
from ciba_service.core.security import digest_secret
from ciba_service.server.provider import Provider
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port
from tests.support.service import RecordingNotifier

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "coding-agent"
FIXTURES = Path(__file__).resolve().parents[1] / "cli" / "fixtures"
SECRET = "hook-secret"


@dataclass
class Service:
    base: str
    provider: Provider
    notifier: RecordingNotifier
    authenticator: SoftAuthenticator
    http: httpx.Client
    tmp: Path

    policy_file: str = "ciba-policy.toml"

    def policy(self, **service: Any) -> Path:
        """The example policy, pointed at this service."""
        text = (EXAMPLES / self.policy_file).read_text()
        text = text.replace('issuer = "http://localhost:8000"', f'issuer = "{service.pop("issuer", self.base)}"')
        for key, value in service.items():
            line = f"{key} = {json.dumps(value)}"
            text, replaced = re.subn(rf"(?m)^{key} = .*$", line, text)
            if not replaced:
                text = text.replace("[service]\n", f"[service]\n{line}\n")
        path = self.tmp / f"policy-{len(list(self.tmp.glob('policy-*')))}.toml"
        path.write_text(text)
        return path

    def next_link(self) -> str:
        deadline = time.monotonic() + 10
        while not self.notifier.notices:
            assert time.monotonic() < deadline, "the user was not notified"
            time.sleep(0.02)
        return self.notifier.notices.pop().approval_url


@contextmanager
def running_service(tmp_path: Path, *, client_id: str, policy_file: str) -> Iterator[Service]:
    port = free_port()
    base = f"http://localhost:{port}"
    example = load_settings(EXAMPLES / "ciba.toml")  # the type the example declares
    settings = load_settings(
        issuer=base,
        data_dir=tmp_path / "data",
        poll_interval=1,
        request_expiry_default=10,
        authorization_details_types=example.authorization_details_types,
        clients=[
            ClientConfig(
                client_id=client_id,
                name=client_id,
                client_secret_hash=digest_secret(SECRET),
                authorization_details_types=["coding_agent_tool"],
            )
        ],
    )
    notifier = RecordingNotifier()
    provider = build_provider(settings, notifier=notifier)
    authenticator = SoftAuthenticator()
    with BackgroundServer(create_app(provider), port=port), httpx.Client(timeout=10) as http:
        _, link = provider.add_user(username="alice")
        device.enroll(http, link, authenticator)
        yield Service(
            base=base,
            provider=provider,
            notifier=notifier,
            authenticator=authenticator,
            http=http,
            tmp=tmp_path,
            policy_file=policy_file,
        )
    provider.store.close()


def start_hook(
    policy: Path, event: bytes, *, secret: str | None = SECRET, dialect: str = "claude-code"
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBA_")}
    if secret is not None:
        env["CIBA_HOOK_CLIENT_SECRET"] = secret
    hook = subprocess.Popen(
        [sys.executable, "-m", "ciba_service", "hook", dialect, "--policy", str(policy)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert hook.stdin is not None
    hook.stdin.write(event)
    hook.stdin.close()
    return hook


def finish(hook: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, dict[str, Any] | None, str]:
    assert hook.stdout is not None and hook.stderr is not None
    hook.wait(timeout=timeout)
    out, err = hook.stdout.read().decode(), hook.stderr.read().decode()
    return hook.returncode, (json.loads(out) if out.strip() else None), err


def run_hook(policy: Path, event: bytes, **kwargs: Any) -> tuple[int, dict[str, Any] | None, str]:
    return finish(start_hook(policy, event, **kwargs))
