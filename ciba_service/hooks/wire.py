"""What every coding agent's hook does around the decision, whatever its wire format: read one
bounded JSON event from stdin, load the policy, ask the :class:`~ciba_service.hooks.guard.Guard`,
write the answer, and deny on any failure (fail closed). A :class:`Dialect` is the agent's wire
format: how to read its event and how to write its answer (``claude_code``, ``copilot``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from ciba_service.hooks.guard import Guard, ServiceConfig, Verdict
from ciba_service.hooks.policy import AgentTools, HookPolicy, PolicyError, ToolCall, display

__all__ = ["MAX_EVENT_BYTES", "Dialect", "EventError", "parse_event", "run_hook", "tool_call"]

# A pre-tool event carries the tool input (a Write's whole file): generous, but bounded.
MAX_EVENT_BYTES = 4 * 1024 * 1024
_MAX_NAME = 256


class EventError(Exception):
    """The event on stdin is not a pre-tool event this hook can read."""


@dataclass(frozen=True, kw_only=True)
class Dialect:
    name: str
    read_event: Callable[[bytes], ToolCall | None]  # None: another event, nothing to decide
    output: Callable[[Verdict], dict[str, Any] | None]  # None: write nothing
    tools: AgentTools


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_event(raw: bytes) -> dict[str, Any]:
    """The event as a JSON object, or :class:`EventError`."""
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
    return event


def tool_call(
    event: Mapping[str, Any], *, name: str, input: str, cwd: str, session: str, tool_input: Any = None
) -> ToolCall:
    """A checked :class:`ToolCall` from an event's fields (their names in this wire format);
    ``tool_input`` when the dialect has decoded it already."""
    tool_name = event.get(name)
    tool_input = event.get(input) if tool_input is None else tool_input
    if not isinstance(tool_name, str) or not tool_name or len(tool_name) > _MAX_NAME:
        raise EventError(f"the hook event has no {name}")
    # Anything but an object cannot be the documented tool input: deny rather than guess.
    if not isinstance(tool_input, dict):
        raise EventError(f"the hook event's {input} is not an object")
    cwd_value, session_id = event.get(cwd, ""), event.get(session, "")
    return ToolCall(
        tool_name=tool_name,
        tool_input=tool_input,
        cwd=cwd_value if isinstance(cwd_value, str) else "",
        session_id=session_id[:_MAX_NAME] if isinstance(session_id, str) else "",
    )


def run_hook(
    dialect: Dialect,
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
        call = dialect.read_event(stdin.read(MAX_EVENT_BYTES + 1))
        if call is None:
            return 0
        policy = HookPolicy.load(policy_path, tools=dialect.tools)
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
    output = dialect.output(verdict)
    if output is None:
        return 0
    try:
        stdout.write(json.dumps(output))
        stdout.flush()
    except (OSError, ValueError):
        say(verdict.reason)
        return 2  # a blocking error for agents that honour it (Claude Code)
    return 0
