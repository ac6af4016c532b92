"""The template language of tool-call mappings: strings with ``{args.amount}`` placeholders,
parsed once when the mapping is loaded and filled with a call's arguments. No code runs: a
placeholder is a path into the call (``args``, ``tool``, ``subject``) and an optional chain of
named filters; values are substituted after parsing, so an argument that looks like a template
(``"{subject}"``) stays text and is never evaluated.

- A string that is exactly one placeholder (``"{args.amount}"``) takes the argument's JSON value
  as it is (a number stays a number, an object stays an object).
- A string mixing text and placeholders (``"Transfer {args.amount} to {args.to}"``) is text:
  each value must be a string, a finite number or a boolean.
- ``{{`` and ``}}`` are literal braces.
- Filters: ``string`` (JSON scalar to text), ``upper``, ``lower``.

Bounds (:data:`MAX_TEXT`, :data:`MAX_DEPTH`, :data:`MAX_ARGUMENT_BYTES`) keep evaluation cheap on
hostile arguments; everything that goes wrong raises :class:`TemplateError` (at load) or
:class:`EvaluationError` (on a call), never anything else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_ARGUMENT_BYTES",
    "MAX_DEPTH",
    "MAX_TEXT",
    "CallScope",
    "EvaluationError",
    "Template",
    "TemplateError",
    "check_arguments",
]

MAX_TEXT = 512  # longest text a template may produce (the service's own limit per string)
MAX_DEPTH = 16  # deepest nesting of arguments accepted
MAX_ARGUMENT_BYTES = 64 * 1024  # largest arguments object (compact JSON) accepted
MAX_TEMPLATE = 1024  # longest template accepted in a mapping

_ROOTS = ("args", "tool", "subject")
_FILTERS = ("string", "upper", "lower")
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}|[0-9]{1,6}")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A template in a mapping is malformed (a configuration error)."""


class EvaluationError(ValueError):
    """A call's arguments do not fit the mapping (missing, wrong type, too large)."""


@dataclass(frozen=True, kw_only=True)
class CallScope:
    """What placeholders may read: the tool name, the caller's subject and the arguments."""

    tool: str
    subject: str | None
    args: Mapping[str, Any]


@dataclass(frozen=True)
class _Path:
    root: str
    segments: tuple[str, ...]
    filters: tuple[str, ...]

    @property
    def text(self) -> str:
        return ".".join((self.root, *self.segments))


def _parse_placeholder(expression: str) -> _Path:
    path, *filters = (part.strip() for part in expression.split("|"))
    root, *segments = path.split(".")
    if root not in _ROOTS:
        raise TemplateError(f"placeholder {{{expression}}} must start with one of {', '.join(_ROOTS)}")
    if root != "args" and segments:
        raise TemplateError(f"placeholder {{{expression}}}: {root} has no members")
    if root == "args" and not segments:
        raise TemplateError(f"placeholder {{{expression}}} must name an argument (args.<name>)")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise TemplateError(f"placeholder {{{expression}}}: {segment!r} is not a name or an index")
    for name in filters:
        if name not in _FILTERS:
            raise TemplateError(f"placeholder {{{expression}}}: unknown filter {name!r} (known: {', '.join(_FILTERS)})")
    return _Path(root, tuple(segments), tuple(filters))


