from __future__ import annotations

import pytest

from proxy.call import Usage
from proxy.pricing import DEFAULT_PRICES, Price, PriceTable, cost_usd


def test_cost_of_plain_usage() -> None:
    # gpt-4o: $2.50 in, $10 out per 1M
    assert cost_usd("gpt-4o", Usage(input_tokens=1_000_000, output_tokens=100_000)) == pytest.approx(3.50)


def test_cached_input_is_billed_at_the_cached_rate() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=0, cached_tokens=800_000)
    assert cost_usd("gpt-4.1", usage) == pytest.approx(0.2 * 2.00 + 0.8 * 0.50)


def test_reasoning_tokens_are_output_and_not_double_counted() -> None:
    usage = Usage(input_tokens=0, output_tokens=1_000_000, reasoning_tokens=900_000)
    assert cost_usd("o3", usage) == pytest.approx(8.00)


def test_reasoning_rate_can_be_overridden() -> None:
    table = PriceTable({"o3": Price(2.0, 8.0, 0.5, reasoning=4.0)})
    usage = Usage(input_tokens=0, output_tokens=1_000_000, reasoning_tokens=500_000)
    assert table.cost_usd("o3", usage) == pytest.approx(0.5 * 8 + 0.5 * 4)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ],
)
def test_snapshots_price_as_their_family(model: str, family: str) -> None:
    assert PriceTable().lookup(model) == DEFAULT_PRICES[family]


def test_unknown_model_or_no_usage_has_no_cost() -> None:
    assert cost_usd("my-llama", Usage(10, 10)) is None
    assert cost_usd("gpt-4o", Usage()) is None


def test_overrides_win_and_accept_globs() -> None:
    table = PriceTable({"gpt-4o": Price(1.0, 1.0), "my-*": Price(3.0, 12.0)})
    assert table.cost_usd("gpt-4o", Usage(1_000_000, 0)) == pytest.approx(1.0)
    assert table.cost_usd("my-finetune", Usage(0, 1_000_000)) == pytest.approx(12.0)


def test_worst_case_estimate_has_no_cache_hits() -> None:
    assert PriceTable().estimate_usd("claude-sonnet-4-5", 1_000_000, 1_000_000) == pytest.approx(18.0)


def test_table_covers_the_current_families() -> None:
    for family in (
        "gpt-4o",
        "gpt-4.1-nano",
        "gpt-5-nano",
        "o1",
        "o3-mini",
        "o4-mini",
        "claude-opus-4-1",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-3-7-sonnet",
        "claude-3-5-haiku",
    ):
        assert family in DEFAULT_PRICES
