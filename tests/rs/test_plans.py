"""Approved plans: one token, several authorization_details entries approved with one passkey
gesture, each consumed at most max_uses times and only within its execution window."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ciba_service.demo.example_api import IAM_LOCATION, create_example_api
from ciba_service.rs import (
    InMemoryReplayCache,
    InsufficientAuthorization,
    InvalidToken,
    StaticKeys,
    TokenVerifier,
)
from ciba_service.server.tokens import SigningKey
from tests.support.service import Clock
from tests.support.tokens import AUD, ISS, act, mint, verifier

UPDATE_42 = {"type": "iam_policy", "actions": ["update"], "identifier": "policy-42", "locations": [IAM_LOCATION]}
ROTATE_SVC = {"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api", "locations": [IAM_LOCATION]}
DELETE_7 = {"type": "iam_policy", "actions": ["delete"], "identifier": "policy-7", "locations": [IAM_LOCATION]}
PLAN = [UPDATE_42, ROTATE_SVC, DELETE_7]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return SigningKey.load_or_create(tmp_path_factory.mktemp("k") / "key.pem")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_plan_runs_step_by_step_with_one_token(key: SigningKey) -> None:
    v = verifier(key)
    token = mint(key, entries=PLAN)
    # any order; each step once
    for index in (1, 0, 2):
        verified = v.verify(token, act(PLAN[index]))
        assert verified.entry_index == index
        assert verified.entry == PLAN[index]
    for entry in PLAN:
        with pytest.raises(InvalidToken) as info:
            v.verify(token, act(entry))
        assert info.value.description == "this step of the approved plan has already been used"


def test_a_plan_cannot_be_extended(key: SigningKey) -> None:
    v = verifier(key)
    token = mint(key, entries=PLAN)
    for extra in [
        {**UPDATE_42, "identifier": "policy-43"},
        {**DELETE_7, "actions": ["update"]},
        {**ROTATE_SVC, "identifier": "svc-db"},
    ]:
        with pytest.raises(InsufficientAuthorization):
            v.verify(token, act(extra))
    # the refused extensions burned nothing
    for entry in PLAN:
        assert v.verify(token, act(entry))


def test_a_single_entry_token_still_works_once(key: SigningKey) -> None:
    v = verifier(key)
    token = mint(key, entries=[UPDATE_42])
    assert v.verify(token, act(UPDATE_42))
    with pytest.raises(InvalidToken) as info:
        v.verify(token, act(UPDATE_42))
    assert info.value.description == "token has already been used"


def test_the_same_step_approved_twice_runs_twice(key: SigningKey) -> None:
    v = verifier(key)
    token = mint(key, entries=[UPDATE_42, UPDATE_42])
    assert v.verify(token, act(UPDATE_42)).entry_index == 0
    assert v.verify(token, act(UPDATE_42)).entry_index == 1
    with pytest.raises(InvalidToken, match="already been used"):
        v.verify(token, act(UPDATE_42))


@pytest.mark.parametrize(
    ("type_max", "entry_max", "uses"),
    [
        (None, None, 1),  # default: once
        (None, 5, 1),  # an entry cannot raise what its type allows
        (3, None, 3),  # the type allows three
        (3, 2, 2),  # the entry may lower it
        (3, 1, 1),
        (3, 9, 3),
    ],
)
def test_max_uses(key: SigningKey, type_max: int | None, entry_max: int | None, uses: int) -> None:
    v = verifier(key, max_uses={"key_rotation": type_max} if type_max else None)
    entry = {**ROTATE_SVC, **({"max_uses": entry_max} if entry_max else {})}
    token = mint(key, entries=[entry])
    for _ in range(uses):
        assert v.verify(token, act(ROTATE_SVC))
    with pytest.raises(InvalidToken, match="already been used"):
        v.verify(token, act(ROTATE_SVC))


def test_max_uses_is_per_type(key: SigningKey) -> None:
    v = verifier(key, max_uses={"key_rotation": 2})
    token = mint(key, entries=[UPDATE_42, ROTATE_SVC])
    assert v.verify(token, act(ROTATE_SVC))
    assert v.verify(token, act(ROTATE_SVC))
    assert v.verify(token, act(UPDATE_42))
    with pytest.raises(InvalidToken):
        v.verify(token, act(UPDATE_42))


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True, None])
def test_invalid_max_uses(key: SigningKey, bad: Any) -> None:
    if bad is None:
        with pytest.raises(ValueError):
            verifier(key, max_uses={"key_rotation": 0})
        return
    token = mint(key, entries=[{**ROTATE_SVC, "max_uses": bad}])
    with pytest.raises(InvalidToken) as info:
        verifier(key).verify(token, act(ROTATE_SVC))
    assert info.value.description == "authorization_details[0] has an invalid max_uses"


# execution windows ------------------------------------------------------------------------
def test_window_is_enforced_without_leeway(key: SigningKey, clock: Clock) -> None:
    start = int(clock.now)
    v = verifier(key, clock=clock, max_uses={"iam_policy": 5})
    entry = {**UPDATE_42, "not_before": start + 60, "not_after": start + 120}
    token = mint(key, now=start, lifetime=300, entries=[entry])
    with pytest.raises(InsufficientAuthorization) as info:
        v.verify(token, act(UPDATE_42))
    assert info.value.description == f"the approval for this action is valid from {start + 60} (epoch seconds)"
    clock.advance(59)
    with pytest.raises(InsufficientAuthorization):
        v.verify(token, act(UPDATE_42))
    clock.advance(1)  # now == not_before: inside
    assert v.verify(token, act(UPDATE_42))
    clock.advance(59)  # not_after - 1
    assert v.verify(token, act(UPDATE_42))
    clock.advance(1)  # now == not_after: outside
    with pytest.raises(InsufficientAuthorization) as info:
        v.verify(token, act(UPDATE_42))
    assert info.value.description == f"the approval for this action ended at {start + 120} (epoch seconds)"
    assert info.value.body()["authorization_details"] == [act(UPDATE_42).as_authorization_details()]


def test_a_step_refused_outside_its_window_is_not_burned(key: SigningKey, clock: Clock) -> None:
    start = int(clock.now)
    v = verifier(key, clock=clock)
    token = mint(key, now=start, lifetime=300, entries=[{**UPDATE_42, "not_before": start + 30}])
    with pytest.raises(InsufficientAuthorization):
        v.verify(token, act(UPDATE_42))
    clock.advance(30)
    assert v.verify(token, act(UPDATE_42))


def test_windows_order_a_plan(key: SigningKey, clock: Clock) -> None:
    """Two approvals of the same step, one per window: each runs in its own window only."""
    start = int(clock.now)
    v = verifier(key, clock=clock)
    morning = {**ROTATE_SVC, "not_after": start + 100}
    later = {**ROTATE_SVC, "not_before": start + 200}
    token = mint(key, now=start, lifetime=300, entries=[morning, later])
    assert v.verify(token, act(ROTATE_SVC)).entry_index == 0
    with pytest.raises(InvalidToken, match="already been used"):
        v.verify(token, act(ROTATE_SVC))
    clock.advance(150)
    with pytest.raises(InsufficientAuthorization):
        v.verify(token, act(ROTATE_SVC))
    clock.advance(50)
    assert v.verify(token, act(ROTATE_SVC)).entry_index == 1


@pytest.mark.parametrize(("field", "value"), [("not_before", "soon"), ("not_after", True), ("not_after", [1])])
def test_invalid_window(key: SigningKey, field: str, value: Any) -> None:
    token = mint(key, entries=[{**UPDATE_42, field: value}])
    with pytest.raises(InvalidToken) as info:
        verifier(key).verify(token, act(UPDATE_42))
    assert info.value.description == f"authorization_details[0] has an invalid {field}"


def test_window_does_not_outlive_the_token(key: SigningKey, clock: Clock) -> None:
    start = int(clock.now)
    v = verifier(key, clock=clock)
    token = mint(key, now=start, lifetime=60, entries=[{**UPDATE_42, "not_after": start + 3600}])
    clock.advance(120)
    with pytest.raises(InvalidToken, match="expired"):
        v.verify(token, act(UPDATE_42))


# consumption keys -------------------------------------------------------------------------
def test_consumption_is_per_issuer(key: SigningKey) -> None:
    """Verifiers for two issuers may share one store: the same jti does not collide."""
    shared = InMemoryReplayCache()
    ours = verifier(key, replay=shared)
    theirs = TokenVerifier(
        issuer="https://other.example.test", audience=AUD, keys=StaticKeys(key.jwks()), replay=shared
    )
    assert ours.verify(mint(key, jti="same"), act(UPDATE_42))
    assert theirs.verify(mint(key, jti="same", iss="https://other.example.test"), act(UPDATE_42))
    assert ISS != "https://other.example.test"


def test_plan_through_the_example_api(key: SigningKey) -> None:
    client = TestClient(create_example_api(verifier(key)))
    headers = {"Authorization": f"Bearer {mint(key, entries=PLAN)}"}
    assert client.put("/policies/policy-42", headers=headers).status_code == 200
    assert client.post("/service-accounts/svc-api/key/rotate", headers=headers).json()["status"] == "rotated"
    assert client.delete("/policies/policy-7", headers=headers).status_code == 200
    again = client.post("/service-accounts/svc-api/key/rotate", headers=headers)
    assert again.status_code == 401
    assert again.json()["error_description"] == "this step of the approved plan has already been used"
    outside = client.post("/service-accounts/svc-db/key/rotate", headers=headers)
    assert outside.status_code == 403
    assert outside.json()["authorization_details"] == [
        {"type": "key_rotation", "actions": ["rotate"], "locations": [IAM_LOCATION], "identifier": "svc-db"}
    ]
