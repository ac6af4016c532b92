"""The terminal approver (``ciba_service.agent.terminal``) with a software CTAP2 security key
(tests/support/ctap2.py) through python-fido2's real client: enrollment and approval over
CTAP2, and every refusal: a tampered request, a wrong or blocked PIN, a key that is not
enrolled, a key that cannot verify the user, a touch refused, a phishing link; and what the
terminal shows cannot drive it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciba_service.agent import terminal
from ciba_service.core.binding import canonical_preimage, challenge_for
from ciba_service.core.model import RequestStatus
from ciba_service.core.protocol import terminal_origin
from ciba_service.core.security import b64url_encode
from tests.support.ctap2 import MAX_PIN_RETRIES, SoftCtap2Device
from tests.support.service import ACTION, BASE, Env, make_settings, open_env

PIN = "4711"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """A service that accepts the terminal approver's origin; alice has no passkey yet."""
    with open_env(make_settings(tmp_path, approval_origins=[terminal_origin(BASE)]), username=None) as opened:
        yield opened


def key_of(device: SoftCtap2Device, pin: str | None = PIN) -> terminal.Ctap2Authenticator:
    return terminal.Ctap2Authenticator(device, read_pin=lambda: pin)


@pytest.fixture
def key(env: Env) -> SoftCtap2Device:
    """alice's security key, enrolled over CTAP2 through her one-time link."""
    device = SoftCtap2Device(pin=PIN)
    _, link = env.provider.add_user(username="alice")
    assert terminal.enroll(env.client, link, key_of(device)) == {"status": "enrolled", "username": "alice"}
    return device


def new_request(env: Env, **fields: str) -> tuple[str, str]:
    response = env.bc_authorize(**fields)
    assert response.status_code == 200, response.text
    auth_req_id = response.json()["auth_req_id"]
    return auth_req_id, f"{BASE}/approve/{env.request_for(auth_req_id).approval_id}"


def read(env: Env, url: str, http: httpx.Client | None = None) -> terminal.RequestView:
    return terminal.read_request(http or env.client, url, now=env.clock())


def assert_pending(env: Env, auth_req_id: str) -> None:
    assert env.request_for(auth_req_id).status is RequestStatus.PENDING
    assert env.token(auth_req_id).json()["error"] == "authorization_pending"


def test_enrollment_over_ctap2_makes_a_user_verified_passkey(env: Env, key: SoftCtap2Device) -> None:
    [passkey] = env.provider.store.passkeys_for(env.provider.store.find_user("alice").user_id)  # type: ignore[union-attr]
    assert passkey.credential_id == key.credentials[0].credential_id
    assert "make_credential" in key.calls and "client_pin" in key.calls


def test_approve_over_ctap2_then_the_token_carries_the_action(env: Env, key: SoftCtap2Device) -> None:
    auth_req_id, url = new_request(env, binding_message="TERM-1")
    view = read(env, url)
    assert view.binding_message == "TERM-1"
    assert [entry for _, entry in view.entries] == ACTION
    result = terminal.approve(env.client, view, key_of(key))
    assert result["status"] == "approved"
    receipt = env.provider.store.get_receipt(result["receipt"])
    assert receipt is not None and receipt.origin == "ciba-cli:http://localhost:8000"
    assert key.credentials[0].sign_count == 2  # the pre-flight probe (no UP) and the assertion
    token = env.token(auth_req_id).json()
    assert token["authorization_details"] == ACTION


def test_the_view_is_shown_field_by_field(env: Env, key: SoftCtap2Device) -> None:
    _, url = new_request(env, binding_message="TERM-2")
    lines = terminal.describe(read(env, url), now=env.clock())
    assert lines[0] == "Agent One (agent-1) asks alice to approve, at http://localhost:8000:"
    assert lines[1] == "  binding message: TERM-2"
    assert lines[3:7] == [
        "       actions: update",
        "       identifier: policy-42",
        "       locations: https://iam.example.test/",
        "       type: iam_policy",
    ]


# tampering between the service and the terminal ---------------------------------------------


class Tamper(httpx.BaseTransport):
    """A man in the middle that rewrites the approval view."""

    def __init__(self, inner: httpx.BaseTransport, change: Callable[[dict[str, Any]], None]) -> None:
        self.inner = inner
        self.change = change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/details"):
            return response
        view = json.loads(response.read())
        self.change(view)
        return httpx.Response(200, json=view)


def tampered(env: Env, change: Callable[[dict[str, Any]], None]) -> httpx.Client:
    return httpx.Client(transport=Tamper(env.client._transport, change), base_url=BASE)


def other_action(view: dict[str, Any]) -> None:
    view["binding_document"]["authorization_details"][0]["identifier"] = "policy-1"


def other_words(view: dict[str, Any]) -> None:
    view["entries"][0]["detail"] = {**view["entries"][0]["detail"], "identifier": "policy-1"}


def other_binding_message(view: dict[str, Any]) -> None:
    view["binding_message"] = "SAFE-1"


