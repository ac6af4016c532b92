"""The fields every ``authorization_details`` entry may carry, whatever its type: the common
data fields of RFC 9396 section 2.2 and the plan fields of this service. One definition, used
by the service's validation and the resource server's matching alike."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "COMMON_FIELDS",
    "COMMON_FIELD_TYPES",
    "PLAN_FIELDS",
    "RESERVED_FIELDS",
    "STRING_ARRAY_FIELDS",
]

# RFC 9396 section 2.2: the common data fields and their JSON types.
COMMON_FIELD_TYPES: Mapping[str, str] = {
    "type": "string",
    "locations": "array of strings",
    "actions": "array of strings",
    "datatypes": "array of strings",
    "identifier": "string",
    "privileges": "array of strings",
}
COMMON_FIELDS = frozenset(COMMON_FIELD_TYPES)
# The common fields that are arrays of strings, in the order validation checks them.
STRING_ARRAY_FIELDS = tuple(name for name, kind in COMMON_FIELD_TYPES.items() if kind == "array of strings")
# Approved plans (see RESOURCE_SERVER.md): how often an entry may be used, and its execution
# window (epoch seconds), enforced by the resource-server verifier. Allowed on every type, and
# never compared as type-specific fields.
PLAN_FIELDS = frozenset({"max_uses", "not_before", "not_after"})
# Everything that is not a type-specific field.
RESERVED_FIELDS = COMMON_FIELDS | PLAN_FIELDS
