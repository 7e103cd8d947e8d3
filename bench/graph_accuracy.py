"""Graph reconstruction on randomized multi-agent traffic with known truth: accuracy and speed.

    python bench/graph_accuracy.py                 # 600 runs, seed 7
    python bench/graph_accuracy.py --runs 1000 --seed 3 --json out.json

    generator ──▶ Scripts (10 patterns × 3 system variants, random content) ──render──▶
    exchanges (interleaved: ~40 runs live at once) ──noise in prompts──▶ provider parsers
    ──▶ Calls ──▶ Linker.observe (completion order) ──▶ compared with the generator's truth

Patterns: fan-out (text plan or one tool call per worker), pipeline, supervisor on the
Responses API, agent-as-tool over Anthropic tool_use, ping-pong, nested orchestrators,
human input mid-run, group chat, truncated handoffs (cut or finish=length), handoff that
passes the conversation on (Agents SDK).  Handoff text is wrapped, paraphrased (a share of
its words replaced), split into parts; prompts carry dates, times, uuids, ids and emails
that change on every call or every run; workers pull large search results through a tool.

Reported: handoff+return edge precision / recall / F1 (kind accuracy on the matches), human
and truncation precision / recall, adjusted Rand index of agent and of run grouping,
linking throughput on one core and linker+index memory per 10k live calls (tracemalloc).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import pathlib
import random
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from proxy.call import Call  # noqa: E402
from proxy.graph import Linker, LinkResult, MemoryLineageIndex  # noqa: E402
from proxy.graph.script import (  # noqa: E402
    AgentSpec,
    Exchange,
    Quote,
    Result,
    Script,
    Step,
    ToolUse,
    User,
    merge,
    render,
)
from tests.graph.factory import call_from_exchange  # noqa: E402
from tests.graph.metrics import ari, prf  # noqa: E402

# fmt: off
FUNCTION_WORDS = (
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "with", "was", "on", "be",
    "by", "this", "are", "from", "or", "at", "an", "which", "but", "not", "have", "has", "their",
    "its", "they", "will", "can", "more", "than", "also", "these", "into", "when", "other", "been",
    "some", "after", "over", "most", "such", "only", "any", "new", "two", "first", "where", "while",
    "both", "each", "under", "between",
)
# fmt: on
STOCK = tuple(
    f"{opener} {topic}."
    for opener in (
        "Here is a summary of the key findings on", "Let me know if you would like me to expand on",
        "Based on the information provided, here is my analysis of", "I hope this helps with",
        "Please review the following and provide feedback on", "In conclusion, the approach above addresses",
        "Feel free to ask if you have any further questions about", "Below is a detailed breakdown of",
        "To summarize, these are the most important points about", "I have completed the analysis of",
    )
    for topic in (
        "the pricing section", "the competitive landscape", "the risks involved", "the next steps",
        "the technical requirements", "the budget estimate", "the implementation plan", "the data sources",
    )
)  # fmt: skip
WRAPPERS = (
    "{}",
    "Please handle the following assignment:\n{}",
    "Task from the coordinator:\n\n{}\n\nReply with your findings only.",
    "Here is what you need to work on. {} Keep the answer focused.",
    "Context from the previous step follows.\n---\n{}\n---\nContinue from here.",
    "Assignment: {}",
)


# ---------------------------------------------------------------------------- text


class Words:
    """Pseudo-English: function words around Zipf-distributed pseudo content words."""

    def __init__(self, rng: random.Random, size: int = 8000) -> None:
        syll = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou", "ea")]
        vocab: set[str] = set()
        while len(vocab) < size:
            vocab.add("".join(rng.choice(syll) for _ in range(rng.randint(2, 4))))
        self.vocab = sorted(vocab)
        self.cum = list(itertools.accumulate(1.0 / (i + 1) ** 0.9 for i in range(size)))
        self.rng = rng

    def content(self, n: int) -> list[str]:
        return self.rng.choices(self.vocab, cum_weights=self.cum, k=n)

    def sentence(self, topic: list[str], n: int | None = None) -> str:
        rng = self.rng
        n = n or rng.randint(9, 22)
        fill = self.content(n)
        words = [
            rng.choice(FUNCTION_WORDS) if r < 0.42 else rng.choice(topic) if r < 0.62 else fill[i]
            for i, r in enumerate(rng.random() for _ in range(n))
        ]
        return " ".join(words).capitalize() + "."

    def paragraph(self, topic: list[str], words: int) -> str:
        """Sentences on the topic; half of them open or close with a stock phrase (the
        boilerplate real outputs share across runs: a few runs at a time hold each one)."""
        out: list[str] = []
        rng = self.rng
        if rng.random() < 0.5:
            out.append(rng.choice(STOCK))
        count = 0
        while count < words:
            s = self.sentence(topic)
            out.append(s)
            count += s.count(" ") + 1
        if rng.random() < 0.5:
            out.append(rng.choice(STOCK))
        return " ".join(out)

    def paraphrase(self, text: str, share: float) -> tuple[tuple[str, str], ...]:
        """Replace `share` of the distinct longer words by other words (synonyms)."""
        distinct = sorted({w.strip(".,").lower() for w in text.split() if len(w) > 4})
        picked = self.rng.sample(distinct, int(len(distinct) * share)) if distinct else []
        return tuple((w, self.content(1)[0]) for w in picked)


# ---------------------------------------------------------------------------- truth


@dataclass
class Truth:
    agent: dict[str, str] = field(default_factory=dict)  # step → true agent label
    run: dict[str, str] = field(default_factory=dict)
    edges: dict[tuple[str, str], str] = field(default_factory=dict)  # (source, target) → kind
    human: set[str] = field(default_factory=set)  # steps that receive human input mid-run
    truncated: set[tuple[str, str]] = field(default_factory=set)


class Run:
    """Builds one run's steps and records the truth as it goes."""

    def __init__(self, gen: Gen, run_id: str, system: str, agents: dict[str, AgentSpec]) -> None:
        self.gen, self.id, self.system, self.agents = gen, run_id, system, agents
        self.steps: list[Step] = []
        self.pairs: set[tuple[str, str]] = set()
        self.group_threads: set[str] = set()
        self.n = 0

    def step(
        self, agent: str, thread: str, inputs: Iterable[User | Result] = (), text: str = "", **kw: Any
    ) -> str:
        sid = f"{self.id}.{self.n}"
        self.n += 1
        self.steps.append(Step(sid, agent, f"{self.id}.{thread}", tuple(inputs), text, **kw))
        self.gen.truth.agent[sid] = f"{self.system}:{agent}"
        self.gen.truth.run[sid] = self.id
        return sid

    def edge(self, source: str, target: str, *, truncated: bool = False) -> None:
        a, b = self.agent_of(source), self.agent_of(target)
        kind = "return" if (b, a) in self.pairs else "handoff"
        if kind == "handoff":
            self.pairs.add((a, b))
        self.gen.truth.edges[(source, target)] = kind
        if truncated:
            self.gen.truth.truncated.add((source, target))

    def agent_of(self, sid: str) -> str:
        return next(s.agent for s in self.steps if s.id == sid)

    def script(self) -> Script:
        return Script(self.agents, tuple(self.steps), frozenset(self.group_threads))


class Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words = Words(self.rng)
        self.truth = Truth()

    def topic(self) -> list[str]:
        return self.words.content(6)

    def prompt(self, role_line: str, length: int) -> str:
        """A long prompt with a timestamp and a turn counter (new on every call); some also
        carry a session id or the user's email (new in every run) or a request id (new on
        every call).  Letters that change (uuids, emails, hex ids) defeat the identity cache,
        so those prompts are normalised again."""
        body = self.words.paragraph(self.words.content(8), length)
        rng = self.rng
        extra = "".join(
            line
            for line, p in ((" Session {session}.", 0.2), (" User: {email}.", 0.15), (" Request {req}.", 0.1))
            if rng.random() < p
        )
        return f"{role_line} {body}\nCurrent time: {{now}}, turn {{n}}.{extra}"

    def quote(
        self,
        step: str,
        text: str,
        *,
        part: int | None = None,
        tool: int | None = None,
        paraphrase: bool = True,
    ) -> Quote:
        rng = self.rng
        share = rng.choice((0.0, 0.0, 0.05, 0.1, 0.15)) if paraphrase else 0.0
        return Quote(
            step, part=part, tool=tool, wrap=rng.choice(WRAPPERS), rewrite=self.words.paraphrase(text, share)
        )

    def took(self) -> float:
        return round(self.rng.uniform(0.8, 6.0), 2)


# ---------------------------------------------------------------------------- patterns


def agents_for(
    gen: Gen, pattern: str, v: int, roles: dict[str, tuple[str, str, tuple[str, ...]]]
) -> dict[str, AgentSpec]:
    """roles: name → (role line, api, tools); prompts seeded per (pattern, variant)."""
    saved = gen.rng.getstate()
    gen.rng.seed(f"{pattern}/{v}")
    out = {}
    shared = gen.prompt(SHARED_PROMPT, gen.rng.randint(900, 1500)) if pattern != "broadcast" else (
        "You are a helpful AI assistant. Solve tasks using your coding and language skills. "
        "Reply TERMINATE when the task is done."
    )
    for name, (line, api, tools) in roles.items():
        stateful = api == "responses+"
        system = shared if line == "=" else "" if not line else gen.prompt(line, gen.rng.randint(900, 1500))
        out[name] = AgentSpec(
            system, tools, api.rstrip("+*"), stateful=stateful, rewrite=api.endswith("*")
        )
    gen.rng.setstate(saved)
    return out


def worker_turns(
    run: Run, gen: Gen, agent: str, thread: str, task_input: User | Result, topic: list[str]
) -> str:
    """A worker: maybe searches (tool loop with big results), then answers.  Returns last step."""
    w = gen.words
    answer = w.paragraph(topic, gen.rng.randint(60, 160))
    if gen.rng.random() < 0.6:
        q = run.step(
            agent,
            thread,
            (task_input,),
            tools=(ToolUse("search", {"q": w.sentence(topic, 6)}),),
            took=gen.took(),
        )
        docs = w.paragraph(w.content(6), gen.rng.randint(600, 1800))
        return run.step(agent, thread, (Result(q, 0, (docs,)),), answer, took=gen.took())
    return run.step(agent, thread, (task_input,), answer, took=gen.took())


