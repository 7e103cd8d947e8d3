"""FailureLog: how a background loop logs a failure that repeats (a database that is down).

The first failure is logged in full (with its traceback); repeats are counted and summarised in
one line at a backoff (`first_s`, doubling up to `max_s`); the recovery is logged once with the
count.  A loop retrying every second while the database is away for an hour writes about a
dozen lines, not 3,600 tracebacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from proxy.backoff import Backoff


class FailureLog:
    """One per loop, owned by it.  Synchronous, never raises; no I/O beyond logging."""

    def __init__(self, log: logging.Logger, what: str, *, hint: str = "", traceback: bool = True,
                 first_s: float = 10.0, max_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.hint = f"; {hint}" if hint else ""  # appended to the first report
        self.traceback = traceback  # on the first report (off for an expected outage: database down)
        self.pace = Backoff(first_s, max_s)  # the wait after each line
        self.clock = clock
        self.count = 0  # failures since the last success
        self._unlogged = 0  # failures since the last line
        self._lines = 0  # lines logged since the last success
        self._next_at = 0.0

    def failed(self, exc: BaseException) -> None:
        """Call from the loop's `except`: logs now or only counts."""
        self.count += 1
        self._unlogged += 1
        now = self.clock()
        if self.count == 1:
            self.log.error("%s failed: %s%s", self.what, _brief(exc), self.hint,
                           exc_info=exc if self.traceback else None)
        elif now >= self._next_at:
            self.log.error("%s still failing: %d more failure(s) since the last report, %d in a row; last: %s",
                           self.what, self._unlogged, self.count, _brief(exc))
        else:
            return
        self._unlogged = 0
        self._lines += 1
        self._next_at = now + self.pace.delay(self._lines)

    def succeeded(self) -> None:
        """Call after a success: logs the recovery once, when there were failures."""
        if self.count:
            self.log.warning("%s recovered after %d failure(s)", self.what, self.count)
        self.count = self._unlogged = self._lines = 0


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
