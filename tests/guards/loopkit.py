"""Helpers for the loops-in-meaning tests: one rule wired as the RulesManager wires it, and a
call fed through both hooks."""

from __future__ import annotations

from typing import Any

from proxy.call import Call, Message, ToolCall
from proxy.guards import GuardChain, build_chain
from proxy.guards.counters import CounterStore
from proxy.rules import RuleSet
from tests.guards.factory import assistant, deps, finish, make_call, rule_from_yaml, system, user


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


class Hub:
    """An orchestrator delegating to workers within one run: each worker has a conversation of
    its own, where an instruction arrives as a new user message; its report goes back to the
    orchestrator as a user message (delegate → return → delegate)."""

    def __init__(self, chain: GuardChain, run_id: str = "run-hub") -> None:
        self.chain, self.run_id = chain, run_id
        self.lead = [system("You are the orchestrator."), user("Prepare the harbour brief for the board.")]
        self.workers: dict[str, list[Message]] = {}

    async def delegate(self, worker: str, instruction: str, report: str) -> tuple[Call, Call]:
        """The orchestrator's call naming the instruction, then the worker's call reporting."""
        ledger = f"Next speaker: {worker}. Instruction: {instruction}"
        lead = await turn(self.chain, list(self.lead), ledger, agent="orchestrator", run_id=self.run_id)
        self.lead.append(assistant(ledger))
        conv = self.workers.setdefault(worker, [system(f"You are {worker}. Use your tools and report back.")])
        conv.append(user(instruction))
        result = await turn(self.chain, list(conv), report, agent=worker, run_id=self.run_id)
        conv.append(assistant(report))
        self.lead.append(user(f"{worker}: {report}"))
        return lead, result

    async def finish(self, summary: str) -> Call:
        return await turn(self.chain, list(self.lead), summary, agent="orchestrator", run_id=self.run_id)
