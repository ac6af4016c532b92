"""The SDK (``ciba_service.agent``): ``authorize`` and ``authorize_async`` end to end against
the service (in process; the service's clock advances when the agent sleeps), the
``requires_approval`` decorator on plain and async tool functions, the pause/resume halves,
and ping and push through a notification inbox over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ciba_service.agent import (
    AccessDenied,
    AgentError,
    Approval,
    AsyncCibaAgent,
    CibaAgent,
    NotificationInbox,
    PendingApproval,
    RequestExpired,
    authorize,
    authorize_async,
    check,
    device,
    requires_approval,
    resume,
    start,
)
from ciba_service.agent.softauthn import SoftAuthenticator
from ciba_service.config import ClientConfig, load_settings
from ciba_service.core.security import hash_secret
from ciba_service.server.wiring import build_provider
from ciba_service.web.app import create_app
from ciba_service.web.serving import BackgroundServer, free_port
from tests.support.agent import ThroughTestClient
from tests.support.service import ACTION, AGENT_ID, AGENT_SECRET, BASE, Env, RecordingNotifier

Decide = Callable[[Env], None]


def approve_latest(env: Env) -> None:
    url = env.notifier.notices[-1].approval_url
    view = env.client.get(url.removeprefix(BASE) + "/details").json()
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    response = env.client.post(url.removeprefix(BASE) + "/approve", json={"credential": credential})
    assert response.status_code == 200, response.text


def deny_latest(env: Env) -> None:
    url = env.notifier.notices[-1].approval_url
    assert env.client.post(url.removeprefix(BASE) + "/deny", json={}).status_code == 200


def expire(env: Env) -> None:
    env.clock.advance(10_000)


class UserAfterFirstPoll:
    """The agent's sleep: the service's clock moves on, and the user decides during the first."""

    def __init__(self, env: Env, decide: Decide | None) -> None:
        self.env = env
        self.decide = decide
        self.sleeps: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.env.clock.advance(seconds)
        if self.decide is not None and len(self.sleeps) == 1:
            self.decide(self.env)


def sync_agent(env: Env, decide: Decide | None) -> CibaAgent:
    return CibaAgent(
        issuer=BASE,
        client_id=AGENT_ID,
        client_secret=AGENT_SECRET,
        transport=ThroughTestClient(env),
        sleep=UserAfterFirstPoll(env, decide),
    )


def async_agent(env: Env, decide: Decide | None) -> AsyncCibaAgent:
    user = UserAfterFirstPoll(env, decide)

    async def sleep(seconds: float) -> None:
        user(seconds)

    return AsyncCibaAgent(
        issuer=BASE,
        client_id=AGENT_ID,
        client_secret=AGENT_SECRET,
        transport=httpx.ASGITransport(app=env.client.app),
        sleep=sleep,
    )


# authorize ---------------------------------------------------------------------------------------


def test_authorize_returns_the_token_for_the_approved_action(env: Env) -> None:
    seen: list[str | None] = []
    approval = authorize(
        sync_agent(env, approve_latest),
        login_hint="alice",
        authorization_details=ACTION,
        binding_message="SDK-1",
        on_pending=lambda pending: seen.append(pending.binding_message),
    )
    assert isinstance(approval, Approval)
    assert approval.authorization_details == ACTION
    assert (approval.token_type, approval.binding_message, seen) == ("Bearer", "SDK-1", ["SDK-1"])
    assert approval.headers(sync_agent(env, None), method="PUT", url="https://x") == {
        "Authorization": f"Bearer {approval.access_token}"
    }


@pytest.mark.parametrize(
    ("decide", "kind", "error"),
    [(deny_latest, AccessDenied, "access_denied"), (expire, RequestExpired, "expired_token")],
)
def test_authorize_raises_the_precise_error(env: Env, decide: Decide, kind: type[AgentError], error: str) -> None:
    with pytest.raises(kind) as raised:
        authorize(sync_agent(env, decide), login_hint="alice", authorization_details=ACTION)
    assert raised.value.error == error


def test_authorize_gives_up_at_its_own_timeout(env: Env) -> None:
    with pytest.raises(RequestExpired) as raised:
        authorize(sync_agent(env, None), login_hint="alice", authorization_details=ACTION, timeout=0)
    assert raised.value.error == "wait_timeout"


def test_authorize_refused_request_raises_at_once(env: Env) -> None:
    with pytest.raises(AgentError) as raised:
        authorize(sync_agent(env, None), login_hint="nobody", authorization_details=ACTION)
    assert raised.value.error == "unknown_user_id"


def test_authorize_async(env: Env) -> None:
    async def run() -> Approval:
        async with async_agent(env, approve_latest) as agent:
            return await authorize_async(agent, login_hint="alice", authorization_details=ACTION)

    assert asyncio.run(run()).authorization_details == ACTION


def test_authorize_async_denied(env: Env) -> None:
    async def run() -> Approval:
        async with async_agent(env, deny_latest) as agent:
            return await authorize_async(agent, login_hint="alice", authorization_details=ACTION)

    with pytest.raises(AccessDenied):
        asyncio.run(run())


def test_a_token_for_other_authorization_details_is_refused() -> None:
    def provider(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(
                200, json={"backchannel_authentication_endpoint": f"{BASE}/bc", "token_endpoint": f"{BASE}/t"}
            )
        if request.url.path == "/bc":
            return httpx.Response(200, json={"auth_req_id": "r", "expires_in": 60, "interval": 1})
        other = [{**ACTION[0], "identifier": "policy-1"}]
        return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "authorization_details": other})

    agent = CibaAgent(issuer=BASE, client_id="a", client_secret="s", transport=httpx.MockTransport(provider))
    with pytest.raises(AgentError, match="other authorization_details than requested"):
        authorize(agent, login_hint="alice", authorization_details=ACTION)


# the decorator -----------------------------------------------------------------------------------


def policy_details(arguments: dict[str, Any]) -> list[dict[str, Any]] | None:
    if arguments["dry_run"]:
        return None  # nothing happens: no approval needed
    return [{**ACTION[0], "identifier": arguments["policy_id"]}]


def test_the_decorator_maps_the_arguments_and_passes_the_approval(env: Env) -> None:
    calls: list[tuple[str, Approval | None]] = []

    @requires_approval(agent=sync_agent(env, approve_latest), login_hint="alice", details=policy_details)
    def update_policy(policy_id: str, dry_run: bool = False, *, approval: Approval | None = None) -> str:
        calls.append((policy_id, approval))
        return "updated"

    assert update_policy("policy-42") == "updated"
    [(policy_id, approval)] = calls
    assert policy_id == "policy-42"
    assert approval is not None and approval.authorization_details == ACTION
    assert approval.binding_message is not None and approval.binding_message.startswith("updatepolicy-")
    request = env.provider.store.find_request_by_approval_id(env.notifier.notices[-1].approval_url.rsplit("/", 1)[1])
    assert request is not None and request.authorization_details == ACTION


def test_the_decorator_asks_nothing_when_the_mapping_says_free(env: Env) -> None:
    @requires_approval(agent=sync_agent(env, None), login_hint="alice", details=policy_details)
    def update_policy(policy_id: str, dry_run: bool = False, *, approval: Approval | None = None) -> Approval | None:
        return approval

    assert update_policy("policy-42", dry_run=True) is None
    assert env.notifier.notices == []


def test_a_denied_call_never_runs(env: Env) -> None:
    ran: list[bool] = []

    @requires_approval(agent=sync_agent(env, deny_latest), login_hint="alice", details=policy_details)
    def update_policy(policy_id: str, dry_run: bool = False, *, approval: Approval | None = None) -> None:
        ran.append(True)

    with pytest.raises(AccessDenied):
        update_policy("policy-42")
    assert ran == []


def test_the_caller_cannot_hand_in_an_approval(env: Env) -> None:
    @requires_approval(agent=sync_agent(env, None), login_hint="alice", details=policy_details)
    def update_policy(policy_id: str, dry_run: bool = False, *, approval: Any = None) -> None:
        raise AssertionError("must not run")

    with pytest.raises(TypeError, match="supplied by the approval"):
        update_policy("policy-42", approval="forged")
    assert env.notifier.notices == []


def test_the_decorator_checks_the_function_it_guards(env: Env) -> None:
    with pytest.raises(TypeError, match="must accept a 'approval' keyword"):

        @requires_approval(agent=sync_agent(env, None), login_hint="alice", details=policy_details)
        def no_parameter(policy_id: str) -> None: ...

    with pytest.raises(TypeError, match="use an AsyncCibaAgent for async functions"):

        @requires_approval(agent=sync_agent(env, None), login_hint="alice", details=policy_details)
        async def wrong_agent(policy_id: str, *, approval: Any = None) -> None: ...


def test_the_decorator_on_an_async_tool(env: Env) -> None:
    async def run() -> Approval | None:
        async with async_agent(env, approve_latest) as agent:

            @requires_approval(
                agent=agent,
                login_hint="alice",
                details=policy_details,
                binding_message=lambda a: f"POL-{a['policy_id'][-2:]}",
            )
            async def update_policy(
                policy_id: str, dry_run: bool = False, *, approval: Approval | None = None
            ) -> Approval | None:
                return approval

            return await update_policy("policy-42")

    approval = asyncio.run(run())
    assert approval is not None and approval.binding_message == "POL-42"


# pause and resume --------------------------------------------------------------------------------


def test_start_check_resume(env: Env) -> None:
    agent = sync_agent(env, None)
    paused = start(agent, login_hint="alice", authorization_details=ACTION, binding_message="PAUSE-1")
    stored = json.loads(json.dumps(paused.to_dict()))  # e.g. in a graph checkpoint
    pending = PendingApproval.from_dict(stored)
    assert pending == paused
    assert check(agent, pending) is None  # the user has not decided
    approve_latest(env)
    env.clock.advance(5)
    approval = check(agent, pending)
    assert approval is not None and approval.authorization_details == ACTION
    assert approval.binding_message == "PAUSE-1"


def test_resume_waits_and_reports_a_denial(env: Env) -> None:
    agent = sync_agent(env, deny_latest)
    pending = start(agent, login_hint="alice", authorization_details=ACTION)
    with pytest.raises(AccessDenied):
        resume(agent, pending)


# ping and push -----------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, NotificationInbox, RecordingNotifier, httpx.Client, SoftAuthenticator]]:
    port, cb_port = free_port(), free_port()
    base = f"http://localhost:{port}"
    clients = [
        ClientConfig(
            client_id=mode,
            client_secret_hash=hash_secret(f"secret-{mode}"),
            backchannel_token_delivery_mode=mode,
            backchannel_client_notification_endpoint=f"http://127.0.0.1:{cb_port}/cb",
        )
        for mode in ("ping", "push")
    ]
    notifier = RecordingNotifier()
    provider = build_provider(
        load_settings(issuer=base, data_dir=tmp_path, clients=clients, poll_interval=1), notifier=notifier
    )
    inbox = NotificationInbox()
    authenticator = SoftAuthenticator()
    with (
        BackgroundServer(create_app(provider), port=port),
        BackgroundServer(inbox.app, port=cb_port),
        httpx.Client(timeout=10) as http,
    ):
        _, link = provider.add_user(username="alice")
        device.enroll(http, link, authenticator)
        yield base, inbox, notifier, http, authenticator
    provider.store.close()


@pytest.mark.parametrize("mode", ["ping", "push"])
def test_authorize_with_an_inbox(live: Any, mode: str) -> None:
    base, inbox, notifier, http, authenticator = live

    def user_approves(pending: Any) -> None:
        import threading
        import time

        def approve() -> None:
            deadline = time.monotonic() + 5
            while not notifier.notices and time.monotonic() < deadline:
                time.sleep(0.01)
            device.approve(http, notifier.notices.pop().approval_url, authenticator)

        threading.Thread(target=approve).start()

    agent = CibaAgent(issuer=base, client_id=mode, client_secret=f"secret-{mode}")
    approval = authorize(
        agent, login_hint="alice", authorization_details=ACTION, inbox=inbox, timeout=20, on_pending=user_approves
    )
    assert approval.authorization_details == ACTION
    agent.close()


def test_the_decorator_takes_the_pep_tool_call_mapping(env: Env) -> None:
    """The same declarative mapping as the MCP guard and the PDP (ciba_service.pep) plugs in as
    ``details``; a ``deny`` decision must refuse, never fall through to "no approval needed"."""
    from ciba_service.pep import Decision, Policy

    policy = Policy.from_dict(
        {
            "default": "deny",
            "tools": {
                "update_policy": {
                    "decision": "approval",
                    "type": "iam_policy",
                    "actions": ["update"],
                    "identifier": "{args.policy_id}",
                    "locations": ["https://iam.example.test/"],
                    "words": "Update IAM policy {args.policy_id}",
                    "unbound_args": ["dry_run"],
                    "rules": [{"when": [{"arg": "policy_id", "eq": "policy-0"}], "decision": "deny"}],
                }
            },
        }
    )

    def details(arguments: dict[str, Any]) -> list[dict[str, Any]] | None:
        evaluation = policy.evaluate("update_policy", arguments, subject="alice")
        if evaluation.decision is Decision.DENY:
            raise PermissionError(evaluation.reason)
        return evaluation.authorization_details or None

    @requires_approval(agent=sync_agent(env, approve_latest), login_hint="alice", details=details)
    def update_policy(policy_id: str, dry_run: bool = False, *, approval: Approval | None = None) -> Approval | None:
        return approval

    approval = update_policy("policy-42")
    assert approval is not None and approval.authorization_details == ACTION
    with pytest.raises(PermissionError):
        update_policy("policy-0")
