from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from proxy.call import Call, Message, Usage
from proxy.guards import FingerprintHandoffs, build_chain
from proxy.guards.counters import MemoryCounterStore
from proxy.guards.facts import CallFacts, FactsCache, Fingerprints, encode_sketch, shingles, sketch_of
from proxy.lru import Generations
from proxy.rules import RuleSet
from tests.guards.factory import (
    assistant,
    deps,
    finish,
    make_call,
    rule_from_yaml,
    system,
    tool_call,
    tool_result,
    user,
)

RULES = [
    "{name: retries, kind: loop, detect: retry, max_repeats: 1, action: flag}",
    "{name: tools, kind: loop, detect: tool_repeat, max_repeats: 1, action: flag}",
    "{name: stuck, kind: loop, detect: no_progress, max_repeats: 1, action: flag}",
    "{name: fits, kind: context, action: flag}",
]


def turns() -> list[list[Message]]:
    """A tool-using conversation resent every turn, with a retry, a trimmed history and an
    edited message along the way."""
    history: list[Message] = [system("You are a research agent."), user("find the report")]
    out = []
    for i in range(8):
        history = [*history, assistant("", tool_call("search", '{"q": "report"}', f"tc-{i}"))]
        history = [*history, tool_result(f"tc-{i}", "no results")]
        out.append(list(history))
    out.append(list(out[-1]))  # the same request again
    out.append([out[-1][0], *out[-1][6:]])  # the history was trimmed
    edited = list(out[-1])
    edited[1] = Message(edited[1].role, edited[1].text, [tool_call("search", '{"q": "other"}', "tc-x")])
    out.append(edited)  # a resent message changed its tool arguments
    return out


def fresh(messages: list[Message]) -> list[Message]:
    """The same conversation as a new parse produces it: new objects, equal strings."""
    return [
        Message(
            m.role,
            "".join(list(m.text)),
            [tool_call(t.name, t.arguments, t.id) for t in m.tool_calls],
            m.tool_call_id,
        )
        for m in messages
    ]


def events(calls: list[Call]) -> list[list[tuple[Any, ...]]]:
    return [[(e["rule"], e["action"], e["hook"], e["reason"]) for e in c.guard_events] for c in calls]


async def run(known: Fingerprints) -> list[Call]:
    counters, facts = MemoryCounterStore(), FactsCache(known=known)
    shared = dataclasses.replace(deps(counters), facts=facts, handoffs=FingerprintHandoffs(counters, facts))
    chain = build_chain(RuleSet(tuple(rule_from_yaml(r) for r in RULES)), shared)
    calls = []
    for messages in turns():
        call = make_call(messages=fresh(messages))
        await chain.on_request(call)
        await chain.on_response(finish(call, text="I could not find the report anywhere, sorry."))
        calls.append(call)
    return calls


async def test_remembered_fingerprints_give_the_same_verdicts_as_fresh_ones() -> None:
    cached, uncached = await run(Fingerprints()), await run(Fingerprints(max_chars=0))
    assert events(cached) == events(uncached)
    assert any(events(cached))  # the conversation does trip the rules


def test_digests_of_a_continued_conversation_equal_fresh_ones() -> None:
    known = Fingerprints()
    for messages in turns():
        call = make_call(messages=fresh(messages))
        assert known.message_digests(call) == CallFacts(make_call(messages=messages)).message_digests
    assert known.continued >= 7  # every plain resend continued the previous turn


def test_request_digest_with_remembered_prompts_equals_a_fresh_one() -> None:
    known = Fingerprints()
    for text in ("Now: 2025-01-01T10:00:00Z", "Now: 2025-01-01T10:00:07Z", "Now:   later"):
        messages = [system(text), user("fix the bug")]
        cached = CallFacts(make_call(system=text, messages=messages), known).request_digest
        assert cached == CallFacts(make_call(system=text, messages=messages)).request_digest


def test_remembered_conversations_are_bounded_by_characters() -> None:
    known = Fingerprints(max_chars=1000)
    for i in range(50):
        known.message_digests(make_call(agent=f"a{i}", messages=[user("x" * 100 + str(i)), user("y")]))
    assert len(known._threads) <= 10


def test_memo_is_bounded() -> None:
    memo: Generations[int, int] = Generations(100)
    for i in range(1000):
        memo.put(i, i)
    assert len(memo) <= 100 and memo.get(999) == 999


def test_decoded_sketches_equal_the_encoded_ones() -> None:
    known = Fingerprints()
    sketch = sketch_of(shingles("the quick brown fox jumps over the lazy dog"))
    encoded = encode_sketch(sketch)
    assert known.decode(encoded) == sketch and known.decode(encoded) is known.decode(encoded)


async def test_once_shares_one_computation_between_concurrent_callers() -> None:
    facts, runs = CallFacts(make_call()), []

    async def compute() -> int:
        runs.append(1)
        await asyncio.sleep(0)
        return 42

    assert await asyncio.gather(*(facts.once("x", compute) for _ in range(3))) == [42, 42, 42]
    assert runs == [1] and facts.get("x") == 42


async def test_output_facts_are_computed_once_per_call() -> None:
    call = finish(make_call(), text="an answer", usage=Usage(10, 3))
    facts = FactsCache()
    assert facts(call) is facts(call) and facts(call).output_sketch == sketch_of(shingles("an answer"))


async def test_a_finished_call_s_facts_are_released() -> None:
    """The chain drops a call's fingerprints once its on_response ran: the cache holds only
    calls in flight, not the last thousands of request bodies."""
    counters, facts = MemoryCounterStore(), FactsCache()
    shared = dataclasses.replace(deps(counters), facts=facts, handoffs=FingerprintHandoffs(counters, facts))
    chain = build_chain(RuleSet(tuple(rule_from_yaml(r) for r in RULES)), shared)
    calls = [make_call(messages=fresh(m)) for m in turns()[:3]]
    for call in calls:
        await chain.on_request(call)
    assert len(facts) == 3  # in flight: computed once, shared by every rule
    for call in calls:
        await chain.on_response(finish(call, text="done"))
    assert len(facts) == 0


def test_a_resend_s_request_digest_is_reused_only_for_the_same_model_tools_and_system() -> None:
    known = Fingerprints()
    history = [system("You are a research agent."), user("find the report")]
    variants = [
        {},
        {},  # an exact resend
        {"model_requested": "gpt-4o-mini"},
        {"tools": ["search"]},
        {"system": "You are terse."},
        {},
    ]
    for overrides in variants:
        remembered = CallFacts(make_call(messages=fresh(history), **overrides), known).request_digest
        afresh = CallFacts(make_call(messages=fresh(history), **overrides)).request_digest
        assert remembered == afresh
    digests = {CallFacts(make_call(messages=fresh(history), **o)).request_digest for o in variants}
    assert len(digests) == 4
