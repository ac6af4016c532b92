"""``ciba-service hook copilot`` run exactly as GitHub Copilot CLI runs it: a subprocess given one
preToolUse event on stdin (payloads in tests/cli/fixtures/copilot/, in the documented shapes:
camelCase with ``toolArgs`` as a JSON string, and the VS Code compatible snake_case form),
answering ``{"permissionDecision", "permissionDecisionReason"}`` on stdout, always with exit
code 0 (Copilot CLI runs the call when a hook fails), against the service over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ciba_service.agent import device
from ciba_service.web.serving import free_port
from tests.support.hooks import FIXTURES, Service, finish, running_service, start_hook


def fixture(name: str) -> bytes:
    return (FIXTURES / "copilot" / name).read_bytes()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path, client_id="copilot-cli", policy_file="copilot-policy.toml") as running:
        yield running


def run_copilot(policy: Path, event: bytes, **kwargs: Any) -> tuple[int, dict[str, Any] | None, str]:
    return finish(start_hook(policy, event, dialect="copilot", **kwargs))


def answer(output: dict[str, Any] | None) -> tuple[str, str]:
    assert output is not None and set(output) == {"permissionDecision", "permissionDecisionReason"}
    return output["permissionDecision"], output["permissionDecisionReason"]


def test_a_free_command_gets_no_answer_and_nobody_is_asked(service: Service) -> None:
    assert run_copilot(service.policy(), fixture("bash_ls.json"), secret=None) == (0, None, "")
    assert service.notifier.notices == []


def test_force_push_waits_for_the_passkey_then_is_allowed(service: Service) -> None:
    hook = start_hook(service.policy(), fixture("bash_force_push.json"), dialect="copilot")
    link = service.next_link()
    view = device.fetch_view(service.http, link)
    [entry] = view["binding_document"]["authorization_details"]
    assert (entry["identifier"], entry["command"], entry["rule"]) == (
        "bash",
        ["git push --force origin main"],
        "force-push",
    )
    assert view["client_id"] == "copilot-cli"
    device.approve(service.http, link, service.authenticator)
    code, output, _ = finish(hook)
    assert code == 0
    assert answer(output) == (
        "allow",
        f"approved by alice with a passkey (binding message {view['binding_message']})",
    )


def test_denied_by_the_user(service: Service) -> None:
    hook = start_hook(service.policy(), fixture("bash_force_push.json"), dialect="copilot")
    link = service.next_link()
    binding_message = device.fetch_view(service.http, link)["binding_message"]
    device.deny(service.http, link)
    assert finish(hook)[:2] == (
        0,
        {
            "permissionDecision": "deny",
            "permissionDecisionReason": f"ciba-service: alice denied this call (binding message {binding_message})",
        },
    )


def test_a_write_in_the_vs_code_format_to_a_workflow_needs_approval(service: Service) -> None:
    hook = start_hook(service.policy(), fixture("create_workflow_vscode.json"), dialect="copilot")
    link = service.next_link()
    [entry] = device.fetch_view(service.http, link)["binding_document"]["authorization_details"]
    assert (entry["identifier"], entry["actions"], entry["path"]) == (
        "create",
        ["write"],
        "/home/alice/src/shop/.github/workflows/deploy.yml",
    )
    device.approve(service.http, link, service.authenticator)
    assert answer(finish(hook)[1])[0] == "allow"


def test_a_forbidden_command_is_denied_without_asking(service: Service) -> None:
    code, output, _ = run_copilot(service.policy(), fixture("bash_rm_root.json"))
    assert (code, answer(output)) == (
        0,
        ("deny", "ciba-service policy: deleting / or the home directory is never approved"),
    )
    assert service.notifier.notices == []


def test_an_unreachable_service_denies_with_exit_0(service: Service) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    code, output, _ = run_copilot(service.policy(issuer=closed), fixture("bash_force_push.json"))
    verdict, reason = answer(output)
    assert (code, verdict) == (0, "deny")
    assert reason.startswith("ciba-service: the approval service is unreachable")


def test_other_events_get_no_answer(service: Service) -> None:
    assert run_copilot(service.policy(), fixture("session_start.json")) == (0, None, "")


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            {"toolName": "bash", "toolArgs": "{not json"},
            "ciba-service: the hook event's toolArgs is not JSON; refused (fail closed)",
        ),
        (
            {"toolName": "bash", "toolArgs": '"ls"'},
            "ciba-service: the hook event's toolArgs is not an object; refused (fail closed)",
        ),
        ({"toolName": "", "toolArgs": "{}"}, "ciba-service: the hook event has no toolName; refused (fail closed)"),
        # A file tool without the argument we read its path from: the format changed, deny.
        (
            {"toolName": "edit", "toolArgs": '{"file": "/etc/hosts"}'},
            "ciba-service policy: edit names no usable file path",
        ),
        (
            {"toolName": "bash", "toolArgs": json.dumps({"command": ["rm", "-rf", "/"]})},
            "ciba-service policy: the bash command is not a string",
        ),
    ],
)
def test_malformed_events_are_denied_with_exit_0(service: Service, event: dict[str, Any], reason: str) -> None:
    code, output, _ = run_copilot(service.policy(), json.dumps({"cwd": "/r", **event}).encode())
    assert (code, answer(output)) == (0, ("deny", reason))
