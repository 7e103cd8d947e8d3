"""/metrics merged across workers (proxy/worker.py `merge`)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from proxy.worker import merge

W0 = """# HELP calls_total Calls
# TYPE calls_total counter
calls_total{agent="a"} 3.0
calls_total{agent="b"} 1.0
# HELP in_flight In flight
# TYPE in_flight gauge
in_flight 2.0
# HELP latency_seconds Latency
# TYPE latency_seconds histogram
latency_seconds_bucket{le="1.0"} 1.0
latency_seconds_bucket{le="+Inf"} 2.0
latency_seconds_count 2.0
latency_seconds_sum 3.5
"""
W1 = """# HELP calls_total Calls
# TYPE calls_total counter
calls_total{agent="a"} 4.0
# HELP in_flight In flight
# TYPE in_flight gauge
in_flight 5.0
# HELP latency_seconds Latency
# TYPE latency_seconds histogram
latency_seconds_bucket{le="1.0"} 0.0
latency_seconds_bucket{le="+Inf"} 1.0
latency_seconds_count 1.0
latency_seconds_sum 2.0
"""


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text.decode()) for s in fam.samples}


def test_counters_and_histograms_are_summed_across_workers() -> None:
    got = _samples(merge([(0, W0), (1, W1)], 2))
    assert got[("calls_total", (("agent", "a"),))] == 7.0
    assert got[("calls_total", (("agent", "b"),))] == 1.0
    assert got[("latency_seconds_bucket", (("le", "+Inf"),))] == 3.0
    assert got[("latency_seconds_sum", ())] == 5.5


def test_gauges_keep_one_series_per_worker() -> None:
    got = _samples(merge([(0, W0), (1, W1)], 2))
    assert got[("in_flight", (("worker", "0"),))] == 2.0
    assert got[("in_flight", (("worker", "1"),))] == 5.0


def test_a_worker_that_did_not_answer_shows_in_the_reporting_gauge() -> None:
    got = _samples(merge([(0, W0)], 2))
    assert got[("interlock_workers", ())] == 2.0
    assert got[("interlock_workers_reporting", ())] == 1.0
    assert got[("calls_total", (("agent", "a"),))] == 3.0
