"""The tool-call mapping: per tool, whether a call is free, needs the user's approval or is
denied, and for approvals the RFC 9396 ``authorization_details`` entry built from the call's
arguments, with the words shown to the user. One engine for every enforcement point (the MCP
guard, the AuthZEN PDP, coding-agent hooks).

A mapping is plain data (a policy file table or an MCP tool's ``_meta["x-authz-mapping"]``)::

    {"decision": "approval",
     "type": "payment_initiation", "actions": ["initiate"],
     "fields": {"instructedAmount": {"currency": "{args.currency}", "amount": "{args.amount|string}"},
                "creditorName": "{args.to}"},
     "words": "Transfer {args.amount} {args.currency} to {args.to}",
     "rules": [{"when": [{"arg": "amount", "lte": 10}], "decision": "free"}]}

Everything is checked when the mapping is loaded (:func:`compile_mapping` raises
:class:`MappingError` naming the tool and the field); a call is evaluated by
:meth:`ToolMapping.evaluate` without running any code (see :mod:`~ciba_service.pep.templates`).
"""

from __future__ import annotations

import enum
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ciba_service.pep.patterns import (
    Glob,
    PatternError,
    Regex,
    any_glob,
    compile_globs,
    compile_regexes,
    normal_path,
)
from ciba_service.pep.templates import (
    CallScope,
    EvaluationError,
    Template,
    TemplateError,
    argument_names,
    check_arguments,
    compile_value,
    render_value,
)
from ciba_service.rfc9396 import PLAN_FIELDS, RESERVED_FIELDS, is_unsafe_char

__all__ = [
    "Condition",
    "Decision",
    "Evaluation",
    "MappingError",
    "Rule",
    "ToolMapping",
    "compile_mapping",
    "new_binding_message",
    "safe_words",
]

MAX_WORDS = 300
_OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "present", "absent", "matches", "path")
_MAPPING_KEYS = frozenset(
    {"decision", "type", "actions", "identifier", "locations", "datatypes", "privileges", "fields", "words"}
    | {"rules", "unbound_args", "max_uses"}
)
_LIST_FIELDS = ("actions", "locations", "datatypes", "privileges")
_RULE_KEYS = frozenset({"when", "decision", "name", "reason"})


class MappingError(ValueError):
    """A mapping is malformed: a configuration error, raised at start and naming where."""


class Decision(enum.StrEnum):
    FREE = "free"  # runs without asking
    APPROVAL = "approval"  # runs only with the user's passkey approval of the built entry
    DENY = "deny"  # never runs


@dataclass(frozen=True, kw_only=True)
class Condition:
    """``{"arg": "amount", "lte": 10}``: one comparison of one argument with a literal.

    Two operators look inside text: ``matches`` (a regular expression, or a list of them, searched
    anywhere in the argument: ``{"arg": "command", "matches": '\\bkubectl\\b.*\\sdelete\\b'}``) and
    ``path`` (globs on a path argument after ``..`` is resolved; a relative glob matches at any
    depth: ``{"arg": "file_path", "path": ["*.tf", ".env*", "/etc/*"]}``). Both run on RE2, in
    time linear in the argument (:mod:`~ciba_service.pep.patterns`)."""

    arg: tuple[str, ...]
    operator: str
    value: Any

    def holds(self, args: Mapping[str, Any]) -> bool:
        present, actual = _dig(args, self.arg)
        if self.operator in ("present", "absent"):
            return present == (self.operator == "present")
        name = ".".join(self.arg)
        if not present:
            raise EvaluationError(f"argument {name!r} is missing")
        if self.operator in ("matches", "path"):
            # Text only: a number or an object is not searched as its JSON form, which an
            # author of a pattern would not have had in mind.
            if not isinstance(actual, str):
                raise EvaluationError(f"argument {name!r} must be text")
            if self.operator == "path":
                # A NUL cuts the path the OS opens short of the one matched.
                if not actual or "\0" in actual:
                    raise EvaluationError(f"argument {name!r} is not a usable path")
                return any_glob(self.value, normal_path(actual))
            return any(regex.search(actual) for regex in self.value)
        if self.operator == "eq":
            return _same(actual, self.value)
        if self.operator == "ne":
            return not _same(actual, self.value)
        if self.operator in ("in", "not_in"):
            inside = any(_same(actual, option) for option in self.value)
            return inside == (self.operator == "in")
        # Ordering only between numbers, or between strings: comparing "5000" with 1000 (or a
        # bool with a number) is an error, so a type confusion can never slip past a threshold.
        if _is_number(self.value):
            if not _is_number(actual):
                raise EvaluationError(f"argument {name!r} must be a number")
        elif not isinstance(actual, str):
            raise EvaluationError(f"argument {name!r} must be text")
        return bool(
            {"lt": actual < self.value, "lte": actual <= self.value, "gt": actual > self.value}.get(
                self.operator, actual >= self.value
            )
        )


