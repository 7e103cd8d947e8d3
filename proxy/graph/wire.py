"""What the graph owner needs of a Call, as JSON: the request and answer minus the raw bodies.

    Call ──call_bytes──▶ {"id", "system", "messages": [...], "completion": {...}, ...} ──call_of──▶ Call

The raw request and response bytes and the parsed request body stay with the process that
answered (it stores them); lineage reads only the parsed messages, tools and completion.
A LinkResult travels back the same way (link_bytes / link_of).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from proxy.call import Call, Completion, Message, ToolCall, Usage
from proxy.graph.model import Edge, LinkResult

_DROPPED = frozenset({"request", "request_bytes", "response_bytes", "guard_events"})
_FIELDS = tuple(f.name for f in dataclasses.fields(Call) if f.name not in _DROPPED)
_USAGE = tuple(f.name for f in dataclasses.fields(Usage))


def call_dict(call: Call) -> dict[str, Any]:
    """The Call's linkable fields as JSON-ready values (by hand: dataclasses.asdict deep-copies)."""
    out = {name: getattr(call, name) for name in _FIELDS}
    out["messages"] = [
        {"role": m.role, "text": m.text, "tool_calls": [_tool(tc) for tc in m.tool_calls],
         "tool_call_id": m.tool_call_id, "name": m.name}
        for m in call.messages
    ]
    c = call.completion
    out["completion"] = {"text": c.text, "tool_calls": [_tool(tc) for tc in c.tool_calls], "response_id": c.response_id}
    u = call.usage
    out["usage"] = {f: getattr(u, f) for f in _USAGE}
    return out


def _tool(tc: ToolCall) -> dict[str, str]:
    return {"id": tc.id, "name": tc.name, "arguments": tc.arguments}


def call_of(data: dict[str, Any]) -> Call:
    """Inverse of call_dict; raises KeyError/TypeError on a malformed entry."""
    fields = {k: v for k, v in data.items() if k in _FIELDS}
    fields["messages"] = [_message(m) for m in data.get("messages") or []]
    comp = dict(data.get("completion") or {})
    comp["tool_calls"] = [ToolCall(**tc) for tc in comp.get("tool_calls") or []]
    fields["completion"] = Completion(**comp)
    fields["usage"] = Usage(**(data.get("usage") or {}))
    return Call(**fields)


def _message(m: dict[str, Any]) -> Message:
    m = dict(m)
    m["tool_calls"] = [ToolCall(**tc) for tc in m.get("tool_calls") or []]
    return Message(**m)


def link_dict(link: LinkResult) -> dict[str, Any]:
    return dataclasses.asdict(link)


def link_of(data: dict[str, Any]) -> LinkResult:
    data = dict(data)
    data["edges"] = [Edge(**e) for e in data.get("edges") or []]
    return LinkResult(**data)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON")


loads = orjson.loads