def other_client(view: dict[str, Any]) -> None:
    view["client_id"] = "trusted-agent"


def dropped_entry(view: dict[str, Any]) -> None:
    view["entries"].pop()


def no_challenge(view: dict[str, Any]) -> None:
    del view["publicKey"]["challenge"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (other_action, "refused: challenge is not SHA-256(JCS(binding document))"),
        (no_challenge, "refused: no binding document or challenge to compare"),
        (other_words, "an entry shown is not the entry signed"),
        (other_binding_message, "the binding_message shown is not the binding_message signed"),
        (other_client, "the client_id shown is not the client_id signed"),
        (dropped_entry, "the entries shown are not the entries signed"),
    ],
)
def test_a_tampered_view_is_refused_before_the_key_is_asked(
    env: Env, key: SoftCtap2Device, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    auth_req_id, url = new_request(env)
    calls = len(key.calls)
    with pytest.raises(terminal.ViewMismatch) as refused:
        read(env, url, tampered(env, change))
    assert str(refused.value) == message
    assert len(key.calls) == calls  # the key was never asked
    assert_pending(env, auth_req_id)


def test_a_consistent_forgery_is_signed_but_refused_by_the_service(env: Env, key: SoftCtap2Device) -> None:
    # The man in the middle swaps the action and recomputes the challenge to match: the key
    # signs the forged document, which is not the one the service will accept.
    def forge(view: dict[str, Any]) -> None:
        other_action(view)
        view["entries"][0]["detail"] = view["binding_document"]["authorization_details"][0]
        digest = challenge_for(canonical_preimage(view["binding_document"]))
        view["publicKey"]["challenge"] = b64url_encode(digest)

    auth_req_id, url = new_request(env)
    view = read(env, url, tampered(env, forge))
    assert view.entries[0][1]["identifier"] == "policy-1"
    with pytest.raises(terminal.ApprovalRefused, match=r"HTTP 400\): Client data challenge was not expected challenge"):
        terminal.approve(env.client, view, key_of(key))
    assert_pending(env, auth_req_id)


def test_a_link_to_another_host_cannot_get_a_signature_for_the_service(env: Env, key: SoftCtap2Device) -> None:
    # A phishing host relays the real view: the RP ID is not one its origin may use.
    auth_req_id, url = new_request(env)
    view = read(env, url)
    phished = terminal.RequestView(**{**view.__dict__, "web_origin": "https://evil.test"})
    calls = len(key.calls)
    with pytest.raises(terminal.RelyingPartyMismatch, match=r"https://evil\.test may not ask for RP ID localhost"):
        terminal.approve(env.client, phished, key_of(key))
    assert "get_assertion" not in key.calls[calls:]
    assert_pending(env, auth_req_id)


# the key refuses ------------------------------------------------------------------------------


def test_wrong_pin_is_refused_and_nothing_is_sent(env: Env, key: SoftCtap2Device) -> None:
    auth_req_id, url = new_request(env)
    view = read(env, url)
    with pytest.raises(terminal.WrongPin) as refused:
        terminal.approve(env.client, view, key_of(key, pin="0000"))
    assert str(refused.value) == (
        f"wrong PIN ({MAX_PIN_RETRIES - 1} attempts left before the key blocks); the request was not approved"
    )
    assert "get_assertion" not in key.calls[-3:]
    assert_pending(env, auth_req_id)
    # the right PIN still works, and resets the retries
    assert terminal.approve(env.client, view, key_of(key))["status"] == "approved"
    assert key.pin_retries == MAX_PIN_RETRIES


def test_last_wrong_pin_blocks_the_key(env: Env, key: SoftCtap2Device) -> None:
    auth_req_id, url = new_request(env)
    key.pin_retries = 1
    with pytest.raises(terminal.PinBlocked):
        terminal.approve(env.client, read(env, url), key_of(key, pin="0000"))
    with pytest.raises(terminal.PinBlocked):  # even the right PIN, now
        terminal.approve(env.client, read(env, url), key_of(key))
    assert_pending(env, auth_req_id)


def test_a_key_that_is_not_enrolled_is_refused(env: Env, key: SoftCtap2Device) -> None:
    auth_req_id, url = new_request(env)
    stranger = SoftCtap2Device(pin=PIN)
    with pytest.raises(terminal.KeyNotEnrolled, match="holds no passkey of the requested user"):
        terminal.approve(env.client, read(env, url), key_of(stranger))
    assert_pending(env, auth_req_id)


def test_a_key_enrolled_for_another_user_is_refused(env: Env, key: SoftCtap2Device) -> None:
    bobs = SoftCtap2Device(pin=PIN)
    _, link = env.provider.add_user(username="bob")
    terminal.enroll(env.client, link, key_of(bobs))
    auth_req_id, url = new_request(env)  # for alice
    with pytest.raises(terminal.KeyNotEnrolled):
        terminal.approve(env.client, read(env, url), key_of(bobs))
    assert_pending(env, auth_req_id)


def test_a_key_without_user_verification_is_refused(env: Env, key: SoftCtap2Device) -> None:
    auth_req_id, url = new_request(env)
    no_pin = copy.copy(key)
    no_pin.pin = None
    with pytest.raises(terminal.UserVerificationUnavailable, match="set a PIN on it first"):
        terminal.approve(env.client, read(env, url), key_of(no_pin))
    assert_pending(env, auth_req_id)


def test_no_pin_given_cancels(env: Env, key: SoftCtap2Device) -> None:
    auth_req_id, url = new_request(env)
    with pytest.raises(terminal.UserVerificationUnavailable, match="no PIN given"):
        terminal.approve(env.client, read(env, url), key_of(key, pin=None))
    assert_pending(env, auth_req_id)


def test_no_touch_no_approval(env: Env, key: SoftCtap2Device) -> None:
    auth_req_id, url = new_request(env)
    key.touch = lambda: False
    with pytest.raises(terminal.UserVerificationUnavailable, match="not touched"):
        terminal.approve(env.client, read(env, url), key_of(key))
    assert_pending(env, auth_req_id)


def test_a_service_asking_for_less_than_uv_still_gets_uv(env: Env, key: SoftCtap2Device) -> None:
    # A service (or a man in the middle) that says userVerification "discouraged" does not
    # turn the PIN off: the terminal requires it whatever it is told.
    _auth_req_id, url = new_request(env)
    view = read(env, url)
    lenient = terminal.RequestView(
        **{**view.__dict__, "public_key": {**view.public_key, "userVerification": "discouraged"}}
    )
    asked: list[bool] = []
    authenticator = terminal.Ctap2Authenticator(key, read_pin=lambda: asked.append(True) or PIN)
    assert terminal.approve(env.client, lenient, authenticator)["status"] == "approved"
    assert asked == [True]


# the request is not approvable ------------------------------------------------------------------


def test_decided_and_expired_requests_are_not_approvable(env: Env, key: SoftCtap2Device) -> None:
    _, url = new_request(env)
    terminal.approve(env.client, read(env, url), key_of(key))
    with pytest.raises(terminal.NotPending, match="this request is approved"):
        read(env, url)
    _, url = new_request(env)
    env.clock.advance(10_000)
    with pytest.raises(terminal.NotPending, match="this request is expired"):
        read(env, url)


def test_deny_from_the_terminal(env: Env, key: SoftCtap2Device) -> None:
    auth_req_id, url = new_request(env)
    assert terminal.deny(env.client, read(env, url)) == {"status": "denied"}
    assert env.token(auth_req_id).json()["error"] == "access_denied"


def test_unknown_link_is_reported(env: Env) -> None:
    with pytest.raises(terminal.TerminalApprovalError, match="HTTP 404: unknown approval request"):
        read(env, f"{BASE}/approve/nope")


def test_a_link_that_is_not_http_is_refused(env: Env) -> None:
    with pytest.raises(terminal.TerminalApprovalError, match="not an http"):
        read(env, "file:///etc/passwd")


# what the terminal shows -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("policy-42", "policy-42"),
        ("read\x1b[2K\rdelete", "read\\u001b[2K\\u000ddelete"),  # ANSI erase-line, carriage return
        ("evil\u202egnp.exe", "evil\\u202egnp.exe"),  # right-to-left override
        ("a\u200bb", "a\\u200bb"),  # zero-width space
        ("line\u2028break", "line\\u2028break"),
        ("Zürich €", "Zürich €"),
        (42, "42"),
        (True, "true"),
        (None, "null"),
    ],
)
def test_shown_text_cannot_drive_the_terminal(value: object, expected: str) -> None:
    assert terminal.shown(value) == expected


def test_every_nested_field_is_shown() -> None:
    view = terminal.RequestView(
        approval_url=f"{BASE}/approve/x",
        web_origin=BASE,
        issuer=BASE,
        client_id="agent\x1b]0;owned\x07",
        client_name="",
        username="alice",
        binding_message=None,
        entries=[
            (
                "pay",
                {
                    "type": "payment_initiation",
                    "actions": ["initiate"],
                    "instructedAmount": {"currency": "EUR", "amount": "123.50"},
                    "creditors": [{"name": "Bob"}, {"name": "Eve"}],
                    "empty": [],
                },
            )
        ],
        expires_at=2_000_000_000,
        public_key={},
    )
    lines = terminal.describe(view, now=1_999_999_990)
    assert lines[0] == "agent\\u001b]0;owned\\u0007 asks alice to approve, at http://localhost:8000:"
    assert lines[1] == "  binding message: (none)"
    assert lines[2:] == [
        "  1. pay",
        "       actions: initiate",
        "       creditors[0].name: Bob",
        "       creditors[1].name: Eve",
        "       empty: (none)",
        "       instructedAmount.amount: 123.50",
        "       instructedAmount.currency: EUR",
        "       type: payment_initiation",
        "  expires in 10 s",
    ]
