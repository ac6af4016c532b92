"""Matching: does an approved ``authorization_details`` entry cover the action the resource
server is about to perform? Specified in ``RESOURCE_SERVER.md``: the action is covered only
when it is inside the approval on every dimension the approval restricts.

:class:`RequestedAction` says what is about to happen; :class:`FieldRule` (or a comparator)
says how a type-specific field compares; :func:`action_matches` is the test for one entry.
The common and plan fields are those of :mod:`ciba_service.rfc9396.vocabulary`.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from ciba_service.core.uri import normalize_uri
from ciba_service.rfc9396.vocabulary import RESERVED_FIELDS

__all__ = [
    "Comparator",
    "FieldRule",
    "FieldRules",
    "InvalidRequestedAction",
    "RequestedAction",
    "action_matches",
]


class InvalidRequestedAction(TypeError, ValueError):
    """A :class:`RequestedAction` that cannot be an ``authorization_details`` entry: a value
    JSON cannot carry (NaN, Infinity, ``Decimal``, bytes, a set, a non-string key, a lone
    surrogate, an integer beyond 64 bits), or a common field of the wrong type.

    Both a ``TypeError`` and a ``ValueError``. Raised when the action is built, so the
    mistake shows where it is made; the FastAPI glue answers it ``400 invalid_request``
    (the values often come from the request body, which the caller chose).
    """


# Limits of what a requested action may hold (see _json_copy).
_MAX_FIELD_DEPTH = 32
_MAX_INT = 2**64


def _where(path: tuple[str | int, ...]) -> str:
    # Names the offending member without echoing values (they may be huge or hostile).
    head, *rest = path
    return f"RequestedAction.{head}" + "".join(f"[{p}]" if isinstance(p, int) else f"[{_short(p)!r}]" for p in rest)


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _checked_text(value: str, path: tuple[str | int, ...]) -> str:
    if type(value) is str and value.isascii():  # the common case, cheaply
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: not JSON text, and Starlette's JSON response cannot encode it.
        raise InvalidRequestedAction(f"{_where(path)}: a string with a lone UTF-16 surrogate") from None
    return value if type(value) is str else str.__str__(value)


def _json_copy(value: Any, path: tuple[str | int, ...], depth: int = 0) -> Any:
    """A plain-JSON copy of ``value`` (dicts, lists, str, int, float, bool, None), or
    :class:`InvalidRequestedAction`. A refusal echoes the action in its body and challenge:
    a value JSON cannot carry would make that answer fail to render (a 500 instead of 401)."""
    if depth > _MAX_FIELD_DEPTH:
        raise InvalidRequestedAction(f"{_where(path)}: nested deeper than {_MAX_FIELD_DEPTH} levels")
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return _checked_text(value, path)
    if isinstance(value, int):  # bool was handled above
        if not -_MAX_INT < value < _MAX_INT:
            # A token cannot carry such an integer (orjson reads it as a double), so it could
            # never match; and beyond 4300 digits it cannot even be written.
            raise InvalidRequestedAction(f"{_where(path)}: an integer beyond 64 bits")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestedAction(f"{_where(path)}: NaN and Infinity are not JSON numbers")
        return float(value)
    if type(value) is dict or isinstance(value, Mapping):
        copy: dict[str, Any] = {}
        for name, member in value.items():
            if not isinstance(name, str):
                raise InvalidRequestedAction(
                    f"{_where(path)}: a key of type {type(name).__name__}; JSON object keys are strings"
                )
            key = _checked_text(name, (*path, name))
            copy[key] = _json_copy(member, (*path, name), depth + 1)
        return copy
    if isinstance(value, list | tuple):
        return [_json_copy(item, (*path, index), depth + 1) for index, item in enumerate(value)]
    hint = " (use a decimal string such as '7.50', or a number)" if isinstance(value, Decimal) else ""
    raise InvalidRequestedAction(f"{_where(path)}: {type(value).__name__} is not a JSON value{hint}")


def _check_strings(name: str, value: Any) -> None:
    kind = type(value)
    if kind is not list and kind is not tuple and (isinstance(value, str | bytes) or not isinstance(value, Sequence)):
        # A bare string is a sequence of characters: actions="update" would be read as
        # ["u", "p", ...].
        raise InvalidRequestedAction(f"RequestedAction.{name} must be a list of strings, not {type(value).__name__}")
    for index, item in enumerate(value):
        if type(item) is str and item.isascii():
            continue
        if not isinstance(item, str):
            raise InvalidRequestedAction(f"RequestedAction.{name}[{index}] is a {type(item).__name__}, not a string")
        _checked_text(item, (name, index))


@dataclass(frozen=True, kw_only=True)
class RequestedAction:
    """What the resource server is about to do, in ``authorization_details`` terms.

    ``fields`` are the type-specific fields of the operation (``{"instructedAmount":
    {"currency": "EUR", "amount": "7.50"}}``), compared with the approved entry's fields
    exactly or by the verifier's :class:`FieldRule` for the type.

    Checked when built: ``type`` a non-empty string, ``identifier`` a string or None, the
    list fields lists of strings, ``fields`` a JSON object. ``fields`` is kept as a plain-JSON
    copy (later changes to the mapping passed in do not reach it). Anything JSON cannot carry
    raises :class:`InvalidRequestedAction`.
    """

    type: str
    actions: Sequence[str]
    locations: Sequence[str] = ()
    identifier: str | None = None
    datatypes: Sequence[str] = ()
    privileges: Sequence[str] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Every refusal renders this action (body and WWW-Authenticate): a value JSON cannot
        # carry turned a refusal into a 500, reachable without a token. Refused here instead.
        if not isinstance(self.type, str) or not self.type:
            raise InvalidRequestedAction("RequestedAction.type must be a non-empty string")
        _checked_text(self.type, ("type",))
        _check_strings("actions", self.actions)
        for name in ("locations", "datatypes", "privileges"):
            value = getattr(self, name)
            if value != ():  # the default
                _check_strings(name, value)
        if self.identifier is not None:
            if not isinstance(self.identifier, str):
                raise InvalidRequestedAction(
                    f"RequestedAction.identifier must be a string or None, not {type(self.identifier).__name__}"
                )
            _checked_text(self.identifier, ("identifier",))
        if not isinstance(self.fields, Mapping):
            raise InvalidRequestedAction(f"RequestedAction.fields must be a mapping, not {type(self.fields).__name__}")
        object.__setattr__(self, "fields", _json_copy(self.fields, ("fields",)) if self.fields else {})

    def as_authorization_details(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": self.type, "actions": list(self.actions)}
        if self.locations:
            entry["locations"] = list(self.locations)
        if self.identifier is not None:
            entry["identifier"] = self.identifier
        if self.datatypes:
            entry["datatypes"] = list(self.datatypes)
        if self.privileges:
            entry["privileges"] = list(self.privileges)
        entry.update(self.fields)
        return entry


@lru_cache(maxsize=2048)
def _normalized_str(uri: str) -> str | None:
    try:
        return normalize_uri(uri)
    except ValueError:
        return None


def _normalized(uri: Any) -> str | None:
    """Cached :func:`normalize_uri`; None for a value that is not a valid URI string (a token
    may carry any JSON there, and lists or objects cannot even be cache keys)."""
    return _normalized_str(uri) if isinstance(uri, str) else None


# type-specific fields: comparison rules ----------------------------------------------------
Comparator = Callable[[Any, Any], bool]
"""A custom field comparison: ``(approved, requested) -> covered``. It must answer False for
anything it does not understand; an exception counts as not covered."""


class FieldRule(enum.StrEnum):
    """How a type-specific field of the action is compared with the approved value.

    Declared per type and dotted path on the verifier, e.g.
    ``field_rules={"payment_initiation": {"instructedAmount.amount": FieldRule.MAX}}``.
    Fields without a rule are compared ``EXACT``.
    """

    EXACT = "exact"  # the same JSON value, type included (true is not 1, 1 is not 1.0)
    MAX = "max"  # a quantity from 0 up to the approved one (numbers, or decimal strings)
    MIN = "min"  # a quantity at least the approved one
    SUBSET = "subset"  # an array whose members are all in the approved array
    IGNORE = "ignore"  # display-only (a reason, a note): the RS knowingly does not act on it


# Every integer up to 2**53 has an exact double (RFC 7493 2.2); beyond it doubles are rounded.
_EXACT_DOUBLE = float(2**53)
# ASCII digits only: \d (and Decimal) also read Arabic-Indic or fullwidth digits (U+0665 U+0660) as
# 50, a quantity the approval page did not show as one.
_DECIMAL = re.compile(r"-?[0-9]{1,30}(\.[0-9]{1,30})?", re.ASCII)


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # Beyond 2**53 a double no longer holds every integer (RFC 7493 2.2): the value the
        # issuer signed may have been rounded, up as well as down, by a JSON parser, so a
        # bound read from it could be wider than the one approved. Not a quantity.
        return Decimal(value) if abs(value) <= _EXACT_DOUBLE else None  # NaN, inf: False
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return Decimal(value)
    return None


def _same_kind(a: Any, b: Any) -> bool:
    # "10.00" (a string, as RFC 9396's examples write amounts) is not compared with 10.
    return isinstance(a, str) == isinstance(b, str)


def _at_most(approved: Any, requested: Any) -> bool:
    limit, value = _quantity(approved), _quantity(requested)
    return limit is not None and value is not None and _same_kind(approved, requested) and 0 <= value <= limit


def _at_least(approved: Any, requested: Any) -> bool:
    limit, value = _quantity(approved), _quantity(requested)
    return limit is not None and value is not None and _same_kind(approved, requested) and value >= limit


def _subset_of(approved: Any, requested: Any) -> bool:
    # A non-empty subset: many APIs read "no columns" as "all columns", so an empty request
    # is not taken as inside any approval (ask with FieldRule.EXACT to approve [] as such).
    if not isinstance(approved, list) or not isinstance(requested, list) or not requested:
        return False
    return all(any(_same_json(item, allowed) for allowed in approved) for item in requested)


def _same_json(a: Any, b: Any) -> bool:
    """Structural JSON equality that keeps types apart: Python's ``True == 1 == 1.0``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float and not abs(a) <= _EXACT_DOUBLE:
        # Possibly rounded from what the issuer signed (an integer beyond 64 bits reads as a
        # double): equal after rounding is not proof of equal as approved. NaN lands here too.
        return False
    return bool(a == b)


