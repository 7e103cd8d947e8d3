"""Backoff: the one schedule of waits between retries — exponential, capped, optionally jittered.

    Backoff(first_s, max_s, jitter).delay(n)  the wait before retry n (n >= 1):
                                               first_s * 2**(n-1), at most max_s, times a random
                                               factor in [1 - jitter, 1 + jitter]

Used wherever something is tried again: the escalation service's store steps
(escalation/service.py), webhook deliveries (escalation/notify.py, a route's `backoff:`) and the
writer's sink after a failed batch (store/writer.py, jittered so replicas do not retry in step).
Each loop keeps its own control flow (raise, answer, or schedule); the schedule is this.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

_MAX_DOUBLINGS = 64  # 2**64 times any first_s is past every cap; keeps the float finite


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float
    max_s: float = math.inf
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.first_s < 0 or self.max_s < 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"backoff: first_s and max_s must be >= 0 and jitter in [0, 1), got {self}")

    def delay(self, n: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait before retry `n` (the first retry is 1)."""
        wait = min(self.first_s * 2.0 ** min(max(n - 1, 0), _MAX_DOUBLINGS), self.max_s)
        return wait * uniform(1.0 - self.jitter, 1.0 + self.jitter) if self.jitter else wait
