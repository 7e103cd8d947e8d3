"""Agents that share one prompt (smolagents, AG2's default, no prompt at all) told apart by what
the traffic says about the speaker; evidence that holds among many look-alike runs."""

from __future__ import annotations

from proxy.call import Call, Message
from proxy.graph import Linker, MemoryLineageIndex
from proxy.graph.identity import Identifier, stated_name
from tests.graph.factory import DRAFT, PLAN, make_call

SHARED = "You are an expert assistant who can solve any task using tool calls."
EDIT = (
    "The draft overstates the Danish figures: district heating limits heat pump uptake in cities, "
    "so the growth estimate should be split between rural and urban households before publishing."
)
STOCK = "Let me know if you would like me to expand on any of these points about the next steps."


def linker() -> Linker:
    return Linker(MemoryLineageIndex(), run_idle_s=600.0)


def chat(call_id: str, messages: list[Message], output: str, start: float, **kw: object) -> Call:
    call = make_call(call_id, system=SHARED, output=output, started_at=start, ended_at=start + 1.0, **kw)
    call.messages = [Message("system", SHARED), *messages]
    return call


def test_a_stated_name_in_the_first_user_message_names_the_agent() -> None:
    call = make_call("c1", system=SHARED, user="You're a helpful agent named 'search_agent'. Task: find it.")
    assert stated_name(call) == "search-agent"


def test_a_task_that_mentions_a_name_is_not_a_stated_name() -> None:
    call = make_call("c1", system=SHARED, user="Find the company named Acme and list its products.")
    assert stated_name(call) is None


def test_agents_sharing_a_prompt_split_by_stated_name() -> None:
    ids = Identifier()
    a = ids.identify(make_call("a", system=SHARED, user="You're a helpful agent named 'search_agent'."))
    b = ids.identify(make_call("b", system=SHARED, user="You're a helpful agent named 'code_agent'."))
    assert a.fingerprint == b.fingerprint and a.name != b.name
    assert (a.name, b.name) == ("search-agent", "code-agent")


def test_a_pipeline_of_agents_sharing_a_prompt_is_three_agents_with_handoffs() -> None:
    lk = linker()
    p = lk.observe(chat("p", [Message("user", "Plan the heat pump study.")], PLAN, 0.0))
    w = lk.observe(chat("w", [Message("user", "Write this up:\n" + PLAN)], DRAFT, 2.0))
    e = lk.observe(chat("e", [Message("user", "Edit this draft:\n" + DRAFT)], EDIT, 4.0))
    assert len({p.agent, w.agent, e.agent}) == 3
    assert [(x.source, x.kind) for x in w.edges] == [("p", "handoff")]
    assert [(x.source, x.kind) for x in e.edges] == [("w", "handoff")]
    assert p.run_id == w.run_id == e.run_id == "p"


def test_a_conversation_continued_keeps_its_agent_among_prompt_sharers() -> None:
    lk = linker()
    lk.observe(chat("p", [Message("user", "Plan the heat pump study.")], PLAN, 0.0))
    w1 = lk.observe(chat("w1", [Message("user", "Write this up:\n" + PLAN)], DRAFT, 2.0))
    w2 = lk.observe(
        chat(
            "w2",
            [
                Message("user", "Write this up:\n" + PLAN),
                Message("assistant", DRAFT),
                Message("user", "Shorter."),
            ],
            EDIT,
            4.0,
        )
    )
    assert w2.agent == w1.agent
    assert [(x.source, x.kind) for x in w2.edges if x.kind != "human"] == [("w1", "continuation")]


def test_a_history_resent_as_text_is_still_the_callers_own() -> None:
    """smolagents sends its earlier tool calls back as assistant text, results as user text."""
    lk = linker()
    m1 = lk.observe(chat("m1", [Message("user", "Study heat pumps.")], PLAN, 0.0))
    w = lk.observe(
        chat("w", [Message("user", "You're a helpful agent named 'search_agent'. " + PLAN)], DRAFT, 2.0)
    )
    m2 = lk.observe(
        chat(
            "m2",
            [
                Message("user", "Study heat pumps."),
                Message("assistant", "Calling tools:\n" + PLAN),
                Message("user", "Observation:\n" + DRAFT),
            ],
            EDIT,
            4.0,
        )
    )
    assert m2.agent == m1.agent != w.agent
    assert {(x.source, x.kind) for x in m2.edges} == {("m1", "continuation"), ("w", "return")}


