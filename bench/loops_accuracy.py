"""Loops in meaning, generated: do the shipped loop rules catch them, and leave loop-free runs alone?

    python bench/loops_accuracy.py                  # 900 runs, seed 11, rules/default.yaml
    python bench/loops_accuracy.py --runs 3000 --seed 5 --rules DIR --json out.json
    python bench/loops_accuracy.py --seeds 11,12,13,14,15   # each seed, then the worst per family

    generator ──▶ runs (ordered calls with their full message histories and outputs, and the
    index of the call where the loop begins, or none) ──▶ the guard chain built from the
    rules directory (on_request, then the output, then on_response, call by call; runs
    interleaved) ──▶ first call of each run with a loop-rule event ──▶ per family:
    precision, recall, detection lag (calls after the loop's first call), false alarms

Systems: hub-and-spoke (an orchestrator writes a ledger with the next instruction; workers
(web, file, data) get it as a new user message in their own conversation, call a fetching
tool, then report back; the report reaches the orchestrator as a user message, for half of the runs followed by a
ledger prompt template resent every turn) and group
chats (every agent sees the whole chat; turns are substantive or short: "TERMINATE",
"Approved.", half of the chats have no run id, so they are scoped to their conversation).

Families of loops (the loop begins at the first call whose content repeats earlier content):
  redelegation  the orchestrator restates one sub-goal cycle after cycle: a fresh template,
                synonyms swapped, clauses reordered, entity words sometimes dropped, changing
                dates/numbers/URLs; the worker visits a different page each time and reports
                it could not find the answer (some of the page's own words in each report)
  revisit       the worker fetches a resource it fetched before (URL with tracking params,
                `www.`, trailing slash or fragment varied; the same file; the same query
                reworded), half of the time told so by the tool ("You previously visited ...")
  stall         an agent restates itself: a polling worker whose status lines change numbers,
                timestamps and URLs, or two group-chat agents circling with paraphrased turns

Loop-free runs of the same systems: every cycle a new sub-goal (sometimes the same entity
with another attribute, or a sub-goal retried once after a failure that then succeeds),
different resources, reports with new facts, a final summary (which restates the run) and
"TERMINATE".  Vocabulary is random per run (made-up entity words, random content words), so
the detectors see no fixed phrases.

Reported per family: runs, recall (loop runs flagged at or after the loop's first call),
precision (those / those + false alarms: loop runs flagged before the loop began, loop-free
runs first flagged by a rule of the family), lag median / p90 / share within 2 calls; and per
loop-free system the share of runs flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from proxy.call import Call, Completion, Message, ToolCall, Usage  # noqa: E402
from proxy.guards import build_chain, make_deps  # noqa: E402
from proxy.guards.counters import MemoryCounterStore  # noqa: E402
from proxy.rules import load_rules  # noqa: E402

RULES = pathlib.Path(__file__).resolve().parents[1] / "rules"
FAMILY_OF_DETECT = {
    "redelegation": "redelegation",
    "ping_pong": "redelegation",
    "revisit": "revisit",
    "tool_repeat": "revisit",
    "stall": "stall",
    "no_progress": "stall",
    "retry": "stall",
    "ceiling": "stall",
}

# fmt: off
SYLLABLES = ("ka", "lo", "ven", "dra", "mi", "tor", "sel", "qua", "bri", "zen", "fa", "rum", "ost", "pel",
             "nix", "gar", "tul", "vo", "sha", "rek", "mon", "di", "lap", "cor", "ju", "bel", "tas", "wen")
CONTENT = (
    "harbor", "glacier", "ledger", "copper", "orchard", "turbine", "festival", "migration", "archive",
    "satellite", "vineyard", "reservoir", "cathedral", "textile", "railway", "census", "drought", "tariff",
    "pottery", "monsoon", "quarry", "observatory", "lighthouse", "parliament", "bakery", "estuary",
    "printing", "telescope", "vaccine", "compiler", "lantern", "furnace", "meadow", "canyon", "dialect",
    "treaty", "pension", "subway", "marathon", "algorithm", "sculpture", "battery", "wetland", "ferry",
    "glassware", "tapestry", "refinery", "aqueduct", "sawmill", "brewery", "harvest", "plateau", "alloy",
    "mosaic", "volcano", "delta", "orbit", "enzyme", "protein", "fossil", "coral", "savanna", "tundra",
    "bridge", "tunnel", "canal", "forge", "kiln", "loom", "mill", "mine", "port", "dock", "market",
    "auction", "charter", "guild", "dynasty", "empire", "colony", "frontier", "border", "province",
    "district", "county", "village", "suburb", "skyline", "avenue", "plaza", "fountain", "garden",
    "stadium", "arena", "theater", "museum", "gallery", "library", "campus", "clinic", "hospital",
    "pharmacy", "laboratory", "factory", "warehouse", "terminal", "airport", "runway", "hangar",
    "pipeline", "grid", "reactor", "dam", "levee", "seawall", "breakwater", "jetty", "pier", "wharf",
    "granary", "silo", "barn", "stable", "pasture", "ranch", "plantation", "estate", "manor", "castle",
    "fortress", "citadel", "rampart", "moat", "tower", "spire", "dome", "vault", "crypt", "chapel",
)
ATTRIBUTES = (
    ("population", "number of inhabitants", "resident count", "headcount of residents"),
    ("annual revenue", "yearly sales", "turnover", "total income"),
    ("founding date", "year it was established", "establishment year", "date of founding"),
    ("headquarters location", "main office city", "head office", "corporate seat"),
    ("market share", "share of the market", "slice of the sector", "proportion of sales"),
    ("elevation", "altitude", "height above sea level", "summit height"),
    ("operating budget", "spending plan", "annual expenditure", "allocated funds"),
    ("chief executive", "current leader", "person in charge", "top official"),
    ("total area", "land surface", "size in square kilometres", "territorial extent"),
    ("average temperature", "mean climate reading", "typical heat level", "thermal average"),
    ("number of employees", "workforce size", "staff count", "people on the payroll"),
    ("opening hours", "visiting times", "schedule for visitors", "access hours"),
)
FIND = ("find", "locate", "look up", "track down", "identify", "dig up", "retrieve", "determine",
        "establish", "confirm", "pin down", "obtain")
SOURCE = ("source", "reference", "document", "article", "website", "report", "publication", "record",
          "listing", "dataset")
RELIABLE = ("credible", "reliable", "trustworthy", "authoritative", "reputable", "official", "solid",
            "dependable", "verified")
ANOTHER = ("another", "a different", "a new", "an alternative", "one more", "some other")
NEED = ("We still need", "The task still requires", "We are missing", "Our brief lacks", "Still outstanding is",
        "Nobody has given us")
# fmt: on
SHORT_TURNS = ("TERMINATE", "Approved.", "Looks good.", "Thanks!", "Agreed.", "LGTM", "Done.", "Go ahead.")


def word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))


def words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(CONTENT) if rng.random() < 0.5 else word(rng) for _ in range(n)]


def stamp(rng: random.Random) -> str:
    return (f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z")


def url(rng: random.Random, host: str | None = None) -> str:
    host = host or f"{word(rng)}.{rng.choice(('com', 'org', 'net', 'io'))}"
    return f"https://{host}/{word(rng)}/{rng.randint(1, 99999)}"


def surface(rng: random.Random) -> str:
    """A changing detail: a date, a number, a URL or an id."""
    return rng.choice((
        lambda: f" (as of {stamp(rng)})",
        lambda: f" - ref #{rng.randint(100, 99999)}",
        lambda: f" (see {url(rng)})",
        lambda: f" for fiscal {rng.randint(1990, 2025)}",
        lambda: f" [id {rng.getrandbits(40):010x}]",
        lambda: "",
    ))()


@dataclass
class Goal:
    entity: list[str]
    attribute: tuple[str, ...]


def instruction(rng: random.Random, goal: Goal, topic: list[str], restated: bool = False) -> str:
    """One way of asking for a sub-goal: a random template, synonyms, order and details."""
    e = list(goal.entity)
    if restated and rng.random() < 0.3:
        e = [rng.choice(e)]
    rng.shuffle(e)
    ent = " ".join(e)
    attr = goal.attribute[0] if rng.random() < 0.5 else rng.choice(goal.attribute[1:])
    find, src = rng.choice(FIND), rng.choice(SOURCE)
    rel, other = rng.choice(RELIABLE), rng.choice(ANOTHER)
    ctx = surface(rng) + (f" for the {' '.join(topic)} brief" if rng.random() < 0.5 else "")
    templates = [
        f"{find.capitalize()} the {attr} of {ent}{ctx}.",
        f"Please {find} a {rel} {src} that states the {attr} for {ent}{ctx}.",
        f"{rng.choice(NEED)} the {attr} of {ent}; {find} it on {other} {src}{ctx}.",
        f"Go to {other} {src} and {find} {ent}'s {attr}{ctx}.",
        f"Can you {find} information about the {attr} ({ent}) from a {rel} {src}{ctx}?",
        f"Using {other} {rel} {src}, {find} what the {attr} of {ent} is{ctx}.",
        f"Focus on {ent}: {find} its {attr}, citing a {rel} {src}{ctx}.",
    ]
    if restated:
        templates += [
            f"That did not work. {find.capitalize()} the {attr} of {ent} using {other} {src}{ctx}.",
            f"Try {other} {src}: the {attr} of {ent} is what we need{ctx}.",
        ]
    return rng.choice(templates)


def fact(rng: random.Random, goal: Goal, fresh: list[str]) -> str:
    """A worker's report with new information: the answer and new words from the page."""
    ent, attr = " ".join(goal.entity), goal.attribute[0]
    return (f"According to the {rng.choice(SOURCE)} at {url(rng)}, the {attr} of {ent} is "
            f"{rng.randint(2, 90000):,} ({rng.randint(1990, 2025)}). The page also describes the "
            f"{' '.join(fresh[:4])} and notes that {' '.join(fresh[4:])} shaped it.")


