"""Which tool calls need approval: the small interface the hooks use (:class:`ToolPolicy`, one
:data:`Decision` per call), and a minimal policy file behind it (:class:`PolicyFile`).

**The adapter to replace.** DESIGN.md calls for one declarative tool-call mapping shared by
every enforcement point (MCP guard, AuthZEN PDP, hooks): ``ciba_service.pep``. It has landed, but
its conditions compare an argument with a literal (``eq``, ``in``, ``lt``, ...), and a coding-agent
hook needs two things it cannot say yet: a pattern searched in a Bash command (``git push
--force`` anywhere in ``cd x && git push origin +main``) and a glob on the path a write resolves
to (symlinks followed). Until ``pep``'s conditions have those (a bounded ``matches`` and a
``path`` operator), :class:`PolicyFile` implements :class:`ToolPolicy` with just what the hook
needs: rules by tool name (globs, ``mcp__server__*``), by Bash command (regular expressions) and
by written path (globs); first matching rule wins. Then wrap ``pep``'s ``ToolMapping.evaluate``
in a :class:`ToolPolicy` and delete :class:`PolicyFile`; the hooks depend only on the interface.

Evaluation is safe on hostile calls (the model chooses the tool input, and a prompt injection
can choose it for the model): nothing is executed, no file is read but the resolved path of a
write target; the input is bounded before it is looked at; every regular expression runs under
a time budget (:func:`deadline`), and a call whose evaluation runs out of it is denied.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
import threading
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol

import rfc8785

from ciba_service.core.security import b64url_encode
from ciba_service.rfc9396.words import is_unsafe_char

__all__ = [
    "Decision",
    "Denied",
    "Free",
    "NeedsApproval",
    "PolicyError",
    "PolicyFile",
    "Rule",
    "ToolCall",
    "ToolPolicy",
    "deadline",
    "display",
]

# Bounds on what is looked at (the model writes these; a prompt injection can make them huge).
MAX_COMMAND_CHARS = 4000  # longer commands cannot be shown for approval: denied
MAX_COMMAND_LINES = 60
MAX_ARGUMENTS_CHARS = 2000  # an MCP call's arguments, as compact JSON
MAX_PATH_CHARS = 1024
MAX_POLICY_BYTES = 64 * 1024
MAX_RULES = 200
# Wall-clock budget for evaluating one call (all regular expressions and globs together).
EVALUATION_BUDGET = 1.0
WRITE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")


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


# --- evaluation under a budget ---------------------------------------------------------------


class _OutOfTime(Exception):
    pass


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise inside the block once ``seconds`` of wall-clock time have passed (SIGALRM; the
    regular-expression engine checks for signals, so a catastrophic backtrack is interrupted).
    Outside the main thread, or where SIGALRM does not exist, the block runs unbounded."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- what the user is shown and signs -------------------------------------------------------


def display(text: str) -> str:
    """``text`` with every character the service refuses in signed text (control, format,
    unusual spaces) written as ``\\uXXXX``: shown as it is, never silently altered."""
    return "".join(f"\\u{ord(ch):04x}" if is_unsafe_char(ch) else ch for ch in text)


def _input_digest(tool_input: Mapping[str, Any]) -> str:
    """SHA-256 of the RFC 8785 form of the whole tool input: the approval binds the exact call,
    including what is not shown (a file's content)."""
    import hashlib

    return b64url_encode(hashlib.sha256(rfc8785.dumps(dict(tool_input))).digest())


def _resolved(path: str, cwd: str) -> str:
    # realpath follows symlinks: writing through a link to a protected file is writing it.
    return os.path.realpath(os.path.join(cwd or "/", path))


# --- the policy file ------------------------------------------------------------------------

Outcome = Literal["free", "approve", "deny"]


@dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    decision: Outcome
    tools: tuple[str, ...]
    commands: tuple[re.Pattern[str], ...] = ()
    paths: tuple[str, ...] = ()
    reason: str = ""

    def matches(self, call: ToolCall, *, command: str | None, path: str | None) -> bool:
        if not any(fnmatch.fnmatchcase(call.tool_name, tool) for tool in self.tools):
            return False
        if self.commands and (command is None or not any(p.search(command) for p in self.commands)):
            return False
        return not self.paths or (path is not None and any(fnmatch.fnmatchcase(path, p) for p in self.paths))


@dataclass(frozen=True, kw_only=True)
class PolicyFile:
    """A TOML policy: ``default`` (``free``, ``approve`` or ``deny``) for calls no rule matches,
    the ``type`` of the ``authorization_details`` requested, and ``[[rules]]`` (``name``,
    ``tool``, ``command``, ``path``, ``decision``, ``reason``). ``[service]`` is read by the hook.

    THE ADAPTER TO BE REPLACED by ``ciba_service.pep``'s tool-call mapping (module docstring)."""

    rules: tuple[Rule, ...]
    default: Outcome = "free"
    type: str = "coding_agent_tool"
    agent: str = "coding agent"
    service: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> PolicyFile:
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
        return cls.from_mapping(data)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PolicyFile:
        unknown = set(data) - {"default", "type", "agent", "service", "rules"}
        if unknown:
            raise PolicyError(f"unknown policy keys: {', '.join(sorted(unknown))}")
        rules = data.get("rules", [])
        if not isinstance(rules, list) or len(rules) > MAX_RULES:
            raise PolicyError(f"'rules' must be a list of at most {MAX_RULES} tables")
        service = data.get("service", {})
        if not isinstance(service, dict):
            raise PolicyError("'service' must be a table")
        return cls(
            rules=tuple(_rule(index, rule) for index, rule in enumerate(rules)),
            default=_outcome(data.get("default", "free"), "default"),
            type=_text(data.get("type", "coding_agent_tool"), "type"),
            agent=_text(data.get("agent", "coding agent"), "agent"),
            service=service,
        )

    def evaluate(self, call: ToolCall) -> Decision:
        try:
            with deadline(EVALUATION_BUDGET):
                return self._evaluate(call)
        except _OutOfTime:
            return Denied(reason=f"the policy took longer than {EVALUATION_BUDGET} s to evaluate this call")

    def _evaluate(self, call: ToolCall) -> Decision:
        command = call.tool_input.get("command") if call.tool_name == "Bash" else None
        # A command that is not text cannot be matched or shown; one too long to read cannot be
        # approved knowingly (and bounds the regular expressions' input).
        if command is not None and not isinstance(command, str):
            return Denied(reason="the Bash command is not a string")
        if command is not None and len(command) > MAX_COMMAND_CHARS:
            return Denied(reason=f"the command is longer than {MAX_COMMAND_CHARS} characters, too long to check")
        path = self._path(call)
        if isinstance(path, Denied):
            return path
        for rule in self.rules:
            if rule.matches(call, command=command, path=path):
                return self._decide(rule.decision, call, rule=rule.name, reason=rule.reason, command=command, path=path)
        return self._decide(self.default, call, rule="default", reason="", command=command, path=path)

    @staticmethod
    def _path(call: ToolCall) -> str | Denied | None:
        if call.tool_name not in WRITE_TOOLS:
            return None
        raw = call.tool_input.get("notebook_path" if call.tool_name == "NotebookEdit" else "file_path")
        # A NUL would cut the path the OS opens short of the one matched; an empty or huge one is
        # no path anyone can be shown.
        if not isinstance(raw, str) or not raw or len(raw) > MAX_PATH_CHARS or "\0" in raw:
            return Denied(reason=f"{call.tool_name} names no usable file path")
        return _resolved(raw, call.cwd)

    def _decide(
        self, outcome: Outcome, call: ToolCall, *, rule: str, reason: str, command: str | None, path: str | None
    ) -> Decision:
        if outcome == "free":
            return Free()
        if outcome == "deny":
            return Denied(reason=reason or f"the policy forbids this call (rule {rule})")
        return self._request(call, rule=rule, command=command, path=path)

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


def _outcome(value: Any, name: str) -> Outcome:
    if value in ("free", "approve", "deny"):
        return value  # type: ignore[no-any-return]
    raise PolicyError(f"'{name}' must be 'free', 'approve' or 'deny', not {value!r}")


def _strings(value: Any, name: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
        raise PolicyError(f"'{name}' must be a non-empty string or list of strings")
    return tuple(items)


def _rule(index: int, rule: Any) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(rule, dict):
        raise PolicyError(f"{where} must be a table")
    unknown = set(rule) - {"name", "tool", "command", "path", "decision", "reason"}
    if unknown:
        raise PolicyError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    name = _text(rule.get("name", f"rule-{index}"), f"{where}.name")
    commands: list[re.Pattern[str]] = []
    for pattern in _strings(rule["command"], f"{where}.command") if "command" in rule else ():
        try:
            commands.append(re.compile(pattern))
        except re.error as exc:
            raise PolicyError(f"{where}.command: {pattern!r} is not a regular expression: {exc}") from None
    paths = _strings(rule["path"], f"{where}.path") if "path" in rule else ()
    # A relative glob matches at any depth ("*.tf" is any .tf file); an absolute one as written.
    paths = tuple(p if p.startswith("/") else f"*/{p.removeprefix('**/')}" for p in paths)
    return Rule(
        name=name,
        decision=_outcome(rule.get("decision", "approve"), f"{where}.decision"),
        tools=_strings(rule.get("tool", "*"), f"{where}.tool"),
        commands=tuple(commands),
        paths=paths,
        reason=_text(rule["reason"], f"{where}.reason") if "reason" in rule else "",
    )