def fan_out(gen: Gen, run: Run, topic: list[str]) -> None:
    w, rng = gen.words, gen.rng
    k = rng.randint(2, 4)
    parts = [w.paragraph(topic, rng.randint(18, 40)) for _ in range(k)]
    by_tool = run.system.endswith("1")
    if by_tool:
        o1 = run.step("orchestrator", "o", (User((w.paragraph(topic, 40),)),), "Delegating the parts.",
                      tools=tuple(ToolUse("delegate", {"task": p}) for p in parts), took=gen.took())  # fmt: skip
    else:
        plan = w.sentence(topic) + "\n\n" + "\n".join(f"{i + 1}. {p}" for i, p in enumerate(parts))
        o1 = run.step("orchestrator", "o", (User((w.paragraph(topic, 40),)),), plan, took=gen.took())
    lasts = []
    for i in range(k):
        worker = "worker" if run.system.endswith("0") else f"worker{i}"
        q = gen.quote(o1, parts[i], tool=i if by_tool else None, part=None if by_tool else i + 1)
        first = len(run.steps)
        last = worker_turns(run, gen, worker, f"w{i}", User((q,)), topic)
        run.steps[first] = _with_after(run.steps[first], (o1,))
        run.edge(o1, run.steps[first].id)
        lasts.append(last)
    answers = [s for s in run.steps if s.id in lasts]
    if by_tool:
        inputs: tuple[User | Result, ...] = tuple(
            Result(o1, i, (gen.quote(a.id, a.text),)) for i, a in enumerate(answers)
        )
    else:
        inputs = (User(tuple(gen.quote(a.id, a.text) for a in answers)),)
    o2 = run.step("orchestrator", "o", inputs, w.paragraph(topic, 50), after=tuple(lasts), took=gen.took())
    for last in lasts:
        run.edge(last, o2)


def pipeline(gen: Gen, run: Run, topic: list[str]) -> None:
    w = gen.words
    stages = ["planner", "writer", "editor", "publisher"][: 3 + run.system.endswith("2")]
    prev = run.step(
        stages[0], "s0", (User((w.paragraph(topic, 50),)),), w.paragraph(topic, 90), took=gen.took()
    )
    for i, stage in enumerate(stages[1:], 1):
        text = run.steps[-1].text
        pieces: tuple[str | Quote, ...] = (gen.quote(prev, text),)
        if gen.rng.random() < 0.3:
            pieces = ("Original request: " + w.sentence(topic), *pieces)
        cur = run.step(
            stage, f"s{i}", (User(pieces),), w.paragraph(topic, gen.rng.randint(70, 150)), took=gen.took()
        )
        run.edge(prev, cur)
        prev = cur


def supervisor(gen: Gen, run: Run, topic: list[str]) -> None:
    w = gen.words
    workers = ("researcher", "writer")[: gen.rng.randint(1, 2)]
    task = w.paragraph(topic, 30)
    tools = (ToolUse(f"transfer_to_{workers[0]}", {"task": task}),)
    s = run.step("supervisor", "s", (User((w.paragraph(topic, 40),)),), tools=tools, took=gen.took())
    for i, worker in enumerate(workers):
        first = len(run.steps)
        last = worker_turns(run, gen, worker, f"w{i}", User((gen.quote(s, task, tool=0),)), topic)
        run.edge(s, run.steps[first].id)
        result = Result(s, 0, (gen.quote(last, run.steps[-1].text),))
        if i + 1 < len(workers):
            task = w.paragraph(topic, 30)
            tools = (ToolUse(f"transfer_to_{workers[i + 1]}", {"task": task}),)
            s2 = run.step("supervisor", "s", (result,), tools=tools, took=gen.took())
        else:
            s2 = run.step("supervisor", "s", (result,), w.paragraph(topic, 40), took=gen.took())
        run.edge(last, s2)
        s = s2


def agent_as_tool(gen: Gen, run: Run, topic: list[str]) -> None:
    w = gen.words
    c = run.step("concierge", "c", (User((w.paragraph(topic, 30),)),), "Let me look that up.",
                 tools=(ToolUse("research", {"query": w.paragraph(topic, 20)}),), took=gen.took())  # fmt: skip
    for i in range(gen.rng.randint(1, 3)):
        query = run.steps[-1].tools[0].args["query"]
        r = run.step(
            "research",
            f"r{i}",
            (User((gen.quote(c, query, tool=0),)),),
            w.paragraph(topic, 80),
            took=gen.took(),
        )
        run.edge(c, r)
        more = i < 2 and gen.rng.random() < 0.5
        tools = (ToolUse("research", {"query": w.paragraph(topic, 20)}),) if more else ()
        c2 = run.step("concierge", "c", (Result(c, 0, (gen.quote(r, run.steps[-1].text, paraphrase=False),)),),
                      "" if more else w.paragraph(topic, 40), tools=tools, took=gen.took())  # fmt: skip
        run.edge(r, c2)
        c = c2
        if not more:
            break


def ping_pong(gen: Gen, run: Run, topic: list[str]) -> None:
    w = gen.words
    a = run.step("author", "a", (User((w.paragraph(topic, 30),)),), w.paragraph(topic, 80), took=gen.took())
    for _ in range(gen.rng.randint(2, 4)):
        b = run.step(
            "reviewer",
            "b",
            (User((gen.quote(a, run.steps[-1].text),)),),
            w.paragraph(topic, 60),
            took=gen.took(),
        )
        run.edge(a, b)
        a = run.step(
            "author",
            "a",
            (User((gen.quote(b, run.steps[-1].text),)),),
            w.paragraph(topic, 80),
            took=gen.took(),
        )
        run.edge(b, a)