_IGNORE = object()
_RULES: dict[FieldRule, Comparator] = {
    FieldRule.EXACT: _same_json,
    FieldRule.MAX: _at_most,
    FieldRule.MIN: _at_least,
    FieldRule.SUBSET: _subset_of,
}

FieldRules = Mapping[str, Mapping[str, FieldRule | str | Comparator]]
"""``{type: {dotted.path: rule}}`` as given to :class:`TokenVerifier`."""


@dataclass(frozen=True)
class _TypeRules:
    """One type's rules, compiled once: path tuple -> comparator (or ignore)."""

    by_path: dict[tuple[str, ...], Any]
    prefixes: frozenset[tuple[str, ...]]  # paths with a rule somewhere below them

    @classmethod
    def compile(cls, rules: Mapping[str, FieldRule | str | Comparator]) -> _TypeRules:
        by_path: dict[tuple[str, ...], Any] = {}
        for dotted, rule in rules.items():
            path = tuple(dotted.split("."))
            if not all(path) or path[0] in RESERVED_FIELDS:
                raise ValueError(f"field rule path {dotted!r} does not name a type-specific field")
            if callable(rule) and not isinstance(rule, str):
                by_path[path] = rule
                continue
            named = FieldRule(rule)  # ValueError for an unknown rule name
            by_path[path] = _IGNORE if named is FieldRule.IGNORE else _RULES[named]
        prefixes = frozenset(path[:i] for path in by_path for i in range(1, len(path)))
        return cls(by_path=by_path, prefixes=prefixes)


