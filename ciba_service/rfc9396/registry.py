"""The RFC 9396 type registry: the ``authorization_details`` types this service knows (RFC 9396
section 5: "the AS MUST refuse to process any unknown authorization details type"), as
configured (``[authorization_details_types.<name>]`` in the TOML file) and built in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "DEFAULT_TYPES",
    "AuthorizationDetailsTypeConfig",
    "FieldKind",
    "TypeRegistry",
]

# The JSON type a type-specific field must have.
FieldKind = Literal["string", "number", "integer", "boolean", "object", "array"]


class AuthorizationDetailsTypeConfig(BaseModel):
    """One entry of the RFC 9396 type registry."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    description: str
    # Readable form for the approval page; ``{actions}``, ``{identifier}``, ``{locations}`` and
    # any declared field name are substituted.
    template: str = "{actions} {identifier}"
    actions: list[str] = Field(min_length=1)
    fields: dict[str, FieldKind] = Field(default_factory=dict)
    require_identifier: bool = False
    require_locations: bool = False
    # A JSON Schema (draft 2020-12) the whole entry must satisfy, for type-specific rules the
    # simple `fields` kinds cannot say (formats, patterns, bounds, required members).
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            Draft202012Validator.check_schema(value)
        return value


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
