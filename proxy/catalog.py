"""Model catalog: context window and maximum output tokens of current OpenAI and Anthropic
models, looked up by the model name a client sends (dated snapshots and `-latest` aliases
resolve to their family), overridable per rule (`models:` in a context rule).

Figures as published by the providers (checked 2026-05).  Custom or newer models: add them
to the rule's `models:` mapping; an unknown model is never denied for its size.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from proxy.lru import Memo

V = TypeVar("V")
_CACHE_MAX = 1024


@dataclass(frozen=True, slots=True)
class ModelSpec:
    context_window: int  # input + output tokens the model accepts in one call
    max_output: int  # most output tokens one call may ask for


DEFAULT_MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        # OpenAI
        "gpt-3.5-turbo": ModelSpec(16_385, 4_096),
        "gpt-4": ModelSpec(8_192, 8_192),
        "gpt-4-turbo": ModelSpec(128_000, 4_096),
        "gpt-4o": ModelSpec(128_000, 16_384),
        "gpt-4o-mini": ModelSpec(128_000, 16_384),
        "chatgpt-4o-latest": ModelSpec(128_000, 16_384),
        "gpt-4.1": ModelSpec(1_047_576, 32_768),
        "gpt-4.1-mini": ModelSpec(1_047_576, 32_768),
        "gpt-4.1-nano": ModelSpec(1_047_576, 32_768),
        "gpt-5": ModelSpec(400_000, 128_000),
        "gpt-5-mini": ModelSpec(400_000, 128_000),
        "gpt-5-nano": ModelSpec(400_000, 128_000),
        "gpt-5-chat-latest": ModelSpec(128_000, 16_384),
        "gpt-5.1": ModelSpec(400_000, 128_000),
        "gpt-5.2": ModelSpec(400_000, 128_000),
        "o1": ModelSpec(200_000, 100_000),
        "o1-mini": ModelSpec(128_000, 65_536),
        "o1-pro": ModelSpec(200_000, 100_000),
        "o3": ModelSpec(200_000, 100_000),
        "o3-mini": ModelSpec(200_000, 100_000),
        "o3-pro": ModelSpec(200_000, 100_000),
        "o4-mini": ModelSpec(200_000, 100_000),
        # Anthropic
        "claude-opus-4-7": ModelSpec(1_000_000, 128_000),
        "claude-opus-4-6": ModelSpec(200_000, 128_000),
        "claude-opus-4-5": ModelSpec(200_000, 64_000),
        "claude-opus-4-1": ModelSpec(200_000, 32_000),
        "claude-opus-4": ModelSpec(200_000, 32_000),
        "claude-sonnet-4-6": ModelSpec(1_000_000, 64_000),
        "claude-sonnet-4-5": ModelSpec(200_000, 64_000),
        "claude-sonnet-4": ModelSpec(200_000, 64_000),
        "claude-haiku-4-5": ModelSpec(200_000, 64_000),
        "claude-3-7-sonnet": ModelSpec(200_000, 64_000),
        "claude-3-5-sonnet": ModelSpec(200_000, 8_192),
        "claude-3-5-haiku": ModelSpec(200_000, 8_192),
        "claude-3-opus": ModelSpec(200_000, 4_096),
        "claude-3-haiku": ModelSpec(200_000, 4_096),
    }
)


def model_key(model: str) -> str:
    """`openai/gpt-4o` and `GPT-4o` name the same model as `gpt-4o`."""
    return model.rsplit("/", 1)[-1].strip().lower()


def lookup_model(table: Mapping[str, V], model: str | None) -> V | None:
    """Exact name, then a glob key (`my-*`), then the longest key the name extends at a `-`
    boundary (`gpt-4o-2024-08-06` → `gpt-4o`, but `gpt-4.1` never → `gpt-4`)."""
    if not model:
        return None
    name = model_key(model)
    if name in table:
        return table[name]
    best: str | None = None
    for key in table:
        if any(c in key for c in "*?[") and fnmatch.fnmatchcase(name, key):
            return table[key]
        if name.startswith(key + "-") and (best is None or len(key) > len(best)):
            best = key
    return table[best] if best is not None else None


class Catalog:
    """Default model specs plus overrides (which win)."""

    def __init__(self, overrides: Mapping[str, ModelSpec] | None = None) -> None:
        self._overrides = {model_key(k): v for k, v in (overrides or {}).items()}
        self._cache: Memo[str | None, ModelSpec | None] = Memo(_CACHE_MAX)

    def lookup(self, model: str | None) -> ModelSpec | None:
        if model not in self._cache:
            return self._cache.keep(model, lookup_model(self._overrides, model) or lookup_model(DEFAULT_MODELS, model))
        return self._cache[model]

    def with_overrides(self, overrides: Mapping[str, ModelSpec]) -> Catalog:
        return Catalog({**self._overrides, **overrides}) if overrides else self