_NO_RULES = _TypeRules(by_path={}, prefixes=frozenset())


def _apply(rule: Any, approved: Any, requested: Any) -> bool:
    if rule is _IGNORE:
        return True
    try:
        return bool(rule(approved, requested))
    except Exception:  # a custom comparator that chokes on a value does not cover it
        return False


def _covers(approved: Any, requested: Any, path: tuple[str, ...], rules: _TypeRules) -> bool:
    rule = rules.by_path.get(path)
    if rule is not None:
        return _apply(rule, approved, requested)
    if path in rules.prefixes:
        # An object with a rule deeper inside: compare member by member.
        if not isinstance(approved, dict) or not isinstance(requested, dict):
            return False
        return _members_covered(approved, requested, path, rules)
    return _same_json(approved, requested)


def _members_covered(
    approved: Mapping[str, Any], requested: Mapping[str, Any], path: tuple[str, ...], rules: _TypeRules
) -> bool:
    # Every member the action names must be approved; every approved member must be named,
    # unless declared IGNORE: a restriction the action does not address is not satisfied.
    for name in requested:
        if name not in approved:
            return False
    for name, value in approved.items():
        sub = (*path, name)
        if name in requested:
            if not _covers(value, requested[name], sub, rules):
                return False
        elif rules.by_path.get(sub) is not _IGNORE:
            return False
    return True