@dataclass(frozen=True, kw_only=True)
class Rule:
    """``{"when": [conditions...], "decision": "free"}``: all conditions hold, that decision.
    Optional ``name`` (shown to the user and carried into the approval) and ``reason`` (the
    answer to a denied call)."""

    when: tuple[Condition, ...]
    decision: Decision
    name: str = ""
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """What a mapping says about one call."""

    tool: str
    decision: Decision
    # For Decision.APPROVAL: the authorization_details entry to request and the words to show.
    entry: dict[str, Any] | None = None
    words: str = ""
    reason: str = ""
    rule: str = ""  # the name of the rule that decided ("" for the tool's own decision)

    @property
    def authorization_details(self) -> list[dict[str, Any]]:
        return [self.entry] if self.entry is not None else []


@dataclass(frozen=True, kw_only=True)
class ToolMapping:
    tool: str
    decision: Decision
    rules: tuple[Rule, ...] = ()
    entry: Mapping[str, Any] = field(default_factory=dict)  # compiled (templates inside)
    words: Template | None = None
    unbound_args: frozenset[str] = frozenset()
    source: str = ""  # where it was loaded from, for messages

    @property
    def bound_args(self) -> frozenset[str]:
        """The arguments whose values the approval carries (or shows)."""
        names = argument_names(self.entry)
        if self.words is not None:
            names |= self.words.argument_names
        return names

    @property
    def condition_args(self) -> frozenset[str]:
        return frozenset(c.arg[0] for rule in self.rules for c in rule.when)

    def evaluate(self, args: Any, *, subject: str | None, tool: str | None = None) -> Evaluation:
        """The decision for one call of ``tool`` (the called name, when this mapping's name is a
        glob). Raises :class:`EvaluationError` when the arguments do not fit (too large,
        missing, wrong type): callers refuse the call, they never run it."""
        name = tool or self.tool
        arguments = check_arguments(args)
        decision, rule_name, reason = self.decision, "", ""
        for rule in self.rules:
            if all(condition.holds(arguments) for condition in rule.when):
                decision, rule_name, reason = rule.decision, rule.name, rule.reason
                break
        if decision is not Decision.APPROVAL:
            reason = reason or f"{name}: {decision.value} by policy" + (f" (rule {rule_name})" if rule_name else "")
            return Evaluation(tool=name, decision=decision, reason=reason, rule=rule_name)
        if not self.entry:
            # The enforcement point builds the entry itself (compiled with entry_by_caller).
            reason = f"{name}: the user's approval is required"
            return Evaluation(tool=name, decision=decision, reason=reason, rule=rule_name)
        scope = CallScope(tool=name, subject=subject, args=arguments)
        entry = render_value(self.entry, scope)
        if "identifier" in entry and not isinstance(entry["identifier"], str):
            raise EvaluationError(f"identifier must be text, got {type(entry['identifier']).__name__}")
        for key in _LIST_FIELDS:
            if key in entry and not all(isinstance(item, str) for item in entry[key]):
                raise EvaluationError(f"{key} must be a list of text")
        words = self.words.render(scope) if self.words is not None else _default_words(entry)
        return Evaluation(
            tool=name,
            decision=decision,
            entry=entry,
            words=safe_words(str(words)),
            reason=f"{name}: the user's approval is required",
            rule=rule_name,
        )


