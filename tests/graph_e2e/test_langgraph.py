"""LangGraph (PyPI `langgraph` + `langchain-openai`) through the proxy: a supervisor over tool-calling workers.

Built with a plain StateGraph: the supervisor model delegates with `transfer_to_<worker>` tool
calls carrying the task; a worker node runs its own agent loop (a compiled sub-graph: model ⇄
ToolNode) on that task, and its final answer goes back to the supervisor as the tool result.
The fake model plays every node, recognised by its system prompt.  The graph Interlock recovers
from the HTTP traffic alone must mirror the LangGraph graph: one agent per model-calling node,
a handoff along each supervisor → worker edge, a return along each worker → supervisor edge, a
tool edge wherever a node's tool calls come back to it (the supervisor's transfers, the workers'
ToolNode loops), all in one run.
"""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import pytest

from tests.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.graph_e2e.graphs import Api, agent_names, edge_triples, framework
from tests.graph_e2e.wire import system_of, tool_outputs
from tests.proxyserver import ProxyServer

graph_mod = framework("langgraph.graph")
prebuilt = framework("langgraph.prebuilt")
lc_openai = framework("langchain_openai")
messages_mod = framework("langchain_core.messages")
tools_mod = framework("langchain_core.tools")

START, END = graph_mod.START, graph_mod.END

SUPERVISOR = (
    "You are the supervisor of a small research desk with a researcher and a writer. Delegate with "
    "transfer_to_researcher and transfer_to_writer, passing each a precise task, then answer the user."
)
RESEARCHER = "You are the researcher. Use search_web to find facts and report them with their numbers."
WRITER = "You are the writer. Draft short customer-facing text and check it with check_style before answering."
QUESTION = "How busy was Lisbon airport in 2023, and can you turn that into a short note for our travellers?"
RESEARCH_TASK = (
    "Find how many passengers Lisbon Humberto Delgado airport handled in 2023, whether that was a record, "
    "and which routes drove the growth compared with the previous year."
)
SEARCH_RESULT = (
    "ANA Aeroportos 2023 traffic report: Lisbon 33.6 million passengers (+19.4%), record year; long haul "
    "growth led by Brazil and North America routes."
)
FACTS = (
    "Lisbon airport handled about 33.6 million passengers in 2023, a record and nearly twenty percent more "
    "than in 2022, with growth led by long haul routes to Brazil and North America."
)
WRITE_TASK = (
    "Write a two sentence note for travellers flying through Lisbon this summer: the airport is at record "
    "traffic levels, so tell them to expect queues and to arrive early for long haul departures."
)
STYLE_OK = "check_style: 2 sentences, 41 words, reading grade 7, no jargon found."
NOTE = (
    "Lisbon airport is busier than ever, with record passenger numbers this year. If you are flying long "
    "haul this summer, expect queues at security and arrive at least three hours before departure."
)
FINAL = "Here is the note for your travellers: " + NOTE


def fake_nodes(req: dict[str, Any], path: str) -> Reply:
    """The model behind each LangGraph node, told apart by its system prompt."""
    system, results = system_of(req), tool_outputs(req)
    if system.startswith("You are the supervisor"):
        if not results:
            return Reply(tool_calls=[ToolCall("transfer_to_researcher", {"task": RESEARCH_TASK})])
        if len(results) == 1:
            return Reply(tool_calls=[ToolCall("transfer_to_writer", {"task": WRITE_TASK})])
        return Reply(text=FINAL)
    if system.startswith("You are the researcher"):
        if not results:
            return Reply(tool_calls=[ToolCall("search_web", {"query": "Lisbon airport passengers 2023"})])
        return Reply(text=FACTS)
    if system.startswith("You are the writer"):
        if not results:
            return Reply(tool_calls=[ToolCall("check_style", {"text": NOTE})])
        return Reply(text=NOTE)
    return Reply(status=500, error=f"no scripted node for system prompt {system[:80]!r}")


class Desk(TypedDict):
    messages: Annotated[list[Any], graph_mod.add_messages]


