"""``ciba-service hook claude-code`` run exactly as Claude Code runs it: a subprocess given one
PreToolUse event on stdin (payloads in tests/cli/fixtures/claude_code/, in the documented
shape), answering JSON on stdout with exit code 0, against the service over real HTTP. The
user approves or denies on the decoupled device with the development soft authenticator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ciba_service.agent import device
from ciba_service.web.serving import free_port
from tests.support.hooks import FIXTURES as ALL_FIXTURES
from tests.support.hooks import Service, finish, run_hook, running_service, start_hook

FIXTURES = ALL_FIXTURES / "claude_code"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with running_service(tmp_path, client_id="claude-code", policy_file="ciba-policy.toml") as running:
        yield running


def decision(output: dict[str, Any] | None) -> tuple[str, str]:
    assert output is not None
    specific = output["hookSpecificOutput"]
    assert specific["hookEventName"] == "PreToolUse"
    return specific["permissionDecision"], specific["permissionDecisionReason"]


def test_a_free_command_is_let_through_at_once_without_asking(service: Service) -> None:
    started = time.monotonic()
    code, output, err = run_hook(service.policy(), fixture("bash_ls.json"), secret=None)
    assert (code, output, err) == (0, None, "")  # no decision: Claude Code's own rules apply
    assert time.monotonic() - started < 10
    assert service.notifier.notices == []  # nobody was asked


def test_force_push_waits_for_the_passkey_then_is_allowed(service: Service) -> None:
    hook = start_hook(service.policy(), fixture("bash_force_push.json"))
    link = service.next_link()
    view = device.fetch_view(service.http, link)
    assert view["binding_document"]["authorization_details"][0]["command"] == ["git push --force origin main"]
    assert view["binding_document"]["authorization_details"][0]["rule"] == "force-push"
    assert view["client_id"] == "claude-code"
    time.sleep(0.5)
    assert hook.poll() is None  # still waiting for the user
    assert device.approve(service.http, link, service.authenticator)["status"] == "approved"
    code, output, err = finish(hook)
    assert code == 0
    verdict, reason = decision(output)
    binding_message = view["binding_message"]
    assert verdict == "allow"
    assert reason == f"approved by alice with a passkey (binding message {binding_message})"
    assert binding_message.startswith("Bash-")
    assert (
        f"to approve with a passkey: run Bash: git push --force origin main (binding message {binding_message}" in err
    )


def test_denied_by_the_user(service: Service) -> None:
    hook = start_hook(service.policy(), fixture("bash_force_push.json"))
    link = service.next_link()
    binding_message = device.fetch_view(service.http, link)["binding_message"]
    device.deny(service.http, link)
    code, output, _ = finish(hook)
    assert code == 0
    assert decision(output) == ("deny", f"ciba-service: alice denied this call (binding message {binding_message})")


def test_expired_without_a_decision(service: Service) -> None:
    code, output, _ = run_hook(service.policy(requested_expiry=2), fixture("bash_force_push.json"))
    assert code == 0
    assert decision(output) == ("deny", "ciba-service: no decision in time (expired_token); the call was not approved")


def test_the_hooks_own_timeout_denies(service: Service) -> None:
    code, output, _ = run_hook(service.policy(timeout=2), fixture("bash_force_push.json"))
    assert code == 0
    assert decision(output) == ("deny", "ciba-service: no decision in time (wait_timeout); the call was not approved")


def test_an_unreachable_service_denies(service: Service) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    code, output, _ = run_hook(service.policy(issuer=closed), fixture("bash_force_push.json"))
    assert code == 0
    verdict, reason = decision(output)
    assert verdict == "deny"
    assert reason.startswith("ciba-service: the approval service is unreachable (ConnectError")
    assert reason.endswith("refused (fail closed)")


def test_a_write_to_a_workflow_needs_approval(service: Service) -> None:
    hook = start_hook(service.policy(), fixture("write_workflow.json"))
    link = service.next_link()
    [entry] = device.fetch_view(service.http, link)["binding_document"]["authorization_details"]
    assert (entry["actions"], entry["path"], entry["rule"]) == (
        ["write"],
        "/home/alice/src/shop/.github/workflows/deploy.yml",
        "protected-paths",
    )
    event = json.loads(fixture("write_workflow.json"))
    assert entry["input_sha256"] == sha256_b64url_jcs(event["tool_input"])
    device.approve(service.http, link, service.authenticator)
    code, output, _ = finish(hook)
    assert (code, decision(output)[0]) == (0, "allow")


def sha256_b64url_jcs(value: Any) -> str:
    import hashlib

    import rfc8785

    from ciba_service.core.security import b64url_encode

    return b64url_encode(hashlib.sha256(rfc8785.dumps(value)).digest())


def test_an_mcp_tool_by_name_needs_approval(service: Service) -> None:
    hook = start_hook(service.policy(), fixture("mcp_prod_query.json"))
    link = service.next_link()
    [entry] = device.fetch_view(service.http, link)["binding_document"]["authorization_details"]
    assert entry["identifier"] == "mcp__prod-db__execute_sql"
    assert entry["arguments"] == json.dumps(
        {"sql": "DELETE FROM orders WHERE created_at < now() - interval '30 days'"}, separators=(",", ":")
    )
    device.deny(service.http, link)
    assert decision(finish(hook)[1])[0] == "deny"


def test_a_forbidden_command_is_denied_without_asking(service: Service) -> None:
    code, output, _ = run_hook(service.policy(), fixture("bash_rm_root.json"))
    assert code == 0
    assert decision(output) == ("deny", "ciba-service policy: deleting / or the home directory is never approved")
    assert service.notifier.notices == []


def test_other_events_get_no_answer(service: Service) -> None:
    assert run_hook(service.policy(), fixture("post_tool_use.json")) == (0, None, "")


# failing closed ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (b"not json", "ciba-service: the hook event is not JSON; refused (fail closed)"),
        (b"[]", "ciba-service: the hook event is not a JSON object; refused (fail closed)"),
        (
            b'{"hook_event_name": "PreToolUse", "tool_input": {}}',
            "ciba-service: the hook event has no tool_name; refused (fail closed)",
        ),
        (
            b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": "ls"}',
            "ciba-service: the hook event's tool_input is not an object; refused (fail closed)",
        ),
        (
            b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": NaN}}',
            "ciba-service: the hook event is not JSON; refused (fail closed)",
        ),
        (
            b'{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "'
            + b"x" * (4 * 1024 * 1024)
            + b'"}}',
            "ciba-service: the hook event is larger than 4194304 bytes; refused (fail closed)",
        ),
    ],
)
def test_malformed_events_are_denied(service: Service, event: bytes, reason: str) -> None:
    code, output, _ = run_hook(service.policy(), event)
    assert code == 0
    assert decision(output) == ("deny", reason)


def test_a_missing_policy_file_denies(service: Service) -> None:
    code, output, _ = run_hook(service.tmp / "nowhere.toml", fixture("bash_ls.json"))
    assert code == 0
    verdict, reason = decision(output)
    assert verdict == "deny"
    assert reason.startswith("ciba-service: cannot read the policy file")


def test_a_missing_secret_denies_a_call_that_needs_approval(service: Service) -> None:
    code, output, _ = run_hook(service.policy(), fixture("bash_force_push.json"), secret=None)
    assert code == 0
    assert decision(output) == (
        "deny",
        "ciba-service: cannot ask for approval: set CIBA_HOOK_CLIENT_SECRET to the hook client's secret",
    )


def test_a_wrong_secret_denies(service: Service) -> None:
    code, output, _ = run_hook(service.policy(), fixture("bash_force_push.json"), secret="wrong")
    assert code == 0
    verdict, reason = decision(output)
    assert verdict == "deny"
    assert reason.startswith("ciba-service: the approval service refused the request: invalid_client")


def test_the_approved_request_is_recorded_with_the_calls_digest(service: Service) -> None:
    hook = start_hook(service.policy(), fixture("bash_force_push.json"))
    link = service.next_link()
    device.approve(service.http, link, service.authenticator)
    assert decision(finish(hook)[1])[0] == "allow"
    request = service.provider.store.find_request_by_approval_id(link.rsplit("/", 1)[1])
    assert request is not None and request.receipt_id is not None
    event = json.loads(fixture("bash_force_push.json"))
    assert request.authorization_details[0]["input_sha256"] == sha256_b64url_jcs(event["tool_input"])
