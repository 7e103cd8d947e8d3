"""INTERLOCK_MEMORY_MB: one budget, every cache and queue bound derived from it (proxy/memory.py)."""

from __future__ import annotations

from pathlib import Path

from proxy.memory import BASELINE_MB, BYTES_PER_CHAR, BYTES_PER_LINEAGE_CALL, MIB, MemoryPlan
from proxy.settings import load_settings
from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer


def _growable_bytes(plan: MemoryPlan) -> float:
    return (plan.writer_queue_bytes + plan.pipeline_queue_bytes
            + BYTES_PER_CHAR * (plan.token_history_chars + plan.chain_chars + plan.fingerprint_chars)
            + BYTES_PER_LINEAGE_CALL * plan.lineage_calls)


def test_without_a_budget_the_historical_bounds_hold() -> None:
    assert MemoryPlan.from_settings(load_settings()) == MemoryPlan()


def test_the_bounds_add_up_to_the_budget_above_the_baseline() -> None:
    for mb in (192, 256, 512, 2048):
        plan = MemoryPlan.from_settings(load_settings(memory_mb=mb))
        assert 0.95 * (mb - BASELINE_MB) * MIB <= _growable_bytes(plan) <= (mb - BASELINE_MB) * MIB


def test_a_smaller_budget_shrinks_every_bound() -> None:
    small, big = MemoryPlan.for_budget(256), MemoryPlan.for_budget(1024)
    assert all(getattr(small, f) < getattr(big, f) for f in MemoryPlan.__dataclass_fields__)
    assert all(getattr(small, f) < getattr(MemoryPlan(), f) for f in MemoryPlan.__dataclass_fields__)


def test_a_queue_bound_set_explicitly_wins_over_its_share() -> None:
    plan = MemoryPlan.from_settings(load_settings(memory_mb=256, writer_queue_max_bytes=5 * MIB))
    assert plan.writer_queue_bytes == 5 * MIB
    assert plan.pipeline_queue_bytes == MemoryPlan.for_budget(256).pipeline_queue_bytes


def test_the_running_proxy_sizes_its_caches_from_the_budget(tmp_path: Path, upstream: FakeUpstream) -> None:
    want = MemoryPlan.for_budget(256)
    with ProxyServer(tmp_path, upstream.url, memory_mb=256) as px:
        rt = px.runtime
        assert rt.writer._queue_max_bytes == want.writer_queue_bytes
        assert rt.pipeline.max_queued_bytes == want.pipeline_queue_bytes
        assert rt.tokens._histories.max_chars == want.token_history_chars
        assert rt.linker.chains._steps.max_chars == want.chain_chars
        assert rt.index.max_calls == want.lineage_calls
        assert rt.rules._deps.facts.known._threads.max_chars == want.fingerprint_chars
