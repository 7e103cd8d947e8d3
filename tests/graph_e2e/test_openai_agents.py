"""The OpenAI Agents SDK (PyPI `openai-agents`) through the proxy: triage with handoffs.

A triage agent hands off (the SDK's own `transfer_to_<agent>` tools) to a billing agent, which
calls a function tool before answering, or to a support engineer.  Two conversations run at the
same time.  The fake model plays each agent, recognised by its instructions.  Interlock sees only
the HTTP traffic; the graph it recovers must match the SDK's structure: one agent per SDK Agent
(named from the role its instructions state), one run per Runner.run, the triage → specialist
handoff that the SDK performed, the tool round trip inside the billing agent.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.graph_e2e.graphs import Api, agent_names, edge_triples, framework
from tests.graph_e2e.wire import system_of, tool_outputs, user_texts
from tests.proxyserver import ProxyServer

agents = framework("agents")

TRIAGE = (
    "You are the triage agent of the Northwind help desk. Read the customer's message and hand it to "
    "the billing agent for invoices, charges and refunds, or to the support engineer for problems with "
    "the Northwind app. Never answer the customer yourself."
)
BILLING = (
    "You are the billing agent of the Northwind help desk. Look the invoice up with lookup_invoice "
    "before you answer, then explain what you changed."
)
SUPPORT = (
    "You are the support engineer of the Northwind help desk. Diagnose problems with the mobile app "
    "step by step and give the customer one clear fix."
)
BILLING_ASK = "Hello, I was charged twice for invoice 4471 this month and I would like the duplicate refunded."
SUPPORT_ASK = "The Northwind app crashes every time I open the reports tab on my phone since yesterday's update."
INVOICE = "Invoice 4471: two identical charges of 49.00 EUR on March 3 and March 4; card ending 0012."
REFUND = (
    "I checked invoice 4471 and found the duplicate charge of 49.00 euros from March 4. I have refunded it to "
    "your card ending 0012; it will show on your statement within five working days."
)
FIX = (
    "The crash comes from a stale reports cache left by the update. Open Settings, choose Storage, tap Clear "
    "cache and reopen the reports tab; your data stays on the server and loads again in a few seconds."
)


def slug(name: str) -> str:
    """An SDK agent name as Interlock writes role names ("Triage Agent" → "triage-agent")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def fake_agents(req: dict[str, Any], path: str) -> Reply:
    """The model behind each SDK agent, told apart by its instructions."""
    system = system_of(req)
    if system.startswith("You are the triage agent"):
        asked = " ".join(user_texts(req))
        target = "transfer_to_billing_agent" if "invoice" in asked else "transfer_to_support_engineer"
        return Reply(tool_calls=[ToolCall(target, {})])
    if system.startswith("You are the billing agent"):
        if not any("Invoice 4471:" in out for out in tool_outputs(req)):
            return Reply(tool_calls=[ToolCall("lookup_invoice", {"invoice_id": "4471"})])
        return Reply(text=REFUND)
    if system.startswith("You are the support engineer"):
        return Reply(text=FIX)
    return Reply(status=500, error=f"no scripted agent for instructions {system[:80]!r}")


def build(model: Any) -> tuple[Any, Any, Any]:
    @agents.function_tool
    def lookup_invoice(invoice_id: str) -> str:
        """Look an invoice up by its number."""
        return INVOICE if invoice_id == "4471" else f"Invoice {invoice_id}: not found."

    billing = agents.Agent(name="Billing Agent", instructions=BILLING, tools=[lookup_invoice], model=model)
    support = agents.Agent(name="Support Engineer", instructions=SUPPORT, model=model)
    triage = agents.Agent(name="Triage Agent", instructions=TRIAGE, handoffs=[billing, support], model=model)
    return triage, billing, support


async def converse(triage: Any, ask: str, streamed: bool) -> Any:
    if not streamed:
        return await agents.Runner.run(triage, ask)
    result = agents.Runner.run_streamed(triage, ask)
    async for _ in result.stream_events():
        pass
    return result


async def two_conversations(px: ProxyServer, api: str, streamed: bool) -> tuple[tuple[Any, Any, Any], list[Any]]:
    client = agents.AsyncOpenAI(base_url=px.url + "/v1", api_key="sk-test", max_retries=0)
    kinds = {"chat": agents.OpenAIChatCompletionsModel, "responses": agents.OpenAIResponsesModel}
    team = build(kinds[api](model="gpt-4o-mini", openai_client=client))
    try:
        results = await asyncio.gather(*(converse(team[0], ask, streamed) for ask in (BILLING_ASK, SUPPORT_ASK)))
    finally:
        await client.close()
    return team, list(results)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_handoffs_match_the_sdk_structure(px: ProxyServer, model: FakeUpstream, api: str, streamed: bool) -> None:
    agents.set_tracing_disabled(True)
    model.responder = fake_agents
    (triage, billing, support), results = asyncio.run(two_conversations(px, api, streamed))
    assert [r.final_output for r in results] == [REFUND, FIX]
    assert [r.last_agent.name for r in results] == [billing.name, support.name]

    calls = sum(len(r.raw_responses) for r in results)  # one model call per raw response
    with Api(px) as admin:
        graphs = admin.settle(calls=calls, runs=len(results))
        listed = {a["name"] for a in admin.get("/api/agents")["items"]}

    # Agents: exactly the SDK's agents, named from the roles their instructions state.
    sdk_agents = {slug(a.name) for a in (triage, billing, support)}
    assert listed == sdk_agents
    assert set().union(*(agent_names(g) for g in graphs.values())) == sdk_agents

    # Runs: one per Runner.run, each holding its model calls; the triage hand-off the SDK made
    # (triage.handoffs → result.last_agent) is the run's handoff edge.
    assert len(graphs) == len(results)
    by_specialist = {next(a for a in agent_names(g) if a != slug(triage.name)): g for g in graphs.values()}
    assert set(by_specialist) == {slug(h.name) for h in triage.handoffs}
    for result in results:
        specialist = slug(result.last_agent.name)
        graph = by_specialist[specialist]
        assert len(graph["nodes"]) == len(result.raw_responses)
        expected = {(slug(triage.name), specialist, "handoff")}
        if result.last_agent.tools:  # a function tool round trip inside the specialist
            expected.add((specialist, specialist, "tool"))
        assert edge_triples(graph) == expected
        assert [(e["kind"], e["evidence"].get("truncated", False)) for e in graph["edges"]] == [
            (kind, False) for kind in ["handoff", "tool"][: len(expected)]
        ]
