"""The tool-call mapping: what a call maps to, what a bad mapping is told at load, and that
hostile arguments are refused (or shown harmlessly) without anything crashing."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ciba_service.pep import Decision, EvaluationError, MappingError, Policy, load_policy
from ciba_service.pep.mapping import compile_mapping, safe_words
from tests.support.pep import POLICY_TOML

POLICY = Policy.from_dict(tomllib.loads(POLICY_TOML), source="policy.toml")


def test_free_tool() -> None:
    assert POLICY.evaluate("get_balance", {}, subject="alice").decision is Decision.FREE


def test_transfer_builds_the_entry_and_the_words() -> None:
    result = POLICY.evaluate("transfer", {"amount": 100, "currency": "EUR", "to": "alice"}, subject="alice")
    assert result.decision is Decision.APPROVAL
    assert result.entry == {
        "type": "payment_initiation",
        "actions": ["initiate"],
        "creditorName": "alice",
        "instructedAmount": {"currency": "EUR", "amount": "100"},
    }
    assert result.words == "Transfer 100 EUR to alice"


def test_rule_makes_small_transfers_free() -> None:
    assert (
        POLICY.evaluate("transfer", {"amount": 10, "currency": "EUR", "to": "x"}, subject="a").decision is Decision.FREE
    )
    assert POLICY.evaluate("transfer", {"amount": 10.01, "currency": "EUR", "to": "x"}, subject="a").decision is (
        Decision.APPROVAL
    )


def test_lone_placeholder_keeps_the_json_type() -> None:
    mapping = compile_mapping(
        "t",
        {
            "decision": "approval",
            "type": "x",
            "actions": ["do"],
            "fields": {"n": "{args.n}", "obj": "{args.o}", "text": "n={args.n}"},
        },
    )
    entry = mapping.evaluate({"n": 3, "o": {"k": [1, 2]}}, subject=None).entry
    assert entry == {"type": "x", "actions": ["do"], "n": 3, "obj": {"k": [1, 2]}, "text": "n=3"}


def test_template_looking_arguments_stay_text() -> None:
    result = POLICY.evaluate(
        "transfer", {"amount": 100, "currency": "EUR", "to": "{subject}{{args.amount}}"}, subject="alice"
    )
    assert result.entry is not None
    assert result.entry["creditorName"] == "{subject}{{args.amount}}"


def test_default_deny_and_explicit_deny() -> None:
    assert POLICY.evaluate("unknown_tool", {}, subject="a").decision is Decision.DENY
    assert POLICY.evaluate("drop_database", {"x": 1}, subject="a").decision is Decision.DENY
    assert Policy.from_dict({"default": "free"}).evaluate("anything", {}, subject=None).decision is Decision.FREE


HOSTILE: list[tuple[str, Any, str]] = [
    ("not an object", [1, 2], "arguments must be a JSON object"),
    ("deep nesting", {"to": json.loads("[" * 200 + "]" * 200)}, "nested deeper than 16 levels"),
    ("too large", {"to": "x" * 70_000}, "larger than 65536 bytes"),
    ("NaN", {"amount": float("nan"), "currency": "EUR", "to": "a"}, "NaN or Infinity"),
    ("infinity", {"amount": float("inf"), "currency": "EUR", "to": "a"}, "NaN or Infinity"),
    ("string where a number is compared", {"amount": "5", "currency": "EUR", "to": "a"}, "'amount' must be a number"),
    ("bool where a number is compared", {"amount": True, "currency": "EUR", "to": "a"}, "'amount' must be a number"),
    ("missing recipient", {"amount": 100, "currency": "EUR"}, "argument 'to' is missing"),
    ("object embedded in text", {"amount": 100, "currency": {"x": 1}, "to": "a"}, "'args.currency' must be text"),
    ("huge integer in text", {"amount": 2**80, "currency": "EUR", "to": "a"}, "must be text or a number"),
    ("long recipient", {"amount": 100, "currency": "EUR", "to": "y" * 600}, "longer than 512 characters"),
    ("non-JSON value", {"amount": 100, "currency": "EUR", "to": object()}, "must be JSON values"),
]


@pytest.mark.parametrize(("arguments", "message"), [r[1:] for r in HOSTILE], ids=[r[0] for r in HOSTILE])
def test_hostile_arguments_are_refused(arguments: Any, message: str) -> None:
    with pytest.raises(EvaluationError, match=message.replace("(", r"\(").replace("'", "'")):
        POLICY.evaluate("transfer", arguments, subject="alice")


def test_words_are_cleaned() -> None:
    result = POLICY.evaluate(
        "transfer", {"amount": 100, "currency": "EUR", "to": "bob\u202e\u200bevil\nx\x1b[31m"}, subject="alice"
    )
    assert result.words == "Transfer 100 EUR to bob??evil?x?[31m"
    assert safe_words("a" * 400).endswith("…") and len(safe_words("a" * 400)) == 300


BAD_MAPPINGS: list[tuple[str, Any, str]] = [
    ("not a table", "free", "tools.t must be a table"),
    ("no decision", {}, r"tools.t.decision is required"),
    ("bad decision", {"decision": "maybe"}, r"tools.t.decision must be one of free, approval, deny, not 'maybe'"),
    ("misspelt key", {"decision": "free", "identifer": "x"}, r"tools.t: unknown key\(s\) 'identifer'"),
    ("approval without type", {"decision": "approval", "actions": ["a"]}, r"tools.t.type is required"),
    ("approval without actions", {"decision": "approval", "type": "x"}, r"tools.t.actions must be a non-empty list"),
    (
        "unknown root",
        {"decision": "approval", "type": "x", "actions": ["{env.HOME}"]},
        r"tools.t.actions\[0\]: placeholder \{env.HOME\} must start with one of args, tool, subject",
    ),
    (
        "unknown filter",
        {"decision": "approval", "type": "x", "actions": ["a"], "fields": {"f": "{args.x|exec}"}},
        r"tools.t.fields.f: placeholder \{args.x\|exec\}: unknown filter 'exec'",
    ),
    (
        "attribute access",
        {"decision": "approval", "type": "x", "actions": ["a"], "identifier": "{args.__class__()}"},
        r"tools.t.identifier: placeholder \{args.__class__\(\)\}: '__class__\(\)' is not a name or an index",
    ),
    (
        "unbalanced brace",
        {"decision": "approval", "type": "x", "actions": ["a"], "words": "oops {args.x"},
        r"tools.t.words: unbalanced brace at position 5",
    ),
    (
        "reserved field",
        {"decision": "approval", "type": "x", "actions": ["a"], "fields": {"actions": "x"}},
        r"tools.t.fields.actions: a reserved authorization_details field",
    ),
    (
        "entry on a free tool",
        {"decision": "free", "type": "x"},
        r"tools.t: type only apply to tools that may need approval",
    ),
    (
        "bad rule",
        {"decision": "free", "rules": [{"when": [{"arg": "a", "between": [1, 2]}], "decision": "deny"}]},
        r"tools.t.rules\[0\].when\[0\] must have exactly one operator",
    ),
    (
        "rule without when",
        {"decision": "free", "rules": [{"decision": "deny"}]},
        r"tools.t.rules\[0\] must have 'when' and 'decision' \(and optionally 'name', 'reason'\), nothing else",
    ),
    (
        "backreference (RE2 has none)",
        {"decision": "free", "rules": [{"when": [{"arg": "c", "matches": r"(a)\1"}], "decision": "deny"}]},
        r"tools.t.rules\[0\].when\[0\].matches: '\(a\)\\\\1' is not a regular expression RE2 accepts",
    ),
    (
        "empty pattern list",
        {"decision": "free", "rules": [{"when": [{"arg": "c", "matches": []}], "decision": "deny"}]},
        r"tools.t.rules\[0\].when\[0\].matches: .*must be a pattern or a non-empty list",
    ),
    (
        "glob that is not text",
        {"decision": "free", "rules": [{"when": [{"arg": "p", "path": [3]}], "decision": "deny"}]},
        r"tools.t.rules\[0\].when\[0\].path: .*must be a non-empty string",
    ),
    (
        "rule name with a bidi override",
        {
            "decision": "free",
            "rules": [{"when": [{"arg": "a", "present": True}], "decision": "deny", "name": "a\u202e"}],
        },
        r"tools.t.rules\[0\].name must be a string of plain characters",
    ),
    (
        "unknown type",
        {"decision": "approval", "type": "teleport", "actions": ["a"]},
        r"tools.t.type 'teleport' is not a known authorization_details type",
    ),
    (
        "bad max_uses",
        {"decision": "approval", "type": "x", "actions": ["a"], "max_uses": 0},
        r"tools.t.max_uses must be an integer from 1 to 100",
    ),
]


@pytest.mark.parametrize(("raw", "message"), [r[1:] for r in BAD_MAPPINGS], ids=[r[0] for r in BAD_MAPPINGS])
def test_bad_mappings_are_named_configuration_errors(raw: Any, message: str) -> None:
    with pytest.raises(MappingError, match=r"^policy.toml: " + message):
        compile_mapping("t", raw, source="policy.toml", known_types=["x", "payment_initiation"])


def test_policy_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text("default = 'approval'\n")
    with pytest.raises(MappingError, match=r"p.toml: default must be 'deny' or 'free'"):
        load_policy(bad)
    broken = tmp_path / "p.json"
    broken.write_text("{")
    with pytest.raises(MappingError, match=r"p.json: not valid JSON"):
        load_policy(broken)
    with pytest.raises(MappingError, match="cannot read the policy file"):
        load_policy(tmp_path / "missing.toml")


def test_check_tool_against_its_schema() -> None:
    schema = {"properties": {"amount": {}, "currency": {}, "to": {}, "memo": {}}}
    with pytest.raises(MappingError, match=r"argument\(s\) 'memo' are not carried into the approval"):
        POLICY.check_tool("transfer", schema)
    with pytest.raises(MappingError, match=r"the tool has no argument\(s\) 'to'"):
        POLICY.check_tool("transfer", {"properties": {"amount": {}, "currency": {}}})
    POLICY.check_tool("transfer", {"properties": {"amount": {}, "currency": {}, "to": {}}})


def test_meta_mapping_and_file_precedence() -> None:
    meta = {"x-authz-mapping": {"decision": "deny"}}
    merged = POLICY.with_tool_meta([("get_balance", meta), ("new_tool", meta), ("plain", None)])
    assert merged.evaluate("get_balance", {}, subject=None).decision is Decision.FREE  # the file wins
    assert merged.evaluate("new_tool", {}, subject=None).decision is Decision.DENY
    with pytest.raises(MappingError, match=r"tool bad _meta\['x-authz-mapping'\]: tools.bad.decision is required"):
        POLICY.with_tool_meta([("bad", {"x-authz-mapping": {}})])


# text patterns: `matches`, `path`, globbed tool names ------------------------------------------

PATTERNS = Policy.from_dict(
    {
        "default": "free",
        "tools": {
            "shell": {
                "decision": "free",
                "rules": [
                    {
                        "name": "rm-root",
                        "when": [{"arg": "command", "matches": r"\brm\s+-rf\s+/(\s|$)"}],
                        "decision": "deny",
                        "reason": "never",
                    },
                    {
                        "name": "push",
                        "when": [{"arg": "command", "matches": [r"\bgit\b.*\bpush\b.*--force"]}],
                        "decision": "deny",
                    },
                ],
            },
            "write": {
                "decision": "free",
                "rules": [{"when": [{"arg": "path", "path": [".env*", "/etc/*", "deploy/*.yml"]}], "decision": "deny"}],
            },
            "mcp__prod-*": {"decision": "deny"},
            "mcp__prod-db__read": {"decision": "free"},
        },
    },
    source="p",
)


@pytest.mark.parametrize(
    ("tool", "args", "decision", "reason"),
    [
        ("shell", {"command": "ls /"}, Decision.FREE, "shell: free by policy"),
        ("shell", {"command": "cd x && rm -rf / "}, Decision.DENY, "never"),
        ("shell", {"command": "git -C a push origin --force"}, Decision.DENY, "shell: deny by policy (rule push)"),
        ("write", {"path": "/srv/app/.env.local"}, Decision.DENY, "write: deny by policy"),
        ("write", {"path": ".env"}, Decision.DENY, "write: deny by policy"),
        # `..` is resolved before matching: the path the OS would open is the one judged.
        ("write", {"path": "/srv/app/src/../../../etc/passwd"}, Decision.DENY, "write: deny by policy"),
        ("write", {"path": "repo/deploy/prod.yml"}, Decision.DENY, "write: deny by policy"),
        ("write", {"path": "/home/etc/passwd"}, Decision.FREE, "write: free by policy"),
        ("write", {"path": "/srv/deploy/sub/prod.yml"}, Decision.DENY, "write: deny by policy"),  # '*' crosses '/'
        ("mcp__prod-db__drop", {}, Decision.DENY, "mcp__prod-db__drop: deny by policy"),
        ("mcp__prod-db__read", {}, Decision.FREE, "mcp__prod-db__read: free by policy"),  # an exact name first
        ("mcp__staging-db__drop", {}, Decision.FREE, "mcp__staging-db__drop: no mapping; the policy's default is free"),
    ],
)
def test_text_patterns_decide(tool: str, args: dict[str, Any], decision: Decision, reason: str) -> None:
    evaluation = PATTERNS.evaluate(tool, args, subject=None)
    assert (evaluation.decision, evaluation.reason) == (decision, reason)


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("shell", {"command": ["rm", "-rf", "/"]}, "argument 'command' must be text"),
        ("shell", {}, "argument 'command' is missing"),
        ("write", {"path": "a\0b"}, "argument 'path' is not a usable path"),
        ("write", {"path": 7}, "argument 'path' must be text"),
    ],
)
def test_text_patterns_refuse_arguments_they_cannot_judge(tool: str, args: dict[str, Any], message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        PATTERNS.evaluate(tool, args, subject=None)


def test_a_catastrophic_pattern_answers_in_linear_time() -> None:
    """Under Python's backtracking ``re`` this search would not finish; RE2 answers at once."""
    policy = Policy.from_dict(
        {
            "tools": {
                "t": {"decision": "free", "rules": [{"when": [{"arg": "s", "matches": "^(a+)+$"}], "decision": "deny"}]}
            }
        }
    )
    assert policy.evaluate("t", {"s": "a" * 30_000 + "b"}, subject=None).decision is Decision.FREE


