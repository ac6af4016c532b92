"""The hook's policy (``HookPolicy``, pep's tool-call mapping behind the ``ToolPolicy``
interface): the example policy on realistic calls, the entry it requests, and its safety on
hostile input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from ciba_service.config import load_settings
from ciba_service.core.security import b64url_encode
from ciba_service.hooks import Denied, Free, HookPolicy, NeedsApproval, PolicyError, ToolCall
from ciba_service.rfc9396 import TypeRegistry, parse_authorization_details

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "coding-agent"
CWD = "/home/alice/src/shop"


@pytest.fixture(scope="module")
def policy() -> HookPolicy:
    return HookPolicy.load(EXAMPLES / "ciba-policy.toml")


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
def test_dangerous_commands_need_approval(policy: HookPolicy, command: str, rule: str) -> None:
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
def test_ordinary_commands_are_free(policy: HookPolicy, command: str) -> None:
    assert policy.evaluate(bash(command)) == Free()


@pytest.mark.parametrize("command", ["rm -rf /", "sudo rm -rf /", "rm -rf ~", "echo hi; rm -fr $HOME"])
def test_wiping_root_or_home_is_denied_outright(policy: HookPolicy, command: str) -> None:
    assert policy.evaluate(bash(command)) == Denied(reason="deleting / or the home directory is never approved")


def test_the_entry_requested_for_a_command(policy: HookPolicy) -> None:
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


def test_the_requested_entry_passes_the_services_validation(policy: HookPolicy) -> None:
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


def test_control_characters_are_shown_escaped_one_line_per_element(policy: HookPolicy) -> None:
    decision = policy.evaluate(bash("git push --force\n\techo \x1b[2Kdone"))
    assert isinstance(decision, NeedsApproval)
    assert decision.authorization_details[0]["command"] == ["git push --force", "\\u0009echo \\u001b[2Kdone"]


def test_protected_paths_need_approval_even_through_a_symlink(policy: HookPolicy, tmp_path: Path) -> None:
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
def test_writes_to_protected_paths_need_approval(policy: HookPolicy, tool: str, tool_input: dict[str, Any]) -> None:
    decision = policy.evaluate(ToolCall(tool_name=tool, tool_input=tool_input, cwd="/repo/src"))
    assert isinstance(decision, NeedsApproval), decision
    assert decision.rule == "protected-paths"


def test_ordinary_writes_are_free(policy: HookPolicy) -> None:
    call = ToolCall(tool_name="Write", tool_input={"file_path": "src/app.py", "content": "x"}, cwd=CWD)
    assert policy.evaluate(call) == Free()


def test_mcp_tools_are_matched_by_name(policy: HookPolicy) -> None:
    call = ToolCall(tool_name="mcp__prod-db__execute_sql", tool_input={"sql": "DELETE FROM orders"}, cwd=CWD)
    decision = policy.evaluate(call)
    assert isinstance(decision, NeedsApproval)
    assert decision.authorization_details[0]["actions"] == ["call"]
    assert decision.authorization_details[0]["arguments"] == '{"sql":"DELETE FROM orders"}'
    other = ToolCall(tool_name="mcp__staging-db__execute_sql", tool_input={"sql": "DELETE"}, cwd=CWD)
    assert policy.evaluate(other) == Free()


# hostile input ------------------------------------------------------------------------------


def test_a_command_too_long_to_show_is_denied(policy: HookPolicy) -> None:
    decision = policy.evaluate(bash("echo " + "a" * 5000))
    assert decision == Denied(reason="the command is longer than 4000 characters, too long to check")


def test_a_command_that_is_not_a_string_is_denied(policy: HookPolicy) -> None:
    call = ToolCall(tool_name="Bash", tool_input={"command": ["git", "push", "--force"]}, cwd=CWD)
    assert policy.evaluate(call) == Denied(reason="the Bash command is not a string")


@pytest.mark.parametrize("path", ["", "a\0b", "x" * 2000, 42])
def test_a_write_without_a_usable_path_is_denied(policy: HookPolicy, path: object) -> None:
    call = ToolCall(tool_name="Write", tool_input={"file_path": path, "content": ""}, cwd=CWD)
    assert policy.evaluate(call) == Denied(reason="Write names no usable file path")


def test_patterns_run_in_linear_time_so_a_catastrophic_pattern_answers() -> None:
    """``^(a+)+$`` on 4,000 characters backtracks for longer than the universe under Python's
    ``re``; on RE2 it answers at once (a hang here would time the suite out)."""
    slow = HookPolicy.from_mapping(
        {"tools": {"Bash": {"decision": "free", "rules": [bash_rule("^(a+)+$", "approval")]}}}
    )
    assert slow.evaluate(bash("a" * 3999 + "b")) == Free()
    assert isinstance(slow.evaluate(bash("a" * 3999)), NeedsApproval)


def test_a_large_write_to_a_free_path_is_free_and_its_content_is_bound_when_asked() -> None:
    """The conditions see only the arguments they read: a file bigger than pep's argument
    bound is still judged by its path; when approval is asked, the digest covers the content."""
    policy = HookPolicy.from_mapping(
        {
            "tools": {
                "Write": {
                    "decision": "free",
                    "rules": [{"when": [{"arg": "file_path", "path": "*.tf"}], "decision": "approval"}],
                }
            }
        }
    )
    content = "x" * 200_000
    free = ToolCall(tool_name="Write", tool_input={"file_path": "/r/a.py", "content": content}, cwd=CWD)
    assert policy.evaluate(free) == Free()
    asked = policy.evaluate(
        ToolCall(tool_name="Write", tool_input={"file_path": "/r/a.tf", "content": content}, cwd=CWD)
    )
    assert isinstance(asked, NeedsApproval)
    digest = b64url_encode(hashlib.sha256(rfc8785.dumps({"file_path": "/r/a.tf", "content": content})).digest())
    assert asked.authorization_details[0]["input_sha256"] == digest


def test_a_tool_mapping_with_its_own_type_requests_its_own_entry() -> None:
    """The same mapping an MCP guard reads: templates build the entry instead of the hook."""
    policy = HookPolicy.from_mapping(
        {
            "tools": {
                "mcp__bank__transfer": {
                    "decision": "approval",
                    "type": "payment_initiation",
                    "actions": ["initiate"],
                    "fields": {
                        "creditorName": "{args.to}",
                        "instructedAmount": {"currency": "EUR", "amount": "{args.amount|string}"},
                    },
                    "words": "Transfer {args.amount} EUR to {args.to}",
                }
            }
        }
    )
    call = ToolCall(tool_name="mcp__bank__transfer", tool_input={"to": "Acme", "amount": 12}, cwd=CWD)
    decision = policy.evaluate(call)
    assert decision == NeedsApproval(
        authorization_details=[
            {
                "type": "payment_initiation",
                "actions": ["initiate"],
                "creditorName": "Acme",
                "instructedAmount": {"currency": "EUR", "amount": "12"},
            }
        ],
        words="Transfer 12 EUR to Acme",
        rule="mcp__bank__transfer",
    )


def bash_rule(pattern: str, decision: str) -> dict[str, Any]:
    return {"name": "r", "when": [{"arg": "command", "matches": pattern}], "decision": decision}


def test_tool_input_without_a_canonical_form_is_denied() -> None:
    everything = HookPolicy.from_mapping({"default": "approval"})
    call = ToolCall(tool_name="mcp__x__y", tool_input={"n": 2**60}, cwd=CWD)
    assert everything.evaluate(call) == Denied(reason="the tool input has no canonical JSON form (RFC 8785)")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"tools": {"Bash": {"decision": "free", "rules": [bash_rule("(", "approval")]}}},
            "not a regular expression RE2",
        ),
        # RE2 has no lookaround: refused at load, never silently matched differently.
        ({"tools": {"Bash": {"decision": "free", "rules": [bash_rule("(?=x)", "approval")]}}}, "invalid perl operator"),
        ({"tools": {"Bash": {"decision": "allow"}}}, "decision must be one of free, approval, deny"),
        (
            {"tools": {"Bash": {"decision": "free", "rules": [{"when": [], "decision": "deny", "why": "x"}]}}},
            "nothing else",
        ),
        ({"default": "yes"}, "default must be"),
        ({"rules": []}, "the old hook format"),
        ({"tool": {}}, "unknown key"),
        ({"type": "bad\u202etype"}, "plain characters"),
        (
            {"tools": {"Bash": {"decision": "free", "rules": [{**bash_rule("x", "deny"), "reason": "a\u202eb"}]}}},
            "plain characters",
        ),
        (
            {
                "tools": {
                    "Write": {
                        "decision": "free",
                        "rules": [{"when": [{"arg": "file_path", "path": []}], "decision": "approval"}],
                    }
                }
            },
            "non-empty list",
        ),
    ],
)
def test_invalid_policies_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        HookPolicy.from_mapping(data)


def test_a_policy_file_that_is_too_large_or_not_toml_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 70_000)
    with pytest.raises(PolicyError, match="larger than"):
        HookPolicy.load(big)
    bad = tmp_path / "bad.toml"
    bad.write_text("rules = [")
    with pytest.raises(PolicyError, match="is not TOML"):
        HookPolicy.load(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        HookPolicy.load(tmp_path / "missing.toml")