def test_a_group_chat_names_a_speakers_first_turn_afterwards() -> None:
    lk = linker()
    task = Message("user", "Discuss heat pump growth.", name="admin")
    lk.observe(chat("a1", [task], PLAN, 0.0))
    b1 = lk.observe(chat("b1", [task, Message("user", PLAN, name="analyst")], DRAFT, 2.0))
    c1 = lk.observe(
        chat(
            "c1",
            [task, Message("user", PLAN, name="analyst"), Message("user", DRAFT, name="skeptic")],
            EDIT,
            4.0,
        )
    )
    assert c1.renamed == {"b1": "skeptic"}
    assert b1.agent != "skeptic"  # it could not know then; the stored row is updated from c1's result


def test_composed_context_from_two_producers_gives_two_sources() -> None:
    """CrewAI hands the writer both earlier outputs in one message (fan-in)."""
    lk = linker()
    lk.observe(make_call("r", system="You are the researcher.", user="Research heat pumps.", output=PLAN))
    lk.observe(
        make_call(
            "a",
            system="You are the analyst.",
            user="Analyse:\n" + PLAN,
            output=DRAFT,
            started_at=2.0,
            ended_at=3.0,
        )
    )
    w = lk.observe(
        make_call(
            "w", system="You are the writer.", user=f"Context:\n{PLAN}\n----\n{DRAFT}", output=EDIT,
            started_at=4.0, ended_at=5.0,
        )
    )  # fmt: skip
    assert {(x.source, x.kind) for x in w.edges} == {("r", "handoff"), ("a", "handoff")}


def test_a_stock_phrase_other_runs_share_does_not_join_their_run() -> None:
    lk = linker()
    for i in range(2):
        lk.observe(
            make_call(f"x{i}", system="You are the writer.", user=f"Topic {i}", output=f"{DRAFT}\n\n{STOCK}",
                      started_at=float(i), ended_at=float(i) + 0.5)
        )  # fmt: skip
    res = lk.observe(
        make_call(
            "new", system="You are the planner.", user=f"{STOCK}\n\n{EDIT}", started_at=5.0, ended_at=6.0
        )
    )
    assert res.run_id == "new" and res.edges == []


ROSTER = (
    "You are in a role play game. The following roles are available:\nplanner: plans\nwriter: writes\n"
    "Read the following conversation. Then select the next role from ['planner', 'writer'] to play. "
    "Only return the role."
)
TASK = "Write a short product announcement for a budgeting app that adds shared family wallets."


def select(call_id: str, task: str, start: float) -> Call:
    return make_call(call_id, system=ROSTER, user=task, output="planner", started_at=start, ended_at=start + 0.5)


def test_a_speakers_first_turn_takes_the_selection_whose_transcript_it_was_handed() -> None:
    """AG2 with its default prompt: nothing in the planner's first request names it, but the selector
    that answered 'planner' a moment ago read exactly the conversation the planner is handed."""
    lk = linker()
    lk.observe(select("sel-b", "Draft a blog post introduction about online pre-ordering for bakeries.", 0.0))
    sel = lk.observe(select("sel-a", TASK, 0.5))
    first = lk.observe(chat("p1", [Message("user", TASK)], PLAN, 1.6))
    assert sel.agent == "speaker-selector"
    assert [(e.source, e.kind) for e in first.edges] == [("sel-a", "handoff")]
    assert first.agent == "planner" and first.run_id == sel.run_id


def test_a_name_alone_does_not_take_another_chats_selection() -> None:
    """A 'planner' of another system, on another task, is not the speaker a selector just picked."""
    lk = linker()
    lk.observe(select("sel", TASK, 0.0))
    p = lk.observe(make_call("p", system="You are the planner.", user="Plan the bakery launch.", output=DRAFT,
                             started_at=1.0, ended_at=2.0))  # fmt: skip
    assert p.agent == "planner" and p.edges == [] and p.run_id == "p"


def test_a_task_restated_by_one_system_does_not_pull_another_system_given_it() -> None:
    """Two systems handed the same task at once: the first one's manager restates it to its worker;
    the second system's first call holds the same words, from the person who gave both the task."""
    lk = linker()
    handed = f"{PLAN}\n\n{EDIT}"  # the task, and the manager's own words on it
    manager = lk.observe(make_call("m", system="You are the manager.", user=f"Current Task: {PLAN}",
                                   output=f"Delegating now.\n\n{handed}", ended_at=0.5))  # fmt: skip
    worker = lk.observe(make_call("w", system="You are the worker.", user=f"Task from your manager:\n{handed}",
                                  output=DRAFT, started_at=0.6, ended_at=1.0))  # fmt: skip
    stranger = lk.observe(make_call("s", system="You are a planner of another crew.", user=f"New task:\n{PLAN}",
                                    output=EDIT, started_at=0.7, ended_at=1.5))  # fmt: skip
    assert stranger.run_id == "s" and stranger.edges == []
    assert worker.run_id == manager.run_id  # placed by the delegation, not by the task's words alone


