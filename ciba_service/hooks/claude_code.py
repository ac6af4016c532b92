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

from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from ciba_service.hooks.guard import Verdict
from ciba_service.hooks.policy import CLAUDE_CODE_TOOLS, ToolCall
from ciba_service.hooks.wire import MAX_EVENT_BYTES, Dialect, parse_event, run_hook, tool_call

__all__ = ["DIALECT", "MAX_EVENT_BYTES", "read_event", "run"]


def read_event(raw: bytes) -> ToolCall | None:
    """The tool call in a hook event; None for another event (nothing to decide)."""
    event = parse_event(raw)
    if event.get("hook_event_name") != "PreToolUse":
        return None
    return tool_call(event, name="tool_name", input="tool_input", cwd="cwd", session="session_id")


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


DIALECT = Dialect(name="claude-code", read_event=read_event, output=_output, tools=CLAUDE_CODE_TOOLS)


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
    return run_hook(DIALECT, stdin, stdout, stderr, policy_path=policy_path, environ=environ, transport=transport)
