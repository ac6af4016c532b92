"""RFC 9396 Rich Authorization Requests.

- :mod:`~ciba_service.rfc9396.vocabulary`: the common fields (section 2.2) and the plan fields,
  one definition for validation and for the resource server's matching.
- :mod:`~ciba_service.rfc9396.registry`: the type registry (:class:`TypeRegistry`, the built-in
  :data:`DEFAULT_TYPES`, and :class:`AuthorizationDetailsTypeConfig`, one configured type).
- :mod:`~ciba_service.rfc9396.validation`: :func:`parse_authorization_details`.
- :mod:`~ciba_service.rfc9396.words`: :func:`describe_entry`, :func:`entry_fields`, :func:`plan_terms`,
  :func:`is_unsafe_char`.

The resource-server library imports the vocabulary only, and needs neither pydantic nor
jsonschema; so the names of ``registry`` and ``validation`` (which do) are loaded on first use
rather than when this package is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ciba_service.core.lazy import load_on_use
from ciba_service.rfc9396.vocabulary import (
    COMMON_FIELD_TYPES,
    COMMON_FIELDS,
    PLAN_FIELDS,
    RESERVED_FIELDS,
    STRING_ARRAY_FIELDS,
)
from ciba_service.rfc9396.words import describe_entry, entry_fields, is_unsafe_char, plan_terms

if TYPE_CHECKING:
    from ciba_service.rfc9396.registry import DEFAULT_TYPES, AuthorizationDetailsTypeConfig, FieldKind, TypeRegistry
    from ciba_service.rfc9396.validation import parse_authorization_details

__all__ = [
    "COMMON_FIELDS",
    "COMMON_FIELD_TYPES",
    "DEFAULT_TYPES",
    "PLAN_FIELDS",
    "RESERVED_FIELDS",
    "STRING_ARRAY_FIELDS",
    "AuthorizationDetailsTypeConfig",
    "FieldKind",
    "TypeRegistry",
    "describe_entry",
    "entry_fields",
    "is_unsafe_char",
    "parse_authorization_details",
    "plan_terms",
]

__getattr__ = load_on_use(
    __name__,
    globals(),
    {
        "DEFAULT_TYPES": "registry",
        "AuthorizationDetailsTypeConfig": "registry",
        "FieldKind": "registry",
        "TypeRegistry": "registry",
        "parse_authorization_details": "validation",
    },
)