def build(llm: Any) -> tuple[Any, dict[str, Any]]:
    """The supervisor graph and its workers' own (compiled) agent graphs."""

    @tools_mod.tool
    def search_web(query: str) -> str:
        """Search the web."""
        return SEARCH_RESULT

    @tools_mod.tool
    def check_style(text: str) -> str:
        """Check a draft against the house style."""
        return STYLE_OK

    @tools_mod.tool
    def transfer_to_researcher(task: str) -> str:
        """Hand a research task to the researcher."""
        return task

    @tools_mod.tool
    def transfer_to_writer(task: str) -> str:
        """Hand a writing task to the writer."""
        return task

    def worker(prompt: str, tools: list[Any]) -> Any:
        bound = llm.bind_tools(tools)

        def agent(state: Desk) -> dict[str, Any]:
            return {"messages": [bound.invoke([messages_mod.SystemMessage(prompt), *state["messages"]])]}

        g = graph_mod.StateGraph(Desk)
        g.add_node("agent", agent)
        g.add_node("tools", prebuilt.ToolNode(tools))
        g.add_edge(START, "agent")
        g.add_conditional_edges("agent", prebuilt.tools_condition, ["tools", END])
        g.add_edge("tools", "agent")
        return g.compile()

    workers = {"researcher": worker(RESEARCHER, [search_web]), "writer": worker(WRITER, [check_style])}
    supervisor_llm = llm.bind_tools([transfer_to_researcher, transfer_to_writer])

    def supervisor(state: Desk) -> dict[str, Any]:
        return {"messages": [supervisor_llm.invoke([messages_mod.SystemMessage(SUPERVISOR), *state["messages"]])]}

    def route(state: Desk) -> str:
        calls = state["messages"][-1].tool_calls
        return calls[0]["name"].removeprefix("transfer_to_") if calls else END

    def delegate(name: str) -> Any:
        def run_worker(state: Desk) -> dict[str, Any]:
            call = state["messages"][-1].tool_calls[0]
            done = workers[name].invoke({"messages": [messages_mod.HumanMessage(call["args"]["task"])]})
            answer = done["messages"][-1].content
            return {"messages": [messages_mod.ToolMessage(answer, tool_call_id=call["id"], name=call["name"])]}

        return run_worker

    g = graph_mod.StateGraph(Desk)
    g.add_node("supervisor", supervisor)
    for name in workers:
        g.add_node(name, delegate(name))
        g.add_edge(name, "supervisor")
    g.add_edge(START, "supervisor")
    g.add_conditional_edges("supervisor", route, [*workers, END])
    return g.compile(), workers


def framework_edges(app: Any, workers: dict[str, Any]) -> set[tuple[str, str, str]]:
    """What the LangGraph structure says Interlock must find, in its edge kinds."""
    ends = {START, END}
    out: set[tuple[str, str, str]] = set()
    for e in app.get_graph().edges:
        if e.source in ends or e.target in ends:
            continue
        if e.source == "supervisor":
            out.add(("supervisor", e.target, "handoff"))
            out.add(("supervisor", "supervisor", "tool"))  # the transfer call's result comes back to it
        else:
            out.add((e.source, e.target, "return"))
    for name, sub in workers.items():
        inner = {(e.source, e.target) for e in sub.get_graph().edges}
        if {("agent", "tools"), ("tools", "agent")} <= inner:  # the worker's ToolNode loop
            out.add((name, name, "tool"))
    return out


def run_desk(px: ProxyServer, model: FakeUpstream, streaming: bool) -> tuple[Any, dict[str, Any], dict[str, Any], set[str]]:
    """Run the desk once through the proxy; the LangGraph app, its workers, the one recovered
    run graph and the agents /api/agents lists."""
    model.responder = fake_nodes
    llm = lc_openai.ChatOpenAI(model="gpt-4o-mini", base_url=px.url + "/v1", api_key="sk-test",
                               max_retries=0, streaming=streaming)
    app, workers = build(llm)
    out = app.invoke({"messages": [messages_mod.HumanMessage(QUESTION)]})
    assert out["messages"][-1].content == FINAL
    calls = len(model.requests)  # 3 supervisor turns + 2 per worker (tool call, answer)
    assert calls == 7
    with Api(px) as admin:
        graphs = admin.settle(calls=calls, runs=1)
        listed = {a["name"] for a in admin.get("/api/agents")["items"]}
    assert len(graphs) == 1, f"one LangGraph invocation must be one run: {list(graphs)}"
    (graph,) = graphs.values()
    return app, workers, graph, listed


@pytest.fixture(autouse=True)
def _no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "streaming"])
def test_supervisor_graph_matches_langgraph(px: ProxyServer, model: FakeUpstream, streaming: bool) -> None:
    app, workers, graph, listed = run_desk(px, model, streaming)
    nodes = {n for n in app.get_graph().nodes if n not in (START, END)}
    assert nodes == {"supervisor", "researcher", "writer"}
    assert listed == nodes
    assert agent_names(graph) == nodes
    assert {a["name"]: a["calls"] for a in graph["agents"]} == {"supervisor": 3, "researcher": 2, "writer": 2}
    assert edge_triples(graph) == framework_edges(app, workers)
    assert not any(e["evidence"].get("truncated") for e in graph["edges"])


# The calls in the order the graph ran them (LangGraph runs this desk sequentially).
ORDER = ("s1", "r1", "r2", "s2", "w1", "w2", "s3")
CALL_EDGES = frozenset({
    ("s1", "r1", "handoff"), ("r1", "r2", "tool"), ("r2", "s2", "return"), ("s1", "s2", "tool"),
    ("s2", "w1", "handoff"), ("w1", "w2", "tool"), ("w2", "s3", "return"), ("s2", "s3", "tool"),
})


def test_supervisor_call_edges_are_exact(px: ProxyServer, model: FakeUpstream) -> None:
    """One edge per hop: old history re-sent by a stateless chat client is not new input."""
    _, _, graph, _ = run_desk(px, model, streaming=False)
    step = dict(zip((n["id"] for n in graph["nodes"]), ORDER, strict=True))
    assert [n["agent"] for n in graph["nodes"]] == [
        {"s": "supervisor", "r": "researcher", "w": "writer"}[s[0]] for s in ORDER
    ]
    assert {(step[e["source"]], step[e["target"]], e["kind"]) for e in graph["edges"]} == CALL_EDGES
