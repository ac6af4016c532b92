"""The AuthZEN 1.0 policy decision point (``/.well-known/authzen-configuration``,
``POST /access/v1/evaluation[s]``): a table of requests with their exact answers, then the
rows whose answer depends on a real approval token (covered, used, changed, expired, another
user's), all decided by the shared tool-call mapping (tests/support/pep.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ciba_service.agent.softauthn import SoftAuthenticator
from tests.support.pep import AGENT_ID, GATEWAY_ID, GATEWAY_SECRET, POLICY_TOML, pep_settings
from tests.support.service import BASE, Env, enroll, open_env

PEP = (GATEWAY_ID, GATEWAY_SECRET)
ALICE = {"type": "user", "id": "alice"}
CALL = {"name": "call"}


def tool(tool_name: str, /, **arguments: Any) -> dict[str, Any]:
    return {"type": "tool", "id": tool_name, "properties": {"arguments": arguments}}


def transfer_entry(amount: str, to: str = "alice") -> dict[str, Any]:
    return {
        "type": "payment_initiation",
        "actions": ["initiate"],
        "creditorName": to,
        "instructedAmount": {"currency": "EUR", "amount": amount},
    }


def approval_required(
    entry: dict[str, Any],
    words: str,
    *,
    reason_id: str = "approval_required",
    user: str | None = None,
    tool_name: str = "transfer",
    login_hint: str = "alice",
) -> dict[str, Any]:
    return {
        "id": reason_id,
        "reason_user": {"en": user if user is not None else f"Approval required: {words}"},
        "reason_admin": {"en": f"{tool_name} needs the user's approval"},
        "approval_required": {
            "authorization_details": [entry],
            "backchannel_authentication_endpoint": f"{BASE}/bc-authorize",
            "grant_type": "urn:openid:params:grant-type:ciba",
            "login_hint": login_hint,
        },
    }


@pytest.fixture
def pdp(tmp_path: Path) -> Iterator[Env]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY_TOML)
    with open_env(pep_settings(tmp_path, issuer=BASE, policy_path=policy)) as env:
        enroll(env.provider, env.client, "bob", SoftAuthenticator())
        yield env


def post(
    env: Env,
    path: str,
    body: Any,
    *,
    auth: Any = PEP,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return env.client.post(path, content=data, auth=auth, headers={"Content-Type": content_type, **(headers or {})})


def evaluation(subject: Any = ALICE, action: Any = CALL, resource: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"subject": subject, "action": action, "resource": resource or tool("get_balance")}
    body.update(extra)
    return body


TRANSFER_100 = tool("transfer", amount=100, currency="EUR", to="alice")
WORDS_100 = "Transfer 100 EUR to alice"

# (id, path, body, status, expected JSON body or expected text)
TABLE: list[tuple[str, str, Any, int, Any]] = [
    ("free tool", "/access/v1/evaluation", evaluation(), 200, {"decision": True}),
    (
        "free below the rule's threshold",
        "/access/v1/evaluation",
        evaluation(resource=tool("transfer", amount=5, currency="EUR", to="bob")),
        200,
        {"decision": True},
    ),
    (
        "approval required, no token",
        "/access/v1/evaluation",
        evaluation(resource=TRANSFER_100),
        200,
        {"decision": False, "context": approval_required(transfer_entry("100"), WORDS_100)},
    ),
    (
        "denied tool",
        "/access/v1/evaluation",
        evaluation(resource=tool("drop_database", name="orders")),
        200,
        {
            "decision": False,
            "context": {
                "id": "denied_by_policy",
                "reason_user": {"en": "the policy denies this call"},
                "reason_admin": {"en": "drop_database: deny by policy"},
            },
        },
    ),
    (
        "unmapped tool, default deny",
        "/access/v1/evaluation",
        evaluation(resource=tool("rm_rf")),
        200,
        {
            "decision": False,
            "context": {
                "id": "denied_by_policy",
                "reason_user": {"en": "the policy denies this call"},
                "reason_admin": {"en": "rm_rf: no mapping; the policy's default is deny"},
            },
        },
    ),
    (
        "argument of the wrong type",
        "/access/v1/evaluation",
        evaluation(resource=tool("transfer", amount="5", currency="EUR", to="bob")),
        200,
        {
            "decision": False,
            "context": {
                "id": "invalid_arguments",
                "reason_user": {"en": "the call was refused: argument 'amount' must be a number"},
            },
        },
    ),
    (
        "argument missing",
        "/access/v1/evaluation",
        evaluation(resource=tool("transfer", amount=100, currency="EUR")),
        200,
        {
            "decision": False,
            "context": {
                "id": "invalid_arguments",
                "reason_user": {"en": "the call was refused: argument 'to' is missing"},
            },
        },
    ),
    (
        "hostile argument: bidi override cleaned from the words",
        "/access/v1/evaluation",
        evaluation(resource=tool("transfer", amount=100, currency="EUR", to="alice\u202eevil")),
        200,
        {
            "decision": False,
            "context": approval_required(transfer_entry("100", "alice\u202eevil"), "Transfer 100 EUR to alice?evil"),
        },
    ),
    (
        "subject missing",
        "/access/v1/evaluation",
        {"action": CALL, "resource": tool("get_balance")},
        400,
        "subject is required",
    ),
    ("subject not an object", "/access/v1/evaluation", evaluation(subject="alice"), 400, "subject must be an object"),
    (
        "subject id empty",
        "/access/v1/evaluation",
        evaluation(subject={"type": "user", "id": ""}),
        400,
        "subject.id must be a non-empty string",
    ),
    (
        "subject id with a control character",
        "/access/v1/evaluation",
        evaluation(subject={"type": "user", "id": "alice\n"}),
        400,
        "subject.id is too long or contains control characters",
    ),
    (
        "action name unknown",
        "/access/v1/evaluation",
        evaluation(action={"name": "read"}),
        400,
        "action.name must be 'call'",
    ),
    (
        "action without name",
        "/access/v1/evaluation",
        evaluation(action={}),
        400,
        "action.name must be a non-empty string",
    ),
    (
        "resource of another type",
        "/access/v1/evaluation",
        evaluation(resource={"type": "document", "id": "x"}),
        400,
        "resource.type must be 'tool' (a tool call)",
    ),
    (
        "arguments not an object",
        "/access/v1/evaluation",
        evaluation(resource={"type": "tool", "id": "transfer", "properties": {"arguments": [1]}}),
        400,
        "resource.properties.arguments must be an object",
    ),
    (
        "properties not an object",
        "/access/v1/evaluation",
        evaluation(resource={"type": "tool", "id": "transfer", "properties": "x"}),
        400,
        "resource.properties must be an object",
    ),
    (
        "approval token not a string",
        "/access/v1/evaluation",
        evaluation(resource=TRANSFER_100, context={"approval_token": 7}),
        400,
        "context.approval_token must be a non-empty string",
    ),
    ("body is an array", "/access/v1/evaluation", [1], 400, "the request body must be an object"),
    ("body not JSON", "/access/v1/evaluation", b"{nope", 400, "the request body is not JSON"),
    (
        "batch, mixed, execute_all",
        "/access/v1/evaluations",
        {
            "subject": ALICE,
            "action": CALL,
            "evaluations": [
                {"resource": tool("get_balance")},
                {"resource": tool("drop_database")},
                {"resource": {"type": "tool"}},
                "nope",
                {"resource": TRANSFER_100},
            ],
        },
        200,
        {
            "evaluations": [
                {"decision": True},
                {
                    "decision": False,
                    "context": {
                        "id": "denied_by_policy",
                        "reason_user": {"en": "the policy denies this call"},
                        "reason_admin": {"en": "drop_database: deny by policy"},
                    },
                },
                {
                    "decision": False,
                    "context": {"error": {"status": 400, "message": "resource.id must be a non-empty string"}},
                },
                {
                    "decision": False,
                    "context": {"error": {"status": 400, "message": "evaluations[3] must be an object"}},
                },
                {"decision": False, "context": approval_required(transfer_entry("100"), WORDS_100)},
            ]
        },
    ),
    (
        "batch, deny_on_first_deny stops at the first denial",
        "/access/v1/evaluations",
        {
            "subject": ALICE,
            "action": CALL,
            "options": {"evaluations_semantic": "deny_on_first_deny"},
            "evaluations": [
                {"resource": tool("get_balance")},
                {"resource": tool("rm_rf")},
                {"resource": tool("get_balance")},
            ],
        },
        200,
        {
            "evaluations": [
                {"decision": True},
                {
                    "decision": False,
                    "context": {
                        "id": "denied_by_policy",
                        "reason_user": {"en": "the policy denies this call"},
                        "reason_admin": {"en": "rm_rf: no mapping; the policy's default is deny"},
                    },
                },
            ]
        },
    ),
    (
        "batch, permit_on_first_permit stops at the first permit",
        "/access/v1/evaluations",
        {
            "subject": ALICE,
            "action": CALL,
            "options": {"evaluations_semantic": "permit_on_first_permit"},
            "evaluations": [
                {"resource": tool("drop_database")},
                {"resource": tool("get_balance")},
                {"resource": tool("x")},
            ],
        },
        200,
        {
            "evaluations": [
                {
                    "decision": False,
                    "context": {
                        "id": "denied_by_policy",
                        "reason_user": {"en": "the policy denies this call"},
                        "reason_admin": {"en": "drop_database: deny by policy"},
                    },
                },
                {"decision": True},
            ]
        },
    ),
    (
        "batch, item overrides the default subject",
        "/access/v1/evaluations",
        {
            "subject": ALICE,
            "action": CALL,
            "resource": TRANSFER_100,
            "evaluations": [{}, {"subject": {"type": "user", "id": "bob"}}],
        },
        200,
        {
            "evaluations": [
                {"decision": False, "context": approval_required(transfer_entry("100"), WORDS_100)},
                {"decision": False, "context": approval_required(transfer_entry("100"), WORDS_100, login_hint="bob")},
            ]
        },
    ),
    (
        "batch without evaluations behaves as one evaluation",
        "/access/v1/evaluations",
        evaluation(),
        200,
        {"decision": True},
    ),
    (
        "batch, unknown semantic",
        "/access/v1/evaluations",
        {
            "subject": ALICE,
            "action": CALL,
            "options": {"evaluations_semantic": "majority"},
            "evaluations": [{"resource": tool("get_balance")}],
        },
        400,
        "options.evaluations_semantic must be one of execute_all, deny_on_first_deny, permit_on_first_permit",
    ),
    (
        "batch, empty evaluations",
        "/access/v1/evaluations",
        {"evaluations": []},
        400,
        "evaluations must be a non-empty array",
    ),
    (
        "batch, too many evaluations",
        "/access/v1/evaluations",
        {"subject": ALICE, "action": CALL, "evaluations": [{"resource": tool("get_balance")}] * 65},
        400,
        "at most 64 evaluations per request",
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_evaluation_table(pdp: Env, path: str, body: Any, status: int, expected: Any) -> None:
    response = post(pdp, path, body)
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    if isinstance(expected, str):
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == expected
    else:
        assert response.json() == expected


def test_table_has_at_least_twenty_rows() -> None:
    assert len(TABLE) >= 20


def test_configuration(pdp: Env) -> None:
    response = pdp.client.get("/.well-known/authzen-configuration")
    assert response.status_code == 200
    assert response.json() == {
        "policy_decision_point": BASE,
        "access_evaluation_endpoint": f"{BASE}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{BASE}/access/v1/evaluations",
    }


def test_request_id_is_echoed(pdp: Env) -> None:
    response = post(pdp, "/access/v1/evaluation", evaluation(), headers={"X-Request-ID": "bfe9eb29"})
    assert response.headers["x-request-id"] == "bfe9eb29"
    bad = post(pdp, "/access/v1/evaluation", b"{", headers={"X-Request-ID": "r-2"})
    assert (bad.status_code, bad.headers["x-request-id"]) == (400, "r-2")


@pytest.mark.parametrize(
    ("auth", "status", "text"),
    [
        (None, 401, "client authentication is required"),
        ((GATEWAY_ID, "wrong"), 401, "client authentication failed"),
        ((AGENT_ID, "test-secret-agent-1"), 403, "this client is not a registered policy enforcement point"),
    ],
    ids=["no credentials", "wrong secret", "not a PEP"],
)
def test_pep_authentication(pdp: Env, auth: Any, status: int, text: str) -> None:
    response = post(pdp, "/access/v1/evaluation", evaluation(), auth=auth)
    assert (response.status_code, response.text) == (status, text)
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")


def test_wrong_content_type(pdp: Env) -> None:
    response = post(pdp, "/access/v1/evaluation", evaluation(), content_type="text/plain")
    assert (response.status_code, response.text) == (400, "the request body must be application/json")


def test_no_policy_no_pdp(tmp_path: Path) -> None:
    with open_env(pep_settings(tmp_path, issuer=BASE)) as env:
        assert env.client.get("/.well-known/authzen-configuration").status_code == 404
        assert post(env, "/access/v1/evaluation", evaluation()).status_code in (404, 405)


# rows that need a real approval ------------------------------------------------------------
def approved_token(env: Env, entry: dict[str, Any]) -> str:
    started = env.bc_authorize(authorization_details=json.dumps([entry]), binding_message="PDP-1")
    assert started.status_code == 200, started.text
    auth_req_id = started.json()["auth_req_id"]
    env.approve(auth_req_id)
    token = env.token(auth_req_id)
    assert token.status_code == 200, token.text
    return str(token.json()["access_token"])


def receipt_of(token: str) -> str:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["approval"]["receipt"])


def test_covered_then_used_once(pdp: Env) -> None:
    token = approved_token(pdp, transfer_entry("100"))
    body = evaluation(resource=TRANSFER_100, context={"approval_token": token})
    first = post(pdp, "/access/v1/evaluation", body)
    assert first.json() == {"decision": True, "context": {"id": "approved", "approval": {"receipt": receipt_of(token)}}}
    second = post(pdp, "/access/v1/evaluation", body)
    assert second.json() == {
        "decision": False,
        "context": approval_required(
            transfer_entry("100"), WORDS_100, reason_id="approval_used", user="the approval has already been used"
        ),
    }


def test_changed_arguments_not_covered_and_not_burnt(pdp: Env) -> None:
    token = approved_token(pdp, transfer_entry("100"))
    changed = evaluation(
        resource=tool("transfer", amount=150, currency="EUR", to="alice"), context={"approval_token": token}
    )
    assert post(pdp, "/access/v1/evaluation", changed).json() == {
        "decision": False,
        "context": approval_required(
            transfer_entry("150"),
            "Transfer 150 EUR to alice",
            reason_id="approval_insufficient",
            user="the approval does not cover this call",
        ),
    }
    # the refused call consumed nothing: the approved one still goes through
    exact = evaluation(resource=TRANSFER_100, context={"approval_token": token})
    assert post(pdp, "/access/v1/evaluation", exact).json()["decision"] is True


def test_expired_approval(pdp: Env) -> None:
    token = approved_token(pdp, transfer_entry("100"))
    pdp.clock.advance(3600)
    body = evaluation(resource=TRANSFER_100, context={"approval_token": token})
    assert post(pdp, "/access/v1/evaluation", body).json() == {
        "decision": False,
        "context": approval_required(
            transfer_entry("100"), WORDS_100, reason_id="approval_expired", user="the approval has expired"
        ),
    }


def test_another_users_approval_is_refused_and_not_burnt(pdp: Env) -> None:
    token = approved_token(pdp, transfer_entry("100"))  # alice's
    as_bob = evaluation(subject={"type": "user", "id": "bob"}, resource=TRANSFER_100, context={"approval_token": token})
    assert post(pdp, "/access/v1/evaluation", as_bob).json() == {
        "decision": False,
        "context": approval_required(
            transfer_entry("100"),
            WORDS_100,
            reason_id="approval_wrong_subject",
            user="the approval was given by another user",
            login_hint="bob",
        ),
    }
    as_alice = evaluation(resource=TRANSFER_100, context={"approval_token": token})
    assert post(pdp, "/access/v1/evaluation", as_alice).json()["decision"] is True


def test_forged_token(pdp: Env) -> None:
    token = approved_token(pdp, transfer_entry("100"))
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    body = evaluation(resource=TRANSFER_100, context={"approval_token": forged})
    result = post(pdp, "/access/v1/evaluation", body).json()
    assert result["decision"] is False
    assert result["context"]["id"] == "approval_invalid"


def test_batch_with_token_mixed(pdp: Env) -> None:
    token = approved_token(pdp, transfer_entry("100"))
    body = {
        "subject": ALICE,
        "action": CALL,
        "context": {"approval_token": token},
        "evaluations": [
            {"resource": TRANSFER_100},
            {"resource": tool("transfer", amount=150, currency="EUR", to="alice")},
            {"resource": tool("get_balance")},
        ],
    }
    result = post(pdp, "/access/v1/evaluations", body).json()["evaluations"]
    assert [r["decision"] for r in result] == [True, False, True]
    assert result[1]["context"]["id"] == "approval_insufficient"


def test_bad_policy_stops_the_start(tmp_path: Path) -> None:
    from ciba_service.pep import MappingError
    from ciba_service.server.wiring import build_provider
    from ciba_service.web.app import create_app

    policy = tmp_path / "bad.toml"
    policy.write_text(
        '[tools.transfer]\ndecision = "approval"\ntype = "payment_initiation"\nactions = ["initiate"]\n'
        'identifer = "{args.to}"\n'
    )
    provider = build_provider(pep_settings(tmp_path, issuer=BASE, policy_path=policy))
    try:
        with pytest.raises(MappingError, match=r"bad.toml: tools.transfer: unknown key\(s\) 'identifer'"):
            create_app(provider)
    finally:
        provider.store.close()
