"""Factories for guard tests: calls, chunks, messages, rules from YAML, guard deps."""

from __future__ import annotations

import itertools
import time
from typing import Any

import yaml

from proxy.call import Call, Chunk, Completion, Message, ToolCall, Usage
from proxy.guards import GuardDeps, make_deps
from proxy.guards.counters import CounterStore, MemoryCounterStore
from proxy.rules import parse_rule

_ids = itertools.count(1)


def make_call(**overrides: Any) -> Call:
    """A parsed chat call from agent 'agent-a' in run 'run-1', 1,000 counted input tokens."""
    n = next(_ids)
    fields: dict[str, Any] = {
        "id": f"call-{n}",
        "started_at": time.time(),
        "provider": "openai",
        "operation": "chat",
        "upstream": "openai",
        "method": "POST",
        "path": "/v1/chat/completions",
        "agent": "agent-a",
        "run_id": "run-1",
        "api_key_hash": "key-1",
        "model_requested": "gpt-4o",
        "max_tokens": 1000,
        "input_tokens_counted": 1000,
        "messages": [user("hello")],
    }
    fields.update(overrides)
    return Call(**fields)


def finish(
    call: Call,
    *,
    text: str = "",
    outcome: str = "ok",
    status: int = 200,
    usage: Usage | None = None,
    finish_reason: str | None = "stop",
    tool_calls: list[ToolCall] | None = None,
) -> Call:
    """Fill the response side as the relay would after the call ended."""
    call.outcome = outcome
    call.status = status
    call.first_byte_at = call.started_at + 0.1 if status < 400 else None
    call.ended_at = call.started_at + 1
    call.finish_reason = finish_reason
    call.completion = Completion(text=text, tool_calls=list(tool_calls or []))
    if usage is not None:
        call.usage = usage
    return call


def make_chunk(output_tokens_so_far: int | None, text: str = "x") -> Chunk:
    return Chunk(raw=b"data: {}\n\n", text_delta=text, output_tokens_so_far=output_tokens_so_far)


def user(text: str) -> Message:
    return Message("user", text)


def system(text: str) -> Message:
    return Message("system", text)


def assistant(text: str = "", *calls: ToolCall) -> Message:
    return Message("assistant", text, list(calls))


def tool_call(name: str, arguments: str, id: str) -> ToolCall:
    return ToolCall(id, name, arguments)


def tool_result(call_id: str, text: str) -> Message:
    return Message("tool", text, [], call_id)


def rule_from_yaml(text: str) -> Any:
    """One rule, parsed and validated exactly as a rules file entry."""
    return parse_rule(yaml.safe_load(text))


def deps(counters: CounterStore | None = None, **kwargs: Any) -> GuardDeps:
    return make_deps(counters if counters is not None else MemoryCounterStore(), **kwargs)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