def nested(gen: Gen, run: Run, topic: list[str]) -> None:
    w, rng = gen.words, gen.rng
    parts = [w.paragraph(topic, rng.randint(20, 35)) for _ in range(2)]
    plan = w.sentence(topic) + "\n\n" + "\n".join(f"- {p}" for p in parts)
    t1 = run.step("director", "t", (User((w.paragraph(topic, 30),)),), plan, took=gen.took())
    summaries = []
    for i in range(2):
        lead = f"lead{i}"
        subparts = [w.paragraph(topic, rng.randint(18, 30)) for _ in range(rng.randint(1, 2))]
        subplan = w.sentence(topic) + "\n\n" + "\n".join(f"{j + 1}. {p}" for j, p in enumerate(subparts))
        l1 = run.step(
            lead,
            f"l{i}",
            (User((gen.quote(t1, parts[i], part=i + 1),)),),
            subplan,
            after=(t1,),
            took=gen.took(),
        )
        run.edge(t1, l1)
        lasts = []
        for j in range(len(subparts)):
            first = len(run.steps)
            last = worker_turns(
                run, gen, "engineer", f"e{i}{j}", User((gen.quote(l1, subparts[j], part=j + 1),)), topic
            )
            run.steps[first] = _with_after(run.steps[first], (l1,))
            run.edge(l1, run.steps[first].id)
            lasts.append(last)
        texts = tuple(gen.quote(x.id, x.text) for x in run.steps if x.id in lasts)
        l2 = run.step(
            lead, f"l{i}", (User(texts),), w.paragraph(topic, 60), after=tuple(lasts), took=gen.took()
        )
        for last in lasts:
            run.edge(last, l2)
        summaries.append(l2)
    texts = tuple(gen.quote(x.id, x.text) for x in run.steps if x.id in summaries)
    t2 = run.step(
        "director", "t", (User(texts),), w.paragraph(topic, 40), after=tuple(summaries), took=gen.took()
    )
    for s in summaries:
        run.edge(s, t2)


def human(gen: Gen, run: Run, topic: list[str]) -> None:
    w = gen.words
    run.step(
        "planner",
        "p",
        (User((w.paragraph(topic, 30),)),),
        w.sentence(topic) + " Which option do you prefer?",
        took=gen.took(),
    )
    reply = w.sentence(w.content(6), gen.rng.randint(5, 25))
    p2 = run.step("planner", "p", (User((reply,)),), w.paragraph(topic, 60), took=gen.took() + 20)
    run.gen.truth.human.add(p2)
    last = worker_turns(run, gen, "booker", "b", User((gen.quote(p2, run.steps[-1].text),)), topic)
    first = next(i for i, s in enumerate(run.steps) if s.agent == "booker")
    run.edge(p2, run.steps[first].id)
    p3 = run.step("planner", "p", (User((gen.quote(last, next(s.text for s in run.steps if s.id == last)),)),),
                  w.paragraph(topic, 40), took=gen.took())  # fmt: skip
    run.edge(last, p3)


def group_chat(gen: Gen, run: Run, topic: list[str]) -> None:
    w, rng = gen.words, gen.rng
    speakers = ["analyst", "skeptic", "moderator", "expert"][: 3 + run.system.endswith("1")]
    run.group_threads.add(f"{run.id}.room")
    prev: str | None = None
    who = None
    for t in range(rng.randint(4, 8)):
        who = rng.choice([s for s in speakers if s != who])
        inputs = (User((w.paragraph(topic, 30),)),) if t == 0 else ()
        cur = run.step(who, "room", inputs, w.paragraph(topic, rng.randint(40, 90)), took=gen.took())
        if prev is not None:
            run.edge(prev, cur)
        prev = cur


def truncated(gen: Gen, run: Run, topic: list[str]) -> None:
    w, rng = gen.words, gen.rng
    length = rng.random() < 0.4
    report = w.paragraph(topic, rng.randint(70, 130))
    a = run.step(
        "auditor",
        "a",
        (User((w.paragraph(topic, 30),)),),
        report,
        finish="length" if length else "stop",
        took=gen.took(),
    )
    cut = None if length else round(rng.uniform(0.35, 0.75), 2)
    q = Quote(a, cut=cut, wrap=rng.choice(WRAPPERS))
    f = run.step("fixer", "f", (User((q,)),), w.paragraph(topic, 60), took=gen.took())
    run.edge(a, f, truncated=True)


def handoff_history(gen: Gen, run: Run, topic: list[str]) -> None:
    w = gen.words
    t1 = run.step(
        "triage",
        "t",
        (User((w.paragraph(topic, 30),)),),
        tools=(ToolUse("transfer_to_specialist", {}),),
        took=gen.took(),
    )
    b1 = run.step("specialist", "b", (Result(t1, 0, ('{"assistant": "Specialist"}',)),),
                  tools=(ToolUse("lookup", {"q": w.sentence(topic, 6)}),), fork=f"{run.id}.t", took=gen.took())  # fmt: skip
    run.edge(t1, b1)
    docs = w.paragraph(w.content(6), gen.rng.randint(400, 1200))
    run.step("specialist", "b", (Result(b1, 0, (docs,)),), w.paragraph(topic, 70), took=gen.took())


