"""Claude Code's ``PreToolUse`` hook: ``ciba-service hook claude-code``.

What this relies on, from Claude Code's hooks documentation (the "Hooks reference"):

- **Input**, one JSON object on stdin: ``hook_event_name`` (``"PreToolUse"``), ``tool_name``
  (``"Bash"``, ``"Write"``, ``"Edit"``, ``"MultiEdit"``, ``"NotebookEdit"``, ``"mcp__<server>__<tool>"``,
  ...), ``tool_input`` (the tool's arguments: ``command`` for Bash, ``file_path`` for
  Write/Edit/MultiEdit, ``notebook_path`` for NotebookEdit), ``session_id``, ``cwd``. Also sent and
  not used: ``transcript_path``, ``permission_mode``, ``tool_use_id``.
- **Output**, exit code 0 and on stdout ``{"hookSpecificOutput": {"hookEventName": "PreToolUse",
  "permissionDecision": "allow" | "deny" | "ask", "permissionDecisionReason": "..."}}``: ``deny``
  stops the call and the reason is shown to Claude; ``allow`` runs it without a permission prompt,
  the reason shown to the user. No output with exit 0 leaves the decision to Claude Code's own
  permission rules (this hook's answer for a call its policy does not object to).
- **Exit codes**: 2 is a blocking error (the call is stopped, stderr goes to Claude); any other
  non-zero code is a *non-blocking* error and the call **runs**. So this hook exits 0 (with its
  decision) or 2, never anything else, and the documented settings wrap it as
  ``ciba-service hook claude-code || exit 2`` so that even a failure to start blocks.
- **Timeout**: Claude Code stops a hook after the hook's ``timeout`` setting (60 s by default);
  the policy's ``[service] timeout`` must be shorter (by 30 s: a last poll and the key fetch take
  up to 10 s each), so the hook answers *deny* itself rather than being cut off.

Everything fails closed: an event that is too large or malformed, a broken policy file, an
unreachable service, a timeout, an error of any kind is answered with ``deny`` and a reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from ciba_service.hooks.guard import Guard, ServiceConfig, Verdict
from ciba_service.hooks.policy import HookPolicy, PolicyError, ToolCall, display

__all__ = ["MAX_EVENT_BYTES", "read_event", "run"]

# A PreToolUse event carries the tool input (a Write's whole file): generous, but bounded.
MAX_EVENT_BYTES = 4 * 1024 * 1024
_MAX_NAME = 256


class EventError(Exception):
    """The event on stdin is not a PreToolUse event this hook can read."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_event(raw: bytes) -> ToolCall | None:
    """The tool call in a hook event; None for another event (nothing to decide)."""
    # Bounded before parsing: a huge tool input must not stall the hook past its deadline.
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"the hook event is larger than {MAX_EVENT_BYTES} bytes")
    try:
        # NaN/Infinity are not JSON and have no canonical form to bind the approval to.
        event = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise EventError("the hook event is not JSON") from None
    if not isinstance(event, dict):
        raise EventError("the hook event is not a JSON object")
    if event.get("hook_event_name") != "PreToolUse":
        return None
    tool_name, tool_input = event.get("tool_name"), event.get("tool_input")
    if not isinstance(tool_name, str) or not tool_name or len(tool_name) > _MAX_NAME:
        raise EventError("the hook event has no tool_name")
    # Anything but an object cannot be the documented tool input: deny rather than guess.
    if not isinstance(tool_input, dict):
        raise EventError("the hook event's tool_input is not an object")
    cwd, session_id = event.get("cwd", ""), event.get("session_id", "")
    return ToolCall(
        tool_name=tool_name,
        tool_input=tool_input,
        cwd=cwd if isinstance(cwd, str) else "",
        session_id=session_id[:_MAX_NAME] if isinstance(session_id, str) else "",
    )


def _output(verdict: Verdict) -> dict[str, Any] | None:
    if verdict.decision == "defer":
        return None
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": verdict.decision,
            "permissionDecisionReason": verdict.reason,
        }
    }


def run(
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
    *,
    policy_path: Path,
    environ: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Read one event, decide, write the answer; the exit code (0, or 2 if even that failed)."""

    def say(line: str) -> None:
        print(line, file=stderr, flush=True)

    try:
        call = read_event(stdin.read(MAX_EVENT_BYTES + 1))
        if call is None:
            return 0
        policy = HookPolicy.load(policy_path)
        guard = Guard(
            policy=policy,
            service=lambda: ServiceConfig.from_mapping(policy.service, environ),
            say=say,
            transport=transport,
        )
        verdict = guard.check(call)
    except (EventError, PolicyError) as exc:
        verdict = Verdict(decision="deny", reason=f"ciba-service: {display(str(exc))}; refused (fail closed)")
    except Exception as exc:  # any failure denies: a hook that crashes must not let the call run
        verdict = Verdict(decision="deny", reason=f"ciba-service hook error ({type(exc).__name__}); refused")
    output = _output(verdict)
    if output is None:
        return 0
    try:
        stdout.write(json.dumps(output))
        stdout.flush()
    except (OSError, ValueError):
        say(verdict.reason)
        return 2  # a blocking error: the call is stopped even if the JSON could not be written
    return 0
