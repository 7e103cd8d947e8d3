"""Example multi-agent systems as scripts: the demo replays them, the scenario suite checks them.

Pure data (proxy.graph.script); see tests/graph/scenarios.py for the graph each must produce.
"""

from __future__ import annotations

from proxy.graph.script import AgentSpec, Quote, Result, Script, Step, ToolUse, User

ORCHESTRATOR = (
    "You are the orchestrator of a market research team. Break the user's request into independent "
    "assignments, send each to the right specialist, then merge their findings into one answer. "
    "Today is 2025-03-14, request id req_7f3a9c21."
)
PLAN = (
    "I will split this into three assignments.\n\n"
    "1. Survey the installed base of residential heat pumps in Northern Europe and estimate annual unit growth since 2019.\n"
    "2. Compare the installation subsidies offered by Germany, Sweden and the Netherlands and how they changed last year.\n"
    "3. Identify the five largest manufacturers by shipments and describe the pricing strategy each one follows."
)
FINDINGS = (
    "Installed heat pumps in the Nordic countries passed four million units, with growth close to twelve percent a year "
    "driven mostly by air to water systems replacing oil boilers in detached houses."
)
SUBSIDIES = (
    "Germany now covers up to seventy percent of installation cost for low income households, Sweden removed its "
    "green deduction cap and the Netherlands cut its grant per unit while adding a mandatory hybrid standard."
)
MAKERS = (
    "The leading manufacturers by shipments are Daikin, Bosch, NIBE, Viessmann and Mitsubishi Electric; the first two "
    "compete on installer networks while NIBE prices at a premium on efficiency and Mitsubishi on compact outdoor units."
)


def fan_out_script() -> Script:
    agents = {
        "orchestrator": AgentSpec(ORCHESTRATOR),
        "researcher": AgentSpec("You are the researcher. Find market data and cite numbers precisely."),
        "policy-analyst": AgentSpec("You are a senior policy analyst. Explain regulations and subsidies."),
        "industry-analyst": AgentSpec("Role: industry analyst\nProfile companies and their strategies."),
    }
    task = "Give me an overview of the heat pump market in Northern Europe: size, subsidies and key vendors."
    wrap = "Your assignment from the orchestrator:\n{}\nReport back in one paragraph."
    results = "Here are the specialists' reports.\n\nMarket: {}".format
    steps = (
        Step("o1", "orchestrator", "o", (User((task,)),), PLAN),
        Step("w1", "researcher", "w1", (User((Quote("o1", part=1, wrap=wrap),)),), FINDINGS, after=("o1",), took=3),
        Step("w2", "policy-analyst", "w2", (User((Quote("o1", part=2, wrap=wrap),)),), SUBSIDIES, after=("o1",), took=2),
        Step("w3", "industry-analyst", "w3", (User((Quote("o1", part=3, wrap=wrap),)),), MAKERS, after=("o1",), took=4),
        Step(
            "o2", "orchestrator", "o",
            (User((results(""), Quote("w1"), "Subsidies:", Quote("w2"), "Vendors:", Quote("w3"))),),
            "Northern Europe's heat pump market is large and growing; subsidies differ sharply by country.",
            after=("w1", "w2", "w3"),
        ),
    )  # fmt: skip
    return Script(agents, steps)


def pipeline_script(topic: str, prefix: str = "") -> Script:
    agents = {
        "planner": AgentSpec("You are the planner. Turn a request into an outline with sections."),
        "writer": AgentSpec("You are the writer. Expand an outline into prose.", model="gpt-4o"),
        "editor": AgentSpec(
            "You are the editor. Tighten prose and fix errors.", api="messages", model="claude-3-5-sonnet"
        ),
    }
    outline = (
        f"Outline for an article about {topic}: open with why {topic} matters to ordinary readers this year, "
        f"then explain the three forces reshaping {topic} and close with practical advice readers can act on."
    )
    draft = (
        f"Few subjects touch daily life as directly as {topic}. This year three forces are reshaping it at once, "
        f"and each of them changes what a careful reader should do next about {topic} in their own household."
    )
    final = (
        f"{topic.capitalize()} affects daily life directly. Three forces are reshaping it this year; "
        f"each changes what careful readers should do next."
    )
    steps = (
        Step("a", "planner", "a", (User((f"Write a short article about {topic}.",)),), outline),
        Step(
            "b",
            "writer",
            "b",
            (User((Quote("a", wrap="Please write the article from this outline:\n\n{}"),)),),
            draft,
        ),
        Step("c", "editor", "c", (User((Quote("b", wrap="Edit this draft for clarity:\n\n{}"),)),), final),
    )
    return Script(agents, steps).prefixed(prefix) if prefix else Script(agents, steps)


def agent_as_tool_script() -> Script:
    agents = {
        "concierge": AgentSpec(
            "You are the concierge. Use the research tool for facts you do not know.",
            ("research",),
            api="messages",
            model="claude-haiku-4-5",
        ),
        "research-assistant": AgentSpec(
            "You are a helpful research assistant. Answer precisely.", api="messages", model="claude-haiku-4-5"
        ),
    }
    query = "opening hours and ticket price of the Rijksmuseum in Amsterdam for adults"
    answer = (
        "The Rijksmuseum is open every day from nine in the morning to five in the afternoon, and an adult "
        "ticket costs 22.50 euros when bought online; visitors under eighteen enter free."
    )
    steps = (
        Step("c1", "concierge", "c", (User(("Can I visit the Rijksmuseum tomorrow, and what will it cost?",)),),
             "Let me check that for you.", tools=(ToolUse("research", {"query": query}),)),
        Step("r1", "research-assistant", "r", (User((Quote("c1", tool=0),)),), answer),
        Step("c2", "concierge", "c", (Result("c1", 0, (Quote("r1"),)),), "Yes: it opens at nine and adult tickets are 22.50 euros online."),
    )  # fmt: skip
    return Script(agents, steps)