def safe_words(text: str) -> str:
    """Words for a screen: control, format (bidi, zero-width) and odd space characters become
    ``?`` and the length is bounded, so an argument cannot disguise what is asked."""
    cleaned = "".join("?" if is_unsafe_char(char) else char for char in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= MAX_WORDS else cleaned[: MAX_WORDS - 1] + "…"


def _default_words(entry: Mapping[str, Any]) -> str:
    actions = ", ".join(entry.get("actions", []))
    parts = [f"{actions} {entry.get('type')}"]
    if "identifier" in entry:
        parts.append(str(entry["identifier"]))
    extra = [f"{k}={v}" for k, v in entry.items() if k not in RESERVED_FIELDS]
    if extra:
        parts.append(f"({'; '.join(extra)})")
    return " ".join(parts)


def new_binding_message(prefix: str = "MCP") -> str:
    """A short code shown both where the call was made and on the approval page, so the user
    can tell this request from another one (CIBA 7.1 ``binding_message``)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
    return f"{prefix}-" + "".join(secrets.choice(alphabet) for _ in range(6))


# loading ---------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value)
    )


def _same(actual: Any, expected: Any) -> bool:
    # JSON equality with the type: true is not 1, "1" is not 1.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if _is_number(actual) and _is_number(expected):
        return bool(actual == expected)
    return type(actual) is type(expected) and bool(actual == expected)


def _dig(args: Mapping[str, Any], path: Sequence[str]) -> tuple[bool, Any]:
    value: Any = args
    for segment in path:
        if isinstance(value, Mapping) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return False, None
    return True, value


def _string_list(value: Any, where: str, *, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise MappingError(f"{where} must be a {'' if allow_empty else 'non-empty '}list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise MappingError(f"{where}[{index}] must be a non-empty string")
    return value


def _decision(value: Any, where: str) -> Decision:
    try:
        return Decision(value)
    except ValueError:
        raise MappingError(f"{where} must be one of {', '.join(d.value for d in Decision)}, not {value!r}") from None


def _condition(raw: Any, where: str) -> Condition:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("arg"), str) or not raw["arg"]:
        raise MappingError(f"{where} must be an object with 'arg' (an argument name) and one operator")
    operators = [key for key in raw if key != "arg"]
    if len(operators) != 1 or operators[0] not in _OPERATORS:
        raise MappingError(f"{where} must have exactly one operator of {', '.join(_OPERATORS)}")
    operator = operators[0]
    value = raw[operator]
    if operator in ("present", "absent"):
        if value is not True:
            raise MappingError(f"{where}.{operator} must be true")
    elif operator in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise MappingError(f"{where}.{operator} must be a non-empty list")
    elif operator in ("matches", "path"):
        try:
            if operator == "matches":
                compiled: tuple[Regex, ...] | tuple[Glob, ...] = compile_regexes(value, f"{where}.matches")
            else:
                compiled = compile_globs(value, f"{where}.path", paths=True)
        except PatternError as exc:
            raise MappingError(f"{where}.{operator}: {exc}") from None
        return Condition(arg=tuple(raw["arg"].split(".")), operator=operator, value=compiled)
    elif operator in ("lt", "lte", "gt", "gte"):
        if not (_is_number(value) or isinstance(value, str)):
            raise MappingError(f"{where}.{operator} must be a number or a string")
    elif not (value is None or isinstance(value, str | bool) or _is_number(value)):
        raise MappingError(f"{where}.{operator} must be a JSON scalar")
    return Condition(arg=tuple(raw["arg"].split(".")), operator=operator, value=value)


def _rules(raw: Any, where: str) -> tuple[Rule, ...]:
    if not isinstance(raw, list):
        raise MappingError(f"{where} must be a list of {{when, decision}} objects")
    rules = []
    for index, item in enumerate(raw):
        here = f"{where}[{index}]"
        if not isinstance(item, Mapping) or not {"when", "decision"} <= set(item) <= _RULE_KEYS:
            raise MappingError(
                f"{here} must have 'when' and 'decision' (and optionally 'name', 'reason'), nothing else"
            )
        if not isinstance(item["when"], list) or not item["when"]:
            raise MappingError(f"{here}.when must be a non-empty list of conditions")
        conditions = tuple(_condition(c, f"{here}.when[{i}]") for i, c in enumerate(item["when"]))
        texts = {}
        for key in ("name", "reason"):
            value = item.get(key, "")
            # Shown to the user and to the agent: plain characters only, bounded.
            if not isinstance(value, str) or len(value) > MAX_WORDS or any(is_unsafe_char(ch) for ch in value):
                raise MappingError(f"{here}.{key} must be a string of plain characters (at most {MAX_WORDS})")
            texts[key] = value
        decision = _decision(item["decision"], f"{here}.decision")
        rules.append(Rule(when=conditions, decision=decision, name=texts["name"], reason=texts["reason"]))
    return tuple(rules)


def compile_mapping(
    tool: str,
    raw: Any,
    *,
    source: str = "policy",
    known_types: Sequence[str] | None = None,
    entry_by_caller: bool = False,
) -> ToolMapping:
    """Check and compile one tool's mapping; :class:`MappingError` names ``source``, the tool
    and the field on any problem.

    ``entry_by_caller``: the enforcement point knows how to describe its tools' calls itself (the
    coding-agent hook: a Bash command line by line, a write's resolved path, a digest of the whole
    input), so a mapping that may need approval may leave out ``type`` and the entry; when it
    has them, they are used."""
    where = f"{source}: tools.{tool}"
    if not isinstance(raw, Mapping):
        raise MappingError(f"{where} must be a table (object)")
    unknown = sorted(set(raw) - _MAPPING_KEYS)
    if unknown:
        # Refused, not ignored: a misspelt "identifer" would silently drop the identifier
        # from every approval.
        raise MappingError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")
    if "decision" not in raw:
        raise MappingError(f"{where}.decision is required (free, approval or deny)")
    decision = _decision(raw["decision"], f"{where}.decision")
    rules = _rules(raw.get("rules", []), f"{where}.rules")
    needs_entry = decision is Decision.APPROVAL or any(r.decision is Decision.APPROVAL for r in rules)
    if entry_by_caller and "type" not in raw:
        needs_entry = False
    entry: dict[str, Any] = {}
    try:
        if needs_entry:
            if not isinstance(raw.get("type"), str) or not raw["type"]:
                raise MappingError(f"{where}.type is required for approvals (an authorization_details type)")
            if known_types is not None and raw["type"] not in known_types:
                raise MappingError(f"{where}.type {raw['type']!r} is not a known authorization_details type")
            entry["type"] = raw["type"]
            entry["actions"] = compile_value(_string_list(raw.get("actions"), f"{where}.actions"), f"{where}.actions")
            if "identifier" in raw:
                if not isinstance(raw["identifier"], str) or not raw["identifier"]:
                    raise MappingError(f"{where}.identifier must be a non-empty string")
                entry["identifier"] = compile_value(raw["identifier"], f"{where}.identifier")
            for name in ("locations", "datatypes", "privileges"):
                if name in raw:
                    entry[name] = compile_value(_string_list(raw[name], f"{where}.{name}"), f"{where}.{name}")
            fields = raw.get("fields", {})
            if not isinstance(fields, Mapping):
                raise MappingError(f"{where}.fields must be a table (object)")
            for name, value in fields.items():
                if name in RESERVED_FIELDS:
                    # Common and plan fields have their own keys; a field named "actions" or
                    # "max_uses" would overwrite them.
                    raise MappingError(f"{where}.fields.{name}: a reserved authorization_details field")
                entry[name] = compile_value(value, f"{where}.fields.{name}")
            if "max_uses" in raw:
                uses = raw["max_uses"]
                if not isinstance(uses, int) or isinstance(uses, bool) or not 1 <= uses <= 100:
                    raise MappingError(f"{where}.max_uses must be an integer from 1 to 100")
                entry["max_uses"] = uses
        else:
            stray = sorted(set(raw) & ({"type", "actions", "identifier", "fields", "max_uses"} | set(_LIST_FIELDS)))
            if stray:
                only = "with a type" if entry_by_caller else "that may need approval"
                raise MappingError(f"{where}: {', '.join(stray)} only apply to tools {only}")
        words = None
        if "words" in raw:
            if not isinstance(raw["words"], str):
                raise MappingError(f"{where}.words must be a string")
            words = compile_value(raw["words"], f"{where}.words")
    except TemplateError as exc:
        raise MappingError(str(exc)) from None  # already names the tool and the field
    unbound = frozenset(_string_list(raw.get("unbound_args", []), f"{where}.unbound_args", allow_empty=True))
    assert not (set(entry) & (PLAN_FIELDS - {"max_uses"}))
    return ToolMapping(
        tool=tool,
        decision=decision,
        rules=rules,
        entry=entry,
        words=words,
        unbound_args=unbound,
        source=source,
    )
