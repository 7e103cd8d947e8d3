"""Scores of a recovered graph against the truth, shared by bench/graph_accuracy.py and the
framework suite (tests/graph_e2e/frameworks.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any


def ari(a: list[str], b: list[str]) -> float:
    """Adjusted Rand index of two labelings of the same items (1.0: the same grouping)."""

    def pairs(n: int) -> float:
        return n * (n - 1) / 2

    table = Counter(zip(a, b, strict=True))
    rows, cols = Counter(a), Counter(b)
    index = sum(pairs(n) for n in table.values())
    sum_rows = sum(pairs(n) for n in rows.values())
    sum_cols = sum(pairs(n) for n in cols.values())
    expected = sum_rows * sum_cols / pairs(len(a)) if len(a) > 1 else 0.0
    top = (sum_rows + sum_cols) / 2
    return 1.0 if top == expected else (index - expected) / (top - expected)


def prf(found: set[Any], truth: set[Any]) -> tuple[float, float, float]:
    """Precision, recall and F1 of a found set against the true one."""
    tp = len(found & truth)
    p = tp / len(found) if found else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)