def failure(rng: random.Random, goal: Goal, page: list[str]) -> str:
    """A worker's report without the answer: a page about something else."""
    ent, attr = " ".join(rng.sample(goal.entity, len(goal.entity))), rng.choice(goal.attribute)
    about = " ".join(page)
    return rng.choice((
        f"I checked {url(rng)} but it does not state the {attr} of {ent}. The page is mostly about {about}.",
        f"No luck: the {rng.choice(SOURCE)} I opened ({url(rng)}) covers {about}, not the {attr} of {ent}.",
        f"The {attr} for {ent} was not on {url(rng)}; that page discusses {about} instead.",
        f"Could not confirm the {attr} of {ent}. The {rng.choice(SOURCE)} at {url(rng)} only talks about {about}.",
    ))


# ---------------------------------------------------------------------------- runs


@dataclass
class Step:
    agent: str
    messages: list[Message]
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    goal: tuple[str, ...] = ()  # the sub-goal an instruction asks for (analysis only)


@dataclass
class Run:
    name: str
    system: str  # hub | group | group-norun
    family: str | None  # None: loop-free
    run_id: str | None
    steps: list[Step] = field(default_factory=list)
    loop_start: int | None = None

    def mark(self) -> None:
        """The loop begins at the next step."""
        if self.loop_start is None:
            self.loop_start = len(self.steps)