def _within(requested: Sequence[str], approved: Any) -> bool:
    """``requested`` is a non-empty subset of the approved JSON array (plain string equality)."""
    if not requested or not isinstance(approved, list):
        return False
    for item in requested:  # noqa: SIM110 - a loop, not all(): short lists, hot path
        if item not in approved:
            return False
    return True


def _restricted(entry: Mapping[str, Any], name: str, requested: Sequence[str]) -> bool:
    """``datatypes``/``privileges``: when the approval names some, the action must name a
    non-empty subset; when it names none, the action may name none either."""
    if name in entry:
        return _within(requested, entry[name])
    return not requested


def _locations_covered(entry: Mapping[str, Any], requested: Sequence[str]) -> bool:
    """Exact URIs after normalisation. An approval that names locations covers only actions
    that say where they happen; one that names none covers none that do."""
    if "locations" not in entry:
        return not requested
    approved = entry["locations"]
    if not requested or not isinstance(approved, list):
        return False
    for uri in requested:
        wanted = _normalized(uri)  # cached per URI string, as are the approved ones
        if wanted is None or wanted not in map(_normalized, approved):
            return False
    return True


def _entry_covers(entry: Mapping[str, Any], action: RequestedAction, rules: _TypeRules) -> bool:
    if entry.get("type") != action.type:
        return False
    if not _within(action.actions, entry.get("actions")):
        return False
    if not _locations_covered(entry, action.locations):
        return False
    # identifier: equal, including absent on both sides.
    identifier = entry.get("identifier")
    if identifier != action.identifier or (identifier is not None and not isinstance(identifier, str)):
        return False
    if ("datatypes" in entry or action.datatypes) and not _restricted(entry, "datatypes", action.datatypes):
        return False
    if ("privileges" in entry or action.privileges) and not _restricted(entry, "privileges", action.privileges):
        return False
    # type-specific fields, both ways. A field the token carries that the action does not name
    # (unknown to this resource server) is a restriction nobody enforces: not covered.
    fields = action.fields
    for name in fields:
        if name in RESERVED_FIELDS or name not in entry:
            return False
    for name, approved in entry.items():
        if name in RESERVED_FIELDS:
            continue
        if name in fields:
            if not _covers(approved, fields[name], (name,), rules):
                return False
        elif rules.by_path.get((name,)) is not _IGNORE:
            return False
    return True


def action_matches(
    entry: Mapping[str, Any],
    action: RequestedAction,
    *,
    rules: Mapping[str, FieldRule | str | Comparator] | None = None,
) -> bool:
    """Does one approved ``authorization_details`` entry cover ``action``?

    - ``type`` equal;
    - ``actions``: the action's are a non-empty subset of the approved ones;
    - ``locations``: each of the action's equals an approved one after RFC 3986
      normalisation; an entry with locations needs an action with at least one, an entry
      without covers no action that names one;
    - ``identifier`` equal (absent on both sides counts as equal);
    - ``datatypes``, ``privileges``: as locations, subsets, by plain string equality;
    - type-specific fields: every field the action names is in the entry and covered (exact
      JSON value, or the ``rules`` for this type, dotted paths); every type-specific field of
      the entry is named by the action unless its rule is ``FieldRule.IGNORE``;
    - ``max_uses``, ``not_before``, ``not_after`` are plan fields, enforced by the verifier.

    ``rules`` are this type's field rules (``{"instructedAmount.amount": "max"}``).
    """
    compiled = _TypeRules.compile(rules) if rules else _NO_RULES
    return _entry_covers(entry, action, compiled)
