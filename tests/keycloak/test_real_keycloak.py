"""Against a real Keycloak (the pinned distribution, started by scripts/keycloak.sh).

alice registers a passkey in Keycloak itself (its webauthn-register-passwordless required
action, in Chromium with a CDP virtual authenticator); an agent asks ciba-service for one exact
action; alice approves it on the approval page with that same passkey; Keycloak issues the
token, whose `authorization_details` claim is what she approved; a resource server verifies it
with Keycloak's JWKS for that action only. Denial and expiry reach the agent as
`access_denied` and `expired_token`.

If Keycloak cannot be fetched or started, these tests fail: they are never skipped.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keycloak import KeycloakAdmin
from playwright.sync_api import expect, sync_playwright

from ciba_service.agent import AgentError, CibaAgent
from ciba_service.rs import InsufficientAuthorization, JwksCache, RequestedAction, TokenVerifier
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import kc_harness
from kc_harness import (
    AGENT_ID,
    AGENT_SECRET,
    KC_BASE,
    KC_ISSUER,
    OIDC,
    Companion,
    free_port,
    running_companion,
    running_keycloak,
)

pytestmark = pytest.mark.keycloak

ACTION: list[dict[str, Any]] = [
    {"type": "iam_policy", "actions": ["update"], "identifier": "policy-42", "locations": ["https://iam.example.test/"]}
]
EXACT = RequestedAction(
    type="iam_policy", actions=["update"], identifier="policy-42", locations=["https://iam.example.test/"]
)


@pytest.fixture(scope="module")
def companion() -> Iterator[Companion]:
    port = free_port()
    with running_keycloak(port), running_companion(port, Path(tempfile.mkdtemp(prefix="ciba-kc-"))) as running:
        yield running


@pytest.fixture(scope="module")
def admin(companion: Companion) -> KeycloakAdmin:
    """python-keycloak, as the realm's operator would use it (DEV-ONLY bootstrap admin)."""
    return KeycloakAdmin(
        server_url=KC_BASE,
        username=kc_harness.ADMIN_USER,
        password=kc_harness.ADMIN_PASSWORD,
        realm_name="agents",
        user_realm_name="master",
    )


@pytest.fixture(scope="module")
def browser_page(companion: Companion) -> Iterator[Any]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context()
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        page.on("dialog", lambda dialog: dialog.accept("ci laptop"))  # Keycloak asks for a label
        yield page
        browser.close()


@pytest.fixture(scope="module")
def alice_passkey(browser_page: Any, admin: KeycloakAdmin) -> str:
    """alice registers a passkey in Keycloak's own pages (password, then the required action)."""
    page = browser_page
    page.goto(f"{KC_ISSUER}/account")
    page.fill("#username", kc_harness.ALICE)
    page.fill("#password", kc_harness.ALICE_PASSWORD)
    page.click("#kc-login")
    # Keycloak attaches the Register button's click handler from a deferred module script; a
    # click before that script ran does nothing (seen as a 60 s hang), so wait for the page's
    # load event first.
    page.wait_for_url(lambda url: "required-action" in url)
    page.wait_for_load_state("load")
    page.click("#registerWebAuthn")
    page.wait_for_url(lambda url: url.startswith(f"{KC_ISSUER}/account"), timeout=60_000)
    user_id = admin.get_user_id(kc_harness.ALICE)
    assert user_id is not None
    types = [c["type"] for c in admin.get_credentials(user_id)]
    assert "webauthn-passwordless" in types
    return str(user_id)


def agent(companion: Companion) -> CibaAgent:
    return CibaAgent(issuer=companion.base, client_id=AGENT_ID, client_secret=AGENT_SECRET)


def test_realm_imports_with_the_flow_settings(admin: KeycloakAdmin) -> None:
    realm = admin.get_realm("agents")
    assert realm["attributes"]["cibaBackchannelTokenDeliveryMode"] == "poll"
    assert realm["webAuthnPolicyPasswordlessUserVerificationRequirement"] == "required"
    assert realm["webAuthnPolicyPasswordlessRpId"] == "localhost"
    clients = {c["clientId"]: c for c in admin.get_clients()}
    assert clients[AGENT_ID]["attributes"]["oidc.ciba.grant.enabled"] == "true"
    assert clients["ciba-companion"]["serviceAccountsEnabled"] is True
    service_account = admin.get_client_service_account_user(clients["ciba-companion"]["id"])
    realm_management = clients["realm-management"]["id"]
    roles = {r["name"] for r in admin.get_client_roles_of_user(service_account["id"], realm_management)}
    assert roles == {"view-users"}  # least privilege


def test_passkey_from_keycloak_approves_and_keycloak_token_carries_the_action(
    companion: Companion, browser_page: Any, alice_passkey: str
) -> None:
    client = agent(companion)
    pending = client.request(login_hint="alice", authorization_details=ACTION, binding_message="KC-E2E-1")
    notice = companion.inbox.next()
    page = browser_page
    page.goto(notice.approval_url)
    expect(page.locator("#entries")).to_contain_text("update IAM policy policy-42")
    expect(page.locator("#binding-message")).to_have_text("KC-E2E-1")
    expect(page.locator("#approve")).to_be_enabled()
    page.click("#approve")
    expect(page.locator("#status")).to_contain_text("Approved", timeout=15_000)
    token = client.wait(pending)
    client.close()
    verifier = TokenVerifier(
        issuer=KC_ISSUER, audience="resource-api", keys=JwksCache(f"{OIDC}/certs"), algorithms=("RS256",)
    )
    other = RequestedAction(
        type="iam_policy", actions=["delete"], identifier="policy-42", locations=["https://iam.example.test/"]
    )
    with pytest.raises(InsufficientAuthorization):
        verifier.verify(token["access_token"], other)
    verified = verifier.verify(token["access_token"], EXACT)
    assert verified.claims["iss"] == KC_ISSUER
    assert verified.claims["sub"] == alice_passkey
    assert verified.claims["authorization_details"] == ACTION
    assert verified.claims["approval"]["service"] == companion.base
    assert companion.provider.verify_receipt(verified.claims["approval"]["receipt"])["valid"] is True


def test_denial_reaches_the_agent_as_access_denied(companion: Companion, browser_page: Any, alice_passkey: str) -> None:
    client = agent(companion)
    pending = client.request(login_hint="alice", authorization_details=ACTION, binding_message="KC-DENY-1")
    page = browser_page
    page.goto(companion.inbox.next().approval_url)
    expect(page.locator("#deny")).to_be_enabled()
    page.click("#deny")
    expect(page.locator("#status")).to_contain_text("Denied")
    with pytest.raises(AgentError) as info:
        client.wait(pending)
    client.close()
    assert info.value.error == "access_denied"


def test_expired_request_reaches_the_agent_as_expired_token(
    companion: Companion, admin: KeycloakAdmin, alice_passkey: str
) -> None:
    realm = admin.get_realm("agents")
    attributes = dict(realm["attributes"])
    admin.update_realm("agents", {"attributes": {**attributes, "cibaExpiresIn": "6"}})
    try:
        client = agent(companion)
        pending = client.request(login_hint="alice", authorization_details=ACTION, binding_message="KC-EXP-1")
        assert pending.expires_in == 6
        companion.inbox.next()  # alice is told, and does nothing
        with pytest.raises(AgentError) as info:
            client.wait(pending)
        client.close()
        assert info.value.error == "expired_token"
    finally:
        admin.update_realm("agents", {"attributes": attributes})