class Hub:
    """An orchestrator and its workers, each with its own conversation."""

    WORKERS = ("web_surfer", "file_surfer", "data_analyst")

    def __init__(self, rng: random.Random, run: Run) -> None:
        self.rng, self.run = rng, run
        self.topic = [word(rng), rng.choice(CONTENT)]
        self.task = (f"Prepare a short brief on the {' '.join(self.topic)} for the board: gather figures "
                     f"from {rng.choice(RELIABLE)} {rng.choice(SOURCE)}s and cite each.")
        self.orch = [Message("system", "You are the orchestrator. Keep a progress ledger and delegate."),
                     Message("user", self.task)]
        self.convs = {w: [Message("system", f"You are {w}. Use your tools and report back.")] for w in self.WORKERS}
        self.tc = 0
        # Half the orchestrators get a ledger prompt template with every report (Magentic-One style).
        self.template = (
            f"Recall we are working on the following request:\n{self.task}\nTo make progress, update the "
            "ledger: is the request satisfied, are we in a loop, is progress being made, who speaks next, "
            "with which instruction?" if rng.random() < 0.5 else ""
        )
        self.found: list[str] = []
        self.pending: tuple[str, ...] = ()

    def step(self, agent: str, messages: list[Message], text: str = "", tools: list[ToolCall] | None = None) -> None:
        self.run.steps.append(Step(agent, list(messages), text, list(tools or [])))

    def ledger(self, worker: str, instr: str) -> str:
        rng = self.rng
        return (f"Progress ledger ({stamp(rng)}): request satisfied: no. Progress is being made: "
                f"{rng.choice(('yes', 'partly', 'unclear'))}. Next speaker: {worker}. Instruction: {instr}")

    def delegate(self, worker: str, instr: str, mark: bool = False, goal: Goal | None = None) -> None:
        if mark:
            self.run.mark()
        out = self.ledger(worker, instr)
        self.step("orchestrator", self.orch, out)
        self.orch.append(Message("assistant", out))
        self.convs[worker].append(Message("user", instr))
        self.pending = (*goal.entity, goal.attribute[0]) if goal else ()

    def fetch(self, worker: str, resource: dict[str, str], result: str, tool: str | None = None) -> None:
        """The worker calls a fetching tool and gets its result."""
        conv, self.tc = self.convs[worker], self.tc + 1
        name = tool or {"web_surfer": "visit_url", "file_surfer": "open_local_file", "data_analyst": "web_search"}[worker]
        tc = ToolCall(f"call_{self.run.name}_{self.tc}", name, json.dumps(resource))
        self.step(worker, conv, "", [tc])
        self.run.steps[-1].goal, self.pending = self.pending, ()
        conv += [Message("assistant", "", [tc]), Message("tool", result, [], tc.id)]

    def report(self, worker: str, text: str) -> None:
        conv = self.convs[worker]
        self.step(worker, conv, text)
        conv.append(Message("assistant", text))
        self.orch.append(Message("user", f"{worker}: {text}" + (f"\n{self.template}" if self.template else "")))

    def resource(self, worker: str) -> dict[str, str]:
        rng = self.rng
        if worker == "file_surfer":
            return {"path": f"/data/{word(rng)}/{word(rng)}_{rng.randint(1, 999)}.{rng.choice(('pdf', 'csv', 'md'))}"}
        if worker == "data_analyst":
            return {"query": f"{' '.join(words(rng, 3))} {rng.choice(ATTRIBUTES)[0]}"}
        return {"url": url(rng)}

    def page(self, fresh: list[str]) -> str:
        return f"Title: {' '.join(fresh[:3]).title()}\n" + " ".join(words(self.rng, 40) + fresh)

    def cycle(self, goal: Goal, *, succeed: bool = True, worker: str | None = None) -> None:
        """A loop-free cycle: delegate, fetch a new resource, report (facts or a failure)."""
        rng = self.rng
        worker = worker or rng.choice(self.WORKERS)
        self.delegate(worker, instruction(rng, goal, self.topic), goal=goal)
        fresh = words(rng, 9)
        self.fetch(worker, self.resource(worker), self.page(fresh))
        text = fact(rng, goal, fresh) if succeed else failure(rng, goal, words(rng, rng.randint(2, 6)))
        if succeed:
            self.found.append(text)
        self.report(worker, text)

    def finish(self) -> None:
        rng = self.rng
        parts = [f.split(". ")[0] for f in self.found[-4:]] or ["no figures were found"]
        summary = f"Final answer: {'; '.join(parts)}."
        self.step("orchestrator", self.orch, summary)
        self.orch.append(Message("assistant", summary))
        if rng.random() < 0.7:
            self.step("orchestrator", self.orch + [Message("user", "Anything else?")], "TERMINATE")

    def goal(self, previous: Goal | None = None) -> Goal:
        rng = self.rng
        if previous is not None and rng.random() < 0.3:  # the same entity, another attribute
            attrs = [a for a in ATTRIBUTES if a != previous.attribute]
            return Goal(previous.entity, rng.choice(attrs))
        return Goal([word(rng), word(rng)] if rng.random() < 0.6 else [word(rng)], rng.choice(ATTRIBUTES))


