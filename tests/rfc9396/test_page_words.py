"""What the approval page lays out under each entry (``entry_fields``), the plan terms in words,
and the type registry's page fields (``labels``, ``critical``, ``destructive_actions``) with
their validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ciba_service.rfc9396 import AuthorizationDetailsTypeConfig, TypeRegistry, describe_entry, entry_fields, plan_terms

REGISTRY = TypeRegistry.from_config({})
PAYMENT: dict[str, Any] = {
    "type": "payment_initiation",
    "actions": ["initiate"],
    "instructedAmount": {"currency": "EUR", "amount": "12.50"},
    "creditorName": "Merchant A",
    "creditorAccount": {"iban": "DE02100100109307118603"},
}


def test_payment_fields_put_amount_account_and_payee_first() -> None:
    laid_out = entry_fields(PAYMENT, registry=REGISTRY)
    assert laid_out == {
        "summary": "initiate payment of 12.50 EUR to Merchant A",
        "fields": [
            {"path": ["instructedAmount"], "label": "Amount", "critical": True},
            {"path": ["creditorAccount", "iban"], "label": "Recipient's IBAN", "critical": True},
            {"path": ["creditorName"], "label": "Recipient", "critical": True},
            {"path": ["actions"], "label": None, "critical": False},
        ],
        "destructive": [],
    }


def test_a_delete_is_destructive_and_a_read_is_not() -> None:
    entry = {"type": "iam_policy", "identifier": "policy-prod-admins"}
    assert entry_fields({**entry, "actions": ["read", "delete"]}, registry=REGISTRY)["destructive"] == ["delete"]
    assert entry_fields({**entry, "actions": ["read"]}, registry=REGISTRY)["destructive"] == []


def test_absent_fields_get_no_row_and_common_fields_follow_the_declared_ones() -> None:
    entry = {"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api", "privileges": ["admin"]}
    assert entry_fields(entry, registry=REGISTRY)["fields"] == [
        {"path": ["actions"], "label": None, "critical": True},
        {"path": ["identifier"], "label": "Service account", "critical": True},
        {"path": ["privileges"], "label": None, "critical": False},
    ]


def test_unknown_type_falls_back_to_the_identifier() -> None:
    laid_out = entry_fields({"type": "nope", "actions": ["x"], "identifier": "y"}, registry=REGISTRY)
    assert laid_out["summary"] == "x y"
    assert laid_out["fields"][0] == {"path": ["identifier"], "label": None, "critical": True}
    assert laid_out["destructive"] == []


@pytest.mark.parametrize(
    ("plan", "terms"),
    [
        ({"max_uses": 1}, ["once"]),
        ({"max_uses": 3}, ["up to 3 times"]),
        (
            {"not_before": 1_800_000_000, "not_after": 1_800_003_600},
            ["not before 2027-01-15 08:00:00 UTC", "not after 2027-01-15 09:00:00 UTC"],
        ),
        ({}, []),
    ],
)
def test_plan_terms(plan: dict[str, Any], terms: list[str]) -> None:
    assert plan_terms(plan) == terms


def test_sentence_says_once_not_up_to_1_times() -> None:
    entry = {"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api", "max_uses": 1}
    assert describe_entry(entry, registry=REGISTRY) == "rotate the key of svc-api (once)"


def test_configured_labels_name_the_fields_in_the_sentence_too() -> None:
    registry = TypeRegistry.from_config(
        {
            "deploy": AuthorizationDetailsTypeConfig(
                description="Deploy",
                template="{actions} {service}",
                actions=["deploy", "destroy"],
                fields={"service": "string", "target": "object"},
                labels={"target.cluster": "Cluster", "service": "Service"},
                critical=["service", "target.cluster"],
                destructive_actions=["destroy"],
            )
        }
    )
    entry = {"type": "deploy", "actions": ["destroy"], "service": "api", "target": {"cluster": "prod-eu"}}
    assert describe_entry(entry, registry=registry) == "destroy api (cluster: prod-eu)"
    laid_out = entry_fields(entry, registry=registry)
    assert [(f["path"], f["critical"]) for f in laid_out["fields"]] == [
        (["service"], True),
        (["target", "cluster"], True),
        (["actions"], False),
    ]
    assert laid_out["destructive"] == ["destroy"]


@pytest.mark.parametrize(
    ("page_fields", "message"),
    [
        ({"labels": {"amount": "Amount"}}, "labels: 'amount' is not a field of this type"),
        ({"labels": {"service.": "x"}}, "labels: 'service.' is not a field of this type"),
        ({"labels": {"service": " "}}, "labels.service: a label is 1-64 printable characters"),
        ({"labels": {"service": "a\u202eb"}}, "labels.service: a label is 1-64 printable characters"),
        ({"critical": ["max_uses"]}, "critical: 'max_uses' is not a field of this type"),
        ({"critical": ["service", "service"]}, "critical: a field is listed twice"),
        ({"destructive_actions": ["drop"]}, "destructive_actions: ['drop'] are not among the type's actions"),
    ],
)
def test_page_fields_name_only_what_the_type_declares(page_fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AuthorizationDetailsTypeConfig(
            description="Deploy", actions=["deploy"], fields={"service": "string"}, **page_fields
        )


def test_built_in_types_declare_their_page_fields() -> None:
    payment = REGISTRY.types["payment_initiation"]
    assert payment.critical == ["instructedAmount", "creditorAccount.iban", "creditorName"]
    assert REGISTRY.types["iam_policy"].destructive_actions == ["delete"]
    # a configured type that says nothing still shows its identifier first
    assert AuthorizationDetailsTypeConfig(description="x", actions=["a"]).critical == ["identifier"]
