"""Factories for store tests: a finished Call and its Record, overridable field by field."""

from __future__ import annotations

import itertools
import time
from typing import Any

from proxy.call import Call, Usage, new_id
from proxy.store.rows import ContentPolicy, Record, call_record

_seq = itertools.count()


def make_call(**overrides: Any) -> Call:
    """A finished, successful OpenAI chat call; keyword arguments replace any field."""
    started = overrides.pop("started_at", time.time())
    call = Call(
        id=overrides.pop("id", None) or f"{new_id()[:20]}{next(_seq) % 10**6:06d}",
        started_at=started,
        provider="openai",
        operation="chat",
        upstream="openai",
        method="POST",
        path="/v1/chat/completions",
        api_key_hash="0123456789ab",
        model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini-2024-07-18",
        request_bytes=b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
        response_bytes=b'{"choices":[{"message":{"role":"assistant","content":"hello"}}]}',
        status=200,
        outcome="ok",
        finish_reason="stop",
        first_byte_at=started + 0.05,
        ended_at=started + 0.1,
        usage=Usage(input_tokens=10, output_tokens=2),
        input_tokens_counted=9,
    )
    for name, value in overrides.items():
        setattr(call, name, value)
    return call


def make_record(policy: ContentPolicy = "redacted", max_bytes: int = 64 * 1024, **overrides: Any) -> Record:
    return call_record(make_call(**overrides), policy=policy, max_bytes=max_bytes)