def hub_loop_free(rng: random.Random, run: Run) -> None:
    hub, goal = Hub(rng, run), None
    for _ in range(rng.randint(5, 14)):
        goal = hub.goal(goal)
        if rng.random() < 0.2:  # a retry after a failure, which then succeeds
            worker = rng.choice(Hub.WORKERS)
            hub.cycle(goal, succeed=False, worker=worker)
            hub.cycle(goal, worker=worker)
        else:
            hub.cycle(goal)
    hub.finish()


def _hub_after_progress(rng: random.Random, run: Run) -> Hub:
    """A hub run that first makes progress: 1-4 sub-goals delegated and answered."""
    hub, goal = Hub(rng, run), None
    for _ in range(rng.randint(1, 4)):
        goal = hub.goal(goal)
        hub.cycle(goal)
    return hub


def hub_redelegation(rng: random.Random, run: Run) -> None:
    hub = _hub_after_progress(rng, run)
    goal = hub.goal()
    worker = rng.choice(Hub.WORKERS)
    hub.delegate(worker, instruction(rng, goal, hub.topic), goal=goal)
    hub.fetch(worker, hub.resource(worker), hub.page(words(rng, 9)))
    hub.report(worker, failure(rng, goal, words(rng, rng.randint(2, 6))))
    for i in range(rng.randint(3, 6)):
        hub.delegate(worker, instruction(rng, goal, hub.topic, restated=True), mark=i == 0, goal=goal)
        page = words(rng, 9)
        hub.fetch(worker, hub.resource(worker), hub.page(page))  # a different page each time
        hub.report(worker, failure(rng, goal, words(rng, rng.randint(2, 6))))
    hub.finish()


