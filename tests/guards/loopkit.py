"""Helpers for the loops-in-meaning tests: one rule wired as the RulesManager wires it, and a
call fed through both hooks."""

from __future__ import annotations

from typing import Any

from proxy.call import Call, Message, ToolCall
from proxy.guards import GuardChain, build_chain
from proxy.guards.counters import CounterStore
from proxy.rules import RuleSet
from tests.guards.factory import deps, finish, make_call, rule_from_yaml


def chain_of(store: CounterStore, text: str) -> GuardChain:
    return build_chain(RuleSet((rule_from_yaml(text),)), deps(store))


async def turn(
    chain: GuardChain,
    messages: list[Message],
    text: str = "",
    tool_calls: list[ToolCall] | None = None,
    **fields: Any,
) -> Call:
    """One call: on_request, the output, on_response; its guard events are on the call."""
    call = make_call(messages=messages, **fields)
    await chain.on_request(call)
    finish(call, text=text, tool_calls=tool_calls)
    await chain.on_response(call)
    return call


def flagged(call: Call) -> list[dict[str, Any]]:
    return [e for e in call.guard_events if e["kind"] == "loop" and e["action"] != "allow"]
