"""Text patterns in a policy: regular expressions searched in an argument (``matches``), globs on
a path (``path``) and on tool names (``[tools."mcp__prod-*"]``).

**Every pattern runs on RE2** (google-re2), whose matching time is linear in the input: no
pattern an operator writes, and no input an agent (or a prompt injection steering it) sends, can
make evaluation backtrack for seconds (ReDoS). RE2 has no backreferences or lookaround; a pattern
that needs them is refused when the policy is loaded, with the reason. Globs are translated to
RE2 here rather than with :func:`fnmatch.translate`, whose output relies on lookahead.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import re2

__all__ = [
    "MAX_PATTERN",
    "Glob",
    "PatternError",
    "Regex",
    "any_glob",
    "compile_globs",
    "compile_regexes",
    "is_glob",
    "normal_path",
]

MAX_PATTERN = 1024  # longest pattern accepted in a policy
MAX_PATTERNS = 64  # most patterns in one condition

_OPTIONS = re2.Options()
_OPTIONS.max_mem = 8 << 20  # a pathological pattern fails to compile instead of eating memory
_OPTIONS.log_errors = False


class PatternError(ValueError):
    """A pattern in a policy is malformed or unsupported (a configuration error)."""


def _compile(expression: str, shown: str) -> Any:
    try:
        return re2.compile(expression, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        reason = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise PatternError(f"{shown!r} is not a regular expression RE2 accepts ({reason})") from None


@dataclass(frozen=True)
class Regex:
    """A regular expression searched anywhere in a text (``git push --force`` inside
    ``cd x && git push --force``)."""

    source: str
    compiled: Any

    def search(self, text: str) -> bool:
        return self.compiled.search(text) is not None


@dataclass(frozen=True)
class Glob:
    """A glob: ``*`` any run of characters (``/`` included), ``?`` one character, ``[...]`` a
    class (``[!...]`` negated). For paths, a relative glob matches at any depth (``*.tf`` is any
    ``.tf`` file, ``.env*`` any file named ``.env…`` in any directory); an absolute one only as
    written."""

    source: str
    compiled: Any

    def match(self, text: str) -> bool:
        return self.compiled.fullmatch(text) is not None


def _patterns(value: Any, where: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or len(items) > MAX_PATTERNS:
        raise PatternError(f"{where} must be a pattern or a non-empty list of at most {MAX_PATTERNS} patterns")
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item or len(item) > MAX_PATTERN:
            raise PatternError(f"{where}[{index}] must be a non-empty string of at most {MAX_PATTERN} characters")
    return items


def compile_regexes(value: Any, where: str) -> tuple[Regex, ...]:
    return tuple(Regex(p, _compile(p, p)) for p in _patterns(value, where))


def _glob_body(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "*":
            out.append("(?s:.*)")
        elif char == "?":
            out.append("(?s:.)")
        elif char == "[":
            end = pattern.find("]", index + 1 if pattern[index : index + 1] in ("!", "]") else index)
            if end < 0:
                out.append(re2.escape("["))
                continue
            inner = pattern[index:end]
            index = end + 1
            negate = inner.startswith("!")
            inner = inner[1:] if negate else inner
            # Inside a class only '\', ']' and '^' are special; escape them, keep ranges (a-z).
            body = "".join("\\" + ch if ch in "\\]^[" else ch for ch in inner)
            out.append(f"[{'^' if negate else ''}{body}]")
        else:
            out.append(re2.escape(char))
    return "".join(out)


def compile_globs(value: Any, where: str, *, paths: bool) -> tuple[Glob, ...]:
    globs = []
    for pattern in _patterns(value, where):
        body = _glob_body(pattern)
        if paths and not pattern.startswith("/"):
            # Relative: at any depth, i.e. the whole text or any part after a '/'.
            body = f"(?s:(?:.*/)?){_glob_body(pattern.removeprefix('**/'))}"
        globs.append(Glob(pattern, _compile(body, pattern)))
    return tuple(globs)


def is_glob(name: str) -> bool:
    return any(char in name for char in "*?[")


def normal_path(path: str) -> str:
    """``path`` with ``.``, ``..`` and repeated ``/`` resolved lexically, so ``a/../.env`` is
    matched as ``.env``. Symlinks are the caller's to resolve (the coding-agent hook does, with
    ``realpath``): only the caller knows the working directory."""
    return posixpath.normpath(path)


def any_glob(globs: Sequence[Glob], text: str) -> bool:
    return any(glob.match(text) for glob in globs)
