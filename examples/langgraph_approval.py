"""A LangGraph agent that pauses on a sensitive tool until the user approves it with a passkey.

    model ──tool calls──▶ request_approval ──▶ await_approval ──▶ tools ──▶ model ──▶ END
                          (backchannel request)  (interrupt: the graph
                                                  pauses; resumed after
                                                  the user's decision)

``rotate_key`` needs approval (its ``authorization_details``: rotate the key of one service
account); ``list_keys`` does not. The "model" here is scripted (it stands in for an LLM and
picks the tool calls from the user's message), so the graph runs without one.

Run it against a local service (``ciba-service serve`` with a client ``graph-agent`` and a user
``alice``)::

    CIBA_AGENT_CLIENT_SECRET=… python examples/langgraph_approval.py "rotate the key of svc-api"

It pauses and prints the binding message; approve on your device (the approval page or
``ciba-service approve <link>``), press Enter, and the graph resumes and rotates the key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import InjectedState, ToolNode
from langgraph.types import Command

from ciba_service.agent import Approval, CibaAgent
from ciba_service.agent.langgraph import approval_for, await_approval_node, refusal_for, request_approval_node


class State(MessagesState):
    ciba_pending: dict[str, Any]
    ciba_approvals: dict[str, Any]
    ciba_refusals: dict[str, Any]


def details(tool_name: str, args: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The tool-call mapping: what each call asks the user to approve (None: nothing to ask)."""
    if tool_name == "rotate_key":
        return [{"type": "key_rotation", "actions": ["rotate"], "identifier": str(args["service_account"])}]
    return None


def scripted_model(state: State) -> dict[str, Any]:
    """Stands in for an LLM: reads the request, calls a tool, then reports the tool's answer."""
    last = state["messages"][-1]
    if isinstance(last, ToolMessage):
        return {"messages": [AIMessage(content=f"Done: {last.content}")]}
    text = str(last.content)
    if text.startswith("rotate the key of "):
        call = {"name": "rotate_key", "args": {"service_account": text.rsplit(" ", 1)[1]}, "id": "call-rotate"}
    else:
        call = {"name": "list_keys", "args": {}, "id": "call-list"}
    return {"messages": [AIMessage(content="", tool_calls=[call])]}


def build_graph(
    *, agent: CibaAgent, login_hint: str, rotate: Callable[[str, Approval], str]
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """``rotate(service_account, approval)`` calls the real API with the approval's token."""

    @tool
    def rotate_key(
        service_account: str,
        state: Annotated[dict[str, Any], InjectedState],
        tool_call_id: Annotated[str, InjectedToolCallId],
    ) -> str:
        """Rotate the signing key of a service account (needs the user's approval)."""
        approval = approval_for(state, tool_call_id)
        if approval is None:  # never act without the user's approval
            return f"not rotated: {refusal_for(state, tool_call_id) or 'not approved'}"
        return rotate(service_account, approval)

    @tool
    def list_keys() -> str:
        """List the service accounts' keys (read-only, no approval)."""
        return "svc-api, svc-billing"

    graph = StateGraph(State)
    graph.add_node("model", scripted_model)
    graph.add_node("request_approval", request_approval_node(agent=agent, login_hint=login_hint, details=details))
    graph.add_node("await_approval", await_approval_node(agent=agent))
    graph.add_node("tools", ToolNode([rotate_key, list_keys]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges(
        "model", lambda s: "request_approval" if s["messages"][-1].tool_calls else END, ["request_approval", END]
    )
    graph.add_edge("request_approval", "await_approval")
    graph.add_edge("await_approval", "tools")
    graph.add_edge("tools", "model")
    return graph.compile(checkpointer=InMemorySaver())


def main() -> None:  # pragma: no cover - interactive
    base = os.environ.get("CIBA_AGENT_ISSUER", "http://localhost:8000")
    agent = CibaAgent(
        issuer=base,
        client_id=os.environ.get("CIBA_AGENT_CLIENT_ID", "graph-agent"),
        client_secret=os.environ["CIBA_AGENT_CLIENT_SECRET"],
    )

    def rotate(service_account: str, approval: Approval) -> str:
        # Here the resource server would be called with approval.headers(agent, method=..., url=...).
        return f"key of {service_account} rotated (token for {approval.authorization_details})"

    app = build_graph(agent=agent, login_hint=os.environ.get("CIBA_AGENT_LOGIN_HINT", "alice"), rotate=rotate)
    config = {"configurable": {"thread_id": "demo"}}
    result = app.invoke({"messages": [HumanMessage(" ".join(sys.argv[1:]) or "list keys")]}, config)
    while "__interrupt__" in result:
        for waiting in result["__interrupt__"][0].value["approval_required"]:
            print(f"waiting for approval, binding message {waiting['binding_message']}")
        input("approve on your device, then press Enter ")
        result = app.invoke(Command(resume=True), config)
    print(result["messages"][-1].content)
    agent.close()


if __name__ == "__main__":
    main()