def vary_url(rng: random.Random, u: str) -> str:
    return rng.choice((
        lambda: u + "/",
        lambda: u + f"?utm_source={word(rng)}",
        lambda: u.replace("https://", "https://www."),
        lambda: u + f"#{word(rng)}",
        lambda: u,
    ))()


def hub_revisit(rng: random.Random, run: Run) -> None:
    hub = _hub_after_progress(rng, run)
    worker = rng.choice(Hub.WORKERS)
    goal = hub.goal()
    res = hub.resource(worker)
    hub.delegate(worker, instruction(rng, goal, hub.topic))
    hub.fetch(worker, res, hub.page(words(rng, 9)))
    hub.report(worker, failure(rng, goal, words(rng, 4)))
    for _ in range(rng.randint(2, 5)):
        again = dict(res)
        if "url" in again:
            again["url"] = vary_url(rng, again["url"])
        elif "query" in again:
            q = again["query"].split()
            rng.shuffle(q)
            again["query"] = " ".join(q)
        told = rng.random() < 0.5
        note = f"You previously visited this page {rng.randint(3, 300)} seconds ago.\n" if told else ""
        new_goal = hub.goal(goal) if rng.random() < 0.5 else goal
        hub.delegate(worker, instruction(rng, new_goal, hub.topic, restated=new_goal is goal))
        run.mark()
        hub.fetch(worker, again, note + hub.page(words(rng, 9)))
        hub.report(worker, failure(rng, new_goal, words(rng, 4)))
    hub.finish()


def hub_stall(rng: random.Random, run: Run) -> None:
    """A polling worker whose status lines change only their figures, timestamps and URLs."""
    hub = _hub_after_progress(rng, run)
    job = f"{word(rng)} {rng.choice(CONTENT)}"
    state = rng.choice(("still running", "queued behind other work", "waiting on an approval", "not finished"))
    waits = ("Waiting before the next check.", "I will check again shortly.", "Nothing to do until it completes.",
             "Pausing until the job reports completion.")
    worker = "data_analyst"
    conv = hub.convs[worker]
    for i in range(rng.randint(4, 7)):
        if i == 1:
            run.mark()
        if i == 0 or rng.random() < 0.4:
            hub.delegate(worker, f"Check the status of the {job} job and tell me when it is done.")
        text = (f"Status of the {job} job at {stamp(rng)}: {state}, {rng.randint(1, 99)}% complete, "
                f"{rng.randint(1, 500)} tasks pending ({url(rng)}). {rng.choice(waits)}")
        hub.step(worker, conv, text)
        conv.append(Message("assistant", text))
        conv.append(Message("user", "Continue."))
    hub.orch.append(Message("user", f"{worker}: the {job} job is {state}"))
    hub.finish()