def test_a_manager_relaying_its_analysts_words_still_hands_them_on() -> None:
    """Text a manager quotes from its analyst's report is not an echo of a person's task."""
    lk = linker()
    lk.observe(make_call("m1", system="You are the manager.", user="Study heat pumps.", output=PLAN, ended_at=0.5))
    lk.observe(make_call("a", system="You are the analyst.", user=f"Do this:\n{PLAN}", output=DRAFT,
                         started_at=0.6, ended_at=1.0))  # fmt: skip
    m2 = make_call("m2", system="You are the manager.", user="Study heat pumps.", output=f"Check this figure: {DRAFT}",
                   started_at=1.1, ended_at=1.5)  # fmt: skip
    m2.messages = [Message("system", "You are the manager."), Message("user", "Study heat pumps."),
                   Message("assistant", PLAN), Message("user", f"Report: {DRAFT}")]  # fmt: skip
    lk.observe(m2)
    check = lk.observe(make_call("c", system="You are the checker.", user=f"Double-check: {DRAFT}", output=EDIT,
                                 started_at=1.6, ended_at=2.0))  # fmt: skip
    assert ("m2", "handoff") in [(e.source, e.kind) for e in check.edges]
    assert check.run_id == "m1"


# A broadcast group chat on one shared prompt: each member is handed the transcript, the others'
# turns as `user` messages with their `name`.  Texts per chat and turn are distinct.
_SAYS = {
    "analyst": "the riverside depot handles eleven thousand pallets weekly and loading bays sit idle overnight",
    "skeptic": "those pallet counts ignore refrigerated freight whose customs checks double every dwell time",
    "moderator": "we should cost both options and bring a phased proposal to the regional board in March",
    "expert": "automated cranes at Rotterdam cut turnaround by a third within two seasons of operation",
    "writer": "the announcement opens with the shared wallet feature and a quote from the founder",
    "editor": "trim the opening paragraph and move the pricing table below the feature summary",
    "critic": "the weakest claim is the growth figure which cites no source at all for the estimate",
}


def _turn(chat_no: int, who: str) -> str:
    """What `who` says in chat `chat_no`: its own words, every third one the chat's (no five
    words in a row that another chat's turn also has)."""
    tag = ("", "amberly", "birchwood")[chat_no]
    words = _SAYS[who].split()
    return " ".join(w if i % 3 else f"{tag} {w}" for i, w in enumerate(words)).capitalize() + "."


def _broadcast(lk: Linker, chat_no: int, order: list[str], start: float) -> list[object]:
    task = Message("user", f"Chat {chat_no}: agree a depot expansion plan for quarter {chat_no}.")
    said: list[Message] = []
    results = []
    for i, who in enumerate(order):
        msgs = [task, *(m for m in said if m.name != who)]
        own = [m for m in said if m.name == who]
        msgs += [Message("assistant", m.text) for m in own]  # own earlier turns come back as assistant
        results.append(lk.observe(chat(f"c{chat_no}.{i}", msgs, _turn(chat_no, who), start + 2 * i)))
        said.append(Message("user", _turn(chat_no, who), name=who))
    return results


def test_a_broadcast_chats_last_speaker_on_its_first_turn_is_named_by_elimination() -> None:
    """Nothing quotes the moderator's only turn of the second chat, and its request names only the
    analyst and the skeptic; the prompt's speakers seen together are these three: it is the moderator."""
    lk = linker()
    _broadcast(lk, 1, ["analyst", "skeptic", "moderator", "analyst", "skeptic"], 0.0)
    last = _broadcast(lk, 2, ["analyst", "skeptic", "moderator"], 100.0)[-1]
    assert last.agent == "moderator"  # type: ignore[attr-defined]


def test_elimination_decides_nothing_while_two_speakers_remain() -> None:
    """Four speakers seen together; a last speaker handed two names could be either of the other two."""
    lk = linker()
    _broadcast(lk, 1, ["analyst", "skeptic", "moderator", "expert", "analyst", "skeptic"], 0.0)
    last = _broadcast(lk, 2, ["analyst", "skeptic", "moderator"], 100.0)[-1]
    assert last.agent not in {"moderator", "expert"}  # type: ignore[attr-defined]