SHARED_PROMPT = (
    "You are an expert assistant who can solve any task using tool calls. You will be given a task "
    "to solve as best you can. To do so, you have been given access to some tools."
)
BOILERPLATE = (
    "Here is a summary of the key findings.",
    "Let me know if you would like me to expand on any of these points.",
    "I hope this helps! Feel free to ask if you have any further questions.",
    "Based on the information provided, here is my analysis of the situation.",
    "```python\nimport os\nimport sys\nimport json\n\ndef main():\n    pass\n```",
    "In conclusion, the approach outlined above should address the main requirements.",
    "Please review the following and provide feedback on the overall structure.",
)
TEMPLATE_TASK = (
    "Research the current state of the market for electric bicycles in Europe, identify the three "
    "largest manufacturers and write a short report with recommendations for a new entrant."
)


def _boiler(gen: Gen, text: str) -> str:
    """Wrap an output in the stock phrases every run of every system shares."""
    rng = gen.rng
    return f"{rng.choice(BOILERPLATE)}\n\n{text}\n\n{rng.choice(BOILERPLATE)}"


def managed(gen: Gen, run: Run, topic: list[str]) -> None:
    """smolagents-style: a manager and managed agents, all with one prompt and one tool set; each
    managed agent learns its name from the task wrapper; histories resent as text."""
    w = gen.words
    workers = ("search_agent", "code_agent")[: gen.rng.randint(1, 2)]
    m = run.step("manager", "m", (User((w.paragraph(topic, 30),)),),
                 tools=(ToolUse("delegate", {"task": w.paragraph(topic, 25)}),), took=gen.took())  # fmt: skip
    for i, worker in enumerate(workers):
        wrap = (
            f"You're a helpful agent named '{worker}'. You have been submitted this task by your manager.\n"
            "---\nTask:\n{}\n---\nYou're helping your manager solve a wider task: so make sure to not "
            "provide a one-line answer, but give as much information as possible."
        )
        q = Quote(m, tool=0, wrap=wrap)
        first = len(run.steps)
        last = worker_turns(run, gen, worker, f"w{i}", User((q,)), topic)
        run.edge(m, run.steps[first].id)
        res = Result(m, 0, (Quote(last, wrap=f"Here is the final answer from your managed agent '{worker}':\n{{}}"),))
        more = i + 1 < len(workers)
        tools = (ToolUse("delegate", {"task": w.paragraph(topic, 25)}),) if more else ()
        m2 = run.step("manager", "m", (res,), "" if more else w.paragraph(topic, 40), tools=tools, took=gen.took())
        run.edge(last, m2)
        m = m2


def fan_in(gen: Gen, run: Run, topic: list[str]) -> None:
    """CrewAI-style sequential crew: the writer's task carries both earlier outputs as context."""
    w = gen.words
    r = run.step("researcher", "r", (User(("Research: " + w.paragraph(topic, 30),)),),
                 _boiler(gen, w.paragraph(topic, 80)), took=gen.took())  # fmt: skip
    a = run.step("analyst", "a", (User(("Analyse: " + w.paragraph(topic, 20), gen.quote(r, run.steps[-1].text))),),
                 _boiler(gen, w.paragraph(topic, 80)), took=gen.took())  # fmt: skip
    run.edge(r, a)
    texts = [s.text for s in run.steps]
    ctx = (
        "Write the final report. This is the context you're working with:\n",
        gen.quote(r, texts[0]),
        "\n----------\n",
        gen.quote(a, texts[1]),
    )
    f = run.step("writer", "f", (User(ctx),), w.paragraph(topic, 100), took=gen.took())
    run.edge(r, f)
    run.edge(a, f)


def template(gen: Gen, run: Run, topic: list[str]) -> None:
    """One system run many times at once on the same task text: planner → researcher → writer,
    outputs full of the stock phrases every run shares."""
    w, rng = gen.words, gen.rng
    plan = f"Task: {TEMPLATE_TASK}\n\n" + _boiler(gen, w.paragraph(topic, 70))  # restates the task
    p = run.step("planner", "p", (User((TEMPLATE_TASK,)),), plan, took=gen.took())
    q = run.step("researcher", "r", (User(("Task: " + TEMPLATE_TASK, gen.quote(p, plan))),),
                 tools=(ToolUse("search", {"q": w.sentence(topic, 6)}),), took=gen.took())  # fmt: skip
    run.edge(p, q)
    page = " ".join(rng.sample(BOILERPLATE, 3)) + "\n\n" + w.paragraph(w.content(6), rng.randint(200, 600))
    r = run.step("researcher", "r", (Result(q, 0, (f"{TEMPLATE_TASK}\n\n{page}",)),),
                 _boiler(gen, w.paragraph(topic, 90)), took=gen.took())  # fmt: skip
    f = run.step("writer", "f", (User(("Task: " + TEMPLATE_TASK, gen.quote(r, run.steps[-1].text))),),
                 _boiler(gen, w.paragraph(topic, 90)), took=gen.took())  # fmt: skip
    run.edge(r, f)


