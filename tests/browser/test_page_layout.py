"""The approval and enrollment pages as a person sees them, in real headless Chromium: at a
desktop width and at phone widths (390 and 320 px), light and dark; the fields a user must
check (amount, account, identifier) above the buttons; no sideways scrolling; axe-core finding
no serious or critical accessibility violation; destructive and unrestricted entries marked; a
plan as numbered steps; the time left counting and stopping at the decision.

Screenshots go to ``test-artifacts/screenshots/`` (gitignored; a pair is copied by hand to
``docs/screenshots/`` for the README)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port
from tests.support.browser import Device, QueueNotifier, Service, make_settings

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
LOGO_ORIGIN = "https://brand.example.test"
LOGO_URL = f"{LOGO_ORIGIN}/logo.svg"
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
    '<rect width="64" height="64" rx="14" fill="#1d4ed8"/>'
    '<path d="M18 34l9 9 19-22" stroke="#fff" stroke-width="7" fill="none" stroke-linecap="round"/></svg>'
)
DISPLAY_NAME = "Example Bank approvals"
DESKTOP, PHONE, SMALL_PHONE = (1280, 900), (390, 844), (320, 640)

PAYMENT: list[dict[str, Any]] = [
    {
        "type": "payment_initiation",
        "actions": ["initiate"],
        "locations": ["https://payments.example.test/"],
        "instructedAmount": {"currency": "EUR", "amount": "7000.00"},
        "creditorName": "Acme GmbH",
        "creditorAccount": {"iban": "DE02100100109307118603"},
    }
]
T0 = 1_800_000_000
PLAN: list[dict[str, Any]] = [
    {"type": "iam_policy", "actions": ["delete"], "identifier": "policy-prod-admins", "max_uses": 1},
    {
        "type": "key_rotation",
        "actions": ["rotate"],
        "identifier": "svc-api",
        "locations": ["https://keys.example.test/"],
        "max_uses": 3,
        "not_before": T0,
        "not_after": T0 + 3600,
    },
]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """The service as conftest's, with a display name and an https logo configured."""
    port = free_port()
    settings = make_settings(tmp_path, port, display_name=DISPLAY_NAME, logo_url=LOGO_URL)
    notifier = QueueNotifier()
    provider = build_provider(settings, notifier=notifier)
    svc = Service(provider=provider, settings=settings, notifier=notifier, base=settings.issuer)
    with BackgroundServer(create_app(provider), port=port):
        yield svc
        for agent in svc.agents:
            agent.close()
    provider.store.close()


@pytest.fixture
def enrolled(service: Service, device: Device) -> Device:
    serve_logo(device.page)
    device.enroll(service, "alice")
    return device


def serve_logo(page: Page) -> None:
    # No network here: the logo's https origin is answered by the browser context itself.
    page.route(f"{LOGO_ORIGIN}/**", lambda route: route.fulfill(body=LOGO_SVG, content_type="image/svg+xml"))


def request(service: Service, details: list[dict[str, Any]], binding_message: str = "OPS-7Q2K") -> tuple[Any, str, str]:
    agent = service.agent()
    pending = agent.request(login_hint="alice", authorization_details=details, binding_message=binding_message)
    return agent, pending.auth_req_id, service.notifier.next().approval_url


def open_at(page: Page, url: str, size: tuple[int, int]) -> None:
    page.set_viewport_size({"width": size[0], "height": size[1]})
    page.goto(url)
    expect(page.locator("#status")).not_to_have_text("Loading…")
    assert page.locator("#status").get_attribute("data-kind") == "info", page.locator("#status").inner_text()
    expect(page.locator("#approve")).to_be_enabled()


def shoot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def serious_violations(page: Page) -> list[str]:
    """axe-core (bundled by axe-playwright-python, injected over CDP, so the page's CSP stays
    as served) run on the whole page: the serious and critical violations, readable."""
    results = Axe().run(page, options={"resultTypes": ["violations"]})
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate(
        "() => ({scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth})"
    )
    assert widths["scroll"] <= widths["client"], widths