@dataclass(frozen=True)
class Template:
    """One parsed template string: literal text and placeholders, in order."""

    source: str
    parts: tuple[str | _Path, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        if len(source) > MAX_TEMPLATE:
            raise TemplateError(f"template is longer than {MAX_TEMPLATE} characters")
        parts: list[str | _Path] = []
        position = 0
        for match in _PLACEHOLDER.finditer(source):
            text = source[position : match.start()]
            token = match.group(0)
            if token in ("{{", "}}"):
                text += token[0]
            elif match.group(1) is None:
                raise TemplateError(f"unbalanced brace at position {match.start()} in {source!r}")
            if text:
                parts.append(text)
            if match.group(1) is not None:
                parts.append(_parse_placeholder(match.group(1)))
            position = match.end()
        if position < len(source):
            parts.append(source[position:])
        return cls(source, tuple(parts))

    @property
    def argument_names(self) -> frozenset[str]:
        """The top-level arguments this template reads."""
        return frozenset(p.segments[0] for p in self.parts if isinstance(p, _Path) and p.root == "args")

    def render(self, scope: CallScope) -> Any:
        """The value for ``scope``: the raw JSON value for a lone placeholder, else text."""
        if len(self.parts) == 1 and isinstance(self.parts[0], _Path):
            return _apply(self.parts[0], _lookup(self.parts[0], scope))
        pieces: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            pieces.append(_as_text(part, _apply(part, _lookup(part, scope))))
        text = "".join(pieces)
        if len(text) > MAX_TEXT:
            # Bounded output: a long argument cannot make an entry the service would refuse
            # only later, nor a wall of text on the user's screen.
            raise EvaluationError(f"'{self.source}' produces more than {MAX_TEXT} characters")
        return text


def _lookup(path: _Path, scope: CallScope) -> Any:
    if path.root == "tool":
        return scope.tool
    if path.root == "subject":
        if scope.subject is None:
            raise EvaluationError("the call has no authenticated subject")
        return scope.subject
    value: Any = scope.args
    walked: list[str] = ["args"]
    for segment in path.segments:
        walked.append(segment)
        if isinstance(value, Mapping) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            # A missing argument is an error, never an empty value: an entry that silently
            # lost its identifier or recipient would approve more than the call names.
            raise EvaluationError(f"argument {'.'.join(walked[1:])!r} is missing")
    return value


def _apply(path: _Path, value: Any) -> Any:
    for name in path.filters:
        if name == "string":
            value = _as_text(path, value)
        elif not isinstance(value, str):
            raise EvaluationError(f"argument {path.text!r} must be text for the '{name}' filter")
        else:
            value = value.upper() if name == "upper" else value.lower()
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise EvaluationError(f"argument {path.text!r} is longer than {MAX_TEXT} characters")
    return value


def _as_text(path: _Path, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) <= 2**53:
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and abs(value) <= 2**53:
        return repr(value)
    # Objects, lists, huge or non-finite numbers are not embedded in text: their rendering
    # would be ambiguous (and 1e400 or NaN must never become "inf" in an approval).
    raise EvaluationError(f"argument {path.text!r} must be text or a number")


def check_arguments(args: Any) -> Mapping[str, Any]:
    """The arguments object, refused before any evaluation when it is not a JSON object of
    bounded size and depth (hostile input must cost little and crash nothing)."""
    if not isinstance(args, Mapping):
        raise EvaluationError("arguments must be a JSON object")
    stack: list[tuple[Any, int]] = [(args, 1)]
    while stack:  # iterative: deep nesting cannot exhaust the interpreter's stack
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise EvaluationError(f"arguments are nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise EvaluationError("argument names must be strings")
                stack.append((item, depth + 1))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise EvaluationError("arguments must not contain NaN or Infinity")
        elif not (value is None or isinstance(value, str | int | float | bool)):
            raise EvaluationError("arguments must be JSON values")
    try:
        size = len(json.dumps(args, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError):
        raise EvaluationError("arguments must be JSON values") from None
    if size > MAX_ARGUMENT_BYTES:
        raise EvaluationError(f"arguments are larger than {MAX_ARGUMENT_BYTES} bytes")
    return args


def render_value(value: Any, scope: CallScope) -> Any:
    """A parsed mapping value (templates inside dicts and lists) filled for ``scope``."""
    if isinstance(value, Template):
        return value.render(scope)
    if isinstance(value, Mapping):
        return {key: render_value(item, scope) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [render_value(item, scope) for item in value]
    return value


def compile_value(value: Any, where: str) -> Any:
    """Parse every string inside a mapping value into a :class:`Template`."""
    if isinstance(value, str):
        try:
            return Template.parse(value)
        except TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None
    if isinstance(value, Mapping):
        return {str(key): compile_value(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [compile_value(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TemplateError(f"{where}: {type(value).__name__} is not a JSON value")


def argument_names(value: Any) -> frozenset[str]:
    """Every top-level argument a compiled value reads."""
    if isinstance(value, Template):
        return value.argument_names
    if isinstance(value, Mapping):
        return frozenset().union(*(argument_names(item) for item in value.values()))
    if isinstance(value, list | tuple):
        return frozenset().union(*(argument_names(item) for item in value))
    return frozenset()
