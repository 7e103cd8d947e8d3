"""Scripted multi-agent systems as data, rendered to the exchanges their SDKs would send.

    Script(agents, steps)                 one Step = one model call: which agent, in which
      │                                   conversation (thread), what it newly receives
      │                                   (User / Result, quoting earlier outputs) and what
      │                                   the model answers (text, tool calls, finish)
      ▼ render()
    [Exchange(step, agent, api, path, headers, request JSON, response JSON, times)]

The renderer keeps each thread's history as an SDK would and writes it in the agent's wire
format: Chat Completions (system message, tool_calls, role=tool), Responses (instructions,
function_call / function_call_output items, previous_response_id when `stateful`), Anthropic
Messages (system, tool_use / tool_result blocks, merged user turns).  A thread used by
several agents (`group_threads`) is a group chat: each speaker sees its own turns as
assistant and the others' as named user turns.  `fork` starts a thread from a copy of
another one (a handoff that passes the conversation on, as the OpenAI Agents SDK does).

Tests feed the exchanges through the real provider parsers; the demo and end-to-end tests
send them through the proxy to a fake model that answers `response`.  Pure data, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import orjson

from proxy.graph.fingerprint import text_parts

PATHS = MappingProxyType(
    {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
)


@dataclass(frozen=True, slots=True)
class AgentSpec:
    system: str
    tools: tuple[str, ...] = ()
    api: str = "chat"  # chat | responses | messages
    model: str = "gpt-4o-mini"
    stateful: bool = False  # responses: previous_response_id + only the new items
    explicit: bool = False  # send X-Interlock-Agent with the script's agent name
    rewrite: bool = False  # chat: resend earlier tool calls and results as text (smolagents-style memory)


@dataclass(frozen=True, slots=True)
class Quote:
    """An earlier step's output as it is passed on: whole, one part, one tool argument,
    cut to a share of its characters, inside a wrapper."""

    step: str
    part: int | None = None
    tool: int | None = None  # quote this tool call's arguments (their string values)
    cut: float | None = None
    wrap: str = "{}"
    rewrite: tuple[tuple[str, str], ...] = ()  # whole-word replacements: a paraphrase


Piece = str | Quote


@dataclass(frozen=True, slots=True)
class User:
    pieces: tuple[Piece, ...]


@dataclass(frozen=True, slots=True)
class Result:
    """The result of tool call `index` made by `step`."""

    step: str
    index: int
    pieces: tuple[Piece, ...]


@dataclass(frozen=True, slots=True)
class ToolUse:
    name: str
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    agent: str
    thread: str
    input: tuple[User | Result, ...] = ()
    text: str = ""
    tools: tuple[ToolUse, ...] = ()
    finish: str = "stop"  # stop | length (tool calls make it tool_calls)
    after: tuple[str, ...] | None = None  # starts when these ended (default: the previous step)
    took: float = 1.0
    fork: str | None = None
    run: str | None = None  # X-Interlock-Run
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Script:
    agents: dict[str, AgentSpec]
    steps: tuple[Step, ...]
    group_threads: frozenset[str] = frozenset()

    def prefixed(self, prefix: str) -> Script:
        """The same system with every step and thread id prefixed (a second, independent run)."""
        return Script(
            self.agents,
            tuple(_prefix_step(s, prefix) for s in self.steps),
            frozenset(prefix + t for t in self.group_threads),
        )


@dataclass(frozen=True, slots=True)
class Exchange:
    step: str
    agent: str
    api: str
    path: str
    headers: dict[str, str]
    request: dict[str, Any]
    response: dict[str, Any]
    started_at: float
    ended_at: float
    stream: bool = False


# ---------------------------------------------------------------------- neutral history


@dataclass(slots=True)
class _Turn:
    kind: str  # user | assistant | tool
    text: str
    speaker: str = ""
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (id, name, args)
    tool_id: str = ""


@dataclass(slots=True)
class _Thread:
    turns: list[_Turn] = field(default_factory=list)
    sent: int = 0  # turns already held by the server (stateful Responses threads)
    last_response: str | None = None


def render(script: Script, *, offset: float = 0.0) -> list[Exchange]:
    """Exchanges in completion order (ended_at, then step order)."""
    state = _Renderer(script, offset)
    out = [state.step(s) for s in script.steps]
    return sorted(out, key=lambda e: e.ended_at)


def merge(*streams: Sequence[Exchange]) -> list[Exchange]:
    """Interleave independently rendered scripts into one completion-ordered stream."""
    return sorted((e for s in streams for e in s), key=lambda e: e.ended_at)


class _Renderer:
    def __init__(self, script: Script, offset: float) -> None:
        self.script = script
        self.offset = offset
        self.threads: dict[str, _Thread] = {}
        self.outputs: dict[str, Step] = {}
        self.ends: dict[str, float] = {}
        self.last: str | None = None

    def step(self, step: Step) -> Exchange:
        spec = self.script.agents[step.agent]
        thread = self._thread(step)
        thread.turns.extend(self._inputs(step))
        request = self._request(step, spec, thread)
        response = _response(step, spec)
        started = self._start(step)
        self._record(step, spec, thread, response)
        headers = {"x-interlock-agent": step.agent} if spec.explicit else {}
        if step.run:
            headers["x-interlock-run"] = step.run
        ended = started + step.took
        self.ends[step.id] = ended
        path = PATHS[spec.api]
        return Exchange(
            step.id, step.agent, spec.api, path, headers, request, response, started, ended, step.stream
        )

    def _thread(self, step: Step) -> _Thread:
        thread = self.threads.get(step.thread)
        if thread is None:
            base = self.threads.get(step.fork) if step.fork else None
            thread = _Thread(list(base.turns), 0, base.last_response) if base else _Thread()
            if base and base.last_response:
                thread.sent = len(base.turns)
            self.threads[step.thread] = thread
        return thread

    def _start(self, step: Step) -> float:
        deps = step.after if step.after is not None else ((self.last,) if self.last else ())
        start = max((self.ends[d] for d in deps), default=self.offset - 0.1) + 0.1
        self.last = step.id
        return start

    def _inputs(self, step: Step) -> list[_Turn]:
        turns = []
        for item in step.input:
            text = "\n\n".join(self._piece(p) for p in item.pieces)
            if isinstance(item, Result):
                turns.append(
                    _Turn("tool", text, tool_id=_tool_id(self.outputs[item.step], item.index, self.script))
                )
            else:
                turns.append(_Turn("user", text, speaker="user"))
        return turns

    def _piece(self, piece: Piece) -> str:
        if isinstance(piece, str):
            return piece
        src = self.outputs[piece.step]
        text = _tool_text(src.tools[piece.tool]) if piece.tool is not None else src.text
        if piece.part is not None:
            text = text_parts(text)[piece.part]
        if piece.cut is not None:
            text = text[: int(len(text) * piece.cut)]
        for old, new in piece.rewrite:
            text = re.sub(rf"\b{re.escape(old)}\b", new, text)
        return piece.wrap.format(text)

    def _request(self, step: Step, spec: AgentSpec, thread: _Thread) -> dict[str, Any]:
        group = step.thread in self.script.group_threads
        turns = [_as_seen_by(t, step.agent) for t in thread.turns] if group else thread.turns
        if spec.api == "responses":
            return _responses_request(step, spec, thread, turns)
        if spec.api == "messages":
            return _messages_request(step, spec, turns)
        return _chat_request(step, spec, turns, named=group)

    def _record(self, step: Step, spec: AgentSpec, thread: _Thread, response: dict[str, Any]) -> None:
        calls = [(_tool_id(step, i, self.script), t.name, t.args) for i, t in enumerate(step.tools)]
        thread.turns.append(_Turn("assistant", step.text, step.agent, calls))
        if spec.api == "responses" and spec.stateful:
            thread.last_response = response["id"]
            thread.sent = len(thread.turns)
        self.outputs[step.id] = step


def _as_seen_by(turn: _Turn, agent: str) -> _Turn:
    if turn.kind == "assistant" and turn.speaker != agent:
        return _Turn("user", turn.text, turn.speaker)
    return turn


def _prefix_step(s: Step, p: str) -> Step:
    return replace(
        s,
        id=p + s.id,
        thread=p + s.thread,
        input=tuple(_prefix_input(i, p) for i in s.input),
        after=None if s.after is None else tuple(p + a for a in s.after),
        fork=p + s.fork if s.fork else None,
    )


def _prefix_input(item: User | Result, p: str) -> User | Result:
    pieces = tuple(replace(x, step=p + x.step) if isinstance(x, Quote) else x for x in item.pieces)
    if isinstance(item, Result):
        return Result(p + item.step, item.index, pieces)
    return User(pieces)


def _tool_id(step: Step, index: int, script: Script) -> str:
    api = script.agents[step.agent].api
    return f"{'toolu' if api == 'messages' else 'call'}_{step.id}_{index}"


def _tool_text(tool: ToolUse) -> str:
    return "\n\n".join(str(v) for v in tool.args.values() if isinstance(v, str))


def _args(args: dict[str, Any]) -> str:
    return orjson.dumps(args).decode()


# ---------------------------------------------------------------------- wire formats


def _chat_request(step: Step, spec: AgentSpec, turns: list[_Turn], *, named: bool = False) -> dict[str, Any]:
    """`named`: a group chat names every turn's speaker, the caller's own (AG2, AutoGen) too."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": spec.system}] if spec.system else []
    for t in turns:
        if spec.rewrite and t.kind != "user":
            messages.append(_rewritten(t))
        elif t.kind == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": t.text or None}
            if named and t.speaker:
                msg["name"] = t.speaker
            if t.calls:
                msg["tool_calls"] = [_chat_tool_call(c) for c in t.calls]
            messages.append(msg)
        elif t.kind == "tool":
            messages.append({"role": "tool", "tool_call_id": t.tool_id, "content": t.text})
        elif t.speaker not in ("", "user"):
            messages.append({"role": "user", "name": t.speaker, "content": t.text})
        else:
            messages.append({"role": "user", "content": t.text})
    body: dict[str, Any] = {"model": spec.model, "messages": messages, "stream": step.stream}
    if spec.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
            for n in spec.tools
        ]
    return body