class Group:
    """A group chat: every agent sees the whole chat (its own turns as assistant messages)."""

    AGENTS = ("planner", "writer", "critic", "assistant")

    def __init__(self, rng: random.Random, run: Run) -> None:
        self.rng, self.run = rng, run
        self.topic = [word(rng), rng.choice(CONTENT), word(rng)]
        self.task = f"Write a short note on the {' '.join(self.topic)} and its {rng.choice(ATTRIBUTES)[0]}."
        self.turns: list[tuple[str, str]] = []

    def say(self, agent: str, text: str) -> None:
        msgs = [Message("system", f"You are {agent} in a group chat."), Message("user", self.task)]
        msgs += [Message("assistant" if a == agent else "user", t if a == agent else f"{a}: {t}") for a, t in self.turns]
        self.run.steps.append(Step(agent, msgs, text))
        self.turns.append((agent, text))

    def substantive(self) -> str:
        rng = self.rng
        fresh = words(rng, rng.randint(8, 16))
        return rng.choice((
            f"Here is a draft paragraph: the {' '.join(fresh[:3])} shows {' '.join(fresh[3:])}.",
            f"Suggestion: add a section on {' '.join(fresh[:4])}, and explain {' '.join(fresh[4:])}.",
            f"I checked the figures: {rng.randint(2, 999)} for {' '.join(fresh[:5])}; also {' '.join(fresh[5:])}.",
        ))


def group_loop_free(rng: random.Random, run: Run) -> None:
    chat = Group(rng, run)
    for _ in range(rng.randint(3, 12)):
        agent = rng.choice(Group.AGENTS)
        chat.say(agent, chat.substantive() if rng.random() < 0.65 else rng.choice(SHORT_TURNS))
    chat.say(rng.choice(Group.AGENTS), "TERMINATE")
    if rng.random() < 0.3:
        chat.say(rng.choice(Group.AGENTS), "TERMINATE")


def group_stall(rng: random.Random, run: Run) -> None:
    """Two agents circling: paraphrased turns whose details change."""
    chat = Group(rng, run)
    for _ in range(rng.randint(1, 4)):
        chat.say(rng.choice(Group.AGENTS), chat.substantive())
    a, b = rng.sample(Group.AGENTS, 2)
    subject = " ".join(chat.topic)
    point = " ".join(words(rng, 3))
    lines_a = (
        f"I revised the note on the {subject} to address the {point} concern{surface(rng)}.",
        f"Updated the {subject} draft; the {point} issue should now be handled{surface(rng)}.",
        f"New version of the {subject} note attached, covering the {point} problem{surface(rng)}.",
        f"The {point} point is addressed in this revision of the {subject} note{surface(rng)}.",
    )
    lines_b = (
        f"The {subject} note still does not handle the {point} concern. Please revise{surface(rng)}.",
        f"Still missing: the {point} issue in the {subject} draft needs another pass{surface(rng)}.",
        f"This {subject} version leaves the {point} problem open; revise again{surface(rng)}.",
        f"Not there yet on the {point} point for the {subject} note{surface(rng)}.",
    )
    for i in range(rng.randint(3, 5)):
        if i == 1:
            run.mark()
        chat.say(a, rng.choice(lines_a))
        chat.say(b, rng.choice(lines_b))
    chat.say(rng.choice(Group.AGENTS), "TERMINATE")


FAMILIES: dict[str, list[tuple[str, Callable[[random.Random, Run], None]]]] = {
    "redelegation": [("hub", hub_redelegation)],
    "revisit": [("hub", hub_revisit)],
    "stall": [("hub", hub_stall), ("group", group_stall)],
}
LOOP_FREE: list[tuple[str, Callable[[random.Random, Run], None]]] = [("hub", hub_loop_free), ("group", group_loop_free)]


