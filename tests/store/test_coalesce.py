"""coalesce(): rows sharing a conflict key folded in Python with the SQL merges' semantics.

Against the databases: tests/store/test_sql_sink.py.  Here, pure: what is folded, what is
left alone, and a model of the SQL upserts (including rows the databases would refuse for a
missing NOT NULL column, which the folding must still treat exactly)."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from proxy.store.coalesce import (
    COALESCE,
    GREATEST,
    LEAST,
    NEW,
    NEWER,
    UPSERTS,
    _timestamp,
    coalesce,
    merge_call_updates,
)
from proxy.store.models import TABLES, UtcDateTime

Row = dict[str, Any]


def run(last_at: float, calls: int, status: str = "open", **extra: Any) -> Row:
    return {"id": "run-1", "started_at": 100.0, "last_at": last_at, "status": status, "calls": calls,
            "agents": ["a"], "tokens": calls * 7, "cost_usd": calls * 0.01, "flags": []} | extra  # fmt: skip


def test_growing_totals_fold_into_one_row_and_the_input_is_left_alone() -> None:
    rows = [run(100.0 + i, i, status="closed" if i == 9 else "open") for i in range(10)]
    before = copy.deepcopy(rows)
    assert coalesce("runs", rows) == [[rows[-1]]]
    assert rows == before


def test_newer_status_comes_from_the_row_with_the_latest_last_at_and_a_tie_takes_the_later() -> None:
    (wave,) = coalesce("runs", [run(200.0, 5, "closed"), run(150.0, 3, "open")])
    assert wave == [run(200.0, 5, "closed")]
    (wave,) = coalesce("runs", [run(200.0, 5, "open"), run(200.0, 4, "closed")])
    assert wave == [run(200.0, 5, "closed")]
    # 200.0000004 binds as 200.000000: the database sees a tie, so the later row's status wins
    (wave,) = coalesce("runs", [run(200.0000004, 5, "open"), run(200.0, 4, "closed")])
    assert (wave[0]["status"], wave[0]["last_at"]) == ("closed", 200.0000004)


def test_insert_only_tables_keep_the_first_row_per_id() -> None:
    first, second = {"id": "c1", "agent": "a"}, {"id": "c1", "agent": "b"}
    assert coalesce("calls", [first, {"id": "c2"}, second]) == [[first, {"id": "c2"}]]


def test_keys_keep_their_first_arrival_order() -> None:
    rows = [run(1.0, 1, id="b"), run(1.0, 1, id="a"), run(2.0, 2, id="b")]
    assert [r["id"] for r in coalesce("runs", rows)[0]] == ["b", "a"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (run(1.0, 1), run(2.0, 2) | {"calls": "2"}),  # a str count: SQLite would compare it as a number
        (run(1.0, 1), run(2.0, 2, cost_usd=float("nan"))),  # SQLite binds NaN as NULL
        (run(1.0, 1), run(2.0, 2) | {"last_at": True}),  # bool: not a timestamp
        (run(1.0, 1), {k: v for k, v in run(2.0, 2).items() if k != "status"}),  # status kept by `a` only
    ],
)
def test_rows_python_cannot_fold_exactly_stay_apart_in_order(first: Row, second: Row) -> None:
    assert coalesce("runs", [first, second]) == [[first], [second]]


def test_an_edge_column_kept_on_conflict_that_only_the_later_row_has_is_not_folded() -> None:
    edge = {"source_call_id": "a", "target_call_id": "b", "kind": "handoff", "evidence": {}}
    first, second = edge | {"run_id": "r1"}, edge | {"created_at": 5.0}
    assert coalesce("edges", [first, second]) == [[first], [second]]
    assert coalesce("edges", [second, first]) == [[second | {"run_id": "r1"}]]


def test_a_row_without_its_conflict_key_raises_key_error() -> None:
    with pytest.raises(KeyError):
        coalesce("agents", [{"fingerprint": "x"}])


def test_call_updates_fold_per_id_later_values_winning() -> None:
    rows = [{"id": "a", "run_id": "r1", "flags": ["x"]}, {"id": "b", "depth": 1}, {"id": "a", "run_id": "r2"}]
    assert merge_call_updates(rows) == [{"id": "a", "run_id": "r2", "flags": ["x"]}, {"id": "b", "depth": 1}]
    assert rows[0] == {"id": "a", "run_id": "r1", "flags": ["x"]}
    with pytest.raises(ValueError):
        merge_call_updates([{"run_id": "r1"}])


# a model of the SQL upserts (proxy/store/db.py _merge_sql), applied one row at a time ----------


def _bound(table: str, column: str, value: Any) -> Any:
    """What the database holds for `value` (timestamps at microsecond precision)."""
    if value is not None and isinstance(TABLES[table].c[column].type, UtcDateTime):
        return _timestamp(value)
    return value


def upsert(table: str, row: Row, stored: Row | None) -> Row:
    """The stored row after `INSERT row ON CONFLICT DO UPDATE SET <merges of row's columns>`."""
    columns = [c.name for c in TABLES[table].columns if c.name != "id" or table != "edges"]
    new = {c: _bound(table, c, row.get(c)) for c in columns}  # `excluded`: absent columns are NULL
    if stored is None:
        return new
    spec, out = UPSERTS[table], dict(stored)
    for c in row:
        merge, n, o = spec.merges.get(c), new[c], stored[c]
        if merge == COALESCE:
            out[c] = n if n is not None else o
        elif merge in (GREATEST, LEAST):
            beats = n is not None and o is not None and (n > o if merge == GREATEST else n < o)
            out[c] = n if beats else (o if o is not None else n)
        elif merge == NEW:
            out[c] = n
        elif merge == NEWER:
            by = spec.newer_by
            assert by is not None
            newer = new[by] is not None and stored[by] is not None and new[by] >= stored[by]
            out[c] = n if newer else o
    return out


TIMES = (99.0, 100.0, 100.0000004, 100.0000006, 101.0, None)


def random_row(rng: random.Random, table: str, *, complete: bool) -> Row:
    """A row for the one key of `table`; unless `complete`, any column may be NULL or absent."""
    values: dict[str, tuple[Any, ...]] = {
        "agents": ("fp1", "fp2", "Planner", None),
        "runs": ("open", "closed", ["a"], ["a", "b"], None),
        "edges": ("r1", "r2", {"c": 1}, {"c": 2}, None),
    }[table]
    row: Row = {}
    for col in TABLES[table].columns:
        name = col.name
        if name in UPSERTS[table].conflict:
            row[name] = "k"
            continue
        if table == "edges" and name == "id":
            continue
        if isinstance(col.type, UtcDateTime):
            choices: tuple[Any, ...] = TIMES
        elif name in ("calls", "tokens"):
            choices = (0, 1, 2, None)
        elif name == "cost_usd":
            choices = (0.0, 0.5, 1, None)
        else:
            choices = values
        value = rng.choice(choices)
        if complete and value is None:
            value = next(v for v in choices if v is not None)
        if complete or rng.random() > 0.25:
            row[name] = value
    return row


@pytest.mark.parametrize("table", ["agents", "runs", "edges"])
@pytest.mark.parametrize("stored", ["absent", "present"])
def test_folding_matches_the_model_of_sequential_upserts(table: str, stored: str) -> None:
    rng = random.Random(f"{table}-{stored}")
    folded_pairs = 0
    for _ in range(3000):
        complete = stored == "absent"  # an incomplete first row would fail on insert
        rows = [random_row(rng, table, complete=complete) for _ in range(rng.randint(1, 5))]
        state = None if stored == "absent" else upsert(table, random_row(rng, table, complete=True), None)
        expected = state
        for row in rows:
            expected = upsert(table, row, expected)
        got = state
        waves = coalesce(table, rows)
        for wave in waves:
            (row,) = wave
            got = upsert(table, row, got)
        assert got == expected, (rows, state, waves)
        folded_pairs += len(rows) - len(waves)
    assert folded_pairs > 2000  # most sequences do fold
