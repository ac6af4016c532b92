"""The README's operator quickstart, run exactly as the README writes it: its ``sh`` block (the one
after the ``<!-- quickstart`` marker) is cut into its numbered steps and each step's text runs in
bash, in an empty temporary directory, with a fresh HOME and no ``CIBA_*`` variable (so no
configuration of this machine is found and nothing needs ``--config``).

Only what a person does by hand is done here by the test: the browser parts (enrolling a passkey
at the printed link, approving at the link in the service's log) use the development software
authenticator, and, so that tests running side by side do not fight over port 8000, the port
(8000 in the README) is replaced by a free one, in the configuration, ``serve``'s ``--port`` and
the agent's issuer (``CIBA_AGENT_ISSUER``). The service and the agent are started in the
background, as a person runs them in their own terminals."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt

from ciba_service.agent import device
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.web.serving import free_port

ROOT = Path(__file__).resolve().parents[2]


def quickstart_steps() -> dict[int, str]:
    """The numbered steps of the README's quickstart block: {number: the step's shell text}."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    after = readme.split("<!-- quickstart", 1)[1]
    block = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert block is not None, "the quickstart block is gone from the README"
    steps: dict[int, str] = {}
    current = 0
    for line in block.group(1).splitlines():
        heading = re.match(r"# (\d+)\. ", line)
        if heading:
            current = int(heading.group(1))
            steps[current] = ""
        elif current and not line.startswith("#"):
            steps[current] += line + "\n"
    return {number: text.strip() for number, text in steps.items()}


def shell_env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIBA_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(ROOT),  # this checkout's package behind the installed console script
        CIBA_AGENT_ISSUER=f"http://localhost:{port}",
    )
    return env


def bash(script: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_readme_quickstart_works_as_written(tmp_path: Path) -> None:
    steps = quickstart_steps()
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    assert steps[3] == "ciba-service serve" and steps[4] == "ciba-service users add alice"
    assert steps[6] == ""  # the approval: done by a person, at the link the service logged
    port = free_port()
    workdir = tmp_path / "quickstart"
    workdir.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = shell_env(home, port)

    # 1-2: the secret, the configuration.
    for number in (1, 2):
        done = bash(steps[number].replace("localhost:8000", f"localhost:{port}"), cwd=workdir, env=env)
        assert done.returncode == 0, (number, done.stderr)
    assert (workdir / "agent.secret").stat().st_mode & 0o777 == 0o600
    assert "client_secret_hash" in (workdir / "ciba-service.toml").read_text()

    # 3: the service, in its own "terminal".
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        service = subprocess.Popen(
            ["bash", "-c", f"exec {steps[3]} --port {port}"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    agent: subprocess.Popen[str] | None = None
    try:
        base = f"http://localhost:{port}"
        wait_until(lambda: healthy(base), what="the service to start", log=log_path)
        assert "config ciba-service.toml" in log_path.read_text()  # found without --config

        # 4: the user, and her passkey at the printed link (a browser, done by the software authenticator).
        added = bash(steps[4], cwd=workdir, env=env)
        assert added.returncode == 0, added.stderr
        link = added.stdout.strip()
        assert link.startswith(f"{base}/enroll/")
        authenticator = SoftAuthenticator()
        with httpx.Client(timeout=10) as http:
            device.enroll(http, link, authenticator)

            # 5: the agent asks, and waits.
            agent = subprocess.Popen(
                ["bash", "-euo", "pipefail", "-c", steps[5]],
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # 6: the approval link appears in the service's log; alice checks OPS-1 and approves.
            url = wait_until(lambda: logged_link(log_path), what="the approval link in the log", log=log_path)
            assert "ops-agent asks alice to approve" in log_path.read_text()
            assert url.startswith(f"{base}/approve/")
            view = http.get(f"{url}/details").json()
            assert view["binding_message"] == "OPS-1"
            assert device.approve(http, url, authenticator)["status"] == "approved"
            out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err
        claims = jwt.decode(out.strip(), options={"verify_signature": False})
        assert claims["authorization_details"] == [
            {"type": "iam_policy", "actions": ["update"], "identifier": "policy-42"}
        ]
        # Not on a terminal: one progress line per state, no live status line.
        assert "waiting for approval, binding message OPS-1" in err
        assert err.count("waiting for approval") == 1

        # What you have then (the paragraph after the block).
        listed = bash("ciba-service users list", cwd=workdir, env=env)
        assert "alice" in listed.stdout and "passkeys=1" in listed.stdout
        receipt = bash(f"ciba-service receipts verify {claims['approval']['receipt']}", cwd=workdir, env=env)
        assert json.loads(receipt.stdout)["valid"] is True
        assert "user.added" in bash("ciba-service audit list", cwd=workdir, env=env).stdout
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        service.terminate()
        service.wait(timeout=10)


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def logged_link(log_path: Path) -> str | None:
    for line in log_path.read_text().splitlines():
        if "open: " in line:
            return line.split("open: ", 1)[1].strip()
    return None


def wait_until(check, *, what: str, log: Path, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()}"
        time.sleep(0.1)