def _rewritten(t: _Turn) -> dict[str, Any]:
    """A framework's own memory format: a tool call becomes assistant text, its result a user
    observation (what smolagents sends back)."""
    if t.kind == "tool":
        return {"role": "user", "content": f"Observation:\n{t.text}"}
    calls = [{"id": c[0], "type": "function", "function": {"name": c[1], "arguments": c[2]}} for c in t.calls]
    text = t.text + (f"\nCalling tools:\n{calls!r}" if calls else "")
    return {"role": "assistant", "content": text.strip()}


def _chat_tool_call(c: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    return {"id": c[0], "type": "function", "function": {"name": c[1], "arguments": _args(c[2])}}


def _responses_request(step: Step, spec: AgentSpec, thread: _Thread, turns: list[_Turn]) -> dict[str, Any]:
    stateful = spec.stateful and thread.last_response is not None
    items: list[dict[str, Any]] = []
    for t in turns[thread.sent :] if stateful else turns:
        if t.kind == "assistant":
            if t.text:
                items.append(
                    {
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_text", "text": t.text}],
                    }
                )
            items.extend(
                {"type": "function_call", "call_id": c[0], "name": c[1], "arguments": _args(c[2])}
                for c in t.calls
            )
        elif t.kind == "tool":
            items.append({"type": "function_call_output", "call_id": t.tool_id, "output": t.text})
        else:
            items.append({"role": "user", "content": t.text})
    body: dict[str, Any] = {
        "model": spec.model,
        "instructions": spec.system,
        "input": items,
        "stream": step.stream,
    }
    if stateful:
        body["previous_response_id"] = thread.last_response
    if spec.tools:
        body["tools"] = [
            {"type": "function", "name": n, "parameters": {"type": "object"}} for n in spec.tools
        ]
    return body


def _messages_request(step: Step, spec: AgentSpec, turns: list[_Turn]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for t in turns:
        role = "assistant" if t.kind == "assistant" else "user"
        blocks = _blocks(t)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": spec.model,
        "system": spec.system,
        "max_tokens": 4096,
        "messages": messages,
    }
    body["stream"] = step.stream
    if spec.tools:
        body["tools"] = [{"name": n, "input_schema": {"type": "object"}} for n in spec.tools]
    return body


def _blocks(t: _Turn) -> list[dict[str, Any]]:
    if t.kind == "tool":
        return [{"type": "tool_result", "tool_use_id": t.tool_id, "content": t.text}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": t.text}] if t.text else []
    blocks.extend({"type": "tool_use", "id": c[0], "name": c[1], "input": c[2]} for c in t.calls)
    return blocks


def _response(step: Step, spec: AgentSpec) -> dict[str, Any]:
    usage_in, usage_out = 100, max(1, len(step.text) // 4)
    if spec.api == "responses":
        return _responses_response(step, spec, usage_in, usage_out)
    if spec.api == "messages":
        return _messages_response(step, spec, usage_in, usage_out)
    finish = "tool_calls" if step.tools else step.finish
    message: dict[str, Any] = {"role": "assistant", "content": step.text or None}
    if step.tools:
        message["tool_calls"] = [
            _chat_tool_call((f"call_{step.id}_{i}", t.name, t.args)) for i, t in enumerate(step.tools)
        ]
    return {
        "id": f"chatcmpl-{step.id}",
        "object": "chat.completion",
        "model": spec.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": usage_in,
            "completion_tokens": usage_out,
            "total_tokens": usage_in + usage_out,
        },
    }


def _responses_response(step: Step, spec: AgentSpec, usage_in: int, usage_out: int) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    if step.text:
        output.append(
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": step.text}]}
        )
    output.extend(
        {
            "type": "function_call",
            "call_id": f"call_{step.id}_{i}",
            "name": t.name,
            "arguments": _args(t.args),
        }
        for i, t in enumerate(step.tools)
    )
    body: dict[str, Any] = {
        "id": f"resp_{step.id}",
        "object": "response",
        "model": spec.model,
        "status": "incomplete" if step.finish == "length" else "completed",
        "output": output,
        "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
    }
    if step.finish == "length":
        body["incomplete_details"] = {"reason": "max_output_tokens"}
    return body


def _messages_response(step: Step, spec: AgentSpec, usage_in: int, usage_out: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": step.text}] if step.text else []
    content.extend(
        {"type": "tool_use", "id": f"toolu_{step.id}_{i}", "name": t.name, "input": t.args}
        for i, t in enumerate(step.tools)
    )
    stop = "tool_use" if step.tools else ("max_tokens" if step.finish == "length" else "end_turn")
    return {
        "id": f"msg_{step.id}",
        "type": "message",
        "role": "assistant",
        "model": spec.model,
        "content": content,
        "stop_reason": stop,
        "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
    }
