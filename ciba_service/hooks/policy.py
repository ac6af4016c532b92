"""Which tool calls need approval: the small interface the hooks use (:class:`ToolPolicy`, one
:data:`Decision` per call), and :class:`HookPolicy`, which implements it on the tool-call mapping
every enforcement point shares (``ciba_service.pep``: the MCP guard and the AuthZEN PDP use the
same engine).

A hook's policy file is a ``pep`` policy (``default``, ``[tools.<name>]`` with ``decision`` and
``rules``; tool names may be globs such as ``"mcp__prod-*"``) plus the hook's own keys:
``type`` (the ``authorization_details`` type of the entries the hook builds) and
``[service]`` (where to ask, read by :class:`~ciba_service.hooks.guard.ServiceConfig`). Two
condition operators exist for hooks and serve everyone: ``matches`` (regular expressions
searched in a Bash command) and ``path`` (globs on the path a write resolves to).

The entry the user approves is built here for a mapping without its own ``type``: a Bash
command one line per element, a write's resolved path, an MCP call's arguments, each shown
exactly, plus the SHA-256 of the whole tool input, so the approval binds the exact call. A
mapping with a ``type`` has its entry built by ``pep`` from its templates instead.

Evaluation is safe on hostile calls (the model chooses the tool input, and a prompt injection
can choose it for the model): nothing is executed, no file is read but the resolved path of a
write target; the input is bounded before it is looked at; every pattern runs on RE2, in time
linear in its input (no catastrophic backtracking).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import rfc8785

from ciba_service.core.security import b64url_encode
from ciba_service.pep import Decision as Outcome
from ciba_service.pep import EvaluationError, MappingError, Policy
from ciba_service.rfc9396.words import is_unsafe_char

__all__ = [
    "CLAUDE_CODE_TOOLS",
    "AgentTools",
    "Decision",
    "Denied",
    "Free",
    "HookPolicy",
    "NeedsApproval",
    "PolicyError",
    "ToolCall",
    "ToolPolicy",
    "display",
]

# Bounds on what is looked at (the model writes these; a prompt injection can make them huge).
MAX_COMMAND_CHARS = 4000  # longer commands cannot be shown for approval: denied
MAX_COMMAND_LINES = 60
MAX_ARGUMENTS_CHARS = 2000  # an MCP call's arguments, as compact JSON
MAX_PATH_CHARS = 1024
MAX_POLICY_BYTES = 64 * 1024
_HOOK_KEYS = ("type", "agent", "service")


@dataclass(frozen=True, kw_only=True)
class AgentTools:
    """What a coding agent's built-in tools are: which run a shell command (argument
    ``command``) and which write a file (tool -> the argument naming it). The hook resolves a
    write's path (symlinks followed) before the policy sees it, so a ``path`` rule matches where
    the write really lands."""

    commands: frozenset[str]
    writes: Mapping[str, str]


CLAUDE_CODE_TOOLS = AgentTools(
    commands=frozenset({"Bash"}),
    writes={"Write": "file_path", "Edit": "file_path", "MultiEdit": "file_path", "NotebookEdit": "notebook_path"},
)


class PolicyError(Exception):
    """The policy file is missing or invalid (the hook then denies: fail closed)."""


# --- the interface --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """One tool call as the agent runtime reports it."""

    tool_name: str
    tool_input: Mapping[str, Any]
    cwd: str = ""
    session_id: str = ""


@dataclass(frozen=True, kw_only=True)
class Free:
    """The policy has no objection; the agent's own permission rules still apply."""


@dataclass(frozen=True, kw_only=True)
class NeedsApproval:
    """Ask the user: request exactly ``authorization_details``; ``words`` is what the agent's
    side shows while it waits."""

    authorization_details: list[dict[str, Any]]
    words: str
    rule: str


@dataclass(frozen=True, kw_only=True)
class Denied:
    reason: str


Decision = Free | NeedsApproval | Denied


class ToolPolicy(Protocol):
    """What a hook asks of a policy; ``ciba_service.pep``'s engine is to provide it (see above)."""

    def evaluate(self, call: ToolCall) -> Decision: ...


# --- what the user is shown and signs -------------------------------------------------------


def display(text: str) -> str:
    """``text`` with every character the service refuses in signed text (control, format,
    unusual spaces) written as ``\\uXXXX``: shown as it is, never silently altered."""
    return "".join(f"\\u{ord(ch):04x}" if is_unsafe_char(ch) else ch for ch in text)


def _input_digest(tool_input: Mapping[str, Any]) -> str:
    """SHA-256 of the RFC 8785 form of the whole tool input: the approval binds the exact call,
    including what is not shown (a file's content)."""
    return b64url_encode(hashlib.sha256(rfc8785.dumps(dict(tool_input))).digest())


def _resolved(path: str, cwd: str) -> str:
    # realpath follows symlinks: writing through a link to a protected file is writing it.
    return os.path.realpath(os.path.join(cwd or "/", path))


