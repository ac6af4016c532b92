"""The enrollment and approval pages in a real headless Chromium, with a CDP virtual
authenticator doing the WebAuthn ceremonies, against the service over real HTTP."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from playwright.sync_api import Page, Route, expect

from ciba_service.agent import AgentError
from ciba_service.core.model import RequestStatus
from ciba_service.rs import InsufficientAuthorization, JwksCache, RequestedAction, TokenVerifier
from tests.support.browser import ACTION, Device, Service

pytestmark = pytest.mark.browser

BINDING_MESSAGE = "OPS-7Q2K"
ENTRY_TEXT = "update IAM policy policy-42"
# The fields of ACTION[0] under the sentence, labelled (iam_policy's labels and critical fields).
ENTRY_ROWS = [("Action", "update"), ("Policy", "policy-42"), ("Where", "https://iam.example.test/")]


def policy_action(identifier: str) -> RequestedAction:
    return RequestedAction(
        type="iam_policy",
        actions=["update"],
        identifier=identifier,
        locations=["https://iam.example.test/"],
    )


def start_request(service: Service, binding_message: str = BINDING_MESSAGE) -> tuple[Any, str, str]:
    """The agent asks; returns (agent, auth_req_id, approval URL from the notification)."""
    agent = service.agent()
    pending = agent.request(login_hint="alice", authorization_details=ACTION, binding_message=binding_message)
    notice = service.notifier.next()
    assert notice.binding_message == binding_message
    assert notice.approval_url.startswith(f"{service.base}/approve/")
    return agent, pending.auth_req_id, notice.approval_url


def open_approval(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#status")).to_contain_text("Review the action")
    expect(page.locator("#approve")).to_be_enabled()


def status_of(service: Service, auth_req_id: str) -> RequestStatus:
    return service.request(auth_req_id).status


# 1 ---------------------------------------------------------------------------------------
def test_enrollment_through_the_page(service: Service, device: Device) -> None:
    _, link = service.provider.add_user(username="alice", display_name="Alice Example")
    device.page.goto(link)
    expect(device.page.locator("#user")).to_have_text("Alice Example")
    expect(device.page.locator("#username")).to_have_text("(user name alice)")
    expect(device.page.locator("#register")).to_be_enabled()

    device.page.click("#register")

    expect(device.page.locator("#status")).to_contain_text("Passkey registered")
    (passkey,) = service.passkeys("alice")
    (credential,) = device.credentials()
    assert credential["rpId"] == "localhost"
    assert credential["isResidentCredential"] is True
    # the server stored the very credential the authenticator created
    assert passkey.credential_id == _b64decode(credential["credentialId"])
    user = service.provider.store.find_user("alice")
    assert user is not None
    assert _b64decode(credential["userHandle"]) == user.user_handle

    # the link is single-use: reloading it shows an error and offers no button
    device.page.reload()
    expect(device.page.locator("#status")).to_have_attribute("data-kind", "error")
    expect(device.page.locator("#register")).to_be_disabled()
    assert len(service.passkeys("alice")) == 1


# 2 ---------------------------------------------------------------------------------------
def test_approval_through_the_page_end_to_end(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    sign_count_before = service.passkeys("alice")[0].sign_count
    agent, auth_req_id, url = start_request(service)
    with pytest.raises(AgentError) as pending:
        agent.poll_once(auth_req_id)
    assert pending.value.error == "authorization_pending"

    open_approval(page, url)
    expect(page.locator("#client")).to_contain_text("Agent One")
    expect(page.locator("#user")).to_have_text("alice")
    expect(page.locator("#binding")).to_be_visible()
    expect(page.locator("#binding-message")).to_have_text(BINDING_MESSAGE, use_inner_text=True)
    expect(page.locator("#entries .entry .text")).to_have_text([ENTRY_TEXT])
    expect(page.locator("#entries .entry th")).to_have_text([label for label, _ in ENTRY_ROWS])
    expect(page.locator("#entries .entry td")).to_have_text([value for _, value in ENTRY_ROWS])
    expect(page.locator("#expires")).to_contain_text("Time left to decide: ")

    page.click("#approve")

    expect(page.locator("#status")).to_contain_text("Approved")
    expect(page.locator("#status")).to_have_attribute("data-kind", "done")
    expect(page.locator("#approve")).to_be_disabled()
    expect(page.locator("#deny")).to_be_disabled()
    expect(page.locator("#expiry")).to_be_hidden()  # the countdown stops at the decision
    assert status_of(service, auth_req_id) is RequestStatus.APPROVED

    token = agent.poll_once(auth_req_id)
    assert token["token_type"] == "Bearer"
    assert token["authorization_details"] == ACTION

    verifier = TokenVerifier(issuer=service.base, audience="resource-api", keys=JwksCache(f"{service.base}/jwks.json"))
    with pytest.raises(InsufficientAuthorization):
        verifier.verify(token["access_token"], policy_action("policy-43"))
    verified = verifier.verify(token["access_token"], policy_action("policy-42"))
    assert verified.entry == ACTION[0]

    receipt_id = verified.claims["approval"]["receipt"]
    assert receipt_id in page.locator("#status").inner_text()
    check = service.provider.verify_receipt(receipt_id)
    assert check["valid"] is True
    assert check["binding_document"]["authorization_details"] == ACTION
    assert check["binding_document"]["binding_message"] == BINDING_MESSAGE

    sign_count_after = service.passkeys("alice")[0].sign_count
    assert sign_count_after > sign_count_before
    assert sign_count_after == enrolled.sign_count()


# 3 ---------------------------------------------------------------------------------------
def test_deny_through_the_page(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    agent, auth_req_id, url = start_request(service)
    open_approval(page, url)
    sign_count = enrolled.sign_count()

    page.click("#deny")

    expect(page.locator("#status")).to_contain_text("Denied")
    expect(page.locator("#status")).to_have_attribute("data-kind", "denied")
    expect(page.locator("#approve")).to_be_disabled()
    with pytest.raises(AgentError) as denied:
        agent.poll_once(auth_req_id)
    assert denied.value.error == "access_denied"
    assert enrolled.sign_count() == sign_count  # denying needs no passkey


# 4 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda doc: doc["authorization_details"][0].update(identifier="policy-1"), id="identifier"),
        pytest.param(lambda doc: doc.update(binding_message="OPS-XXXX"), id="binding-message"),
        pytest.param(lambda doc: doc["authorization_details"][0].update(actions=["read"]), id="actions"),
    ],
)
def test_page_refuses_to_sign_when_challenge_does_not_match_document(
    service: Service, enrolled: Device, tamper: Any
) -> None:
    page = enrolled.page
    _, auth_req_id, url = start_request(service)
    sign_count = enrolled.sign_count()
    details_seen: list[dict[str, Any]] = []

    def rewrite(route: Route) -> None:
        response = route.fetch()
        view = response.json()
        tamper(view["binding_document"])
        details_seen.append(view)
        route.fulfill(response=response, json=view)

    page.route(f"{url}/details", rewrite)
    page.goto(url)

    expect(page.locator("#status")).to_have_text("The server's challenge does not match the action shown. Not signing.")
    expect(page.locator("#status")).to_have_attribute("data-kind", "error")
    expect(page.locator("#approve")).to_be_disabled()
    expect(page.locator("#deny")).to_be_disabled()
    assert len(details_seen) == 1
    # the page shows what it was given (the tampered document), yet refuses to sign it
    assert json.loads(page.locator("#document").text_content() or "") == details_seen[0]["binding_document"]
    assert status_of(service, auth_req_id) is RequestStatus.PENDING
    assert enrolled.sign_count() == sign_count
    assert service.passkeys("alice")[0].sign_count == sign_count


def test_page_refuses_when_what_it_shows_is_not_the_signed_document(service: Service, enrolled: Device) -> None:
    """The check above binds the challenge to ``binding_document``; the prominent text
    (entries and binding message) must be bound to that same document too."""
    page = enrolled.page
    _, auth_req_id, url = start_request(service)

    def rewrite(route: Route) -> None:
        response = route.fetch()
        view = response.json()
        # binding_document and the challenge untouched: the server shows one thing, signs another
        view["entries"] = [{"text": "read IAM policy policy-1", "detail": {**ACTION[0], "actions": ["read"]}}]
        view["binding_message"] = "OPS-XXXX"
        route.fulfill(response=response, json=view)

    page.route(f"{url}/details", rewrite)
    page.goto(url)
    expect(page.locator("#entries .entry .text")).to_have_text(["read IAM policy policy-1"])

    expect(page.locator("#status")).not_to_have_text("Loading…")  # load() has finished
    assert page.locator("#status").get_attribute("data-kind") == "error"
    assert page.locator("#approve").is_disabled()
    assert status_of(service, auth_req_id) is RequestStatus.PENDING


# 5 ---------------------------------------------------------------------------------------
def test_second_approve_after_decision_is_refused(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    _, auth_req_id, url = start_request(service)
    open_approval(page, url)
    options = page.evaluate("view.publicKey")  # the approval page's own WebAuthn options
    page.click("#approve")
    expect(page.locator("#status")).to_contain_text("Approved")
    receipt_id = service.request(auth_req_id).receipt_id

    page.reload()
    expect(page.locator("#status")).to_have_text("This request is approved.")
    expect(page.locator("#expiry")).to_be_hidden()
    expect(page.locator("#approve")).to_be_disabled()
    expect(page.locator("#deny")).to_be_disabled()
    expect(page.locator("#entries .entry .text")).to_have_text([ENTRY_TEXT])

    # A fresh, valid assertion over the same challenge, posted as the page would: refused.
    sign_count = service.passkeys("alice")[0].sign_count
    outcome = page.evaluate(
        """async (o) => {
            const credential = await navigator.credentials.get({publicKey: {
                challenge: b64urlToBytes(o.challenge), rpId: o.rpId, userVerification: "required",
                allowCredentials: o.allowCredentials.map(
                    (c) => ({type: "public-key", id: b64urlToBytes(c.id)})),
            }});
            try {
                const body = {credential: credentialToJSON(credential)};
                return {ok: true, body: await postJSON(base + "/approve", body)};
            } catch (error) {
                return {ok: false, code: error.code, message: error.message};
            }
        }""",
        options,
    )
    assert outcome["ok"] is False, outcome
    assert "already decided" in outcome["message"]
    assert enrolled.sign_count() > sign_count  # the passkey did sign; the server refused it
    deny = page.evaluate(
        "() => postJSON(base + '/deny', {}).then(() => 'ok', (e) => e.message)",
    )
    assert "already decided" in deny
    request = service.request(auth_req_id)
    assert request.status is RequestStatus.APPROVED
    assert request.receipt_id == receipt_id
    assert service.passkeys("alice")[0].sign_count == sign_count


# 6 ---------------------------------------------------------------------------------------
def test_authenticator_without_user_verification_cannot_approve(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    # the enrolled key now lives in an authenticator whose PIN/biometric check fails
    enrolled.move_credentials_to_new_authenticator(is_user_verified=False)
    sign_count = enrolled.sign_count()
    _, auth_req_id, url = start_request(service)
    open_approval(page, url)

    page.click("#approve")

    expect(page.locator("#status")).to_contain_text("Not approved")
    expect(page.locator("#status")).to_have_attribute("data-kind", "error")
    assert status_of(service, auth_req_id) is RequestStatus.PENDING
    assert service.passkeys("alice")[0].sign_count == sign_count


def test_server_refuses_assertion_without_user_verification(service: Service, enrolled: Device) -> None:
    """Even when the page is altered to ask for no user verification, so that the browser
    does hand over an assertion with the UV flag clear, the server does not accept it."""
    page = enrolled.page
    enrolled.move_credentials_to_new_authenticator(is_user_verified=False)
    _, auth_req_id, url = start_request(service)
    sign_count = service.passkeys("alice")[0].sign_count

    def discouraged(route: Route) -> None:
        response = route.fetch()
        script = response.text()
        assert 'userVerification: "required"' in script
        route.fulfill(response=response, body=script.replace('"required"', '"discouraged"'))

    page.route("**/static/approve.js", discouraged)
    open_approval(page, url)
    with page.expect_response(f"{url}/approve") as posted:
        page.click("#approve")

    assert posted.value.status == 400
    expect(page.locator("#status")).to_contain_text("Not approved")
    expect(page.locator("#status")).to_contain_text("verification")
    assert enrolled.sign_count() > sign_count  # the authenticator did sign...
    assert status_of(service, auth_req_id) is RequestStatus.PENDING  # ...and it did not count
    assert service.passkeys("alice")[0].sign_count == sign_count


def _b64decode(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4))
