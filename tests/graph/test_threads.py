"""Conversation atoms and the prefix hash chain, across the three wire formats."""

from __future__ import annotations

import pytest

from proxy.graph import threads
from proxy.graph.script import AgentSpec, Result, Script, Step, ToolUse, User, render
from tests.graph.factory import call_from_exchange


def conversation(api: str) -> Script:
    agent = AgentSpec("You are the analyst.", ("search",), api=api)
    steps = (
        Step("s1", "analyst", "t", (User(("How big is the market?",)),), "Let me search.",
             tools=(ToolUse("search", {"q": "market size"}),)),
        Step("s2", "analyst", "t", (Result("s1", 0, ("It is 4 billion.",)),), "About four billion."),
        Step("s3", "analyst", "t", (User(("And growth?",)),), "Twelve percent."),
    )  # fmt: skip
    return Script({"analyst": agent}, steps)


def atoms_of(api: str, step: str) -> list[tuple[str, str]]:
    ex = next(e for e in render(conversation(api)) if e.step == step)
    return [(a.role, a.text) for a in threads.atoms(call_from_exchange(ex).messages)]


def test_same_conversation_gives_same_atoms_in_every_api() -> None:
    chat, responses, messages = (atoms_of(api, "s3") for api in ("chat", "responses", "messages"))
    assert chat == responses == messages
    assert [r for r, _ in chat] == ["u", "a", "c", "t", "a", "u"]


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
def test_next_request_extends_previous_head(api: str) -> None:
    calls = {ex.step: call_from_exchange(ex) for ex in render(conversation(api))}
    seed = threads.seed("agent")
    first = calls["s1"]
    head = threads.chain(seed, threads.atoms(first.messages) + threads.output_atoms(first.completion))[-1]
    assert head in threads.chain(seed, threads.atoms(calls["s2"].messages))


def test_leading_system_messages_are_not_atoms() -> None:
    ex = next(e for e in render(conversation("chat")) if e.step == "s1")
    call = call_from_exchange(ex)
    assert call.messages[0].role == "system"
    assert threads.atoms(call.messages)[0].role == "u"


def long_atoms(text: str) -> list[threads.Atom]:
    return [threads.Atom("u", text, None, 0), threads.Atom("a", "short", None, 1), threads.Atom("t", text, "t1", 2)]


def test_chain_cache_gives_the_digests_of_chain_again_and_again() -> None:
    cache, seed = threads.ChainCache(min_chars=1000), threads.seed("agent")
    items = long_atoms("word " * 2000)
    for _ in range(3):
        assert cache.chain(seed, items) == threads.chain(seed, items)
    assert cache.chain(threads.seed("other"), items) == threads.chain(threads.seed("other"), items)


def test_chain_cache_is_not_fooled_by_an_edit_past_the_first_characters() -> None:
    cache, seed = threads.ChainCache(min_chars=1000), threads.seed("agent")
    original, edited = "x" * 5000, "x" * 2500 + "y" + "x" * 2499
    cache.chain(seed, long_atoms(original))
    assert cache.chain(seed, long_atoms(edited)) == threads.chain(seed, long_atoms(edited))
    assert cache.chain(seed, long_atoms(original)) == threads.chain(seed, long_atoms(original))


def test_chain_cache_holds_at_most_max_chars() -> None:
    cache, seed = threads.ChainCache(min_chars=10, max_chars=100), threads.seed("agent")
    items = [threads.Atom("u", f"{i} " + "z" * 40, None, i) for i in range(6)]
    assert cache.chain(seed, items) == threads.chain(seed, items)
    assert 0 < cache.chars <= 100
    assert cache.chain(seed, items) == threads.chain(seed, items)
