"""Reading a request the fake model received, whatever its wire format, to script framework agents.

A framework decides what it sends; the fake model only looks at who is asking (the system
prompt / `instructions` / Anthropic `system`), what the user asked and which tool results the
conversation already holds, and answers as that agent would.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(p.get("text") or p.get("content")) for p in content if isinstance(p, dict))
    return ""


def _items(req: Json) -> list[Json]:
    items = req.get("messages") or req.get("input") or []
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    return [i for i in items if isinstance(i, dict)]


def system_of(req: Json) -> str:
    """The agent's standing instructions, in any of the three request shapes."""
    if req.get("instructions"):
        return str(req["instructions"])
    if req.get("system"):
        return _text(req["system"])
    return " ".join(_text(m.get("content")) for m in _items(req) if m.get("role") in ("system", "developer"))


def user_texts(req: Json) -> list[str]:
    """User turns (not tool results), oldest first."""
    out = []
    for m in _items(req):
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "tool_result" for p in content):
            continue
        out.append(_text(content))
    return out


def tool_outputs(req: Json) -> list[str]:
    """Tool results the conversation holds: chat `tool` messages, Responses
    `function_call_output` items, Anthropic `tool_result` blocks."""
    out = []
    for m in _items(req):
        if m.get("role") == "tool":
            out.append(_text(m.get("content")))
        elif m.get("type") == "function_call_output":
            out.append(_text(m.get("output")))
        elif isinstance(m.get("content"), list):
            out.extend(_text(p.get("content")) for p in m["content"] if isinstance(p, dict) and p.get("type") == "tool_result")
    return out