def _with_after(step: Step, after: tuple[str, ...]) -> Step:
    return Step(step.id, step.agent, step.thread, step.input, step.text, step.tools, step.finish, after,
                step.took, step.fork, step.run, step.stream)  # fmt: skip


PATTERNS: dict[str, tuple[Callable[[Gen, Run, list[str]], None], dict[str, tuple[str, str, tuple[str, ...]]]]] = {
    "fan_out": (fan_out, {
        "orchestrator": ("You are the orchestrator of the research desk.", "chat", ("delegate",)),
        "worker": ("You are a helpful research assistant.", "chat", ("search",)),
        "worker0": ("You are the market researcher.", "chat", ("search",)),
        "worker1": ("You are the data analyst.", "chat", ("search",)),
        "worker2": ("Role: fact checker", "chat", ("search",)),
        "worker3": ("You are the domain expert.", "chat", ("search",)),
    }),
    "pipeline": (pipeline, {
        "planner": ("You are the planner.", "chat", ()),
        "writer": ("You are the writer.", "chat", ()),
        "editor": ("You are the editor.", "messages", ()),
        "publisher": ("You are the publisher.", "chat", ()),
    }),
    "supervisor": (supervisor, {
        "supervisor": ("You are a team supervisor managing experts.", "responses+", ("transfer_to_researcher", "transfer_to_writer")),
        "researcher": ("You are the researcher.", "responses", ("search",)),
        "writer": ("You are the writer.", "responses", ("search",)),
    }),
    "agent_as_tool": (agent_as_tool, {
        "concierge": ("You are the concierge.", "messages", ("research",)),
        "research": ("You are a helpful research assistant.", "messages", ()),
    }),
    "ping_pong": (ping_pong, {
        "author": ("You are the author.", "chat", ()),
        "reviewer": ("You are the reviewer.", "messages", ()),
    }),
    "nested": (nested, {
        "director": ("You are the director.", "chat", ()),
        "lead0": ("You are the engineering lead.", "chat", ()),
        "lead1": ("You are the design lead.", "chat", ()),
        "engineer": ("You are an engineer.", "chat", ("search",)),
    }),
    "human": (human, {
        "planner": ("You are the trip planner.", "chat", ()),
        "booker": ("You are the booking agent.", "chat", ("search",)),
    }),
    "group_chat": (group_chat, {
        "analyst": ("You are the analyst in a group discussion.", "chat", ()),
        "skeptic": ("You are the skeptic in a group discussion.", "chat", ()),
        "moderator": ("You are the moderator.", "chat", ()),
        "expert": ("You are the expert in a group discussion.", "chat", ()),
    }),
    "truncated": (truncated, {
        "auditor": ("You are the auditor.", "chat", ()),
        "fixer": ("You are the fixer.", "messages", ()),
    }),
    "handoff_history": (handoff_history, {
        "triage": ("You are the triage agent.", "responses", ("transfer_to_specialist",)),
        "specialist": ("You are the specialist.", "responses", ("lookup",)),
    }),
    # hard cases: identity without a role-stating prompt, evidence among look-alike runs
    "managed": (managed, {
        "manager": ("=", "chat*", ("delegate", "final_answer", "search")),
        "search_agent": ("=", "chat*", ("delegate", "final_answer", "search")),
        "code_agent": ("=", "chat*", ("delegate", "final_answer", "search")),
    }),
    "shared_pipeline": (pipeline, {
        "planner": ("=", "chat", ()),
        "writer": ("=", "chat", ()),
        "editor": ("=", "chat", ()),
        "publisher": ("=", "chat", ()),
    }),
    "no_system": (pipeline, {
        "planner": ("", "chat", ()),
        "writer": ("", "chat", ()),
        "editor": ("", "chat", ()),
        "publisher": ("", "chat", ()),
    }),
    "no_system_fan_out": (fan_out, {
        "orchestrator": ("", "chat", ("delegate",)),
        "worker": ("", "chat", ("search",)),
        "worker0": ("", "chat", ("search",)),
        "worker1": ("", "chat", ("search",)),
        "worker2": ("", "chat", ("search",)),
        "worker3": ("", "chat", ("search",)),
    }),
    "broadcast": (group_chat, {
        "analyst": ("=", "chat", ()),
        "skeptic": ("=", "chat", ()),
        "moderator": ("=", "chat", ()),
        "expert": ("=", "chat", ()),
    }),
    "fan_in": (fan_in, {
        "researcher": ("You are the Senior Researcher. Your personal goal is: uncover developments.", "chat", ()),
        "analyst": ("You are the Data Analyst. Your personal goal is: find the numbers.", "chat", ()),
        "writer": ("You are the Report Writer. Your personal goal is: write the report.", "chat", ()),
    }),
    "template": (template, {
        "planner": ("You are the planner.", "chat", ()),
        "researcher": ("You are the researcher.", "chat", ()),
        "writer": ("You are the writer.", "chat", ()),
    }),
}  # fmt: skip
FAMILIES = {
    "role_prompts": ("fan_out", "pipeline", "supervisor", "agent_as_tool", "ping_pong", "nested", "human",
                     "group_chat", "truncated", "handoff_history"),
    "shared_prompt": ("managed", "shared_pipeline", "broadcast"),
    "no_system_prompt": ("no_system", "no_system_fan_out"),
    "fan_in": ("fan_in",),
    "same_template": ("template",),
}  # fmt: skip