def test_an_agent_with_a_prompt_of_its_own_is_not_named_by_elimination() -> None:
    """A critic on its own prompt reads the writer's and editor's turns: the names its requests show
    are never its own, so they say nothing about who it is."""
    lk = linker()
    critic = "You are the critic. Point out the weakest claim in the discussion."
    for n, start in ((1, 0.0), (2, 100.0)):
        task = Message("user", f"Chat {n}: review the depot plan {n}.")
        msgs = [task, Message("user", _turn(n, "writer"), name="writer"), Message("user", _turn(n, "editor"), name="editor")]
        call = make_call(f"k{n}", system=critic, output=_turn(n, "critic"), started_at=start, ended_at=start + 1)
        call.messages = [Message("system", critic), *msgs]
        res = lk.observe(call)
    assert res.agent == "critic"


ITEMS = (
    "Orchestrate the depot study as four tasks.\n\n"
    "1. Count the pallets that the riverside depot handled each week since the new conveyor opened.\n"
    "2. Compare the refrigerated freight dwell times with the figures the customs office published.\n"
    "3. Check whether northern terminal cranes can lift heavier reefer containers this year without "
    "reinforcing the quay wall foundations.\n"
    "4. Estimate what sixteen new loading bays would cost including the access road works."
)
ITEM_3_RETOLD = (
    "3. Check whether northern terminal cranes could lift heavier reefer containers this year without "
    "strengthening the quay wall foundations."
)


def test_a_short_task_retold_in_other_words_places_the_worker_in_its_run() -> None:
    """An orchestrator's 19-word list item handed on with two words changed keeps two of its
    five-word shingles (too few for an edge on their own) but nearly all its words: with nothing
    else to go by, the worker joins the run."""
    lk = linker()
    lk.observe(make_call("o", user="Plan the depot study.", output=ITEMS, started_at=0.0, ended_at=1.0))
    w = lk.observe(
        make_call("w", user=f"Context from the previous step follows.\n---\n{ITEM_3_RETOLD}\n---\nContinue.",
                  output=DRAFT, started_at=2.0, ended_at=3.0)
    )  # fmt: skip
    assert w.run_id == "o" and [(e.source, e.kind) for e in w.edges] == [("o", "handoff")]


def test_two_shingles_of_a_task_without_its_words_do_not_place() -> None:
    lk = linker()
    lk.observe(make_call("o", user="Plan the depot study.", output=ITEMS, started_at=0.0, ended_at=1.0))
    w = lk.observe(
        make_call("w", user="Check whether the northern terminal cranes are insured; list every policy.",
                  output=DRAFT, started_at=2.0, ended_at=3.0)
    )  # fmt: skip
    assert w.run_id == "w" and w.edges == []


def test_a_stock_phrase_ending_a_part_quoted_whole_does_not_place_a_new_run() -> None:
    """The end of the item is a stock phrase another system's task also carries: its words are all
    there, but as the same phrase, not a retelling of the item."""
    lk = linker()
    for i, topic in enumerate(("harbour fees", "crane leasing")):  # other runs end items with the stock phrase
        lk.observe(
            make_call(f"x{i}", system="You are the writer.", user=f"Topic {i}", started_at=float(i), ended_at=i + 0.5,
                      output=f"{DRAFT}\n\nFeel free to ask if you have any further questions about the {topic}.")
        )  # fmt: skip
    out = (
        "Findings follow.\n\n"
        "1. The riverside depot handled eleven thousand pallets weekly while its loading bays sat idle overnight "
        "for most of the winter, and the night shift rota left two forklift teams waiting for trucks that the "
        "dispatch office had already rerouted to the southern yard. Feel free to ask if you have any further questions about the pricing section.\n"
        "2. Refrigerated freight waits twice as long at customs as the published averages suggest.\n"
        "3. Crane maintenance windows overlap the peak arrival days of the two largest shipping lines.\n"
        "4. The access road floods after heavy rain and closes the northern gate for several hours."
    )
    lk.observe(make_call("o", user="Summarise the depot audit.", output=out, started_at=2.0, ended_at=3.0))
    new = lk.observe(
        make_call("n", system="You are the orchestrator of the marketing desk.",
                  user="Draft three slogans for a budgeting app. Feel free to ask if you have any further "
                       "questions about the pricing section.", started_at=5.0, ended_at=6.0)
    )  # fmt: skip
    assert new.run_id == "n" and new.edges == []
