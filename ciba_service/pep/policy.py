"""A policy: the tool-call mappings by tool name, from a policy file (TOML or JSON) and from
MCP tools' own metadata (``_meta["x-authz-mapping"]``), plus what happens to a tool nobody
mapped (``default``: ``deny`` unless said otherwise).

Policy file::

    default = "deny"                     # or "free"; never "approval" (there is no entry to ask for)

    [tools.get_balance]
    decision = "free"

    [tools.transfer]
    decision = "approval"
    type = "payment_initiation"
    actions = ["initiate"]
    words = "Transfer {args.amount} {args.currency} to {args.to}"
    [tools.transfer.fields]
    creditorName = "{args.to}"
    instructedAmount = { currency = "{args.currency}", amount = "{args.amount|string}" }

A tool name may be a glob (``[tools."mcp__prod-*"]``): a call takes the mapping of its exact
name, else of the first glob (in file order) its name matches.

A tool mapped in both places takes the policy file's mapping (the operator's word over the tool
author's); :meth:`Policy.check_tool` checks a mapping against the tool's input schema.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ciba_service.pep.mapping import Decision, Evaluation, MappingError, ToolMapping, compile_mapping
from ciba_service.pep.patterns import Glob, PatternError, compile_globs, is_glob

__all__ = ["META_KEY", "Policy", "load_policy"]

META_KEY = "x-authz-mapping"
_POLICY_KEYS = frozenset({"default", "tools"})


@dataclass(frozen=True, kw_only=True)
class Policy:
    tools: Mapping[str, ToolMapping] = field(default_factory=dict)
    default: Decision = Decision.DENY
    # The tool names that are globs, compiled, in file order.
    patterns: tuple[tuple[Glob, ToolMapping], ...] = ()

    @classmethod
    def from_dict(
        cls,
        raw: Any,
        *,
        source: str = "policy",
        known_types: Sequence[str] | None = None,
        entry_by_caller: bool = False,
    ) -> Policy:
        """``entry_by_caller``: see :func:`~ciba_service.pep.mapping.compile_mapping`; such a
        policy may also default to ``approval`` (the caller builds the entry to ask for)."""
        if not isinstance(raw, Mapping):
            raise MappingError(f"{source}: a policy must be a table (object)")
        unknown = sorted(set(raw) - _POLICY_KEYS)
        if unknown:
            raise MappingError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}")
        default = raw.get("default", "deny")
        defaults = ("deny", "free", "approval") if entry_by_caller else ("deny", "free")
        if default not in defaults:
            raise MappingError(f"{source}: default must be {' or '.join(map(repr, defaults))}, not {default!r}")
        tools = raw.get("tools", {})
        if not isinstance(tools, Mapping):
            raise MappingError(f"{source}: tools must be a table of tool names")
        compiled = {
            str(name): compile_mapping(
                str(name), value, source=source, known_types=known_types, entry_by_caller=entry_by_caller
            )
            for name, value in tools.items()
        }
        patterns = []
        for name, mapping in compiled.items():
            if is_glob(name):
                try:
                    (glob,) = compile_globs(name, f"{source}: tools.{name}", paths=False)
                except PatternError as exc:
                    raise MappingError(f"{source}: tools.{name}: {exc}") from None
                patterns.append((glob, mapping))
        return cls(tools=compiled, default=Decision(default), patterns=tuple(patterns))

    def with_tool_meta(
        self, tools: Iterable[tuple[str, Mapping[str, Any] | None]], *, known_types: Sequence[str] | None = None
    ) -> Policy:
        """This policy plus the mappings that tools declare in their ``_meta`` (name, meta)."""
        merged = dict(self.tools)
        for name, meta in tools:
            raw = (meta or {}).get(META_KEY)
            if raw is None or name in merged:
                continue
            merged[name] = compile_mapping(
                name, raw, source=f"tool {name} _meta[{META_KEY!r}]", known_types=known_types
            )
        return replace(self, tools=merged)

    def mapping_for(self, tool: str) -> ToolMapping | None:
        """The mapping of ``tool``: its exact name's, else the first glob's it matches."""
        mapping = self.tools.get(tool)
        if mapping is not None:
            return mapping
        return next((candidate for glob, candidate in self.patterns if glob.match(tool)), None)

    def evaluate(self, tool: str, args: Any, *, subject: str | None) -> Evaluation:
        """The decision for one call; an unmapped tool gets ``default``. Raises
        :class:`~ciba_service.pep.templates.EvaluationError` for arguments that do not fit."""
        mapping = self.mapping_for(tool)
        if mapping is None:
            reason = f"{tool}: no mapping; the policy's default is {self.default.value}"
            return Evaluation(tool=tool, decision=self.default, reason=reason)
        return mapping.evaluate(args, subject=subject, tool=tool)

    def check_tool(self, tool: str, input_schema: Mapping[str, Any] | None) -> None:
        """Configuration check of ``tool``'s mapping against its JSON Schema: every argument a
        template or rule reads must exist, and every argument the tool takes must be carried
        into the approval or listed in ``unbound_args``."""
        mapping = self.mapping_for(tool)
        if mapping is None:
            return
        properties = (input_schema or {}).get("properties") or {}
        names = set(properties) if isinstance(properties, Mapping) else set()
        where = f"{mapping.source}: tools.{tool}"
        read = mapping.bound_args | mapping.condition_args | mapping.unbound_args
        unknown = sorted(read - names)
        if unknown:
            raise MappingError(f"{where}: the tool has no argument(s) {', '.join(map(repr, unknown))}")
        needs_approval = mapping.decision is Decision.APPROVAL or any(
            rule.decision is Decision.APPROVAL for rule in mapping.rules
        )
        if needs_approval:
            unbound = sorted(names - mapping.bound_args - mapping.unbound_args)
            if unbound:
                # An argument outside the approval could change what runs without the user
                # having seen it ("memo", "dry_run": false); say so at start, not after an incident.
                raise MappingError(
                    f"{where}: argument(s) {', '.join(map(repr, unbound))} are not carried into the approval; "
                    "reference them in the entry or words, or list them in unbound_args"
                )


def load_policy(path: Path, *, known_types: Sequence[str] | None = None) -> Policy:
    """Read a policy file (``.toml`` or ``.json``); :class:`MappingError` names the file."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{source}: cannot read the policy file ({exc.strerror})") from None
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MappingError(
            f"{source}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}"
        ) from None
    return Policy.from_dict(raw, source=source, known_types=known_types)
