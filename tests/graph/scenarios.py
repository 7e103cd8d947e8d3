"""Multi-agent scenarios as data, with the exact graph the linker must recover from them.

Each Scenario holds one or more Scripts (proxy.graph.script: agents, steps, what each model
call receives and answers) and an Expect: agent name per step, the edge set (source step or
"human", target step, kind), the runs, and which handoffs are truncated.

    drive(scenario) → {step id: LinkResult}      scripts → wire exchanges → provider parsers
                                                 → Calls (id = step id) → Linker, in
                                                 completion order
    graphs(scenario, results) → {run id: Graph JSON}

The end-to-end suite replays the same scripts through the proxy with the real SDKs (the fake
model answers each step's `response`) and compares with the same Expect.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.graph import Linker, LinkResult, MemoryLineageIndex, build_graph
from proxy.graph.examples import agent_as_tool_script, fan_out_script, pipeline_script
from proxy.graph.script import AgentSpec, Exchange, Quote, Result, Script, Step, ToolUse, User, merge, render
from tests.graph.factory import call_from_exchange

HUMAN = "human"
Edge3 = tuple[str, str, str]


@dataclass(frozen=True)
class Expect:
    agents: dict[str, tuple[str, ...]]  # display name → steps
    edges: frozenset[Edge3]
    runs: tuple[frozenset[str], ...]
    truncated: frozenset[tuple[str, str]] = frozenset()
    run_ids: dict[str, str] = field(default_factory=dict)  # step → run id, where it is fixed


@dataclass(frozen=True)
class Scenario:
    name: str
    scripts: tuple[tuple[Script, float], ...]  # (script, start offset)
    expect: Expect


def exchanges(scenario: Scenario) -> list[Exchange]:
    return merge(*(render(s, offset=off) for s, off in scenario.scripts))


def drive(scenario: Scenario, linker: Linker | None = None) -> dict[str, LinkResult]:
    linker = linker or Linker(MemoryLineageIndex(), run_idle_s=600.0)
    return {ex.step: linker.observe(call_from_exchange(ex)) for ex in exchanges(scenario)}


def graphs(scenario: Scenario, results: dict[str, LinkResult]) -> dict[str, dict[str, object]]:
    """Graph JSON per run, from rows shaped like the store's."""
    by_step = {ex.step: ex for ex in exchanges(scenario)}
    run_of = final_runs(results)
    out = {}
    for run in {r for r in run_of.values() if r}:
        steps = [s for s, r in run_of.items() if r == run]
        calls = [_row(by_step[s], results[s]) for s in steps]
        edges = [e.as_dict() for s in steps for e in results[s].edges]
        out[run] = build_graph({"id": run}, calls, edges)
    return out


def _row(ex: Exchange, res: LinkResult) -> dict[str, object]:
    return {
        "id": ex.step,
        "agent": res.agent,
        "model": ex.request.get("model"),
        "started_at": ex.started_at,
        "outcome": "ok",
        "flags": res.flags,
        "input_tokens": 100,
        "output_tokens": 10,
    }


def edge_set(results: dict[str, LinkResult]) -> set[Edge3]:
    return {
        (HUMAN if e.source.startswith("human:") else e.source, e.target, e.kind)
        for r in results.values()
        for e in r.edges
    }


def final_runs(results: dict[str, LinkResult]) -> dict[str, str | None]:
    """Each step's run once later merges are applied (as the recorder rewrites rows)."""
    alias = {m: r.run_id for r in results.values() for m in r.merged_runs}
    out: dict[str, str | None] = {}
    for step, r in results.items():
        run = r.run_id
        while run in alias:
            run = alias[run]
        out[step] = run
    return out


def run_sets(results: dict[str, LinkResult]) -> set[frozenset[str]]:
    runs: dict[str | None, set[str]] = {}
    for step, run in final_runs(results).items():
        runs.setdefault(run, set()).add(step)
    return {frozenset(v) for v in runs.values()}