def above_the_buttons_without_scrolling(page: Page, texts: list[str]) -> None:
    """Each text is in view at load (no scrolling) and ends above the Approve button."""
    button = page.locator("#approve").bounding_box()
    assert button is not None
    viewport = page.viewport_size
    assert viewport is not None
    assert button["y"] + button["height"] <= viewport["height"], "the buttons are below the fold"
    for text in texts:
        box = page.locator("#entries td", has_text=text).first.bounding_box()
        assert box is not None, text
        assert box["y"] >= 0, text
        assert box["y"] + box["height"] <= button["y"], f"{text!r} is not above the buttons"


def before_the_buttons_in_order(page: Page, texts: list[str]) -> None:
    for text in texts:
        before = page.locator("#entries td", has_text=text).first.evaluate(
            "(node) => Boolean(node.compareDocumentPosition(document.getElementById('approve'))"
            " & Node.DOCUMENT_POSITION_FOLLOWING)"
        )
        assert before, f"{text!r} does not come before the buttons"


# -----------------------------------------------------------------------------------------
def test_payment_at_desktop_and_phone_widths(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    _, _, url = request(service, PAYMENT)
    critical = ["7000.00 EUR", "DE02 1001 0010 9307 1186 03", "Acme GmbH"]

    open_at(page, url, DESKTOP)
    # who is asking: the service's name and logo, the agent, the user (once)
    expect(page.locator("#service-name")).to_have_text(DISPLAY_NAME)
    expect(page.locator("#service-logo")).to_be_visible()
    assert page.locator("#service-logo").evaluate("(img) => img.complete && img.naturalWidth > 0")
    expect(page.locator("#who")).to_have_text("Agent One (agent id agent-1) asks you to approve this as alice.")
    # the code to compare, prominent
    expect(page.locator("#binding h2")).to_have_text("Check this code matches your agent")
    expect(page.locator("#binding-message")).to_have_text("OPS-7Q2K")
    font_size = "(n) => parseFloat(getComputedStyle(n).fontSize)"
    code_size = float(page.locator("#binding-message").evaluate(font_size))
    entry_size = float(page.locator("#entries .entry .text").evaluate(font_size))
    assert code_size > entry_size
    # the sentence, and the fields that matter first, labelled in words
    expect(page.locator("#entries .entry .text")).to_have_text(["initiate payment of 7000.00 EUR to Acme GmbH"])
    rows = page.locator("#entries .entry table.fields tr")
    expect(rows.locator("th")).to_have_text(["Amount", "Recipient's IBAN", "Recipient", "Action", "Where", "Resource"])
    expect(rows.locator("td")).to_have_text(
        [*critical, "initiate", "https://payments.example.test/", "Any resource: not limited to one item"]
    )
    expect(page.locator("#entries tr.critical")).to_have_count(3)
    # bound to one service, so no "Not limited" badge; the missing identifier is marked on its row
    expect(page.locator("#entries .badge.warn")).to_have_count(0)
    expect(page.locator("#entries tr.warn td")).to_have_text(["Any resource: not limited to one item"])
    # the time left counts down
    expect(page.locator("#expires")).to_have_text(re.compile(r"^Time left to decide: [45]:\d\d$"))
    first = page.locator("#expires").inner_text()
    expect(page.locator("#expires")).not_to_have_text(first, timeout=3000)
    # raw JSON and the signed document: folded, under one control
    expect(page.locator("#technical")).not_to_have_attribute("open", "")
    expect(page.locator("#raw")).to_be_hidden()
    expect(page.locator("details")).to_have_count(1)
    above_the_buttons_without_scrolling(page, critical)
    no_horizontal_overflow(page)
    assert serious_violations(page) == []
    shoot(page, "approval-payment-desktop-1280")

    for size, name in ((PHONE, "390"), (SMALL_PHONE, "320")):
        open_at(page, url, size)
        before_the_buttons_in_order(page, critical)
        no_horizontal_overflow(page)
        assert serious_violations(page) == []
        shoot(page, f"approval-payment-phone-{name}")

    page.click("#technical summary")  # keyboard and pointer alike: a native <details>
    expect(page.locator("#raw")).to_be_visible()
    expect(page.locator("#document")).to_be_visible()
    no_horizontal_overflow(page)
    shoot(page, "approval-payment-phone-320-technical")


def test_plan_destructive_and_unrestricted_marked(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    _, _, url = request(service, PLAN, binding_message="OPS-1")
    open_at(page, url, DESKTOP)

    expect(page.locator("#entries-heading")).to_have_text("The plan: 2 steps, approved together")
    expect(page.locator("#entries .entry .step")).to_have_text(["Step 1", "Step 2"])
    expect(page.locator("#entries .entry .text")).to_have_text(
        ["delete IAM policy policy-prod-admins", "rotate the key of svc-api"]
    )
    delete, rotate = page.locator("#entries .entry").all()
    # the delete is not a read: marked destructive; without locations it is marked unrestricted
    expect(delete).to_have_class(re.compile(r"\bdestructive\b"))
    expect(delete.locator(".badge.danger")).to_have_text("Destructive: delete")
    expect(delete.locator(".badge.warn")).to_have_text("Not limited")
    expect(delete.locator("tr.warn td")).to_have_text(["Any location: not limited to one service"])
    expect(delete.locator("tr", has_text="Uses").locator("td")).to_have_text("once")
    expect(rotate).not_to_have_class(re.compile(r"\bdestructive\b"))
    expect(rotate.locator(".badge")).to_have_count(0)
    expect(rotate.locator("tr", has_text="Uses").locator("td")).to_have_text("up to 3 times")
    expect(rotate.locator("tr", has_text="When").locator("td")).to_have_text(re.compile(r"^between .+2027.+ and .+$"))
    expect(rotate.locator("th")).to_have_text(["Action", "Service account", "Where", "Uses", "When"])
    no_horizontal_overflow(page)
    assert serious_violations(page) == []
    shoot(page, "approval-plan-desktop-1280")

    page.emulate_media(color_scheme="dark")
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background != "rgb(243, 244, 246)"  # the light background is not kept
    assert serious_violations(page) == []
    shoot(page, "approval-plan-desktop-1280-dark")
    page.set_viewport_size({"width": SMALL_PHONE[0], "height": SMALL_PHONE[1]})
    no_horizontal_overflow(page)
    shoot(page, "approval-plan-phone-320-dark")


def test_countdown_stops_at_the_decision_and_denial_is_not_success(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    _, _, url = request(service, PAYMENT)
    open_at(page, url, PHONE)
    expect(page.locator("#expires")).to_have_text(re.compile(r"^Time left to decide: \d:\d\d$"))

    page.focus("#deny")
    page.keyboard.press("Enter")

    expect(page.locator("#status")).to_have_text("Denied. The agent will be told. You can close this page.")
    expect(page.locator("#status")).to_be_focused()  # the keyboard's place: the outcome
    expect(page.locator("#status")).to_have_attribute("data-kind", "denied")
    color = page.locator("#status").evaluate("(n) => getComputedStyle(n).color")
    assert color == "rgb(180, 35, 24)"  # the denial colour, not success green
    expect(page.locator("#expiry")).to_be_hidden()
    page.wait_for_timeout(1200)
    expect(page.locator("#expiry")).to_be_hidden()  # stopped, not counting on
    assert serious_violations(page) == []
    shoot(page, "approval-denied-phone-390")

    page.reload()  # after a reload: the decision, no "Expires in …"
    expect(page.locator("#status")).to_have_text("This request is denied.")
    expect(page.locator("#status")).to_have_attribute("data-kind", "denied")
    expect(page.locator("#expiry")).to_be_hidden()
    expect(page.locator("#approve")).to_be_disabled()


def test_page_csp_allows_only_the_configured_logo_origin(service: Service, enrolled: Device) -> None:
    _, _, url = request(service, PAYMENT)
    response = enrolled.page.goto(url)
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "img-src 'self' https://brand.example.test;" in csp
    assert "script-src 'self';" in csp
    assert "default-src 'none'" in csp
    assert "unsafe" not in csp


def test_enrollment_page(service: Service, device: Device) -> None:
    page = device.page
    serve_logo(page)
    _, link = service.provider.add_user(username="bob")  # display name = user name
    page.set_viewport_size({"width": PHONE[0], "height": PHONE[1]})
    page.goto(link)
    expect(page.locator("#register")).to_be_enabled()
    expect(page.locator("#service-name")).to_have_text(DISPLAY_NAME)
    expect(page.locator("#for")).to_have_text("This passkey lets you approve what AI agents ask to do as bob.")
    expect(page.locator("#username")).to_have_count(0)  # never "bob (bob)"
    no_horizontal_overflow(page)
    assert serious_violations(page) == []
    shoot(page, "enroll-phone-390")

    _, link = service.provider.add_user(username="carol", display_name="Carol Example")
    page.set_viewport_size({"width": SMALL_PHONE[0], "height": SMALL_PHONE[1]})
    page.goto(link)
    expect(page.locator("#user")).to_have_text("Carol Example")
    expect(page.locator("#username")).to_have_text("(user name carol)")
    no_horizontal_overflow(page)
    page.keyboard.press("Tab")  # the first focusable element is the button, reached by keyboard
    expect(page.locator("#register")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("Passkey registered. You can close this page.")
    expect(page.locator("#status")).to_have_attribute("data-kind", "done")
    assert serious_violations(page) == []
    shoot(page, "enroll-done-phone-320")


def test_keyboard_reaches_approve_deny_and_details_in_order(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    _, _, url = request(service, PAYMENT)
    open_at(page, url, DESKTOP)
    order = []
    for _ in range(3):
        page.keyboard.press("Tab")
        order.append(page.evaluate("() => document.activeElement.id || document.activeElement.tagName"))
    assert order == ["approve", "deny", "SUMMARY"]
    page.keyboard.press("Enter")  # opens the technical details
    expect(page.locator("#raw")).to_be_visible()


def test_one_entry_with_a_use_count_is_no_plan(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    _, _, url = request(service, [{**PLAN[0], "actions": ["read"], "locations": ["https://iam.example.test/"]}])
    open_at(page, url, PHONE)
    expect(page.locator("#entries-heading")).to_have_text("What the agent will be allowed to do")
    expect(page.locator("#entries .entry .step")).to_have_count(0)
    entry = page.locator("#entries .entry")
    expect(entry.locator("th")).to_have_text(["Action", "Policy", "Where", "Uses"])
    expect(entry.locator("td")).to_have_text(["read", "policy-prod-admins", "https://iam.example.test/", "once"])
    expect(entry.locator(".badge")).to_have_count(0)  # a read is neither destructive nor unrestricted
    expect(entry).not_to_have_class(re.compile(r"\bdestructive\b"))


def test_unknown_link_shows_only_the_error(service: Service, device: Device) -> None:
    page = device.page
    page.set_viewport_size({"width": PHONE[0], "height": PHONE[1]})
    page.goto(f"{service.base}/approve/not-a-real-approval-id")
    expect(page.locator("#status")).to_have_text("unknown approval request")
    expect(page.locator("#status")).to_have_attribute("data-kind", "error")
    expect(page.locator("#request")).to_be_hidden()  # no empty "asks you" or action list
    expect(page.locator("#expiry")).to_be_hidden()
    expect(page.locator("#approve")).to_be_disabled()
    assert serious_violations(page) == []


def test_time_left_follows_the_server_clock_not_the_device(service: Service, enrolled: Device) -> None:
    page = enrolled.page
    # The phone's clock is an hour fast: the countdown must still show the request's own minutes.
    page.add_init_script("{ const real = Date.now; Date.now = () => real() + 3_600_000; }")
    _, _, url = request(service, PAYMENT)
    open_at(page, url, PHONE)
    expect(page.locator("#expires")).to_have_text(re.compile(r"^Time left to decide: 4:[45]\d$"))
    page.reload()  # and again after a reload
    expect(page.locator("#approve")).to_be_enabled()
    expect(page.locator("#expires")).to_have_text(re.compile(r"^Time left to decide: 4:[45]\d$"))