# --- the policy -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HookPolicy:
    """A hook policy file (module docstring): ``pep``'s :class:`~ciba_service.pep.Policy` for
    the decisions, the hook's keys beside it."""

    policy: Policy
    type: str = "coding_agent_tool"
    service: Mapping[str, Any] = field(default_factory=dict)
    tools: AgentTools = CLAUDE_CODE_TOOLS

    @classmethod
    def load(cls, path: Path, *, tools: AgentTools = CLAUDE_CODE_TOOLS) -> HookPolicy:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"cannot read the policy file {path}: {exc.strerror}") from None
        if len(raw) > MAX_POLICY_BYTES:
            raise PolicyError(f"the policy file {path} is larger than {MAX_POLICY_BYTES} bytes")
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise PolicyError(f"the policy file {path} is not TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path), tools=tools)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: str = "policy", tools: AgentTools = CLAUDE_CODE_TOOLS
    ) -> HookPolicy:
        if "rules" in data and "tools" not in data:
            # The format before the hooks shared pep's mapping: say how to move, not just "unknown key".
            raise PolicyError(
                f"{source}: top-level [[rules]] are the old hook format; write [tools.<name>] tables with "
                "[[tools.<name>.rules]] (see examples/coding-agent/ciba-policy.toml)"
            )
        service = data.get("service", {})
        if not isinstance(service, dict):
            raise PolicyError(f"{source}: 'service' must be a table")
        rest = {key: value for key, value in data.items() if key not in _HOOK_KEYS}
        try:
            policy = Policy.from_dict(rest, source=source, entry_by_caller=True)
        except MappingError as exc:
            raise PolicyError(str(exc)) from None
        if "agent" in data:  # accepted for older files, checked, and not used
            _text(data["agent"], f"{source}: agent")
        return cls(
            policy=policy,
            type=_text(data.get("type", "coding_agent_tool"), f"{source}: type"),
            service=service,
            tools=tools,
        )

    def evaluate(self, call: ToolCall) -> Decision:
        command = call.tool_input.get("command") if call.tool_name in self.tools.commands else None
        # A command that is not text cannot be matched or shown; one too long to read cannot be
        # approved knowingly (and bounds the patterns' input).
        if command is not None and not isinstance(command, str):
            return Denied(reason=f"the {call.tool_name} command is not a string")
        if command is not None and len(command) > MAX_COMMAND_CHARS:
            return Denied(reason=f"the command is longer than {MAX_COMMAND_CHARS} characters, too long to check")
        path = self._path(call)
        if isinstance(path, Denied):
            return path
        arguments = dict(call.tool_input)
        if path is not None:
            arguments[self.tools.writes[call.tool_name]] = path
        mapping = self.policy.mapping_for(call.tool_name)
        if mapping is not None and not mapping.entry:
            # Only what the conditions read: a 1 MB file a Write carries is hashed into the
            # approval (input_sha256) but never handed to the pattern engine.
            arguments = {name: arguments[name] for name in mapping.condition_args if name in arguments}
        try:
            evaluation = self.policy.evaluate(call.tool_name, arguments, subject=None)
        except EvaluationError as exc:
            return Denied(reason=f"{call.tool_name}: {exc}")
        if evaluation.decision is Outcome.FREE:
            return Free()
        if evaluation.decision is Outcome.DENY:
            return Denied(reason=evaluation.reason)
        rule = evaluation.rule or (mapping.tool if mapping is not None else "default")
        if evaluation.entry is not None:
            # The mapping describes the call itself (its own type and templates).
            return NeedsApproval(
                authorization_details=evaluation.authorization_details, words=evaluation.words, rule=rule
            )
        return self._request(call, rule=rule, command=command, path=path)

    def _path(self, call: ToolCall) -> str | Denied | None:
        if call.tool_name not in self.tools.writes:
            return None
        raw = call.tool_input.get(self.tools.writes[call.tool_name])
        # A NUL would cut the path the OS opens short of the one matched; an empty or huge one is
        # no path anyone can be shown.
        if not isinstance(raw, str) or not raw or len(raw) > MAX_PATH_CHARS or "\0" in raw:
            return Denied(reason=f"{call.tool_name} names no usable file path")
        return _resolved(raw, call.cwd)

    def _request(self, call: ToolCall, *, rule: str, command: str | None, path: str | None) -> Decision:
        entry: dict[str, Any] = {"type": self.type, "identifier": display(call.tool_name)}
        if command is not None:
            lines = command.splitlines() or [""]
            # Every line is shown: a command too long to show is refused, never shown cut.
            if len(lines) > MAX_COMMAND_LINES:
                return Denied(reason=f"the command has more than {MAX_COMMAND_LINES} lines, too long to show")
            entry["actions"] = ["run"]
            # One line per element, each shown exactly (escapes only for control characters).
            entry["command"] = [display(line) or " " for line in lines]
            what = "; ".join(entry["command"])
        elif path is not None:
            entry["actions"] = ["write"]
            entry["path"] = display(path)
            what = entry["path"]
        else:
            try:
                arguments = json.dumps(
                    dict(call.tool_input), sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False
                )
            except (TypeError, ValueError):
                return Denied(reason="the tool input is not plain JSON")
            # Shown whole or not at all: a truncated view could hide the argument that matters.
            if len(arguments) > MAX_ARGUMENTS_CHARS:
                return Denied(reason=f"the tool arguments are longer than {MAX_ARGUMENTS_CHARS} characters to show")
            entry["actions"] = ["call"]
            # Not ASCII-escaped: display() escapes what could mislead and keeps what reads.
            entry["arguments"] = display(arguments)
            what = entry["arguments"]
        if call.cwd:
            entry["cwd"] = display(call.cwd[:MAX_PATH_CHARS])
        entry["rule"] = display(rule)
        try:
            entry["input_sha256"] = _input_digest(call.tool_input)
        except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError, TypeError):
            return Denied(reason="the tool input has no canonical JSON form (RFC 8785)")
        words = f"{entry['actions'][0]} {entry['identifier']}: {what}"
        return NeedsApproval(authorization_details=[entry], words=words, rule=rule)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or any(is_unsafe_char(ch) for ch in value):
        raise PolicyError(f"'{name}' must be a non-empty string of plain characters")
    return value