def generate(runs: int, seed: int, template_runs: int = 200) -> tuple[list[Call], Truth]:
    """`runs` runs of every pattern in turn, one starting every 0.6 s on average, and a burst of
    `template_runs` runs of one system on one task text, all live at once mid-way."""
    gen = Gen(seed)
    streams = []
    start = 0.0
    names = sorted(set(PATTERNS) - {"template"})
    plan = [(names[r % len(names)], None) for r in range(runs)]
    burst_at = runs * 0.3
    plan[len(plan) // 2 : len(plan) // 2] = [("template", burst_at + i * 0.02) for i in range(template_runs)]
    for r, (pattern, at) in enumerate(plan):
        v = gen.rng.randrange(3)
        build, roles = PATTERNS[pattern]
        system = f"{pattern}{v}"
        if pattern == "broadcast" or pattern.startswith("no_system"):
            # one prompt (or none) for every variant: agents named alike are one agent; a fan-out
            # has one worker agent (identical workers without a prompt or tools of their own are one)
            v, system = 0, pattern + "0"
        run = Run(gen, f"r{r}", system, agents_for(gen, pattern, v, roles))
        build(gen, run, gen.topic())
        if at is None:
            start += gen.rng.expovariate(1 / 0.6)
        streams.append(render(run.script(), offset=start if at is None else at))
    per_run: dict[str, dict[str, str]] = {}
    calls = [call_from_exchange(_noisy(ex, gen.rng, per_run)) for ex in merge(*streams)]
    return calls, gen.truth


def _noisy(ex: Exchange, rng: random.Random, per_run: dict[str, dict[str, str]]) -> Exchange:
    run = ex.step.split(".")[0]
    if run not in per_run:
        per_run[run] = {
            "{session}": str(uuid.UUID(int=rng.getrandbits(128))),
            "{email}": f"{rng.choice(('ana', 'bo', 'chen', 'dmitri'))}{rng.randrange(10**4)}@example.com",
        }
    values = {
        **per_run[run],
        "{now}": time.strftime("%A, %B %d, %Y %H:%M:%S", time.gmtime(1.7e9 + ex.started_at)),
        "{req}": f"req_{rng.getrandbits(40):x}",
        "{n}": str(rng.randrange(10**6)),
    }
    raw = orjson.dumps(ex.request).decode()
    for k, v in values.items():
        raw = raw.replace(k, v)
    return Exchange(ex.step, ex.agent, ex.api, ex.path, ex.headers, orjson.loads(raw), ex.response,
                    ex.started_at, ex.ended_at, ex.stream)  # fmt: skip


# ---------------------------------------------------------------------------- metrics


def score(results: dict[str, LinkResult], truth: Truth) -> dict[str, Any]:
    found = {
        (e.source, e.target): e.kind
        for r in results.values()
        for e in r.edges
        if e.kind in ("handoff", "return")
    }
    p, r, f = prf(set(found), set(truth.edges))
    matched = set(found) & set(truth.edges)
    kinds = sum(found[e] == truth.edges[e] for e in matched) / max(1, len(matched))
    humans = {e.target for r in results.values() for e in r.edges if e.kind == "human"}
    trunc = {(e.source, e.target) for r in results.values() for e in r.edges if e.evidence.get("truncated")}
    steps = sorted(results)
    run_of = final_runs(results)
    agent_of = final_agents(results)
    return {
        "handoff_edges": {
            "truth": len(truth.edges),
            "found": len(found),
            "precision": p,
            "recall": r,
            "f1": f,
        },
        "kind_accuracy": kinds,
        "human": dict(zip(("precision", "recall", "f1"), prf(humans, truth.human), strict=True)),
        "truncated": dict(zip(("precision", "recall", "f1"), prf(trunc, truth.truncated), strict=True)),
        "agent_ari": ari([truth.agent[s] for s in steps], [agent_of[s] for s in steps]),
        "run_ari": ari([truth.run[s] for s in steps], [run_of[s] for s in steps]),
        "agents": {
            "truth": len(set(truth.agent.values())),
            "found": len({r.agent for r in results.values()}),
        },
        "runs": {"truth": len(set(truth.run.values())), "found": len(set(run_of.values()))},
        "calls": len(steps),
    }


def family_of(pattern: str) -> str:
    return next((f for f, members in FAMILIES.items() if pattern in members), "other")


def by_family(results: dict[str, LinkResult], truth: Truth) -> dict[str, dict[str, Any]]:
    """The same scores for each pattern family's calls alone (edges whose target is one)."""
    fam = {s: family_of(truth.agent[s].split(":")[0].rstrip("0123456789")) for s in results}
    out = {}
    for f in FAMILIES:
        keep = {s for s in results if fam[s] == f}
        if not keep:
            continue
        sub = Truth(
            {s: a for s, a in truth.agent.items() if s in keep},
            {s: r for s, r in truth.run.items() if s in keep},
            {e: k for e, k in truth.edges.items() if e[1] in keep},
            truth.human & keep,
            {e for e in truth.truncated if e[1] in keep},
        )
        run_of = final_runs(results)
        agent_of = final_agents(results)
        part = {
            s: dataclasses.replace(results[s], run_id=run_of[s], merged_runs=[], agent=agent_of[s], renamed={})
            for s in keep
        }
        out[f] = score(part, sub)
    return out


def final_agents(results: dict[str, LinkResult]) -> dict[str, str]:
    """Each call's agent after the renames later calls reported (what the recorder persists)."""
    out = {cid: r.agent for cid, r in results.items()}
    for r in results.values():
        out.update((cid, name) for cid, name in r.renamed.items() if cid in out)
    return out


def final_runs(results: dict[str, LinkResult]) -> dict[str, str]:
    """Each call's run after the merges later calls reported (what the recorder persists)."""
    alias = {m: r.run_id for r in results.values() if r.run_id for m in r.merged_runs}

    def root(run: str) -> str:
        while run in alias:
            run = alias[run]
        return run

    return {cid: root(str(r.run_id)) for cid, r in results.items()}


def tokens(call: Call) -> int:
    chars = len(call.system or "") + sum(len(m.text) for m in call.messages)
    chars += len(call.completion.text) + sum(len(t.arguments) for m in call.messages for t in m.tool_calls)
    return chars // 4


def link_all(calls: list[Call], repeat: int = 3) -> tuple[dict[str, LinkResult], float]:
    """Results and the best CPU seconds of `repeat` passes (other processes share the cores).

    The generated calls are frozen out of the garbage collector first: in the proxy a call
    is garbage once recorded, here thousands stay alive and would bill the linker for the
    collector walking them."""
    best: float = float("inf")
    results: dict[str, LinkResult] = {}
    for _ in range(repeat):
        results = {}
        gc.collect()
        gc.freeze()
        linker = Linker(MemoryLineageIndex(), run_idle_s=900.0)
        t0 = time.process_time()
        results = {c.id: linker.observe(c) for c in calls}
        best = min(best, time.process_time() - t0)
        del linker
        gc.unfreeze()
    return results, best


def memory_per_10k(calls: list[Call]) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    linker = Linker(MemoryLineageIndex(), run_idle_s=900.0)
    for c in calls:
        linker.observe(c)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del linker
    return used / len(calls) * 10_000 / 2**20


def calibration() -> float:
    """CPU seconds for sum(range(10**7)): ~0.12 s on a recent laptop core.  Scale the
    throughput by it to compare machines."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        sum(range(10**7))
        best = min(best, time.process_time() - t0)
    return round(best, 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=600)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--template-runs", type=int, default=200)
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    calls, truth = generate(args.runs, args.seed, args.template_runs)
    gen_s = time.perf_counter() - t0
    results, link_s = link_all(calls)
    report = score(results, truth)
    report["families"] = by_family(results, truth)
    report["calls"] = len(calls)
    report["mean_tokens_per_call"] = round(sum(map(tokens, calls)) / len(calls))
    report["throughput_calls_per_s"] = round(len(calls) / link_s)
    report["mean_link_us"] = round(link_s / len(calls) * 1e6, 1)
    report["memory_mib_per_10k_calls"] = round(memory_per_10k(calls), 1)
    report["generate_s"] = round(gen_s, 1)
    report["cpu_calibration_s"] = calibration()
    print(_table(report))
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    ok = all(
        f["handoff_edges"]["f1"] >= 0.98 and min(f["agent_ari"], f["run_ari"]) >= 0.99
        for f in [report, *report["families"].values()]
    )
    return 0 if ok and report["throughput_calls_per_s"] >= 2000 else 1


def _table(report: dict[str, Any]) -> str:
    h = report["handoff_edges"]
    lines = [
        f"calls {report['calls']}  runs {report['runs']['truth']} (found {report['runs']['found']})  "
        f"agents {report['agents']['truth']} (found {report['agents']['found']})  "
        f"mean tokens/call {report['mean_tokens_per_call']}",
        f"handoff+return edges  P {h['precision']:.4f}  R {h['recall']:.4f}  F1 {h['f1']:.4f}  "
        f"(truth {h['truth']}, found {h['found']})  kind accuracy {report['kind_accuracy']:.4f}",
        f"human edges           P {report['human']['precision']:.4f}  R {report['human']['recall']:.4f}",
        f"truncated handoffs    P {report['truncated']['precision']:.4f}  R {report['truncated']['recall']:.4f}",
        f"ARI agents {report['agent_ari']:.4f}   ARI runs {report['run_ari']:.4f}",
        f"throughput {report['throughput_calls_per_s']} calls/s ({report['mean_link_us']} us/call, one core)   "
        f"memory {report['memory_mib_per_10k_calls']} MiB per 10k live calls   "
        f"(cpu calibration: sum(range(10**7)) = {report['cpu_calibration_s']} s)",
        "",
        f"{'family':<18} {'calls':>6} {'runs':>9} {'agents':>9} {'ARI agents':>11} {'ARI runs':>9} "
        f"{'flow P':>7} {'flow R':>7} {'flow F1':>8}",
    ]
    for name, f in report["families"].items():
        h = f["handoff_edges"]
        runs, agents = f"{f['runs']['found']}/{f['runs']['truth']}", f"{f['agents']['found']}/{f['agents']['truth']}"
        lines.append(
            f"{name:<18} {f['calls']:>6} {runs:>9} {agents:>9} {f['agent_ari']:>11.4f} {f['run_ari']:>9.4f} "
            f"{h['precision']:>7.4f} {h['recall']:>7.4f} {h['f1']:>8.4f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
