"""GitHub Copilot CLI's ``preToolUse`` hook: ``ciba-service hook copilot``.

What this relies on, from the Copilot CLI hooks reference (docs.github.com, "GitHub Copilot CLI
hooks reference") and its hooks tutorial:

- **Configuration**: ``.github/hooks/*.json``, ``{"version": 1, "hooks": {"preToolUse": [{"type":
  "command", "bash": "...", "timeoutSec": N}]}}``.
- **Input**, one JSON object on stdin. With the event configured as ``preToolUse`` (camelCase):
  ``sessionId``, ``timestamp``, ``cwd``, ``toolName`` (``bash``, ``powershell``, ``create``,
  ``edit``, ``view``, ..., MCP tools by their names) and ``toolArgs``, the tool's arguments, which
  the tutorial shows as a *JSON string* to parse (``{"command": "..."}`` for ``bash``); with the
  event configured as ``PreToolUse`` (VS Code compatible): ``hook_event_name``, ``session_id``,
  ``cwd``, ``tool_name``, ``tool_input``. Both are read; a string ``toolArgs`` is parsed, and
  anything that does not parse to an object is denied.
- **Output** on stdout: ``{"permissionDecision": "allow" | "deny" | "ask",
  "permissionDecisionReason": "..."}``; empty output leaves the default behaviour (this hook's
  answer for a call its policy does not object to).
- **Failures open**: "hook failures (non-zero exit codes or timeouts) are logged and skipped,
  they never block agent execution". So this hook always answers with JSON and exit 0 (a
  ``deny`` for any failure), and the policy's ``[service] timeout`` must be shorter than the
  hook's ``timeoutSec`` (by 30 s): a hook cut off by its timeout lets the call run.
- **Arguments of the file tools** are not in the reference: ``create`` and ``edit`` are read as
  naming their file in ``path``; a ``create``/``edit`` call without a usable ``path`` is denied,
  so a change in that format denies rather than lets a write through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import httpx

from ciba_service.hooks.guard import Verdict
from ciba_service.hooks.policy import AgentTools, ToolCall
from ciba_service.hooks.wire import MAX_EVENT_BYTES, Dialect, EventError, parse_event, run_hook, tool_call

__all__ = ["COPILOT_TOOLS", "DIALECT", "MAX_EVENT_BYTES", "read_event", "run"]

COPILOT_TOOLS = AgentTools(commands=frozenset({"bash", "powershell"}), writes={"create": "path", "edit": "path"})


def read_event(raw: bytes) -> ToolCall | None:
    """The tool call in a pre-tool event (either payload format)."""
    event = parse_event(raw)
    if "hook_event_name" in event:  # the VS Code compatible format
        if event["hook_event_name"] != "PreToolUse":
            return None
        return tool_call(event, name="tool_name", input="tool_input", cwd="cwd", session="session_id")
    if "toolName" not in event:
        return None  # another event in the camelCase format (no tool): nothing to decide
    arguments = event.get("toolArgs")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments, parse_constant=_not_json)
        except (ValueError, RecursionError):
            raise EventError("the hook event's toolArgs is not JSON") from None
    return tool_call(event, name="toolName", input="toolArgs", cwd="cwd", session="sessionId", tool_input=arguments)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _output(verdict: Verdict) -> dict[str, Any] | None:
    if verdict.decision == "defer":
        return None
    return {"permissionDecision": verdict.decision, "permissionDecisionReason": verdict.reason}


DIALECT = Dialect(name="copilot", read_event=read_event, output=_output, tools=COPILOT_TOOLS)


def run(
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
    *,
    policy_path: Path,
    environ: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Read one event, decide, write the answer; always exit 0 (Copilot CLI runs the call after
    any other exit code, so the answer is the only way to stop it)."""
    run_hook(DIALECT, stdin, stdout, stderr, policy_path=policy_path, environ=environ, transport=transport)
    return 0
