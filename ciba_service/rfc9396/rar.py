"""RFC 9396 Rich Authorization Requests: the type registry and ``authorization_details``
validation.

Each check raises :class:`InvalidAuthorizationDetails` naming the failing entry and field,
as RFC 9396 section 5 asks: "the AS MUST refuse to process any unknown authorization details
type or authorization details not conforming to the respective type definition".
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import rfc8785
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ciba_service.config import AuthorizationDetailsTypeConfig, FieldKind
from ciba_service.core.errors import InvalidAuthorizationDetails

__all__ = [
    "COMMON_FIELDS",
    "DEFAULT_TYPES",
    "TypeRegistry",
    "describe_entry",
    "parse_authorization_details",
]

# RFC 9396 section 2.2: the common data fields and their JSON types.
COMMON_FIELDS: dict[str, str] = {
    "type": "string",
    "locations": "array of strings",
    "actions": "array of strings",
    "datatypes": "array of strings",
    "identifier": "string",
    "privileges": "array of strings",
}
_STRING_ARRAYS = ("locations", "actions", "datatypes", "privileges")
# Approved plans (see RESOURCE_SERVER.md): how often an entry may be used, and its execution
# window, enforced by the resource-server verifier. Allowed on every type.
PLAN_FIELDS = ("max_uses", "not_before", "not_after")
_MAX_USES_LIMIT = 100
_MAX_DEPTH = 5
_MAX_STRING = 512

DEFAULT_TYPES: dict[str, AuthorizationDetailsTypeConfig] = {
    "iam_policy": AuthorizationDetailsTypeConfig(
        description="Change an IAM policy",
        template="{actions} IAM policy {identifier}",
        actions=["read", "update", "delete"],
        require_identifier=True,
    ),
    "key_rotation": AuthorizationDetailsTypeConfig(
        description="Rotate the signing key of a service account",
        template="{actions} the key of {identifier}",
        actions=["rotate"],
        require_identifier=True,
    ),
    "payment_initiation": AuthorizationDetailsTypeConfig(
        description="Initiate a payment",
        template="{actions} payment of {instructedAmount} to {creditorName}",
        actions=["initiate"],
        fields={"instructedAmount": "object", "creditorName": "string", "creditorAccount": "object"},
        schema={
            "type": "object",
            "required": ["instructedAmount", "creditorName"],
            "properties": {
                "instructedAmount": {
                    "type": "object",
                    "required": ["currency", "amount"],
                    "additionalProperties": False,
                    "properties": {
                        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                        "amount": {"type": "string", "pattern": "^[0-9]{1,12}(\\.[0-9]{1,2})?$"},
                    },
                },
                "creditorName": {"type": "string", "minLength": 1, "maxLength": 140},
                "creditorAccount": {
                    "type": "object",
                    "required": ["iban"],
                    "properties": {"iban": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"}},
                },
            },
        },
    ),
}

_KIND_CHECK: dict[FieldKind, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@dataclass(frozen=True, kw_only=True)
class TypeRegistry:
    """The authorization details types this service knows, by name, with each type's JSON
    Schema compiled once (never on the request path)."""

    types: Mapping[str, AuthorizationDetailsTypeConfig]
    validators: Mapping[str, Draft202012Validator]

    @classmethod
    def from_config(
        cls, configured: Mapping[str, AuthorizationDetailsTypeConfig], *, include_defaults: bool = True
    ) -> TypeRegistry:
        types = {**(DEFAULT_TYPES if include_defaults else {}), **configured}
        validators = {
            name: Draft202012Validator(spec.schema_) for name, spec in types.items() if spec.schema_ is not None
        }
        return cls(types=types, validators=validators)

    def get(self, type_name: str) -> AuthorizationDetailsTypeConfig | None:
        return self.types.get(type_name)


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
    for field in _STRING_ARRAYS:
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
    if _depth(entry) > _MAX_DEPTH:
        raise _fail(index, f"nested deeper than {_MAX_DEPTH} levels")
    for field, value in entry.items():
        _check_text(index, field, value)
    try:
        # The entry becomes part of the signed binding document: a value without an RFC 8785
        # form (1e400, integers past 2**53, lone surrogates) could never be approved.
        rfc8785.dumps(entry)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError):
        raise _fail(index, "not representable in canonical JSON (RFC 8785)") from None
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
        value = json.loads(raw, parse_constant=_refuse_constant)
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


def is_unsafe_char(char: str) -> bool:
    """Control, format (bidi overrides, zero-width), line/paragraph separators and any space
    other than U+0020 (NBSP, ideographic space): text with them can look different from what it
    says, so shown-and-signed text refuses them."""
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp") or (category == "Zs" and char != " ")


def _check_text(index: int, field: str, value: Any) -> None:
    if isinstance(value, str):
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
