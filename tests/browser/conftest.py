"""Fixtures for the real-browser tests: the service on a free loopback port (real time), one
headless Debian Chromium per module, and per test a fresh browser context whose page carries
a CDP WebAuthn virtual authenticator (CTAP2, internal, resident keys, user verification)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port
from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    UI_TIMEOUT_MS,
    Device,
    QueueNotifier,
    Service,
    make_settings,
)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    port = free_port()
    settings = make_settings(tmp_path, port)
    notifier = QueueNotifier()
    provider = build_provider(settings, notifier=notifier)  # real time
    svc = Service(provider=provider, settings=settings, notifier=notifier, base=settings.issuer)
    with BackgroundServer(create_app(provider), port=port):
        yield svc
        for agent in svc.agents:
            agent.close()
    provider.store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_device(browser: Any) -> Iterator[Callable[..., Device]]:
    contexts: list[Any] = []

    def make(*, is_user_verified: bool = True) -> Device:
        context = browser.new_context()
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable", {"enableUI": False})
        device = Device(context=context, page=page, cdp=cdp, authenticator_id="")
        device.add_authenticator(is_user_verified=is_user_verified)
        return device

    expect.set_options(timeout=UI_TIMEOUT_MS)
    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def device(new_device: Callable[..., Device]) -> Device:
    return new_device()


@pytest.fixture
def enrolled(service: Service, device: Device) -> Device:
    """alice has one passkey, held by ``device``'s virtual authenticator."""
    device.enroll(service, "alice")
    return device
