"""The RFC 9396 type registry: the ``authorization_details`` types this service knows (RFC 9396
section 5: "the AS MUST refuse to process any unknown authorization details type"), as
configured (``[authorization_details_types.<name>]`` in the TOML file) and built in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ciba_service.rfc9396.vocabulary import COMMON_FIELDS

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
    # How the approval page names the fields, by dotted path into the entry
    # (``"creditorAccount.iban" = "Recipient's IBAN"``); common fields the type does not name get
    # the page's own words (action, resource, where, ...), any other field its path.
    labels: dict[str, str] = Field(default_factory=dict)
    # The fields the user must check (PSD2 dynamic linking: amount and payee), by dotted path:
    # shown first, in this order, and emphasised.
    critical: list[str] = Field(default_factory=lambda: ["identifier"])
    # Actions that destroy or cannot be undone; the page marks an entry asking for one.
    destructive_actions: list[str] = Field(default_factory=list)

    @field_validator("schema_")
    @classmethod
    def _schema_is_valid(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            Draft202012Validator.check_schema(value)
        return value

    @field_validator("labels")
    @classmethod
    def _labels_are_words(cls, value: dict[str, str]) -> dict[str, str]:
        for path, label in value.items():
            if not label.strip() or not label.isprintable() or len(label) > 64:
                raise ValueError(f"labels.{path}: a label is 1-64 printable characters")
        return value

    @model_validator(mode="after")
    def _names_what_it_declares(self) -> AuthorizationDetailsTypeConfig:
        # A label or critical path naming a field the type cannot carry is a typo: the page would
        # then never emphasise the field the operator meant.
        known = (COMMON_FIELDS - {"type"}) | set(self.fields)
        for where, paths in (("labels", list(self.labels)), ("critical", self.critical)):
            for path in paths:
                if path.split(".", 1)[0] not in known or "" in path.split("."):
                    raise ValueError(
                        f"{where}: {path!r} is not a field of this type (common fields, or one declared in fields)"
                    )
        if len(set(self.critical)) != len(self.critical):
            raise ValueError("critical: a field is listed twice")
        unknown = [a for a in self.destructive_actions if a not in self.actions]
        if unknown:
            raise ValueError(f"destructive_actions: {unknown} are not among the type's actions {self.actions}")
        return self


DEFAULT_TYPES: dict[str, AuthorizationDetailsTypeConfig] = {
    "iam_policy": AuthorizationDetailsTypeConfig(
        description="Change an IAM policy",
        template="{actions} IAM policy {identifier}",
        actions=["read", "update", "delete"],
        require_identifier=True,
        labels={"identifier": "Policy"},
        critical=["actions", "identifier", "locations"],
        destructive_actions=["delete"],
    ),
    "key_rotation": AuthorizationDetailsTypeConfig(
        description="Rotate the signing key of a service account",
        template="{actions} the key of {identifier}",
        actions=["rotate"],
        require_identifier=True,
        labels={"identifier": "Service account"},
        critical=["actions", "identifier"],
    ),
    "payment_initiation": AuthorizationDetailsTypeConfig(
        description="Initiate a payment",
        template="{actions} payment of {instructedAmount} to {creditorName}",
        actions=["initiate"],
        fields={"instructedAmount": "object", "creditorName": "string", "creditorAccount": "object"},
        labels={"instructedAmount": "Amount", "creditorName": "Recipient", "creditorAccount.iban": "Recipient's IBAN"},
        critical=["instructedAmount", "creditorAccount.iban", "creditorName"],
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
