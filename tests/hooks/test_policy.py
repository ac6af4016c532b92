"""The hook's policy (``PolicyFile`` behind the ``ToolPolicy`` interface): the example policy
on realistic calls, the entry it requests, and its safety on hostile input."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from ciba_service.config import load_settings
from ciba_service.core.security import b64url_encode
from ciba_service.hooks import Denied, Free, NeedsApproval, PolicyError, PolicyFile, ToolCall
from ciba_service.rfc9396 import TypeRegistry, parse_authorization_details

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "coding-agent"
CWD = "/home/alice/src/shop"


@pytest.fixture(scope="module")
def policy() -> PolicyFile:
    return PolicyFile.load(EXAMPLES / "ciba-policy.toml")


def bash(command: str) -> ToolCall:
    return ToolCall(tool_name="Bash", tool_input={"command": command}, cwd=CWD, session_id="s-1")


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        ("git push --force origin main", "force-push"),
        ("git push origin main --force", "force-push"),
        ("git push -f", "force-push"),
        ("git push --force-with-lease origin feature", "force-push"),
        ("git push origin +main", "force-push"),
        ("cd infra && git -C . push --force", "force-push"),
        ("kubectl delete pod web-1", "kubectl-delete"),
        ("kubectl -n prod delete deployment web", "kubectl-delete"),
        ("terraform apply -auto-approve", "terraform-apply"),
        ("tofu destroy", "terraform-apply"),
        ("terraform state rm aws_s3_bucket.logs", "terraform-apply"),
        ("cat .claude/ciba-policy.toml > /dev/null; echo > .claude/ciba-policy.toml", "guard-the-guard"),
    ],
)
def test_dangerous_commands_need_approval(policy: PolicyFile, command: str, rule: str) -> None:
    decision = policy.evaluate(bash(command))
    assert isinstance(decision, NeedsApproval), decision
    assert decision.rule == rule


@pytest.mark.parametrize(
    "command",
    [
        "ls -la",
        "git push origin main",
        "git status && git log --oneline -5",
        "kubectl get pods",
        "terraform plan",
        "grep -r force .",
        "rm -rf build/",
    ],
)
def test_ordinary_commands_are_free(policy: PolicyFile, command: str) -> None:
    assert policy.evaluate(bash(command)) == Free()


@pytest.mark.parametrize("command", ["rm -rf /", "sudo rm -rf /", "rm -rf ~", "echo hi; rm -fr $HOME"])
def test_wiping_root_or_home_is_denied_outright(policy: PolicyFile, command: str) -> None:
    assert policy.evaluate(bash(command)) == Denied(reason="deleting / or the home directory is never approved")


def test_the_entry_requested_for_a_command(policy: PolicyFile) -> None:
    decision = policy.evaluate(bash("git push --force origin main"))
    assert isinstance(decision, NeedsApproval)
    digest = b64url_encode(hashlib.sha256(rfc8785.dumps({"command": "git push --force origin main"})).digest())
    assert decision.authorization_details == [
        {
            "type": "coding_agent_tool",
            "identifier": "Bash",
            "actions": ["run"],
            "command": ["git push --force origin main"],
            "cwd": CWD,
            "rule": "force-push",
            "input_sha256": digest,
        }
    ]
    assert decision.words == "run Bash: git push --force origin main"


def test_the_requested_entry_passes_the_services_validation(policy: PolicyFile) -> None:
    """The example service configuration accepts what the example policy requests."""
    settings = load_settings(EXAMPLES / "ciba.toml")
    registry = TypeRegistry.from_config(settings.authorization_details_types)
    calls = [
        bash("git push --force origin main\n\techo done\x1b[0m"),
        ToolCall(tool_name="Write", tool_input={"file_path": ".github/workflows/ci.yml", "content": "x"}, cwd=CWD),
        ToolCall(tool_name="mcp__prod-db__execute_sql", tool_input={"sql": "DELETE FROM t"}, cwd=CWD),
    ]
    for call in calls:
        decision = policy.evaluate(call)
        assert isinstance(decision, NeedsApproval), decision
        parsed = parse_authorization_details(
            json.dumps(decision.authorization_details),
            registry=registry,
            allowed_types=["coding_agent_tool"],
            max_entries=10,
            max_bytes=8192,
        )
        assert parsed == decision.authorization_details


def test_control_characters_are_shown_escaped_one_line_per_element(policy: PolicyFile) -> None:
    decision = policy.evaluate(bash("git push --force\n\techo \x1b[2Kdone"))
    assert isinstance(decision, NeedsApproval)
    assert decision.authorization_details[0]["command"] == ["git push --force", "\\u0009echo \\u001b[2Kdone"]


def test_protected_paths_need_approval_even_through_a_symlink(policy: PolicyFile, tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (tmp_path / "notes.yml").symlink_to(workflows / "deploy.yml")
    write = ToolCall(tool_name="Write", tool_input={"file_path": "notes.yml", "content": "x"}, cwd=str(tmp_path))
    decision = policy.evaluate(write)
    assert isinstance(decision, NeedsApproval)
    assert decision.authorization_details[0]["path"] == str(workflows / "deploy.yml")
    assert decision.authorization_details[0]["actions"] == ["write"]


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        ("Edit", {"file_path": "/repo/main.tf", "old_string": "a", "new_string": "b"}),
        ("MultiEdit", {"file_path": "/repo/.env.production", "edits": []}),
        ("NotebookEdit", {"notebook_path": "/repo/.claude/hooks.ipynb", "new_source": "x"}),
        ("Write", {"file_path": "/etc/hosts", "content": "x"}),
        ("Write", {"file_path": "../../etc/../etc/hosts", "content": "x"}),
    ],
)
def test_writes_to_protected_paths_need_approval(policy: PolicyFile, tool: str, tool_input: dict[str, Any]) -> None:
    decision = policy.evaluate(ToolCall(tool_name=tool, tool_input=tool_input, cwd="/repo/src"))
    assert isinstance(decision, NeedsApproval), decision
    assert decision.rule == "protected-paths"


def test_ordinary_writes_are_free(policy: PolicyFile) -> None:
    call = ToolCall(tool_name="Write", tool_input={"file_path": "src/app.py", "content": "x"}, cwd=CWD)
    assert policy.evaluate(call) == Free()


def test_mcp_tools_are_matched_by_name(policy: PolicyFile) -> None:
    call = ToolCall(tool_name="mcp__prod-db__execute_sql", tool_input={"sql": "DELETE FROM orders"}, cwd=CWD)
    decision = policy.evaluate(call)
    assert isinstance(decision, NeedsApproval)
    assert decision.authorization_details[0]["actions"] == ["call"]
    assert decision.authorization_details[0]["arguments"] == '{"sql":"DELETE FROM orders"}'
    other = ToolCall(tool_name="mcp__staging-db__execute_sql", tool_input={"sql": "DELETE"}, cwd=CWD)
    assert policy.evaluate(other) == Free()


# hostile input ------------------------------------------------------------------------------


def test_a_command_too_long_to_show_is_denied(policy: PolicyFile) -> None:
    decision = policy.evaluate(bash("echo " + "a" * 5000))
    assert decision == Denied(reason="the command is longer than 4000 characters, too long to check")


def test_a_command_that_is_not_a_string_is_denied(policy: PolicyFile) -> None:
    call = ToolCall(tool_name="Bash", tool_input={"command": ["git", "push", "--force"]}, cwd=CWD)
    assert policy.evaluate(call) == Denied(reason="the Bash command is not a string")


@pytest.mark.parametrize("path", ["", "a\0b", "x" * 2000, 42])
def test_a_write_without_a_usable_path_is_denied(policy: PolicyFile, path: object) -> None:
    call = ToolCall(tool_name="Write", tool_input={"file_path": path, "content": ""}, cwd=CWD)
    assert policy.evaluate(call) == Denied(reason="Write names no usable file path")


def test_catastrophic_backtracking_is_cut_off_and_denied() -> None:
    slow = PolicyFile.from_mapping({"rules": [{"tool": "Bash", "command": "^(a+)+$"}]})
    started = time.monotonic()
    decision = slow.evaluate(bash("a" * 40 + "b"))
    assert decision == Denied(reason="the policy took longer than 1.0 s to evaluate this call")
    assert time.monotonic() - started < 3


def test_tool_input_without_a_canonical_form_is_denied() -> None:
    everything = PolicyFile.from_mapping({"default": "approve"})
    call = ToolCall(tool_name="mcp__x__y", tool_input={"n": 2**60}, cwd=CWD)
    assert everything.evaluate(call) == Denied(reason="the tool input has no canonical JSON form (RFC 8785)")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": [{"tool": "Bash", "command": "("}]}, "is not a regular expression"),
        ({"rules": [{"tool": "Bash", "decision": "allow"}]}, "must be 'free', 'approve' or 'deny'"),
        ({"rules": [{"tool": "Bash", "commands": "x"}]}, "unknown keys commands"),
        ({"default": "yes"}, "'default' must be"),
        ({"rulez": []}, "unknown policy keys: rulez"),
        ({"rules": [{"tool": []}]}, "must be a non-empty string or list"),
        ({"type": "bad\u202etype"}, "plain characters"),
    ],
)
def test_invalid_policies_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        PolicyFile.from_mapping(data)


def test_a_policy_file_that_is_too_large_or_not_toml_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 70_000)
    with pytest.raises(PolicyError, match="larger than"):
        PolicyFile.load(big)
    bad = tmp_path / "bad.toml"
    bad.write_text("rules = [")
    with pytest.raises(PolicyError, match="is not TOML"):
        PolicyFile.load(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        PolicyFile.load(tmp_path / "missing.toml")
