"""The LangGraph example (examples/langgraph_approval.py): the graph pauses on the sensitive
tool (``interrupt``), nothing is rotated while the user decides, and it resumes after the
decision: approved, the tool runs with a token the resource server accepts for that action
only; denied, the tool refuses. Runs without any model (the example's model is scripted).

Skipped only when LangGraph is not installed (it is in the ``dev`` extra, so CI runs it)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("langgraph", reason="LangGraph is not installed (pip install ciba-service[langgraph])")

from langchain_core.messages import HumanMessage
from langgraph.types import Command

from ciba_service.agent import Approval, CibaAgent
from ciba_service.rs import InsufficientAuthorization, RequestedAction, StaticKeys, TokenVerifier
from tests.support.agent import ThroughTestClient
from tests.support.service import AGENT_ID, AGENT_SECRET, BASE, Env

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_approval.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_approval", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # LangGraph reads the state's annotations from the module
    spec.loader.exec_module(module)
    return module


class Resource:
    """The key-rotation API: rotates only with a token for exactly that rotation."""

    def __init__(self, env: Env) -> None:
        jwks = env.client.get("/jwks.json").json()
        self.verifier = TokenVerifier(issuer=BASE, audience="resource-api", keys=StaticKeys(jwks), clock=env.clock)
        self.rotated: list[str] = []

    def rotate(self, service_account: str, approval: Approval) -> str:
        action = RequestedAction(type="key_rotation", actions=["rotate"], identifier=service_account)
        self.verifier.verify(approval.access_token, action)
        self.rotated.append(service_account)
        return f"key of {service_account} rotated"


def graph_for(env: Env) -> tuple[Any, Resource, CibaAgent]:
    example = load_example()
    agent = CibaAgent(
        issuer=BASE,
        client_id=AGENT_ID,
        client_secret=AGENT_SECRET,
        transport=ThroughTestClient(env),
        sleep=env.clock.advance,
    )
    resource = Resource(env)
    return example.build_graph(agent=agent, login_hint="alice", rotate=resource.rotate), resource, agent


def decide(env: Env, *, approve: bool) -> None:
    url = env.notifier.notices[-1].approval_url.removeprefix(BASE)
    if not approve:
        assert env.client.post(f"{url}/deny", json={}).status_code == 200
        return
    view = env.client.get(f"{url}/details").json()
    credential = env.authenticator.get(view["publicKey"], origin=BASE)
    assert env.client.post(f"{url}/approve", json={"credential": credential}).status_code == 200


CONFIG = {"configurable": {"thread_id": "t-1"}}


def test_the_graph_pauses_on_the_sensitive_tool_and_resumes_after_approval(env: Env) -> None:
    graph, resource, _ = graph_for(env)
    paused = graph.invoke({"messages": [HumanMessage("rotate the key of svc-api")]}, CONFIG)
    [interrupt] = paused["__interrupt__"]
    [waiting] = interrupt.value["approval_required"]
    assert waiting["authorization_details"] == [
        {"type": "key_rotation", "actions": ["rotate"], "identifier": "svc-api"}
    ]
    assert waiting["binding_message"].startswith("rotatekey-")
    assert resource.rotated == []  # nothing happens while the user decides
    assert env.notifier.notices[-1].binding_message == waiting["binding_message"]

    decide(env, approve=True)
    done = graph.invoke(Command(resume=True), CONFIG)
    assert "__interrupt__" not in done
    assert done["messages"][-1].content == "Done: key of svc-api rotated"
    assert resource.rotated == ["svc-api"]
    # the token was for that rotation only
    token = done["ciba_approvals"]["call-rotate"]["access_token"]
    other = RequestedAction(type="key_rotation", actions=["rotate"], identifier="svc-billing")
    with pytest.raises(InsufficientAuthorization):
        resource.verifier.verify(token, other)


def test_a_denied_tool_call_does_not_run(env: Env) -> None:
    graph, resource, _ = graph_for(env)
    graph.invoke({"messages": [HumanMessage("rotate the key of svc-api")]}, CONFIG)
    decide(env, approve=False)
    done = graph.invoke(Command(resume=True), CONFIG)
    assert done["messages"][-1].content.startswith("Done: not rotated: access_denied")
    assert resource.rotated == []


def test_resuming_before_the_user_decides_does_not_approve(env: Env) -> None:
    # Whoever resumes the graph cannot approve: the decision is the service's. Resumed too early,
    # the graph waits for the decision (here: the request expires while it polls).
    graph, resource, _ = graph_for(env)
    graph.invoke({"messages": [HumanMessage("rotate the key of svc-api")]}, CONFIG)
    done = graph.invoke(Command(resume={"approved": True}), CONFIG)
    assert done["messages"][-1].content.startswith("Done: not rotated: expired_token")
    assert resource.rotated == []


def test_a_free_tool_runs_without_pausing(env: Env) -> None:
    graph, _, _ = graph_for(env)
    done = graph.invoke({"messages": [HumanMessage("list keys")]}, CONFIG)
    assert "__interrupt__" not in done
    assert done["messages"][-1].content == "Done: svc-api, svc-billing"
    assert env.notifier.notices == []
