"""examples/mcp_server end to end with the MCP SDK's own client and the real approval page in
headless Chromium (CDP virtual authenticator): free tool runs; the sensitive tool answers with a
URL elicitation; the user approves on the page; the retried call runs once; a second run and
changed arguments are refused; a denial on the page is refused."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ElicitRequestURLParams, ElicitResult, TextContent
from playwright.sync_api import expect

from ciba_service.pep import load_policy
from ciba_service.pep.mcp import REFUSAL_META, McpGuard, fixed_subject
from examples.mcp_server.server import LEDGER, POLICY, build_server
from tests.support.browser import Device
from tests.support.pep import LiveService, live_service

pytestmark = pytest.mark.browser

TRANSFER = {"amount": 100, "currency": "EUR", "to": "bob"}
ACCEPT = {"ciba_approval": ElicitResult(action="accept")}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveService]:
    LEDGER.clear()
    with live_service(tmp_path, enroll_alice=False) as service:
        yield service


def text(result: CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, TextContent)
    return content.text


class McpClientThread:
    """Runs an async MCP client script on its own thread and event loop (the Playwright sync
    API drives the page from the test's thread); URLs the server elicits come out of ``urls``,
    ``step`` lets the script wait for the user."""

    def __init__(self, script: Callable[[Client, McpClientThread], Any], server: Any) -> None:
        self.urls: queue.Queue[str] = queue.Queue()
        self.step = threading.Event()
        self.results: dict[str, Any] = {}
        self.error: BaseException | None = None

        async def on_elicit(context: Any, params: Any) -> ElicitResult:
            assert isinstance(params, ElicitRequestURLParams)
            self.urls.put(params.url)
            return ElicitResult(action="accept")

        async def main() -> None:
            async with Client(server, elicitation_callback=on_elicit) as client:
                await script(client, self)

        def run() -> None:
            try:
                anyio.run(main)
            except BaseException as exc:  # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    async def wait_for_user(self) -> None:
        await anyio.to_thread.run_sync(self.step.wait, 30)
        self.step.clear()

    def join(self) -> dict[str, Any]:
        self.thread.join(60)
        assert not self.thread.is_alive(), "the MCP client did not finish"
        if self.error is not None:
            raise self.error
        return self.results


def approve_on_page(device: Device, url: str, expected_text: str) -> None:
    page = device.page
    page.goto(url)
    expect(page.locator("#status")).to_contain_text("Review the action")
    expect(page.locator("#entries .entry .text")).to_have_text([expected_text])
    page.click("#approve")
    expect(page.locator("#status")).to_contain_text("Approved")


def test_mcp_transfer_approved_in_chromium_runs_once(live: LiveService, new_device: Callable[..., Device]) -> None:
    device = new_device()
    device.enroll(live, "alice")  # type: ignore[arg-type]
    guard = McpGuard(policy=load_policy(POLICY), gate=live.gate(), subject=fixed_subject("alice"), wait=20)
    server = build_server(guard)

    async def script(client: Client, me: McpClientThread) -> None:
        me.results["free"] = await client.call_tool("get_balance", {"account": "main"})
        first = await client.session.call_tool("transfer", TRANSFER, allow_input_required=True)
        assert not isinstance(first, CallToolResult)
        me.urls.put(first.input_requests["ciba_approval"].params.url)  # type: ignore[index,union-attr]
        await me.wait_for_user()
        state = first.request_state
        me.results["ran"] = await client.session.call_tool(
            "transfer",
            TRANSFER,
            input_responses=ACCEPT,
            request_state=state,  # type: ignore[arg-type]
        )
        me.results["again"] = await client.session.call_tool(
            "transfer",
            TRANSFER,
            input_responses=ACCEPT,
            request_state=state,  # type: ignore[arg-type]
        )
        try:
            await client.session.call_tool(
                "transfer",
                {**TRANSFER, "amount": 150},
                input_responses=ACCEPT,
                request_state=state,  # type: ignore[arg-type]
            )
        except MCPError as exc:
            me.results["changed"] = exc
        # a denial on the page: the SDK's own retry loop, the elicitation handled by the client
        me.results["denied"] = await client.call_tool("transfer", {**TRANSFER, "amount": 7000})

    client = McpClientThread(script, server)
    url = client.urls.get(timeout=20)
    approve_on_page(device, url, "initiate payment of 100 EUR to bob")
    client.step.set()
    deny_url = client.urls.get(timeout=20)
    device.page.goto(deny_url)
    expect(device.page.locator("#entries .entry .text")).to_have_text(["initiate payment of 7000 EUR to bob"])
    device.page.click("#deny")
    expect(device.page.locator("#status")).to_contain_text("Denied")
    results = client.join()

    assert text(results["free"]) == "main: 1234.56 EUR"
    ran = results["ran"]
    assert ran.is_error is False, ran
    assert text(ran).startswith("sent 100.0 EUR to bob; approved by alice, receipt ")
    receipt = text(ran).rsplit("receipt ", 1)[1]
    assert live.provider.verify_receipt(receipt)["valid"] is True
    again = results["again"]
    assert again.is_error is True and again.meta[REFUSAL_META]["error"] == "already_used"
    assert "Invalid or expired requestState" in str(results["changed"])
    denied = results["denied"]
    assert denied.is_error is True and text(denied) == "Refused: the user denied this action"
    assert LEDGER == ["transfer 100.0 EUR to bob"]
