"""RFC 9396 ``authorization_details`` validation: :func:`parse_authorization_details`, in named
steps (size, JSON, a non-empty array, entry count; then per entry: a known type allowed for
the client, the common fields, actions, required members, plan fields, type-specific fields,
nesting depth, text, canonical JSON, and the type's JSON Schema).

Each check raises :class:`InvalidAuthorizationDetails` naming the failing entry and field,
as RFC 9396 section 5 asks: "the AS MUST refuse to process any unknown authorization details
type or authorization details not conforming to the respective type definition".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from jsonschema.exceptions import best_match

from ciba_service.core.errors import InvalidAuthorizationDetails
from ciba_service.core.uri import normalize_uri
from ciba_service.rfc9396.registry import FieldKind, TypeRegistry
from ciba_service.rfc9396.vocabulary import COMMON_FIELDS, PLAN_FIELDS, STRING_ARRAY_FIELDS
from ciba_service.rfc9396.words import is_unsafe_char

__all__ = ["parse_authorization_details"]

_MAX_USES_LIMIT = 100
_MAX_DEPTH = 5
_MAX_STRING = 512

_KIND_CHECK: dict[FieldKind, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _path(parts: Sequence[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _depth(value: Any, level: int = 0) -> int:
    # Stops descending past the limit, so hostile nesting cannot exhaust the stack.
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _fail(index: int, message: str) -> InvalidAuthorizationDetails:
    return InvalidAuthorizationDetails(f"authorization_details[{index}]: {message}")


def _check_string_array(index: int, field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _fail(index, f"'{field}' must be a non-empty array of strings")
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _fail(index, f"'{field}'[{position}] must be a non-empty string")
        if len(item) > _MAX_STRING:
            raise _fail(index, f"'{field}'[{position}] is longer than {_MAX_STRING} characters")
    if len(set(value)) != len(value):
        raise _fail(index, f"'{field}' has duplicate values")
    return value


def _check_location(index: int, position: int, location: str) -> None:
    # Locations are compared as exact URIs at the resource server; a relative or
    # fragment-carrying location could be matched ambiguously, so only absolute URIs pass.
    parts = urlsplit(location)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment:
        raise _fail(index, f"'locations'[{position}] must be an absolute http(s) URI without fragment")


def _check_location_syntax(index: int, position: int, location: str) -> None:
    # Parsed strictly (core.uri), as the resource server does: urlsplit alone deletes TAB/CR/LF
    # and strips spaces, so " https://iam.example.test/" would pass _check_location, be shown
    # as typed, and match https://iam.example.test/ at a resource server that cleans it up.
    # After _check_text, which names control and format characters more precisely.
    if not _valid_uri(location):
        raise _fail(index, f"'locations'[{position}] is not a valid URI")


@lru_cache(maxsize=1024)
def _valid_uri(location: str) -> bool:
    # Cached: agents name the same few locations again and again. Bounded: a location is at
    # most _MAX_STRING characters (_check_string_array), so the cache at most ~1 MB.
    try:
        normalize_uri(location)
    except ValueError:
        return False
    return True


def _check_entry(
    index: int,
    entry: Any,
    *,
    registry: TypeRegistry,
    allowed_types: Sequence[str] | None,
) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise _fail(index, "must be a JSON object")
    type_name = entry.get("type")
    if type_name is None:
        raise _fail(index, "'type' is required")
    if not isinstance(type_name, str) or not type_name:
        raise _fail(index, "'type' must be a non-empty string")
    spec = registry.get(type_name)
    if spec is None:
        raise _fail(index, f"unknown type '{type_name}'")
    if allowed_types is not None and type_name not in allowed_types:
        raise _fail(index, f"type '{type_name}' is not allowed for this client")
    for field in STRING_ARRAY_FIELDS:
        if field in entry:
            _check_string_array(index, field, entry[field])
    if "identifier" in entry and (not isinstance(entry["identifier"], str) or not entry["identifier"]):
        raise _fail(index, "'identifier' must be a non-empty string")
    for position, location in enumerate(entry.get("locations", [])):
        _check_location(index, position, location)
    if "actions" not in entry:
        raise _fail(index, f"'actions' is required for type '{type_name}'")
    for action in entry["actions"]:
        if action not in spec.actions:
            raise _fail(index, f"action '{action}' is not defined for type '{type_name}'")
    if spec.require_identifier and "identifier" not in entry:
        raise _fail(index, f"'identifier' is required for type '{type_name}'")
    if spec.require_locations and "locations" not in entry:
        raise _fail(index, f"'locations' is required for type '{type_name}'")
    _check_plan_fields(index, entry)
    for field, value in entry.items():
        if field in COMMON_FIELDS or field in PLAN_FIELDS:
            continue
        kind = spec.fields.get(field)
        if kind is None:
            # Unknown fields are refused rather than ignored: the user would approve text the
            # resource server might interpret, and a silently dropped field could widen access.
            raise _fail(index, f"field '{field}' is not defined for type '{type_name}'")
        if not isinstance(value, _KIND_CHECK[kind]) or (kind != "boolean" and isinstance(value, bool)):
            raise _fail(index, f"field '{field}' must be of JSON type {kind}")
    # A flat entry of printable ASCII (the usual one) passes the depth, text and canonical-form
    # checks below by construction: one walk (_is_plain) instead of their three.
    plain = _is_plain(entry)
    if not plain and _depth(entry) > _MAX_DEPTH:
        raise _fail(index, f"nested deeper than {_MAX_DEPTH} levels")
    if not plain:
        for field, value in entry.items():
            _check_text(index, field, value)
    for position, location in enumerate(entry.get("locations", [])):
        _check_location_syntax(index, position, location)
    # The entry becomes part of the signed binding document: a value without an RFC 8785
    # form (1e400, integers past 2**53, lone surrogates) could never be approved. Checked by a
    # walk that refuses exactly what rfc8785.dumps refuses, without serializing (tests/rfc9396
    # holds the two to the same answers).
    if not plain and not _has_jcs_form(entry):
        raise _fail(index, "not representable in canonical JSON (RFC 8785)")
    validator = registry.validators.get(type_name)
    if validator is not None:
        error = best_match(validator.iter_errors(entry))
        if error is not None:
            where = _path(list(error.absolute_path)) or " (entry)"
            raise InvalidAuthorizationDetails(f"authorization_details[{index}]{where}: {error.message}")
    return entry


def _check_plan_fields(index: int, entry: Mapping[str, Any]) -> None:
    uses = entry.get("max_uses")
    if uses is not None and (not isinstance(uses, int) or isinstance(uses, bool) or not 1 <= uses <= _MAX_USES_LIMIT):
        raise _fail(index, f"'max_uses' must be an integer from 1 to {_MAX_USES_LIMIT}")
    window = []
    for name in ("not_before", "not_after"):
        value = entry.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(index, f"'{name}' must be an integer number of seconds since the epoch")
        window.append(value)
    if len(window) == 2 and window[0] >= window[1]:
        raise _fail(index, "'not_before' must be earlier than 'not_after'")


def parse_authorization_details(
    raw: str,
    *,
    registry: TypeRegistry,
    allowed_types: Sequence[str] | None,
    max_entries: int,
    max_bytes: int,
) -> list[dict[str, Any]]:
    """Parse and validate the ``authorization_details`` request parameter."""
    if len(raw.encode("utf-8")) > max_bytes:
        raise InvalidAuthorizationDetails(f"authorization_details is larger than {max_bytes} bytes")
    try:
        value = _DECODER.decode(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidAuthorizationDetails(f"authorization_details is not valid JSON: {exc}") from None
    if not isinstance(value, list):
        raise InvalidAuthorizationDetails("authorization_details must be a JSON array")
    if not value:
        raise InvalidAuthorizationDetails("authorization_details must not be empty")
    if len(value) > max_entries:
        raise InvalidAuthorizationDetails(
            f"authorization_details has {len(value)} entries; at most {max_entries} are allowed"
        )
    return [
        _check_entry(index, entry, registry=registry, allowed_types=allowed_types) for index, entry in enumerate(value)
    ]


# RFC 8785 3.2.2.3: integers are written as IEEE 754 doubles, exact only within +-(2**53 - 1).
_JCS_INT_MAX = 2**53 - 1


def _has_jcs_form(value: Any) -> bool:
    """Whether ``rfc8785.dumps(value)`` succeeds, for a value parsed from JSON: strings encodable
    as UTF-8 (no lone surrogates), integers within +-(2**53 - 1), finite floats, string keys."""
    if isinstance(value, str):
        return value.isascii() or _utf8_encodable(value)
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_JCS_INT_MAX <= value <= _JCS_INT_MAX
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_has_jcs_form(item) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _has_jcs_form(key) and _utf16_encodable(key) and _has_jcs_form(item)
            for key, item in value.items()
        )
    return False


def _printable_ascii(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _is_plain(entry: dict[str, Any]) -> bool:
    """Whether every key and string of ``entry`` is printable ASCII and every value a string, an
    integer within +-(2**53 - 1), a boolean, null, or a list of such strings. Such an entry is
    two levels deep, holds no unsafe character and has an RFC 8785 form, so _depth, _check_text
    and _has_jcs_form would all pass it (tests/rfc9396 holds the four to the same answers);
    anything else (floats, objects, other text) goes through them."""
    for key, value in entry.items():
        if not _printable_ascii(key):
            return False
        kind = type(value)
        if kind is str:
            if not _printable_ascii(value):
                return False
        elif kind is list:
            for item in value:
                if type(item) is not str or not _printable_ascii(item):
                    return False
        elif kind is int:
            if not -_JCS_INT_MAX <= value <= _JCS_INT_MAX:
                return False
        elif value is not None and kind is not bool:
            return False
    return True


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf16_encodable(key: str) -> bool:
    # rfc8785 sorts keys by their UTF-16 form.
    if key.isascii():
        return True
    try:
        key.encode("utf-16be")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(index: int, field: str, value: Any) -> None:
    if isinstance(value, str):
        # Printable ASCII (U+0020 to U+007E) holds no unsafe character: the per-character
        # check is for the rest.
        if value.isascii() and value.isprintable():
            return
        for char in value:
            if is_unsafe_char(char):
                raise _fail(
                    index, f"'{field}' contains a control, format or unusual space character (U+{ord(char):04X})"
                )
    elif isinstance(value, list):
        for item in value:
            _check_text(index, field, item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(index, field, key)
            _check_text(index, field, item)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259) and have no JCS form, so they cannot be signed.
    raise ValueError(f"{name} is not allowed")


# Built once: json.loads with a keyword argument builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
