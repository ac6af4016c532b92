"""``approval_origins``: a native approver's WebAuthn origin (the terminal approver's
``ciba-cli:<web origin>``) is accepted only when configured, exactly, and the receipt names the
origin that signed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ciba_service.core.model import RequestStatus
from ciba_service.core.protocol import terminal_origin
from ciba_service.server.approval import reverify_receipt
from tests.support.service import BASE, Env, make_settings, open_env

CLI_ORIGIN = terminal_origin(BASE)  # "ciba-cli:http://localhost:8000"


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[Env]:
    with open_env(make_settings(tmp_path, approval_origins=[CLI_ORIGIN])) as opened:
        yield opened


def pending(env: Env) -> tuple[str, str, dict[str, Any]]:
    auth_req_id = env.bc_authorize().json()["auth_req_id"]
    approval_id = env.request_for(auth_req_id).approval_id
    return auth_req_id, approval_id, env.client.get(f"/approve/{approval_id}/details").json()


def test_terminal_origin_names_the_service() -> None:
    assert CLI_ORIGIN == "ciba-cli:http://localhost:8000"


def test_terminal_origin_is_refused_when_not_configured(env: Env) -> None:
    auth_req_id, approval_id, view = pending(env)
    credential = env.authenticator.get(view["publicKey"], origin=CLI_ORIGIN)
    response = env.client.post(f"/approve/{approval_id}/approve", json={"credential": credential})
    assert response.status_code == 400
    assert response.json() == {
        "error": "assertion_rejected",
        "error_description": f'Unexpected client data origin "{CLI_ORIGIN}", expected "{BASE}"',
    }
    assert env.request_for(auth_req_id).status is RequestStatus.PENDING


def test_configured_terminal_origin_approves_and_the_receipt_names_it(cli_env: Env) -> None:
    auth_req_id, approval_id, view = pending(cli_env)
    credential = cli_env.authenticator.get(view["publicKey"], origin=CLI_ORIGIN)
    response = cli_env.client.post(f"/approve/{approval_id}/approve", json={"credential": credential})
    assert response.status_code == 200, response.text
    receipt = cli_env.provider.store.get_receipt(response.json()["receipt"])
    assert receipt is not None
    assert receipt.origin == CLI_ORIGIN
    assert reverify_receipt(receipt)["request_id"] == cli_env.request_for(auth_req_id).request_id


def test_the_page_origin_still_works_beside_a_configured_one(cli_env: Env) -> None:
    _, approval_id, view = pending(cli_env)
    credential = cli_env.authenticator.get(view["publicKey"], origin=BASE)
    response = cli_env.client.post(f"/approve/{approval_id}/approve", json={"credential": credential})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "origin",
    [
        "ciba-cli:https://evil.test",  # the approver talked to another host
        "ciba-cli:http://localhost:8000/",  # not the exact string
        "CIBA-CLI:http://localhost:8000",
        "ciba-cli",
    ],
)
def test_other_native_origins_are_refused(cli_env: Env, origin: str) -> None:
    auth_req_id, approval_id, view = pending(cli_env)
    credential = cli_env.authenticator.get(view["publicKey"], origin=origin)
    response = cli_env.client.post(f"/approve/{approval_id}/approve", json={"credential": credential})
    assert response.status_code == 400
    assert response.json()["error_description"] == (
        f"Unexpected client data origin \"{origin}\", expected one of ['{BASE}', '{CLI_ORIGIN}']"
    )
    assert cli_env.request_for(auth_req_id).status is RequestStatus.PENDING


def test_enrollment_accepts_a_configured_origin_only(tmp_path: Path) -> None:
    from ciba_service.agent.softauthn import SoftAuthenticator

    for configured, status in (([], 400), ([CLI_ORIGIN], 200)):
        with open_env(make_settings(tmp_path / str(status), approval_origins=configured), username=None) as env:
            _, link = env.provider.add_user(username="bob")
            token = link.rsplit("/", 1)[1]
            options = env.client.post(f"/enroll/{token}/options", json={}).json()
            credential = SoftAuthenticator().create(options, origin=CLI_ORIGIN)
            response = env.client.post(f"/enroll/{token}/complete", json={"credential": credential})
            assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("origin", "message"),
    [
        ("*", "is not an origin"),
        ("ciba-cli:*", "is not an origin"),
        ("ciba-cli:https://ciba.example.com/approve", "scheme://host[:port]"),
        ("https://ciba.example.com/", "scheme://host[:port]"),
        ("ciba-cli:https://CIBA.example.com", "scheme://host[:port]"),
        ("ciba-cli:http://ciba.example.com", "must be https"),
        ("http://ciba.example.com", "must be https"),
        ("ciba cli:x", "is not an origin"),
        ("", "is not an origin"),
    ],
)
def test_approval_origins_refuse_what_would_widen_them(tmp_path: Path, origin: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_settings(tmp_path, approval_origins=[origin])


def test_production_refuses_plain_http_even_to_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="must be https"):
        make_settings(
            tmp_path,
            environment="production",
            issuer="https://ciba.example.com",
            approval_origins=["ciba-cli:http://localhost:8000"],
        )


@pytest.mark.parametrize(
    "origin", ["ciba-cli:https://ciba.example.com", "ciba-cli:http://localhost:8000", "android:apk-key-hash:abc-_1"]
)
def test_approval_origins_accept_exact_origins(tmp_path: Path, origin: str) -> None:
    settings = make_settings(tmp_path, approval_origins=[origin])
    assert settings.accepted_origins == [BASE, origin]