def agent_map(results: dict[str, LinkResult]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for step, r in results.items():
        out.setdefault(r.agent, []).append(step)
    return {k: tuple(sorted(v)) for k, v in out.items()}


def truncated_set(results: dict[str, LinkResult]) -> set[tuple[str, str]]:
    return {(e.source, e.target) for r in results.values() for e in r.edges if e.evidence.get("truncated")}


def _one(script: Script) -> tuple[tuple[Script, float], ...]:
    return ((script, 0.0),)


def _sorted(agents: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    return {k: tuple(sorted(v)) for k, v in agents.items()}


# ---------------------------------------------------------------------------- fan-out


FAN_OUT = Scenario(
    "fan_out",
    _one(fan_out_script()),
    Expect(
        agents={
            "orchestrator": ("o1", "o2"),
            "researcher": ("w1",),
            "policy-analyst": ("w2",),
            "industry-analyst": ("w3",),
        },
        edges=frozenset(
            {
                ("o1", "w1", "handoff"),
                ("o1", "w2", "handoff"),
                ("o1", "w3", "handoff"),
                ("w1", "o2", "return"),
                ("w2", "o2", "return"),
                ("w3", "o2", "return"),
                ("o1", "o2", "continuation"),
            }
        ),
        runs=(frozenset({"o1", "w1", "w2", "w3", "o2"}),),
    ),
)


# ---------------------------------------------------------------------------- pipeline


PIPELINE = Scenario(
    "pipeline",
    _one(pipeline_script("urban beekeeping")),
    Expect(
        agents={"planner": ("a",), "writer": ("b",), "editor": ("c",)},
        edges=frozenset({("a", "b", "handoff"), ("b", "c", "handoff")}),
        runs=(frozenset({"a", "b", "c"}),),
    ),
)

CONCURRENT = Scenario(
    "concurrent_runs",
    (
        (pipeline_script("urban beekeeping", "x_"), 0.0),
        (pipeline_script("container shipping rates", "y_"), 0.45),
    ),
    Expect(
        agents={"planner": ("x_a", "y_a"), "writer": ("x_b", "y_b"), "editor": ("x_c", "y_c")},
        edges=frozenset(
            {
                ("x_a", "x_b", "handoff"),
                ("x_b", "x_c", "handoff"),
                ("y_a", "y_b", "handoff"),
                ("y_b", "y_c", "handoff"),
            }
        ),
        runs=(frozenset({"x_a", "x_b", "x_c"}), frozenset({"y_a", "y_b", "y_c"})),
    ),
)


# ---------------------------------------------------------------------------- supervisor, Responses API


def supervisor_script() -> Script:
    supervisor = (
        "You are a team supervisor managing a research expert and a writing expert. For research questions "
        "call transfer_to_researcher, for drafting call transfer_to_writer, then answer the user."
    )
    agents = {
        "team-supervisor": AgentSpec(
            supervisor, ("transfer_to_researcher", "transfer_to_writer"), api="responses", stateful=True
        ),
        "researcher": AgentSpec("You are the researcher. Answer with sourced facts.", api="responses"),
        "writer": AgentSpec("You are the writer. Draft clear customer-facing text.", api="responses"),
    }
    ask = "Find how many passengers Lisbon airport handled in 2023 and the main growth driver, then write a two sentence summary."
    research_task = "Find the number of passengers Lisbon Humberto Delgado airport handled in 2023 and explain the main driver of growth."
    facts = (
        "Lisbon airport handled about 33.6 million passengers in 2023, a record driven mainly by the recovery of "
        "long haul traffic to Brazil and North America and strong low cost carrier growth within Europe."
    )
    write_task = "Write a two sentence summary for travellers based on these facts: Lisbon airport handled about 33.6 million passengers in 2023, a record."
    summary = (
        "Lisbon's airport welcomed a record 33.6 million travellers in 2023. Expect busy terminals in summer, "
        "especially on flights to Brazil and North America, so arrive early."
    )
    steps = (
        Step("s1", "team-supervisor", "s", (User((ask,)),), tools=(ToolUse("transfer_to_researcher", {"task": research_task}),)),
        Step("r1", "researcher", "r", (User((Quote("s1", tool=0),)),), facts),
        Step("s2", "team-supervisor", "s", (Result("s1", 0, (Quote("r1"),)),), tools=(ToolUse("transfer_to_writer", {"task": write_task}),)),
        Step("w1", "writer", "w", (User((Quote("s2", tool=0),)),), summary),
        Step("s3", "team-supervisor", "s", (Result("s2", 0, (Quote("w1"),)),), "Here is your summary: " + summary),
    )  # fmt: skip
    return Script(agents, steps)


SUPERVISOR = Scenario(
    "supervisor_responses",
    _one(supervisor_script()),
    Expect(
        agents={"team-supervisor": ("s1", "s2", "s3"), "researcher": ("r1",), "writer": ("w1",)},
        edges=frozenset(
            {
                ("s1", "r1", "handoff"),
                ("s1", "s2", "tool"),
                ("r1", "s2", "return"),
                ("s2", "w1", "handoff"),
                ("s2", "s3", "tool"),
                ("w1", "s3", "return"),
            }
        ),
        runs=(frozenset({"s1", "r1", "s2", "w1", "s3"}),),
    ),
)


def handoff_history_script() -> Script:
    """OpenAI Agents SDK style: the triage agent's transfer call hands the whole conversation on."""
    agents = {
        "triage-agent": AgentSpec(
            "You are the triage agent. Route billing questions with transfer_to_billing.",
            ("transfer_to_billing",),
            api="responses",
        ),  # fmt: skip
        "billing-agent": AgentSpec(
            "You are the billing agent. Resolve invoices and refunds.", ("lookup_invoice",), api="responses"
        ),
    }
    steps = (
        Step("t1", "triage-agent", "t", (User(("I was charged twice for invoice 4471 this month.",)),), tools=(ToolUse("transfer_to_billing", {}),)),
        Step("b1", "billing-agent", "b", (Result("t1", 0, ('{"assistant": "Billing agent"}',)),), tools=(ToolUse("lookup_invoice", {"id": "4471"}),), fork="t"),
        Step("b2", "billing-agent", "b", (Result("b1", 0, ('{"invoice": "4471", "charges": 2, "amount": 49.0}',)),), "I found the duplicate charge of 49 euros on invoice 4471 and refunded it; it will show within five days."),
    )  # fmt: skip
    return Script(agents, steps)


HANDOFF_HISTORY = Scenario(
    "handoff_with_history",
    _one(handoff_history_script()),
    Expect(
        agents={"triage-agent": ("t1",), "billing-agent": ("b1", "b2")},
        edges=frozenset({("t1", "b1", "handoff"), ("b1", "b2", "tool")}),
        runs=(frozenset({"t1", "b1", "b2"}),),
    ),
)


# ---------------------------------------------------------------------------- agent as tool (Anthropic)


AGENT_AS_TOOL = Scenario(
    "agent_as_tool_anthropic",
    _one(agent_as_tool_script()),
    Expect(
        agents={"concierge": ("c1", "c2"), "research-assistant": ("r1",)},
        edges=frozenset({("c1", "r1", "handoff"), ("r1", "c2", "return"), ("c1", "c2", "tool")}),
        runs=(frozenset({"c1", "r1", "c2"}),),
    ),
)


# ---------------------------------------------------------------------------- ping-pong


def ping_pong_script() -> Script:
    agents = {
        "copywriter": AgentSpec("You are the copywriter. Write product copy and revise it on feedback."),
        "critic": AgentSpec("You are the critic. Review copy and say what to change.", api="messages"),
    }
    d1 = "Meet the Trailhead 40, a backpack that carries a full weekend of gear yet weighs less than a bag of flour."
    r1 = "The flour comparison is vivid but vague; give the actual weight and mention the waterproof base fabric."
    d2 = "Meet the Trailhead 40: a full weekend of gear on your back at just 980 grams, with a waterproof base that shrugs off mud."
    r2 = "Much better. Now shorten the second clause and end with a call to action that invites readers to try it."
    d3 = "Trailhead 40: a weekend of gear at 980 grams, waterproof where it counts. Try it on your next trip."
    steps = (
        Step(
            "w1",
            "copywriter",
            "w",
            (User(("Write one sentence of copy for our Trailhead 40 backpack.",)),),
            d1,
        ),
        Step("c1", "critic", "c", (User((Quote("w1", wrap="Review this copy:\n{}"),)),), r1),
        Step("w2", "copywriter", "w", (User((Quote("c1", wrap="Feedback from review: {}"),)),), d2),
        Step("c2", "critic", "c", (User((Quote("w2", wrap="Revised copy:\n{}"),)),), r2),
        Step("w3", "copywriter", "w", (User((Quote("c2", wrap="Feedback from review: {}"),)),), d3),
    )
    return Script(agents, steps)


PING_PONG = Scenario(
    "ping_pong",
    _one(ping_pong_script()),
    Expect(
        agents={"copywriter": ("w1", "w2", "w3"), "critic": ("c1", "c2")},
        edges=frozenset(
            {
                ("w1", "c1", "handoff"),
                ("c1", "w2", "return"),
                ("w1", "w2", "continuation"),
                ("w2", "c2", "handoff"),
                ("c1", "c2", "continuation"),
                ("c2", "w3", "return"),
                ("w2", "w3", "continuation"),
            }
        ),
        runs=(frozenset({"w1", "c1", "w2", "c2", "w3"}),),
    ),
)


# ---------------------------------------------------------------------------- nested orchestrators


def nested_script() -> Script:
    agents = {
        "director": AgentSpec(
            "You are the director. Split a launch into workstreams and assign a lead to each."
        ),
        "engineering-lead": AgentSpec(
            "You are the engineering lead. Split your workstream into tickets for engineers."
        ),
        "marketing-lead": AgentSpec("You are the marketing lead. Delegate campaign pieces to specialists."),
        "engineer": AgentSpec(
            "You are an engineer. Estimate and describe the implementation of a ticket.", ("run_tests",)
        ),
        "copywriter": AgentSpec("You are the copywriter. Produce campaign text."),
    }
    plan = (
        "Two workstreams for the mobile app launch.\n\n"
        "- Engineering: ship offline mode and push notifications before the store review deadline on the first of June.\n"
        "- Marketing: prepare the launch announcement and the onboarding email sequence for existing web customers."
    )
    eng_plan = (
        "Tickets for the engineering workstream.\n\n"
        "1. Implement offline caching of the reading list with conflict resolution when the device reconnects.\n"
        "2. Add push notification support with per topic opt in settings and quiet hours respected on every platform."
    )
    offline = "Offline caching needs a local store with a sync queue; conflicts resolve by last writer per field, about six days of work."
    push = "Push notifications need a topic registry, opt in settings screens and a quiet hours scheduler, roughly four days including tests."
    eng_sum = (
        "Engineering estimate: ten days in total. Offline caching needs a local store with a sync queue; conflicts resolve "
        "by last writer per field. Push needs a topic registry and a quiet hours scheduler."
    )
    mkt_task = "Write the launch announcement headline and opening paragraph for the new mobile app aimed at existing web customers."
    mkt_copy = "Your reading list, now in your pocket: the new app keeps every article available offline and pings you only when you want."
    mkt_sum = "Marketing is ready: the announcement leads with offline reading and gentle notifications; emails follow the same message."
    wrap = "Workstream assigned by the director:\n{}"
    steps = (
        Step("d1", "director", "d", (User(("Plan the launch of our mobile reading app.",)),), plan),
        Step("e1", "engineering-lead", "e", (User((Quote("d1", part=1, wrap=wrap),)),), eng_plan, after=("d1",)),
        Step("m1", "marketing-lead", "m", (User((Quote("d1", part=2, wrap=wrap),)),), mkt_task, after=("d1",), took=0.5),
        Step("k1", "copywriter", "k", (User((Quote("m1"),)),), mkt_copy, after=("m1",)),
        Step("x1", "engineer", "x", (User((Quote("e1", part=1, wrap="Ticket: {}"),)),), offline, after=("e1",), took=2),
        Step("x2", "engineer", "y", (User((Quote("e1", part=2, wrap="Ticket: {}"),)),), push, after=("e1",), took=1.5),
        Step("m2", "marketing-lead", "m", (User((Quote("k1", wrap="Copywriter delivered: {}"),)),), mkt_sum, after=("k1",)),
        Step("e2", "engineering-lead", "e", (User((Quote("x1"), Quote("x2")),),), eng_sum, after=("x1", "x2")),
        Step("d2", "director", "d", (User((Quote("e2"), Quote("m2")),),), "Launch plan confirmed: ten days of engineering, marketing ready.", after=("e2", "m2")),
    )  # fmt: skip
    return Script(agents, steps)


NESTED = Scenario(
    "nested_orchestrators",
    _one(nested_script()),
    Expect(
        agents={
            "director": ("d1", "d2"),
            "engineering-lead": ("e1", "e2"),
            "marketing-lead": ("m1", "m2"),
            "copywriter": ("k1",),
            "engineer": ("x1", "x2"),
        },
        edges=frozenset(
            {
                ("d1", "e1", "handoff"),
                ("d1", "m1", "handoff"),
                ("m1", "k1", "handoff"),
                ("e1", "x1", "handoff"),
                ("e1", "x2", "handoff"),
                ("k1", "m2", "return"),
                ("m1", "m2", "continuation"),
                ("x1", "e2", "return"),
                ("x2", "e2", "return"),
                ("e1", "e2", "continuation"),
                ("e2", "d2", "return"),
                ("m2", "d2", "return"),
                ("d1", "d2", "continuation"),
            }
        ),
        runs=(frozenset({"d1", "e1", "m1", "k1", "x1", "x2", "m2", "e2", "d2"}),),
    ),
)


# ---------------------------------------------------------------------------- human input


HUMAN_REPLY = "Focus on families with young children, and keep it under two pages please."


def human_script() -> Script:
    agents = {
        "trip-planner": AgentSpec(
            "You are the trip planner. Ask what you need, then plan and delegate bookings."
        ),
        "booking-agent": AgentSpec(
            "You are the booking agent. Find hotels that match a brief.", ("search_hotels",)
        ),
    }
    question = "Before I plan the Lisbon trip: should the itinerary focus on nightlife, museums, or families with young children?"
    brief = (
        "Booking brief: find a quiet hotel in Lisbon near Belem for two adults and two children under six, "
        "with a family room, a pool and easy tram access, for the second week of July."
    )
    steps = (
        Step("p1", "trip-planner", "p", (User(("Plan a three day Lisbon trip for us.",)),), question),
        Step("p2", "trip-planner", "p", (User((HUMAN_REPLY,)),), brief, after=("p1",), took=1),
        Step("h1", "booking-agent", "h", (User((Quote("p2"),)),), "Hotel Jeronimos 8 has a family room with a pool, two minutes from the tram."),
    )  # fmt: skip
    return Script(agents, steps)


HUMAN_INPUT = Scenario(
    "human_in_the_middle",
    _one(human_script()),
    Expect(
        agents={"trip-planner": ("p1", "p2"), "booking-agent": ("h1",)},
        edges=frozenset({("p1", "p2", "continuation"), (HUMAN, "p2", "human"), ("p2", "h1", "handoff")}),
        runs=(frozenset({"p1", "p2", "h1"}),),
    ),
)


# ---------------------------------------------------------------------------- truncation


REPORT = (
    "The audit of the payment service found three issues that need attention before the next release. "
    "Card tokens are logged in plain text by the retry worker whenever a charge times out, which violates "
    "our data handling policy and must be fixed first. The reconciliation job silently skips refunds older "
    "than ninety days, so finance reports drift from the ledger every quarter. Finally the webhook signature "
    "check accepts expired timestamps, which would let an attacker replay old events against the service."
)


def truncation_script() -> Script:
    agents = {
        "auditor": AgentSpec("You are the auditor. Review services and report issues in full."),
        "fixer": AgentSpec("You are the fixer. Turn audit findings into patches.", ("open_pr",)),
        "reviewer": AgentSpec("You are the reviewer. Check a summary for omissions."),
    }
    steps = (
        Step("a1", "auditor", "a", (User(("Audit the payment service.",)),), REPORT),
        Step("f1", "fixer", "f", (User((Quote("a1", cut=0.55, wrap="Audit findings to fix:\n{}"),)),),
             "Patching the token logging in the retry worker now."),
        Step("a2", "auditor", "a2", (User(("Audit the payment service again, briefly.",)),), REPORT, finish="length"),
        Step("r1", "reviewer", "r", (User((Quote("a2", wrap="Check this audit summary:\n{}"),)),),
             "The summary ends abruptly; the webhook finding may be incomplete."),
    )  # fmt: skip
    return Script(agents, steps)


TRUNCATED = Scenario(
    "truncated_handoff",
    _one(truncation_script()),
    Expect(
        agents={"auditor": ("a1", "a2"), "fixer": ("f1",), "reviewer": ("r1",)},
        edges=frozenset({("a1", "f1", "handoff"), ("a2", "r1", "handoff")}),
        runs=(frozenset({"a1", "f1"}), frozenset({"a2", "r1"})),
        truncated=frozenset({("a1", "f1"), ("a2", "r1")}),
    ),
)


# ---------------------------------------------------------------------------- group chat


def group_chat_script() -> Script:
    agents = {
        "scientist": AgentSpec("You are the scientist in a group discussion. Bring evidence."),
        "skeptic": AgentSpec("You are the skeptic in a group discussion. Challenge weak claims."),
        "moderator": AgentSpec("You are the moderator. Summarise the discussion so far and steer it."),
    }
    task = "Discuss whether four day work weeks raise productivity in software companies."
    s1 = "Trials in Iceland and the United Kingdom found output held steady or rose while sick days fell, across more than sixty companies."
    k1 = "Those trials were voluntary and self reported; companies that expected to benefit opted in, so the results are biased upward."
    m1 = "So far: trial evidence is positive but selection bias is a real concern; next, consider software teams specifically."
    s2 = "For software teams, a Microsoft Japan experiment reported forty percent more sales per employee, though meetings were cut too."
    steps = (
        Step("s1", "scientist", "room", (User((task,)),), s1),
        Step("k1", "skeptic", "room", (), k1),
        Step("m1", "moderator", "room", (), m1),
        Step("s2", "scientist", "room", (), s2),
    )
    return Script(agents, steps, group_threads=frozenset({"room"}))


GROUP_CHAT = Scenario(
    "group_chat",
    _one(group_chat_script()),
    Expect(
        agents={"scientist": ("s1", "s2"), "skeptic": ("k1",), "moderator": ("m1",)},
        edges=frozenset(
            {
                ("s1", "k1", "handoff"),
                ("k1", "m1", "handoff"),
                ("m1", "s2", "handoff"),
                ("s1", "s2", "continuation"),
            }
        ),
        runs=(frozenset({"s1", "k1", "m1", "s2"}),),
    ),
)


# ---------------------------------------------------------------------------- explicit names and run


def explicit_script() -> Script:
    agents = {
        "alpha": AgentSpec("You are a helpful assistant.", explicit=True),
        "beta": AgentSpec("You are a helpful assistant.", explicit=True, api="messages"),
    }
    note = "Summarise the incident: the nightly export failed because the storage bucket quota was exceeded at two in the morning."
    steps = (
        Step("e1", "alpha", "a", (User(("What happened last night?",)),), note, run="incident-77"),
        Step("e2", "beta", "b", (User(("Unrelated question about lunch options near the office.",)),), "Try the noodle bar.", run="incident-77"),
    )  # fmt: skip
    return Script(agents, steps)


EXPLICIT = Scenario(
    "explicit_names_and_run",
    _one(explicit_script()),
    Expect(
        agents={"alpha": ("e1",), "beta": ("e2",)},
        edges=frozenset(),
        runs=(frozenset({"e1", "e2"}),),
        run_ids={"e1": "incident-77", "e2": "incident-77"},
    ),
)


ALL = (
    FAN_OUT,
    PIPELINE,
    CONCURRENT,
    SUPERVISOR,
    HANDOFF_HISTORY,
    AGENT_AS_TOOL,
    PING_PONG,
    NESTED,
    HUMAN_INPUT,
    TRUNCATED,
    GROUP_CHAT,
    EXPLICIT,
)
