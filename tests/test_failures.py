"""FailureLog: a repeating failure is reported once, then at a backoff, and its end once."""

from __future__ import annotations

import logging
import re

import pytest

from proxy.failures import FailureLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failing(log: FailureLog, clock: Clock, times: int, every_s: float) -> None:
    for _ in range(times):
        try:
            raise OSError("connection refused")
        except OSError as exc:
            log.failed(exc)
        clock.now += every_s


def test_the_first_failure_is_logged_with_its_traceback_and_repeats_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    failures = FailureLog(logging.getLogger("t"), "database", hint="spooling", first_s=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        failing(failures, clock, 9, every_s=1.0)
    [line] = caplog.records
    assert line.getMessage() == "database failed: OSError: connection refused; spooling"
    assert line.exc_info is not None


def test_repeats_are_summarised_at_a_doubling_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog(logging.getLogger("t"), "database", first_s=10, max_s=40, clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        failing(failures, clock, 200, every_s=1.0)  # 200 s of one failure a second
    counts = [int(m.group(1)) for r in caplog.records[1:] if (m := re.search(r"(\d+) more", r.getMessage()))]
    assert counts == [10, 20, 40, 40, 40, 40]  # reports at 10, 30, 70, 110, 150, 190 s
    assert len(caplog.records) == 1 + len(counts)
    assert "191 in a row" in caplog.records[-1].getMessage()
    assert all(r.exc_info is None for r in caplog.records[1:])


def test_recovery_is_logged_once_and_resets_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog(logging.getLogger("t"), "database", clock=clock)
    with caplog.at_level(logging.INFO, logger="t"):
        failing(failures, clock, 3, every_s=1.0)
        failures.succeeded()
        failures.succeeded()
        failing(failures, clock, 1, every_s=1.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[1] == "database recovered after 3 failure(s)"
    assert len(messages) == 3 and messages[2].startswith("database failed:")


def test_without_traceback_for_an_expected_outage(caplog: pytest.LogCaptureFixture) -> None:
    failures = FailureLog(logging.getLogger("t"), "database", traceback=False)
    with caplog.at_level(logging.INFO, logger="t"):
        failing(failures, Clock(), 1, every_s=1.0)
    assert caplog.records[0].exc_info is None