def generate(rng: random.Random, n: int) -> list[Run]:
    """n runs: half loop-free (hub and group chats), half loops (equal per family)."""
    runs: list[Run] = []
    for i in range(n):
        if i % 2:
            family = list(FAMILIES)[(i // 2) % len(FAMILIES)]
            system, make = rng.choice(FAMILIES[family])
        else:
            family = None
            system, make = LOOP_FREE[(i // 2) % 2]
        no_run = system == "group" and rng.random() < 0.5
        run = Run(f"r{i}", system + ("-norun" if no_run else ""), family, None if no_run else f"run-{i}-{rng.getrandbits(32):08x}")
        make(rng, run)
        runs.append(run)
    return runs


# ---------------------------------------------------------------------------- feeding


def to_call(run: Run, i: int, step: Step, now: float) -> Call:
    return Call(
        id=f"{run.name}-{i}", started_at=now, provider="openai", operation="chat", upstream="openai",
        method="POST", path="/v1/chat/completions", agent=step.agent, run_id=run.run_id, api_key_hash="k",
        model_requested="gpt-4o", max_tokens=1024, input_tokens_counted=1000, system=step.messages[0].text,
        messages=step.messages,
    )


async def feed(runs: list[Run], rules_dir: pathlib.Path, rng: random.Random) -> dict[str, dict[int, list[str]]]:
    """Every run's calls through one chain, runs interleaved (each keeps its order): per run,
    call index → the loop rules it triggered."""
    ruleset = load_rules(rules_dir)
    loop_rules = {r.name: r.detect for r in ruleset.rules if r.kind == "loop"}
    chain = build_chain(ruleset, make_deps(MemoryCounterStore()))
    cursors = {run.name: 0 for run in runs}
    live = list(runs)
    events: dict[str, dict[int, list[str]]] = {run.name: {} for run in runs}
    while live:
        run = rng.choice(live[:40])
        i = cursors[run.name]
        step = run.steps[i]
        call = to_call(run, i, step, time.time())
        await chain.on_request(call)
        call.outcome, call.status, call.finish_reason = "ok", 200, "tool_calls" if step.tool_calls else "stop"
        call.completion = Completion(text=step.text, tool_calls=step.tool_calls)
        call.usage = Usage(input_tokens=1000, output_tokens=100)
        call.ended_at = call.started_at + 1
        await chain.on_response(call)
        fired = [e["rule"] for e in call.guard_events if e["rule"] in loop_rules and e["action"] != "allow"]
        if fired:
            events[run.name][i] = fired
        cursors[run.name] = i + 1
        if i + 1 == len(run.steps):
            live.remove(run)
    return {"events": events, "detects": loop_rules}  # type: ignore[dict-item]


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def score(runs: list[Run], fed: dict[str, Any]) -> dict[str, Any]:
    events, detects = fed["events"], fed["detects"]
    out: dict[str, Any] = {"families": {}, "loop_free": {}}
    false_by_family = {f: 0 for f in FAMILIES}
    for system in sorted({r.system for r in runs if r.family is None}):
        free = [r for r in runs if r.family is None and r.system == system]
        flagged = [r for r in free if events[r.name]]
        for r in flagged:
            first = events[r.name][min(events[r.name])][0]
            false_by_family[FAMILY_OF_DETECT[detects[first]]] += 1
        out["loop_free"][system] = {"runs": len(free), "calls": sum(len(r.steps) for r in free),
                                    "flagged": len(flagged), "rate": len(flagged) / max(1, len(free))}
    free_all = [r for r in runs if r.family is None]
    out["loop_free"]["all"] = {"runs": len(free_all), "flagged": sum(1 for r in free_all if events[r.name]),
                               "rate": sum(1 for r in free_all if events[r.name]) / max(1, len(free_all))}
    for family in FAMILIES:
        loops = [r for r in runs if r.family == family]
        lags, early, rules_fired = [], 0, {}  # type: ignore[var-annotated]
        for r in loops:
            ev, start = events[r.name], r.loop_start or 0
            if any(i < start for i in ev):
                early += 1
            after = sorted(i for i in ev if i >= start)
            if after:
                lags.append(after[0] - start)
                for rule in ev[after[0]]:
                    rules_fired[rule] = rules_fired.get(rule, 0) + 1
        tp = len(lags)
        fp = early + false_by_family[family]
        out["families"][family] = {
            "runs": len(loops), "detected": tp, "recall": tp / max(1, len(loops)),
            "precision": tp / max(1, tp + fp), "early_alarms": early, "loop_free_alarms": false_by_family[family],
            "lag_median": statistics.median(lags) if lags else None,
            "lag_p90": sorted(lags)[int(0.9 * (len(lags) - 1))] if lags else None,
            "within_2": sum(1 for x in lags if x <= 2) / max(1, len(lags)),
            "rules": rules_fired,
        }
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| family | loop runs | precision | recall | lag median | lag p90 | flagged within 2 calls | first rule(s) |",
             "|---|---|---|---|---|---|---|---|"]
    for family, f in result["families"].items():
        rules = ", ".join(f"{k} {v}" for k, v in sorted(f["rules"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {family} | {f['runs']} | {f['precision']:.3f} | {f['recall']:.3f} | {f['lag_median']} | "
                     f"{f['lag_p90']} | {pct(f['within_2'])} | {rules} |")
    lines += ["", "| loop-free system | runs | calls | flagged |", "|---|---|---|---|"]
    for system, s in result["loop_free"].items():
        lines.append(f"| {system} | {s['runs']} | {s.get('calls', '')} | {s['flagged']} ({pct(s['rate'])}) |")
    return "\n".join(lines)


def summary(results: dict[int, dict[str, Any]]) -> str:
    """Per family over the seeds: each figure's worst seed (and the mean)."""
    seeds = sorted(results)
    lines = [f"Seeds {', '.join(map(str, seeds))}: worst seed (mean).", "",
             "| family | loop runs | precision | recall | flagged within 2 calls | lag median |",
             "|---|---|---|---|---|---|"]
    for family in FAMILIES:
        fs = [results[s]["families"][family] for s in seeds]

        def worst(k: str, fs: list[dict[str, Any]] = fs) -> str:
            values = [f[k] for f in fs]
            return f"{min(values):.3f} ({statistics.mean(values):.3f})"

        lags = [f["lag_median"] for f in fs if f["lag_median"] is not None]
        lines.append(f"| {family} | {sum(f['runs'] for f in fs)} | {worst('precision')} | {worst('recall')} | "
                     f"{worst('within_2')} | {max(lags) if lags else None} |")
    lines += ["", "| loop-free system | runs | flagged, worst seed | flagged, all seeds |", "|---|---|---|---|"]
    for system in results[seeds[0]]["loop_free"]:
        ss = [results[s]["loop_free"][system] for s in seeds]
        runs, flagged = sum(x["runs"] for x in ss), sum(x["flagged"] for x in ss)
        lines.append(f"| {system} | {runs} | {pct(max(x['rate'] for x in ss))} | {flagged} ({pct(flagged / max(1, runs))}) |")
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=900)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")],
                    help="several seeds (e.g. 11,12,13,14,15): each seed's table, then the worst per family")
    ap.add_argument("--rules", type=pathlib.Path, default=RULES, help="rules directory (default: rules/)")
    ap.add_argument("--json", type=pathlib.Path, help="also write the figures here")
    args = ap.parse_args()
    results = {}
    for seed in args.seeds or [args.seed]:
        rng = random.Random(seed)
        runs = generate(rng, args.runs)
        t0 = time.perf_counter()
        fed = await feed(runs, args.rules, rng)
        elapsed = time.perf_counter() - t0
        results[seed] = score(runs, fed)
        calls = sum(len(r.steps) for r in runs)
        print(f"{len(runs)} runs, {calls} calls, seed {seed}, rules {args.rules}: "
              f"{elapsed:.1f} s ({1e3 * elapsed / calls:.3f} ms per call through the chain)\n")
        print(table(results[seed]) + "\n", flush=True)
    if len(results) > 1:
        print(summary(results))
    if args.json:
        args.json.write_text(json.dumps(results if len(results) > 1 else results[args.seeds[0] if args.seeds else args.seed], indent=2))


if __name__ == "__main__":
    asyncio.run(main())
