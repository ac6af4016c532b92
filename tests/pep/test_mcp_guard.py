"""The MCP guard on the example server (examples/mcp_server), driven by the MCP SDK's own
client in-process, against the service on a real loopback port: the user's device is the
development software authenticator approving over HTTP (tests/browser has the real page)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import URL_ELICITATION_REQUIRED, CallToolResult, ElicitRequestURLParams, ElicitResult, TextContent

from ciba_service.agent import device
from ciba_service.pep import MappingError, load_policy
from ciba_service.pep.mcp import REFUSAL_META, McpGuard, fixed_subject
from examples.mcp_server.server import LEDGER, POLICY, build_server
from tests.support.pep import LiveService, live_service

TRANSFER = {"amount": 100, "currency": "EUR", "to": "bob"}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveService]:
    LEDGER.clear()
    with live_service(tmp_path) as service:
        yield service


def guarded(live: LiveService, *, subject: str = "alice", wait: float = 5, **gate: Any) -> MCPServer:
    guard = McpGuard(policy=load_policy(POLICY), gate=live.gate(**gate), subject=fixed_subject(subject), wait=wait)
    return build_server(guard)


class Device:
    """The MCP client's elicitation handler: records each URL elicitation, then the user
    approves (or denies, or declines to open it)."""

    def __init__(self, live: LiveService, answer: str = "approve") -> None:
        self.live = live
        self.answer = answer
        self.seen: list[ElicitRequestURLParams] = []

    async def __call__(self, context: Any, params: Any) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        self.seen.append(params)
        if self.answer == "decline":
            return ElicitResult(action="decline")
        if self.answer == "approve":
            await anyio.to_thread.run_sync(device.approve, self.live.http, params.url, self.live.authenticator)
        elif self.answer == "deny":
            await anyio.to_thread.run_sync(device.deny, self.live.http, params.url)
        return ElicitResult(action="accept")


def text(result: CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, TextContent)
    return content.text


def refusal(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error is True
    assert result.meta is not None
    meta: dict[str, Any] = result.meta[REFUSAL_META]
    return meta


async def test_free_tool_runs_without_asking(live: LiveService) -> None:
    handler = Device(live)
    async with Client(guarded(live), elicitation_callback=handler) as client:
        result = await client.call_tool("get_balance", {"account": "main"})
    assert (result.is_error, text(result)) == (False, "main: 1234.56 EUR")
    assert handler.seen == [] and live.notifier.notices == []


async def test_sensitive_tool_asks_by_url_elicitation_then_runs_once(live: LiveService) -> None:
    handler = Device(live)
    async with Client(guarded(live), elicitation_callback=handler) as client:
        assert client.protocol_version == "2026-07-28"
        result = await client.call_tool("transfer", TRANSFER)
    (asked,) = handler.seen
    assert asked.url.startswith(f"{live.base}/approve/")
    assert asked.message.startswith("Approve with your passkey: Transfer 100 EUR to bob (code MCP-")
    assert result.is_error is False, result
    assert text(result).startswith("sent 100.0 EUR to bob; approved by alice, receipt ")
    assert LEDGER == ["transfer 100.0 EUR to bob"]
    # the tool got the verified approval: its receipt re-verifies at the service
    receipt = text(result).rsplit("receipt ", 1)[1]
    check = live.provider.verify_receipt(receipt)
    assert check["valid"] is True
    assert check["binding_document"]["authorization_details"] == [
        {
            "type": "payment_initiation",
            "actions": ["initiate"],
            "creditorName": "bob",
            "instructedAmount": {"currency": "EUR", "amount": "100"},
        }
    ]


async def test_second_run_of_the_approved_call_is_refused(live: LiveService) -> None:
    handler = Device(live)
    async with Client(guarded(live), elicitation_callback=handler) as client:
        first = await client.session.call_tool("transfer", TRANSFER, allow_input_required=True)
        assert not isinstance(first, CallToolResult)
        request = first.input_requests["ciba_approval"]  # type: ignore[index]
        await handler(None, request.params)
        responses = {"ciba_approval": ElicitResult(action="accept")}
        ran = await client.session.call_tool(
            "transfer",
            TRANSFER,
            input_responses=responses,
            request_state=first.request_state,  # type: ignore[arg-type]
        )
        again = await client.session.call_tool(
            "transfer",
            TRANSFER,
            input_responses=responses,
            request_state=first.request_state,  # type: ignore[arg-type]
        )
    assert ran.is_error is False
    assert refusal(again)["error"] == "already_used"
    assert text(again) == "Refused: this approval has already been used; call the tool again to ask for a new approval"
    assert LEDGER == ["transfer 100.0 EUR to bob"]


async def test_changed_arguments_with_the_approved_state_are_refused(live: LiveService) -> None:
    handler = Device(live)
    async with Client(guarded(live), elicitation_callback=handler) as client:
        first = await client.session.call_tool("transfer", TRANSFER, allow_input_required=True)
        assert not isinstance(first, CallToolResult)
        await handler(None, first.input_requests["ciba_approval"].params)  # type: ignore[index]
        with pytest.raises(MCPError, match="Invalid or expired requestState"):
            await client.session.call_tool(
                "transfer",
                {**TRANSFER, "amount": 150},
                request_state=first.request_state,  # type: ignore[arg-type]
                input_responses={"ciba_approval": ElicitResult(action="accept")},
            )
    assert LEDGER == []


async def test_denial_is_refused(live: LiveService) -> None:
    async with Client(guarded(live), elicitation_callback=Device(live, "deny")) as client:
        result = await client.call_tool("transfer", TRANSFER)
    assert refusal(result)["error"] == "access_denied"
    assert text(result) == "Refused: the user denied this action"
    assert LEDGER == []


async def test_declined_link_is_refused(live: LiveService) -> None:
    async with Client(guarded(live), elicitation_callback=Device(live, "decline")) as client:
        result = await client.call_tool("transfer", TRANSFER)
    assert refusal(result)["error"] == "declined"
    assert LEDGER == []


async def test_request_expired_before_approval(live: LiveService) -> None:
    async def late(context: Any, params: Any) -> ElicitResult:
        await anyio.sleep(2.5)  # the user comes back after the request expired
        return ElicitResult(action="accept")

    async with Client(guarded(live, requested_expiry=2), elicitation_callback=late) as client:
        result = await client.call_tool("transfer", TRANSFER)
    assert refusal(result)["error"] == "expired"
    assert text(result) == (
        "Refused: the approval request expired before the user approved it; call the tool again to ask again"
    )
    assert LEDGER == []


async def test_approval_expired_before_the_run(live: LiveService) -> None:
    import time

    later = lambda: time.time() + 3600  # noqa: E731  (the run happens after the token's exp)
    async with Client(guarded(live, clock=later), elicitation_callback=Device(live)) as client:
        result = await client.call_tool("transfer", TRANSFER)
    refused = refusal(result)
    assert refused["error"] == "expired"
    # the refusal names what to approve, as a resource server's RFC 9470-style challenge would
    assert refused["authorization_details"][0]["creditorName"] == "bob"
    assert refused["www_authenticate"].startswith('Bearer realm="mcp", error="insufficient_scope"')
    assert "authorization_details=" in refused["www_authenticate"]
    assert LEDGER == []


async def test_legacy_session_gets_the_url_elicitation_required_error_then_retries(live: LiveService) -> None:
    server = guarded(live)
    async with Client(server, mode="legacy") as client:
        assert client.protocol_version == "2025-11-25"
        with pytest.raises(MCPError) as raised:
            await client.call_tool("transfer", TRANSFER)
        assert raised.value.error.code == URL_ELICITATION_REQUIRED
        (elicitation,) = raised.value.error.data["elicitations"]
        assert elicitation["mode"] == "url" and elicitation["elicitationId"]
        await anyio.to_thread.run_sync(device.approve, live.http, elicitation["url"], live.authenticator)
        result = await client.call_tool("transfer", TRANSFER)
        assert result.is_error is False
        # the same call again is a new call: it asks for a new approval, it does not run
        with pytest.raises(MCPError) as again:
            await client.call_tool("transfer", TRANSFER)
        assert again.value.error.code == URL_ELICITATION_REQUIRED
    assert LEDGER == ["transfer 100.0 EUR to bob"]


async def test_meta_mapping_free_below_production(live: LiveService) -> None:
    handler = Device(live)
    async with Client(guarded(live), elicitation_callback=handler) as client:
        staging = await client.call_tool("deploy", {"service": "api", "version": "1.2", "environment": "staging"})
        prod = await client.call_tool("deploy", {"service": "api", "version": "1.2", "environment": "production"})
    assert (staging.is_error, prod.is_error) == (False, False)
    assert len(handler.seen) == 1 and "Deploy api version 1.2 to production" in handler.seen[0].message


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (
            {**TRANSFER, "to": "y" * 600},
            "invalid_request",
            "Refused: the call was refused: argument 'args.to' is longer than 512 characters",
        ),
        ({**TRANSFER, "to": "bob\u202eevil"}, "invalid_request", "Refused: the approval could not be requested"),
        ({**TRANSFER, "to": {"nested": ["x"] * 3}}, "invalid_request", "Refused: the call was refused: argument"),
    ],
    ids=["too long", "bidi override", "object where text is expected"],
)
async def test_hostile_arguments_never_run_and_never_crash(
    live: LiveService, arguments: dict[str, Any], error: str, message: str
) -> None:
    handler = Device(live)
    async with Client(guarded(live), elicitation_callback=handler) as client:
        result = await client.call_tool("transfer", arguments)
    assert refusal(result)["error"] == error
    assert text(result).startswith(message)
    assert "\u202e" not in text(result)
    assert handler.seen == [] and LEDGER == []


async def test_user_without_passkey_or_account_is_refused(live: LiveService) -> None:
    async with Client(guarded(live, subject="mallory"), elicitation_callback=Device(live)) as client:
        result = await client.call_tool("transfer", TRANSFER)
    assert refusal(result)["error"] == "invalid_request"
    assert "unknown_user_id" in text(result)


def test_unbound_argument_is_a_configuration_error_at_start(live: LiveService) -> None:
    server: MCPServer = MCPServer("bad")

    @server.tool()
    def transfer(amount: float, currency: str, to: str, memo: str) -> str:
        return "never"

    guard = McpGuard(policy=load_policy(POLICY), gate=live.gate(), subject=fixed_subject("alice"))
    with pytest.raises(MappingError, match=r"tools.transfer: argument\(s\) 'memo' are not carried into the approval"):
        guard.protect(server)
