"""Factories for Calls as the relay creates them before parsing."""

from __future__ import annotations

from typing import Any

from proxy.call import Call, new_id


def blank_call(**overrides: Any) -> Call:
    call = Call(new_id(), 0.0, "openai", "chat", "openai", "POST", "/v1/chat/completions")
    for k, v in overrides.items():
        setattr(call, k, v)
    return call
