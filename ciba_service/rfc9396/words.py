"""RFC 9396 entries in words: the sentence the approval page and the notices show for an entry
(:func:`describe_entry`), the labelled fields the page lays out under it (:func:`entry_fields`),
and the characters shown-and-signed text refuses (:func:`is_unsafe_char`)."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ciba_service.rfc9396.vocabulary import PLAN_FIELDS

if TYPE_CHECKING:
    # For the annotation only: the package imports this module at once, the registry (which
    # needs pydantic and jsonschema) on first use.
    from ciba_service.rfc9396.registry import TypeRegistry

__all__ = ["describe_entry", "entry_fields", "is_unsafe_char", "plan_terms"]

# What a common field is called when its type gives it no label of its own.
COMMON_LABELS: dict[str, str] = {
    "actions": "Action",
    "identifier": "Resource",
    "locations": "Where",
    "datatypes": "Data",
    "privileges": "Privileges",
}


def is_unsafe_char(char: str) -> bool:
    """Control, format (bidi overrides, zero-width), line/paragraph separators and any space
    other than U+0020 (NBSP, ideographic space): text with them can look different from what it
    says, so shown-and-signed text refuses them."""
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp") or (category == "Zs" and char != " ")


def describe_entry(entry: Mapping[str, Any], *, registry: TypeRegistry) -> str:
    """The readable sentence for one entry, every field included: the type's template, then the
    fields it does not mention by their labels, then the plan terms (use count, window)."""
    text = _sentence(entry, registry=registry)
    spec = registry.get(str(entry.get("type")))
    template = spec.template if spec else _FALLBACK_TEMPLATE
    # Everything the user approves is said in words: fields the template does not mention
    # (locations, privileges, an IBAN, ...) follow it by name, never silently dropped.
    mentioned = set(re.findall(r"{(\w+)", template)) | {"type"} | set(PLAN_FIELDS)
    labels = spec.labels if spec else {}
    extra = [
        f"{_lower_first(_label(path, labels))}: {value}"
        for key, item in entry.items()
        if key not in mentioned
        for path, value in _leaves(key, item)
    ]
    if extra:
        text += f" ({'; '.join(extra)})"
    # The plan terms are part of what the user approves, so they are said in words too.
    terms = plan_terms(entry)
    if terms:
        text += f" ({'; '.join(terms)})"
    return " ".join(text.split())


def _sentence(entry: Mapping[str, Any], *, registry: TypeRegistry) -> str:
    spec = registry.get(str(entry.get("type")))
    values: dict[str, str] = {
        "actions": ", ".join(entry.get("actions", [])),
        "identifier": str(entry.get("identifier", "")),
        "locations": ", ".join(entry.get("locations", [])),
    }
    for key, value in entry.items():
        if key not in values and key not in PLAN_FIELDS:
            values[key] = _readable(value)
    template = spec.template if spec else _FALLBACK_TEMPLATE
    try:
        text = template.format_map(_Defaulting(values))
    except (ValueError, IndexError):
        text = json.dumps(entry, sort_keys=True)
    return " ".join(text.split())


def plan_terms(entry: Mapping[str, Any]) -> list[str]:
    """An entry's plan fields in words: "once" or "up to 3 times", and its window in UTC."""
    terms = []
    max_uses = entry.get("max_uses")
    if isinstance(max_uses, int):
        terms.append("once" if max_uses == 1 else f"up to {max_uses} times")
    if isinstance(entry.get("not_before"), int):
        terms.append(f"not before {_utc(entry['not_before'])}")
    if isinstance(entry.get("not_after"), int):
        terms.append(f"not after {_utc(entry['not_after'])}")
    return terms


def entry_fields(entry: Mapping[str, Any], *, registry: TypeRegistry) -> dict[str, Any]:
    """How the approval page lays out one entry: its sentence without the listed fields
    (``summary``), the fields that matter in order, each a ``path`` into the entry with its
    ``label`` (``None``: the page's own word for a common field) and whether it is ``critical``,
    and the ``destructive`` actions it asks for.

    Only paths and words: the page reads every value from the signed entry itself, and lists
    any field these rows leave out after them, so nothing signed goes unshown."""
    spec = registry.get(str(entry.get("type")))
    labels = spec.labels if spec else {}
    critical = spec.critical if spec else ["identifier"]
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()

    def add(path: str, *, is_critical: bool) -> None:
        if path in seen or not _present(entry, path):
            return
        seen.add(path)
        rows.append({"path": path.split("."), "label": labels.get(path), "critical": is_critical})

    for path in critical:
        add(path, is_critical=True)
    for path in labels:
        add(path, is_critical=False)
    for name in COMMON_LABELS:
        add(name, is_critical=False)
    destructive = [a for a in entry.get("actions", []) if spec and a in spec.destructive_actions]
    return {
        "summary": _sentence(entry, registry=registry),
        "fields": rows,
        "destructive": destructive,
    }


_FALLBACK_TEMPLATE = "{actions} {identifier}"


def _present(entry: Mapping[str, Any], path: str) -> bool:
    value: Any = entry
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def _leaves(path: str, value: Any) -> list[tuple[str, str]]:
    """(dotted path, words) for each leaf; an amount with its currency is one leaf."""
    if isinstance(value, Mapping) and value and not (set(value) >= {"amount", "currency"}):
        return [leaf for key, item in value.items() for leaf in _leaves(f"{path}.{key}", item)]
    return [(path, _readable(value))]


def _label(path: str, labels: Mapping[str, str]) -> str:
    return labels.get(path) or COMMON_LABELS.get(path) or path


def _lower_first(label: str) -> str:
    # "Where" -> "where", but "IBAN" stays "IBAN".
    return label[0].lower() + label[1:] if len(label) > 1 and label[1].islower() else label


def _utc(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _readable(value: Any) -> str:
    if isinstance(value, dict):
        if set(value) >= {"amount", "currency"}:
            return f"{value['amount']} {value['currency']}"
        return ", ".join(f"{k}={_readable(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_readable(v) for v in value)
    return str(value)


class _Defaulting(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"