def test_entries_built_by_the_caller_only_when_it_says_so() -> None:
    raw = {"tools": {"t": {"decision": "approval"}}, "default": "approval"}
    with pytest.raises(MappingError, match="default must be 'deny' or 'free'"):
        Policy.from_dict(raw)
    with pytest.raises(MappingError, match=r"tools\.t\.type is required"):
        Policy.from_dict({"tools": raw["tools"]})
    policy = Policy.from_dict(raw, entry_by_caller=True)
    evaluation = policy.evaluate("t", {}, subject=None)
    assert (evaluation.decision, evaluation.entry) == (Decision.APPROVAL, None)


def test_a_glob_mapping_names_the_called_tool_in_its_entry() -> None:
    """``{tool}`` is the tool that was called, not the glob that matched it: the user approves
    ``mcp__prod-db__drop``, not ``mcp__prod-*``."""
    policy = Policy.from_dict(
        {"tools": {"mcp__prod-*": {"decision": "approval", "type": "x", "actions": ["call"], "identifier": "{tool}"}}}
    )
    evaluation = policy.evaluate("mcp__prod-db__drop", {}, subject=None)
    assert evaluation.tool == "mcp__prod-db__drop"
    assert evaluation.entry == {"type": "x", "actions": ["call"], "identifier": "mcp__prod-db__drop"}
