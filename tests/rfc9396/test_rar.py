"""RFC 9396 ``authorization_details`` validation (``ciba_service.rfc9396``).

RFC 9396 section 5: "the AS MUST refuse to process any unknown authorization details type or
authorization details not conforming to the respective type definition", with the error
``invalid_authorization_details``. Each case asserts the exact description, which names the
entry index and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciba_service.core.errors import InvalidAuthorizationDetails
from ciba_service.rfc9396 import (
    DEFAULT_TYPES,
    AuthorizationDetailsTypeConfig,
    TypeRegistry,
    describe_entry,
    parse_authorization_details,
)
from tests.support.service import ACTION, OTHER_ID, OTHER_SECRET, Env

REGISTRY = TypeRegistry.from_config({})
MAX_ENTRIES = 10  # Settings.max_authorization_details default
MAX_BYTES = 8192  # Settings.max_authorization_details_bytes default

IAM: dict[str, Any] = {
    "type": "iam_policy",
    "actions": ["update"],
    "identifier": "policy-42",
    "locations": ["https://iam.example.test/"],
}
KEY: dict[str, Any] = {"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api"}
PAYMENT: dict[str, Any] = {
    "type": "payment_initiation",
    "actions": ["initiate"],
    "instructedAmount": {"amount": "12.50", "currency": "EUR"},
    "creditorName": "Merchant A",
    "creditorAccount": {"iban": "DE02100100109307118603"},
}

# A registry with one field of every kind, for the type checks of type-specific fields.
KINDS = TypeRegistry.from_config(
    {
        "transfer": AuthorizationDetailsTypeConfig(
            description="Transfer",
            actions=["send"],
            fields={
                "amount": "number",
                "count": "integer",
                "urgent": "boolean",
                "memo": "string",
                "meta": "object",
                "tags": "array",
            },
        ),
        "fetch": AuthorizationDetailsTypeConfig(description="Fetch", actions=["get"], require_locations=True),
    }
)


def parse(
    value: Any,
    *,
    registry: TypeRegistry = REGISTRY,
    allowed_types: list[str] | None = None,
) -> list[dict[str, Any]]:
    raw = value if isinstance(value, str) else json.dumps(value)
    return parse_authorization_details(
        raw, registry=registry, allowed_types=allowed_types, max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES
    )


def assert_invalid(value: Any, description: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidAuthorizationDetails) as info:
        parse(value, **kwargs)
    assert info.value.error == "invalid_authorization_details"
    assert info.value.status_code == 400
    assert info.value.description == description
    assert info.value.body() == {"error": "invalid_authorization_details", "error_description": description}


def with_entry(**changes: Any) -> list[dict[str, Any]]:
    """A valid first entry followed by an IAM entry with ``changes`` (None removes a field):
    the failing entry is index 1, so each description must name it."""
    entry = {**IAM, **changes}
    return [KEY, {k: v for k, v in entry.items() if v is not None}]


# valid input ------------------------------------------------------------------------------


def test_valid_entries_are_returned_unchanged() -> None:
    value = [IAM, KEY, PAYMENT]
    assert parse(value) == value


def test_optional_common_fields_are_accepted() -> None:
    entry = {**IAM, "datatypes": ["policy"], "privileges": ["admin"], "actions": ["read", "update", "delete"]}
    assert parse([entry]) == [entry]


def test_exact_limits_are_accepted() -> None:
    assert len(parse([KEY] * MAX_ENTRIES)) == MAX_ENTRIES
    padding = MAX_BYTES - len(json.dumps([{**KEY, "identifier": ""}]).encode())
    raw = json.dumps([{**KEY, "identifier": "x" * padding}])
    assert len(raw.encode()) == MAX_BYTES
    assert parse(raw)[0]["identifier"] == "x" * padding


def test_type_specific_fields_of_every_kind() -> None:
    entry = {
        "type": "transfer",
        "actions": ["send"],
        "amount": 12.5,
        "count": 3,
        "urgent": False,
        "memo": "rent",
        "meta": {"a": [1, {"b": 2}]},
        "tags": ["x", 1],
    }
    assert parse([entry], registry=KINDS) == [entry]
    assert parse([{**entry, "amount": 12}], registry=KINDS)[0]["amount"] == 12  # integers are numbers


# the document -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "description"),
    [
        ("not json", "authorization_details is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (
            "[{]",
            "authorization_details is not valid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 3 (char 2)",
        ),
        (
            '[{"type": "iam_policy"}] x',
            "authorization_details is not valid JSON: Extra data: line 1 column 26 (char 25)",
        ),
        ("[NaN]", "authorization_details is not valid JSON: NaN is not allowed"),
        (
            '[{"type": "transfer", "amount": Infinity}]',
            "authorization_details is not valid JSON: Infinity is not allowed",
        ),
        ("[-Infinity]", "authorization_details is not valid JSON: -Infinity is not allowed"),
        (
            "[" * 3000 + "]" * 3000,
            "authorization_details is not valid JSON: maximum recursion depth exceeded "
            "while decoding a JSON array from a unicode string",
        ),
        ('{"type": "iam_policy"}', "authorization_details must be a JSON array"),
        ('"iam_policy"', "authorization_details must be a JSON array"),
        ("null", "authorization_details must be a JSON array"),
        ("[]", "authorization_details must not be empty"),
    ],
    ids=[
        "not-json",
        "broken-object",
        "trailing-data",
        "nan",
        "infinity",
        "minus-infinity",
        "deep-arrays",
        "object",
        "string",
        "null",
        "empty",
    ],
)
def test_invalid_document(raw: str, description: str) -> None:
    assert_invalid(raw, description)


def test_too_many_entries() -> None:
    assert_invalid([KEY] * (MAX_ENTRIES + 1), "authorization_details has 11 entries; at most 10 are allowed")


def test_too_many_bytes() -> None:
    raw = json.dumps([{**KEY, "identifier": "x" * MAX_BYTES}])
    assert_invalid(raw, "authorization_details is larger than 8192 bytes")


def test_size_is_counted_in_utf8_bytes_not_characters() -> None:
    padding = MAX_BYTES - len(json.dumps([{**KEY, "identifier": ""}], ensure_ascii=False).encode())
    raw = json.dumps([{**KEY, "identifier": "é" * (padding // 2 + 1)}], ensure_ascii=False)
    assert len(raw) <= MAX_BYTES < len(raw.encode())
    assert_invalid(raw, "authorization_details is larger than 8192 bytes")


# entries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [1, "iam_policy", None, [IAM], True])
def test_entry_not_an_object(entry: Any) -> None:
    assert_invalid([KEY, entry], "authorization_details[1]: must be a JSON object")


@pytest.mark.parametrize(
    ("type_value", "description"),
    [
        (None, "authorization_details[1]: 'type' is required"),
        ("", "authorization_details[1]: 'type' must be a non-empty string"),
        (42, "authorization_details[1]: 'type' must be a non-empty string"),
        (["iam_policy"], "authorization_details[1]: 'type' must be a non-empty string"),
        ({"name": "iam_policy"}, "authorization_details[1]: 'type' must be a non-empty string"),
        ("IAM_POLICY", "authorization_details[1]: unknown type 'IAM_POLICY'"),
        ("payment", "authorization_details[1]: unknown type 'payment'"),
    ],
    ids=["missing", "empty", "number", "array", "object", "wrong-case", "unknown"],
)
def test_type(type_value: Any, description: str) -> None:
    assert_invalid(with_entry(type=type_value), description)


def test_explicit_null_type_is_missing() -> None:
    assert_invalid([{**IAM, "type": None}], "authorization_details[0]: 'type' is required")


def test_type_not_allowed_for_the_client() -> None:
    assert_invalid(
        [KEY, IAM],
        "authorization_details[1]: type 'iam_policy' is not allowed for this client",
        allowed_types=["key_rotation"],
    )
    assert parse([KEY], allowed_types=["key_rotation"]) == [KEY]


def test_unknown_type_is_reported_before_the_client_restriction() -> None:
    assert_invalid(
        [{**KEY, "type": "nope"}], "authorization_details[0]: unknown type 'nope'", allowed_types=["key_rotation"]
    )


@pytest.mark.parametrize(
    ("actions", "description"),
    [
        (None, "authorization_details[1]: 'actions' is required for type 'iam_policy'"),
        ("update", "authorization_details[1]: 'actions' must be a non-empty array of strings"),
        ({"update": True}, "authorization_details[1]: 'actions' must be a non-empty array of strings"),
        ([], "authorization_details[1]: 'actions' must be a non-empty array of strings"),
        ([1], "authorization_details[1]: 'actions'[0] must be a non-empty string"),
        (["update", None], "authorization_details[1]: 'actions'[1] must be a non-empty string"),
        (["update", ""], "authorization_details[1]: 'actions'[1] must be a non-empty string"),
        (["update", ["read"]], "authorization_details[1]: 'actions'[1] must be a non-empty string"),
        (["x" * 513], "authorization_details[1]: 'actions'[0] is longer than 512 characters"),
        (["update", "update"], "authorization_details[1]: 'actions' has duplicate values"),
        (["update", "destroy"], "authorization_details[1]: action 'destroy' is not defined for type 'iam_policy'"),
        (["rotate"], "authorization_details[1]: action 'rotate' is not defined for type 'iam_policy'"),
        (["Update"], "authorization_details[1]: action 'Update' is not defined for type 'iam_policy'"),
    ],
    ids=[
        "missing",
        "string",
        "object",
        "empty",
        "number",
        "null-item",
        "empty-item",
        "nested-array",
        "too-long",
        "duplicate",
        "undefined",
        "other-types-action",
        "wrong-case",
    ],
)
def test_actions(actions: Any, description: str) -> None:
    assert_invalid(with_entry(actions=actions), description)


@pytest.mark.parametrize(
    ("identifier", "description"),
    [
        (None, "authorization_details[1]: 'identifier' is required for type 'iam_policy'"),
        ("", "authorization_details[1]: 'identifier' must be a non-empty string"),
        (42, "authorization_details[1]: 'identifier' must be a non-empty string"),
        (["policy-42"], "authorization_details[1]: 'identifier' must be a non-empty string"),
        ({"id": "policy-42"}, "authorization_details[1]: 'identifier' must be a non-empty string"),
        (True, "authorization_details[1]: 'identifier' must be a non-empty string"),
    ],
    ids=["missing", "empty", "number", "array", "object", "boolean"],
)
def test_identifier(identifier: Any, description: str) -> None:
    assert_invalid(with_entry(identifier=identifier), description)


def test_identifier_is_optional_when_the_type_does_not_require_it() -> None:
    entry = {k: v for k, v in PAYMENT.items()}
    assert "identifier" not in entry
    assert parse([entry]) == [entry]


@pytest.mark.parametrize(
    ("locations", "description"),
    [
        ("https://iam.example.test/", "authorization_details[1]: 'locations' must be a non-empty array of strings"),
        ([], "authorization_details[1]: 'locations' must be a non-empty array of strings"),
        ([42], "authorization_details[1]: 'locations'[0] must be a non-empty string"),
        (
            ["/relative/path"],
            "authorization_details[1]: 'locations'[0] must be an absolute http(s) URI without fragment",
        ),
        (
            ["iam.example.test"],
            "authorization_details[1]: 'locations'[0] must be an absolute http(s) URI without fragment",
        ),
        (
            ["https://iam.example.test/", "https://iam.example.test/#frag"],
            "authorization_details[1]: 'locations'[1] must be an absolute http(s) URI without fragment",
        ),
        (
            ["ftp://iam.example.test/"],
            "authorization_details[1]: 'locations'[0] must be an absolute http(s) URI without fragment",
        ),
        (
            ["javascript:alert(1)"],
            "authorization_details[1]: 'locations'[0] must be an absolute http(s) URI without fragment",
        ),
        (
            ["https:///no-host"],
            "authorization_details[1]: 'locations'[0] must be an absolute http(s) URI without fragment",
        ),
        (
            ["https://iam.example.test/", "https://iam.example.test/"],
            "authorization_details[1]: 'locations' has duplicate values",
        ),
    ],
    ids=["string", "empty", "number", "relative", "no-scheme", "fragment", "ftp", "javascript", "no-host", "duplicate"],
)
def test_locations(locations: Any, description: str) -> None:
    assert_invalid(with_entry(locations=locations), description)


def test_locations_required_by_the_type() -> None:
    assert_invalid(
        [{"type": "fetch", "actions": ["get"]}],
        "authorization_details[0]: 'locations' is required for type 'fetch'",
        registry=KINDS,
    )
    ok = [{"type": "fetch", "actions": ["get"], "locations": ["http://api.example.test/x"]}]
    assert parse(ok, registry=KINDS) == ok


@pytest.mark.parametrize(
    ("field", "value", "description"),
    [
        ("datatypes", "policy", "authorization_details[1]: 'datatypes' must be a non-empty array of strings"),
        ("datatypes", [True], "authorization_details[1]: 'datatypes'[0] must be a non-empty string"),
        ("privileges", [], "authorization_details[1]: 'privileges' must be a non-empty array of strings"),
        ("privileges", ["admin", "admin"], "authorization_details[1]: 'privileges' has duplicate values"),
    ],
)
def test_other_common_string_arrays(field: str, value: Any, description: str) -> None:
    assert_invalid(with_entry(**{field: value}), description)


@pytest.mark.parametrize(
    ("entry", "description"),
    [
        ({**IAM, "policy": "allow *"}, "authorization_details[1]: field 'policy' is not defined for type 'iam_policy'"),
        (
            {**KEY, "instructedAmount": {}},
            "authorization_details[1]: field 'instructedAmount' is not defined for type 'key_rotation'",
        ),
        (
            {**PAYMENT, "Type": "x"},
            "authorization_details[1]: field 'Type' is not defined for type 'payment_initiation'",
        ),
    ],
    ids=["iam", "other-types-field", "case-variant-of-common"],
)
def test_unknown_field(entry: dict[str, Any], description: str) -> None:
    assert_invalid([KEY, entry], description)


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("amount", True, "number"),
        ("amount", "12.5", "number"),
        ("amount", None, "number"),
        ("count", 1.5, "integer"),
        ("count", False, "integer"),
        ("count", "3", "integer"),
        ("urgent", 1, "boolean"),
        ("urgent", "true", "boolean"),
        ("memo", 5, "string"),
        ("memo", ["rent"], "string"),
        ("meta", [], "object"),
        ("meta", True, "object"),
        ("tags", {}, "array"),
        ("tags", "x", "array"),
    ],
)
def test_wrong_field_kind(field: str, value: Any, kind: str) -> None:
    entry = {"type": "transfer", "actions": ["send"], field: value}
    assert_invalid(
        [{"type": "transfer", "actions": ["send"]}, entry],
        f"authorization_details[1]: field '{field}' must be of JSON type {kind}",
        registry=KINDS,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("instructedAmount", "12.50 EUR"),
        ("creditorName", {"name": "Merchant A"}),
        ("creditorAccount", ["DE02"]),
    ],
)
def test_wrong_field_kind_for_default_payment_type(field: str, value: Any) -> None:
    kind = DEFAULT_TYPES["payment_initiation"].fields[field]
    assert_invalid(
        [{**PAYMENT, field: value}],
        f"authorization_details[0]: field '{field}' must be of JSON type {kind}",
    )


def test_nesting_depth_limit() -> None:
    # The entry is level 1: 4 nested objects below the field stay within 5 levels, 5 do not.
    account = PAYMENT["creditorAccount"]
    ok = {**PAYMENT, "creditorAccount": {**account, "a": {"b": {"c": {"d": 1}}}}}
    assert parse([ok]) == [ok]
    deep = {**PAYMENT, "creditorAccount": {**account, "a": {"b": {"c": {"d": {"e": 1}}}}}}
    assert_invalid([KEY, deep], "authorization_details[1]: nested deeper than 5 levels")
    deep_arrays = {"type": "transfer", "actions": ["send"], "tags": [[[[[1]]]]]}
    assert_invalid([deep_arrays], "authorization_details[0]: nested deeper than 5 levels", registry=KINDS)


@pytest.mark.parametrize(
    ("change", "description"),
    [
        ({"creditorName": None}, "authorization_details[1] (entry): 'creditorName' is a required property"),
        ({"instructedAmount": None}, "authorization_details[1] (entry): 'instructedAmount' is a required property"),
        (
            {"instructedAmount": {"amount": "12.50", "currency": "eur"}},
            "authorization_details[1].instructedAmount.currency: 'eur' does not match '^[A-Z]{3}$'",
        ),
        (
            {"instructedAmount": {"amount": 12.5, "currency": "EUR"}},
            "authorization_details[1].instructedAmount.amount: 12.5 is not of type 'string'",
        ),
        (
            {"instructedAmount": {"amount": "12.505", "currency": "EUR"}},
            "authorization_details[1].instructedAmount.amount: '12.505' does not match "
            "'^[0-9]{1,12}(\\\\.[0-9]{1,2})?$'",
        ),
        (
            {"instructedAmount": {"amount": "12.50", "currency": "EUR", "fee": "0"}},
            "authorization_details[1].instructedAmount: Additional properties are not allowed ('fee' was unexpected)",
        ),
        (
            {"instructedAmount": {"currency": "EUR"}},
            "authorization_details[1].instructedAmount: 'amount' is a required property",
        ),
        ({"creditorName": ""}, "authorization_details[1].creditorName: '' should be non-empty"),
        (
            {"creditorAccount": {"iban": "nope"}},
            "authorization_details[1].creditorAccount.iban: 'nope' does not match '^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$'",
        ),
        ({"creditorAccount": {}}, "authorization_details[1].creditorAccount: 'iban' is a required property"),
    ],
    ids=[
        "no-creditorName",
        "no-instructedAmount",
        "currency-case",
        "amount-number",
        "amount-precision",
        "amount-extra-member",
        "amount-missing",
        "creditorName-empty",
        "iban-pattern",
        "iban-missing",
    ],
)
def test_payment_schema(change: dict[str, Any], description: str) -> None:
    # The type's JSON Schema runs after the generic checks; the description gives the path.
    entry = {k: v for k, v in {**PAYMENT, **change}.items() if v is not None}
    assert_invalid([KEY, entry], description)


def test_first_failing_entry_is_reported() -> None:
    assert_invalid(
        [{**IAM, "actions": []}, {"type": "nope"}],
        "authorization_details[0]: 'actions' must be a non-empty array of strings",
    )


# Product bug: values that pass validation but have no RFC 8785 (JCS) form. The approval
# challenge is SHA-256(JCS(binding document)), so such a request is stored, the agent gets an
# auth_req_id, and then GET /approve/{id}/details raises (HTTP 500): the user can never approve.
# Python's json parses 1e400 as inf without calling parse_constant, so the NaN/Infinity check
# does not catch it; integers beyond 2**53-1 and unpaired surrogates are refused by rfc8785.
_NOT_CANONICAL = "authorization_details[0]: not representable in canonical JSON (RFC 8785)"


def _payment_with_account_extra(number: str) -> str:
    # creditorAccount is the one default-type member whose schema admits extra members.
    return (
        '[{"type": "payment_initiation", "actions": ["initiate"], "creditorName": "Merchant A", '
        '"instructedAmount": {"amount": "1.00", "currency": "EUR"}, '
        f'"creditorAccount": {{"iban": "DE02100100109307118603", "n": {number}}}}}]'
    )


@pytest.mark.parametrize(
    "raw",
    [
        _payment_with_account_extra("1e400"),
        _payment_with_account_extra("-1e400"),
        _payment_with_account_extra("100000000000000000000"),
    ],
    ids=["overflow-to-inf", "overflow-to-minus-inf", "int-beyond-2-53"],
)
def test_values_without_canonical_json_form_are_refused(raw: str) -> None:
    assert_invalid(raw, _NOT_CANONICAL)


def test_lone_surrogates_are_refused_as_unsafe_characters() -> None:
    # A lone surrogate has no RFC 8785 form either; the character check names it first.
    raw = '[{"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-\\ud800"}]'
    assert_invalid(
        raw, "authorization_details[0]: 'identifier' contains a control, format or unusual space character (U+D800)"
    )


# Product bug: the approval page shows every entry "in plain words" (describe_entry) and its
# JSON; binding_message refuses control/format characters so that "the text shown [cannot]
# differ from the text signed", but strings inside authorization_details are not checked. An
# agent (or a prompt injection driving it) can send identifier "prod-\u202e24-ycilop" so the
# page renders a different policy name than the one approved.
@pytest.mark.parametrize(
    ("entry", "description"),
    [
        (
            {**IAM, "identifier": "policy-\u202e24"},
            "authorization_details[0]: 'identifier' contains a control, format or unusual space character (U+202E)",
        ),
        (
            {**IAM, "identifier": "policy\u200b-42"},
            "authorization_details[0]: 'identifier' contains a control, format or unusual space character (U+200B)",
        ),
        (
            {**IAM, "identifier": "policy-42\nand delete all"},
            "authorization_details[0]: 'identifier' contains a control, format or unusual space character (U+000A)",
        ),
        (
            {**PAYMENT, "creditorName": "Merchant \u202eA"},
            "authorization_details[0]: 'creditorName' contains a control, format or unusual space character (U+202E)",
        ),
    ],
    ids=["identifier-bidi", "identifier-zero-width", "identifier-newline", "creditorName-bidi"],
)
def test_control_and_format_characters_in_entries_are_refused(entry: dict[str, Any], description: str) -> None:
    assert_invalid([entry], description)


# over the endpoint --------------------------------------------------------------------------


def assert_endpoint_refuses(response: httpx.Response, description: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_authorization_details", "error_description": description}
    assert response.headers["cache-control"] == "no-store"


def test_endpoint_refuses_type_not_allowed_for_agent_2(env: Env) -> None:
    response = env.bc_authorize(auth=(OTHER_ID, OTHER_SECRET), authorization_details=json.dumps(ACTION))
    assert_endpoint_refuses(response, "authorization_details[0]: type 'iam_policy' is not allowed for this client")
    assert env.notifier.notices == []


def test_endpoint_refuses_not_json(env: Env) -> None:
    response = env.bc_authorize(authorization_details="update policy-42")
    assert_endpoint_refuses(
        response, "authorization_details is not valid JSON: Expecting value: line 1 column 1 (char 0)"
    )


def test_endpoint_refuses_unknown_type(env: Env) -> None:
    response = env.bc_authorize(authorization_details=json.dumps([{**IAM, "type": "root_access"}]))
    assert_endpoint_refuses(response, "authorization_details[0]: unknown type 'root_access'")


def test_endpoint_refuses_undefined_action(env: Env) -> None:
    response = env.bc_authorize(authorization_details=json.dumps([{**IAM, "actions": ["update", "grant"]}]))
    assert_endpoint_refuses(response, "authorization_details[0]: action 'grant' is not defined for type 'iam_policy'")


def test_endpoint_refuses_unknown_field(env: Env) -> None:
    response = env.bc_authorize(authorization_details=json.dumps([{**IAM, "effect": "allow"}]))
    assert_endpoint_refuses(response, "authorization_details[0]: field 'effect' is not defined for type 'iam_policy'")


def test_endpoint_refuses_too_many_entries(env: Env) -> None:
    response = env.bc_authorize(authorization_details=json.dumps([IAM] * 11))
    assert_endpoint_refuses(response, "authorization_details has 11 entries; at most 10 are allowed")


def test_endpoint_refuses_overflowing_number(env: Env) -> None:
    response = env.bc_authorize(authorization_details=_payment_with_account_extra("1e400"))
    assert_endpoint_refuses(response, _NOT_CANONICAL)


# describe_entry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "text"),
    [
        (IAM, "update IAM policy policy-42 (where: https://iam.example.test/)"),
        (
            {**IAM, "actions": ["read", "update", "delete"]},
            "read, update, delete IAM policy policy-42 (where: https://iam.example.test/)",
        ),
        (KEY, "rotate the key of svc-api"),
        (PAYMENT, "initiate payment of 12.50 EUR to Merchant A (recipient's IBAN: DE02100100109307118603)"),
        ({"type": "payment_initiation", "actions": ["initiate"]}, "initiate payment of ? to ?"),
        (
            {**PAYMENT, "instructedAmount": {"value": 3, "unit": "BTC"}},
            "initiate payment of value=3, unit=BTC to Merchant A (recipient's IBAN: DE02100100109307118603)",
        ),
        ({"type": "not_registered", "actions": ["x"], "identifier": "y"}, "x y"),
    ],
    ids=[
        "iam",
        "iam-several-actions",
        "key-rotation",
        "payment",
        "payment-missing-fields",
        "payment-amount-without-currency",
        "unknown-type-fallback",
    ],
)
def test_describe_entry(entry: dict[str, Any], text: str) -> None:
    assert describe_entry(entry, registry=REGISTRY) == text


def test_describe_entry_uses_configured_templates() -> None:
    registry = TypeRegistry.from_config(
        {
            "deploy": AuthorizationDetailsTypeConfig(
                description="Deploy",
                template="{actions} {service} to {locations}",
                actions=["deploy"],
                fields={"service": "string"},
            )
        }
    )
    entry = {
        "type": "deploy",
        "actions": ["deploy"],
        "service": "api",
        "locations": ["https://a.test/", "https://b.test/"],
    }
    assert describe_entry(entry, registry=registry) == "deploy api to https://a.test/, https://b.test/"


def test_registry_defaults_when_nothing_configured() -> None:
    assert set(REGISTRY.types) == {"iam_policy", "key_rotation", "payment_initiation"}
    x = {"x": AuthorizationDetailsTypeConfig(description="x", actions=["a"])}
    # configured types add to the built-in ones, unless the defaults are switched off
    assert set(TypeRegistry.from_config(x).types) == {"iam_policy", "key_rotation", "payment_initiation", "x"}
    assert set(TypeRegistry.from_config(x, include_defaults=False).types) == {"x"}


def test_a_client_naming_an_unknown_type_is_a_configuration_error(tmp_path: Path) -> None:
    from ciba_service.config import ClientConfig
    from ciba_service.core.security import digest_secret
    from ciba_service.server.wiring import build_provider
    from tests.support.service import make_settings

    client = ClientConfig(
        client_id="c", client_secret_hash=digest_secret("s"), authorization_details_types=["iam_polcy"]
    )
    settings = make_settings(tmp_path, clients=[client])
    with pytest.raises(ValueError, match=r"client c lists unknown authorization_details types \['iam_polcy'\]"):
        build_provider(settings)
