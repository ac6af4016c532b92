"""An approved plan end to end: several entries in one request, shown together, approved
with one passkey gesture; one token then carries out each step once, within its window."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ciba_service.rs import InvalidToken, RequestedAction, ResourceError, StaticKeys, TokenVerifier
from tests.support.service import BASE, Env

T0 = 1_800_000_000
PLAN: list[dict[str, Any]] = [
    {
        "type": "iam_policy",
        "actions": ["update"],
        "identifier": "policy-42",
        "locations": ["https://iam.example.test/"],
    },
    {
        "type": "key_rotation",
        "actions": ["rotate"],
        "identifier": "svc-api",
        "max_uses": 2,
        "not_before": T0,
        "not_after": T0 + 3600,
    },
]
UPDATE = RequestedAction(
    type="iam_policy", actions=["update"], identifier="policy-42", locations=["https://iam.example.test/"]
)
ROTATE = RequestedAction(type="key_rotation", actions=["rotate"], identifier="svc-api")


def test_a_plan_is_approved_once_and_carried_out_step_by_step(env: Env) -> None:
    auth_req_id = env.bc_authorize(authorization_details=json.dumps(PLAN)).json()["auth_req_id"]
    view = env.client.get(f"/approve/{env.request_for(auth_req_id).approval_id}/details").json()
    assert [e["text"] for e in view["entries"]] == [
        "update IAM policy policy-42 (where: https://iam.example.test/)",
        "rotate the key of svc-api (up to 2 times; not before 2027-01-15 08:00:00 UTC; "
        "not after 2027-01-15 09:00:00 UTC)",
    ]
    env.approve(auth_req_id)  # one passkey gesture for the whole plan
    env.clock.advance(2)
    token = env.token(auth_req_id).json()["access_token"]
    verifier = TokenVerifier(
        issuer=BASE,
        audience="resource-api",
        keys=StaticKeys(env.provider.signing_key.jwks()),
        max_uses={"key_rotation": 5},
        clock=env.clock,
    )
    assert verifier.verify(token, UPDATE).entry == PLAN[0]
    assert verifier.verify(token, ROTATE).entry == PLAN[1]
    assert verifier.verify(token, ROTATE).entry == PLAN[1]  # the entry's max_uses is 2
    used = "this step of the approved plan has already been used"
    with pytest.raises(InvalidToken, match=used):
        verifier.verify(token, ROTATE)  # never a third time
    with pytest.raises(InvalidToken, match=used):
        verifier.verify(token, UPDATE)  # nor the first step again
    with pytest.raises(ResourceError) as outside:  # nor anything outside the plan
        verifier.verify(token, RequestedAction(type="key_rotation", actions=["rotate"], identifier="svc-db"))
    assert (outside.value.error, outside.value.status_code, outside.value.description) == (
        "insufficient_scope",
        403,
        "the token's approval does not cover this action",
    )


def test_a_step_outside_its_window_is_refused(env: Env) -> None:
    late = [{**PLAN[1], "not_before": T0 + 7200, "not_after": T0 + 9000}]
    auth_req_id = env.bc_authorize(authorization_details=json.dumps(late)).json()["auth_req_id"]
    env.approve(auth_req_id)
    env.clock.advance(2)
    token = env.token(auth_req_id).json()["access_token"]
    verifier = TokenVerifier(
        issuer=BASE, audience="resource-api", keys=StaticKeys(env.provider.signing_key.jwks()), clock=env.clock
    )
    with pytest.raises(ResourceError) as early:
        verifier.verify(token, ROTATE)
    assert (early.value.error, early.value.status_code, early.value.description) == (
        "insufficient_scope",
        403,
        f"the approval for this action is valid from {T0 + 7200} (epoch seconds)",
    )


@pytest.mark.parametrize(
    ("change", "description"),
    [
        ({"max_uses": 0}, "authorization_details[0]: 'max_uses' must be an integer from 1 to 100"),
        ({"max_uses": True}, "authorization_details[0]: 'max_uses' must be an integer from 1 to 100"),
        (
            {"not_before": "soon"},
            "authorization_details[0]: 'not_before' must be an integer number of seconds since the epoch",
        ),
        (
            {"not_before": T0 + 10, "not_after": T0},
            "authorization_details[0]: 'not_before' must be earlier than 'not_after'",
        ),
    ],
)
def test_plan_fields_are_validated(env: Env, change: dict[str, Any], description: str) -> None:
    response = env.bc_authorize(authorization_details=json.dumps([{**PLAN[1], **change}]))
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_authorization_details", "error_description": description}
