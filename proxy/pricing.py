"""Prices in USD per 1M tokens for current OpenAI and Anthropic models, and `cost_usd`.

Usage conventions (as the providers parse it into `Usage`): `input_tokens` includes cached
input, `output_tokens` includes reasoning/thinking tokens.  Both providers bill reasoning at
the output rate, so `reasoning` defaults to `output`; Anthropic cache writes are charged at
the plain input rate (a small underestimate: they cost 1.25x).  Override or extend the table
with a `pricing:` mapping in any rules file (model name, prefix or glob → rates).

Standard (non-batch, short-context) rates as published by the providers, checked 2026-05.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from proxy.call import Usage
from proxy.catalog import lookup_model, model_key
from proxy.lru import Memo

_CACHE_MAX = 1024


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens.  None for cached_input/reasoning means 'the plain rate'."""

    input: float
    output: float
    cached_input: float | None = None
    reasoning: float | None = None


DEFAULT_PRICES: Mapping[str, Price] = MappingProxyType(
    {
        # OpenAI
        "gpt-3.5-turbo": Price(0.50, 1.50),
        "gpt-4-turbo": Price(10.00, 30.00),
        "gpt-4o": Price(2.50, 10.00, 1.25),
        "gpt-4o-mini": Price(0.15, 0.60, 0.075),
        "gpt-4.1": Price(2.00, 8.00, 0.50),
        "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
        "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
        "gpt-5": Price(1.25, 10.00, 0.125),
        "gpt-5-mini": Price(0.25, 2.00, 0.025),
        "gpt-5-nano": Price(0.05, 0.40, 0.005),
        "gpt-5-chat-latest": Price(1.25, 10.00, 0.125),
        "gpt-5.1": Price(1.25, 10.00, 0.125),
        "gpt-5.2": Price(1.75, 14.00, 0.175),
        "gpt-5.4": Price(2.50, 15.00, 0.25),
        "gpt-5.4-mini": Price(0.75, 4.50, 0.075),
        "gpt-5.4-nano": Price(0.20, 1.25, 0.02),
        "o1": Price(15.00, 60.00, 7.50),
        "o1-mini": Price(1.10, 4.40, 0.55),
        "o1-pro": Price(150.00, 600.00),
        "o3": Price(2.00, 8.00, 0.50),
        "o3-mini": Price(1.10, 4.40, 0.55),
        "o3-pro": Price(20.00, 80.00),
        "o4-mini": Price(1.10, 4.40, 0.275),
        # Anthropic (cached_input = cache read rate)
        "claude-opus-4-7": Price(5.00, 25.00, 0.50),
        "claude-opus-4-6": Price(5.00, 25.00, 0.50),
        "claude-opus-4-5": Price(5.00, 25.00, 0.50),
        "claude-opus-4-1": Price(15.00, 75.00, 1.50),
        "claude-opus-4": Price(15.00, 75.00, 1.50),
        "claude-sonnet-4-6": Price(3.00, 15.00, 0.30),
        "claude-sonnet-4-5": Price(3.00, 15.00, 0.30),
        "claude-sonnet-4": Price(3.00, 15.00, 0.30),
        "claude-haiku-4-5": Price(1.00, 5.00, 0.10),
        "claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
        "claude-3-5-sonnet": Price(3.00, 15.00, 0.30),
        "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
        "claude-3-opus": Price(15.00, 75.00, 1.50),
        "claude-3-haiku": Price(0.25, 1.25, 0.03),
    }
)


def _cost(price: Price, input_tokens: int, output_tokens: int, cached: int, reasoning: int) -> float:
    cached = min(cached, input_tokens)
    reasoning = min(reasoning, output_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    reasoning_rate = price.output if price.reasoning is None else price.reasoning
    total = (
        (input_tokens - cached) * price.input
        + cached * cached_rate
        + (output_tokens - reasoning) * price.output
        + reasoning * reasoning_rate
    )
    return total / 1_000_000


class PriceTable:
    """The default prices plus overrides (which win)."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides = {model_key(k): v for k, v in (overrides or {}).items()}
        self._cache: Memo[str | None, Price | None] = Memo(_CACHE_MAX)

    def lookup(self, model: str | None) -> Price | None:
        if model not in self._cache:
            return self._cache.keep(model, lookup_model(self._overrides, model) or lookup_model(DEFAULT_PRICES, model))
        return self._cache[model]

    def with_overrides(self, overrides: Mapping[str, Price]) -> PriceTable:
        return PriceTable({**self._overrides, **overrides}) if overrides else self

    def cost_usd(self, model: str | None, usage: Usage) -> float | None:
        """What the provider charges for this usage; None when the model has no price or the
        provider reported no usage."""
        price = self.lookup(model)
        if price is None or not usage.reported:
            return None
        return _cost(
            price,
            usage.input_tokens or 0,
            usage.output_tokens or 0,
            usage.cached_tokens or 0,
            usage.reasoning_tokens or 0,
        )

    def estimate_usd(self, model: str | None, input_tokens: int, output_tokens: int) -> float | None:
        """Worst-case cost of a call before it runs: no cache hits, output at the output rate."""
        price = self.lookup(model)
        return None if price is None else _cost(price, input_tokens, output_tokens, 0, 0)


def cost_usd(model: str | None, usage: Usage, table: PriceTable | None = None) -> float | None:
    """Cost of one call's usage with the default table (or `table`)."""
    return (table or PriceTable()).cost_usd(model, usage)
