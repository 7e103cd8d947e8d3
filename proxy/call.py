"""Provider-neutral records of one model call.

Only `proxy/providers/` knows wire formats.  Everything downstream (guards, the graph,
the store, telemetry) sees these objects:

    Call ──┬── request side: who (agent, api key hash), what (model, messages), counted tokens
           ├── response side: status, timings, finish reason, Usage, assembled Completion
           └── outcome: ok | upstream_error | upstream_cut | cancelled | unreachable | timeout
                        | bad_request | too_large | denied
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = (
    "ok",
    "upstream_error",
    "upstream_cut",
    "cancelled",
    "unreachable",
    "timeout",
    "bad_request",
    "too_large",
    "denied",
)


def new_id() -> str:
    """Time-ordered 26-char id (millisecond prefix + randomness), sortable as text."""
    ms = int(time.time() * 1000)
    return f"{ms:012x}{random.getrandbits(56):014x}"


@dataclass(slots=True)
class Usage:
    """Token usage exactly as the provider reported it (None where it reported nothing)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def reported(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None

    def total(self) -> int:
        return (self.input_tokens or 0) + (self.output_tokens or 0)


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Message:
    """One input message, normalised: role is system|developer|user|assistant|tool."""

    role: str
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # for role=tool: which call this answers
    name: str | None = None  # chat `name`: the participant who spoke (group chats name each speaker)


@dataclass(slots=True)
class Completion:
    """What the model produced, assembled from a body or from stream events."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    response_id: str | None = None


@dataclass(slots=True)
class Chunk:
    """One parsed stream event, handed to guards' on_chunk.  `raw` is the exact bytes."""

    raw: bytes
    text_delta: str = ""
    output_tokens_so_far: int | None = None


@dataclass(slots=True)
class Call:
    id: str
    started_at: float  # epoch seconds
    provider: str  # its gen_ai.provider.name: openai, anthropic, gcp.gemini, azure.ai.openai, aws.bedrock...
    operation: str  # chat | responses | messages | count_tokens | embeddings | other
    upstream: str  # configured upstream name
    method: str
    path: str
    agent: str | None = None
    agent_source: str | None = None  # path | header | None (resolved later by the graph)
    run_hint: str | None = None  # explicit run id from X-Interlock-Run (wins over inference)
    run_id: str | None = None  # resolved run: run_hint, else the graph's RunResolver at request time
    traceparent: str | None = None
    api_key_hash: str | None = None
    model_requested: str | None = None
    stream: bool = False
    max_tokens: int | None = None
    request: dict[str, Any] | None = None  # parsed JSON body (None when not JSON)
    request_bytes: bytes = b""
    system: str | None = None
    messages: list[Message] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    previous_response_id: str | None = None
    input_tokens_counted: int | None = None
    # response side
    status: int | None = None
    model_served: str | None = None
    first_byte_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    completion: Completion = field(default_factory=Completion)
    response_bytes: bytes = b""  # the first content_max_bytes of the answer (an assembled stream)
    response_truncated: bool = False
    response_size: int = 0  # bytes of the answer's body as relayed
    flags: list[str] = field(default_factory=list)  # what the relay could not do in full (stored with the call)
    error: str | None = None
    client_wants_usage: bool = True
    cost_usd: float | None = None
    overhead_s: float | None = None  # time the proxy itself added (parse, guards, relay), seconds
    guard_events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def latency_ms(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at) * 1000.0
