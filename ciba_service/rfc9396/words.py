"""RFC 9396 entries in words: the sentence the approval page shows for an entry
(:func:`describe_entry`), and the characters shown-and-signed text refuses
(:func:`is_unsafe_char`)."""

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

__all__ = ["describe_entry", "is_unsafe_char"]


def is_unsafe_char(char: str) -> bool:
    """Control, format (bidi overrides, zero-width), line/paragraph separators and any space
    other than U+0020 (NBSP, ideographic space): text with them can look different from what it
    says, so shown-and-signed text refuses them."""
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp") or (category == "Zs" and char != " ")


def describe_entry(entry: Mapping[str, Any], *, registry: TypeRegistry) -> str:
    """The readable sentence the approval page shows for one entry."""
    spec = registry.get(str(entry.get("type")))
    values: dict[str, str] = {
        "actions": ", ".join(entry.get("actions", [])),
        "identifier": str(entry.get("identifier", "")),
        "locations": ", ".join(entry.get("locations", [])),
    }
    for key, value in entry.items():
        if key not in values and key not in PLAN_FIELDS:
            values[key] = _readable(value)
    template = spec.template if spec else "{actions} {identifier}"
    try:
        text = template.format_map(_Defaulting(values))
    except (ValueError, IndexError):
        text = json.dumps(entry, sort_keys=True)
    # Everything the user approves is said in words: fields the template does not mention
    # (locations, privileges, an IBAN, ...) are listed after it, never silently dropped.
    mentioned = set(re.findall(r"{(\w+)", template)) | {"type"} | set(PLAN_FIELDS)
    extra = [f"{k}={_readable(v)}" for k, v in entry.items() if k not in mentioned]
    if extra:
        text += f" (also: {'; '.join(extra)})"
    # The plan terms are part of what the user approves, so they are said in words too.
    terms = []
    if isinstance(entry.get("max_uses"), int):
        terms.append(f"up to {entry['max_uses']} times")
    if isinstance(entry.get("not_before"), int):
        terms.append(f"not before {_utc(entry['not_before'])}")
    if isinstance(entry.get("not_after"), int):
        terms.append(f"not after {_utc(entry['not_after'])}")
    if terms:
        text += f" ({'; '.join(terms)})"
    return " ".join(text.split())


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
