"""Calls as the providers produce them: scripted exchanges fed through the real parsers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from proxy.call import Call, Completion, Message
from proxy.graph.script import Exchange
from proxy.providers.anthropic import AnthropicMessages
from proxy.providers.base import Provider
from proxy.providers.openai import OpenAIChat, OpenAIResponses

# Texts long and specific enough to be lineage evidence (five-word shingles no other test shares).
PLAN = (
    "Survey the installed base of residential heat pumps in Northern Europe and estimate the "
    "annual unit growth since 2019 using national statistics and industry association reports."
)
DRAFT = (
    "Installed heat pumps in the Nordic countries passed four million units with growth close to "
    "twelve percent a year driven mostly by air to water systems replacing oil boilers."
)


def _provider(api: str) -> tuple[Provider, str]:
    if api == "responses":
        return OpenAIResponses(), "responses"
    if api == "messages":
        return AnthropicMessages(), "messages"
    return OpenAIChat(), "chat"


def call_from_exchange(ex: Exchange, **overrides: Any) -> Call:
    """The Call the relay records for this exchange (call id = step id)."""
    provider, operation = _provider(ex.api)
    call = Call(ex.step, ex.started_at, provider.name, operation, provider.name, "POST", ex.path)
    provider.parse_request(call, ex.request)
    call.agent = ex.headers.get("x-interlock-agent")
    call.run_hint = ex.headers.get("x-interlock-run")
    provider.parse_body(call, orjson.dumps(ex.response))
    call.status, call.outcome, call.ended_at = 200, "ok", ex.ended_at
    for k, v in overrides.items():
        setattr(call, k, v)
    return call


def calls_from(exchanges: Iterable[Exchange]) -> list[Call]:
    return [call_from_exchange(ex) for ex in exchanges]


def make_call(
    call_id: str,
    *,
    system: str = "You are the tester.",
    user: str | list[str] = "hello",
    output: str = "ok",
    started_at: float = 0.0,
    ended_at: float = 1.0,
    **overrides: Any,
) -> Call:
    """A bare chat call for unit tests that do not need a scripted exchange."""
    texts = [user] if isinstance(user, str) else user
    messages = [Message("system", system), *(Message("user", t) for t in texts)]
    call = Call(call_id, started_at, "openai", "chat", "openai", "POST", "/v1/chat/completions")
    call.system, call.messages, call.completion = system, messages, Completion(output)
    call.ended_at, call.outcome, call.status = ended_at, "ok", 200
    for k, v in overrides.items():
        setattr(call, k, v)
    return call
