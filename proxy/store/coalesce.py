"""Coalescing a batch's rows in Python before they reach SQL: pure functions, no I/O.

The pipeline emits, per call, an `agents` row and a `runs` row holding absolute running totals,
so a batch carries many rows for one key.  `coalesce(table, rows)` folds rows that share a
conflict key into one row whose single upsert leaves the database exactly as upserting the rows
one after another would, whether or not the key already exists in the database:

    UPSERTS  ─▶ SqlSink builds the ON CONFLICT ... DO UPDATE SET clauses from it (proxy/store/db.py)
             ─▶ coalesce() applies the same merges to pairs of rows, in arrival order

Merges (new = the incoming row, old = the stored one; NULL = a missing key or None):

    COALESCE  coalesce(new, old)
    GREATEST  old if new is NULL, new if old is NULL, else max (a tie keeps old)
    LEAST     the same with min
    NEW       new, even NULL
    NEWER     new if new[by] >= old[by] else old (NULL compares false: old); `by` is `newer_by`
    (none)    not updated on conflict: the first insert's value stays (conflict keys, created_at)

Why folding `a` then `b` into `c` is exact (S = the stored row, if any; f = a column's merge):
COALESCE, GREATEST, LEAST and NEW are associative with NULL as identity, so
f(b, f(a, S)) = f(f(b, a), S), and on an absent key inserting `a` then merging `b` gives
f(b, a) = c; ties resolve towards the older value on both sides.  A column only `a` has is
untouched by `b`'s upsert: c keeps a's value.  A column only `b` has is NULL after `a`'s insert
(none of these tables has column defaults; a column with one is not folded) and f(b, NULL) = b:
c takes b's value.  An unmerged column only `b` has would stay NULL after `a`'s insert, so such
rows are not folded.  NEWER columns depend on `by` as well as on the column, and `c` has a single
`by` (the greatest): a column both rows carry comes from the newer row (a tie: `b`), which
matches sequential upserts for any stored `by`; a column only one row carries is folded only when
that row's `by` is the greatest (otherwise the pair is kept as two rows).

Comparisons follow the database: timestamps are compared as the microsecond-precision UTC
datetimes `UtcDateTime` binds, numbers as int (BigInteger) or float (Double); a value of another
type, NaN or out of range keeps the pair unfolded (it then goes through SQL as two statements,
as before).  A key that cannot be folded keeps several rows; `coalesce` returns them as waves
(the n-th row of each key in wave n) so no statement holds a key twice.  The guarantee is for
batches the database accepts: when sequential upserts would fail on a value a later row
supersedes (a too-long string, a NULL in a NOT NULL column), the folded row may be accepted.
A unique constraint across keys (agents.fingerprint) sees each key's folded row, written in
first-arrival order, not every intermediate state (the per-wave writes before did not either).

`calls` and `guard_events` are insert-only (ON CONFLICT DO NOTHING): the first row for an id
wins.  `merge_call_updates` folds UPDATE rows for one call id (later values win, per column).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from proxy.store.models import TABLES, UtcDateTime

Row = dict[str, Any]

COALESCE, GREATEST, LEAST, NEW, NEWER = "coalesce", "greatest", "least", "new", "newer"


@dataclass(frozen=True, slots=True)
class Upsert:
    """How rows of one table merge into a stored row with the same conflict key."""

    conflict: tuple[str, ...]
    merges: Mapping[str, str] = field(default_factory=dict)  # column → merge; others kept on conflict
    newer_by: str | None = None  # the column NEWER merges compare


# Counters are absolute totals, so max() makes replays and reordering harmless.
UPSERTS: Mapping[str, Upsert] = {
    "calls": Upsert(("id",)),  # insert-only
    "guard_events": Upsert(("id",)),  # insert-only
    "edges": Upsert(("source_call_id", "target_call_id", "kind"), {"run_id": COALESCE, "evidence": NEW}),
    "agents": Upsert(
        ("name",),
        {
            "fingerprint": COALESCE,
            "display_name": COALESCE,
            "first_seen": LEAST,
            "last_seen": GREATEST,
            "calls": GREATEST,
            "tokens": GREATEST,
        },
    ),
    "runs": Upsert(
        ("id",),
        {
            "started_at": LEAST,
            "last_at": GREATEST,
            "calls": GREATEST,
            "tokens": GREATEST,
            "cost_usd": GREATEST,
            "status": NEWER,
            "agents": NEWER,
            "flags": NEWER,
        },
        newer_by="last_at",
    ),
}


class _Incomparable(Exception):  # noqa: N818 - control flow inside this module only
    """A value Python cannot compare the way the database would."""


_MISSING = object()
_INT64 = (-(2**63), 2**63)
_UTC = UtcDateTime()
_ROUNDING = 2e-6  # seconds: bound timestamps are rounded to the microsecond (±0.5 µs each)

Compare = Callable[[Any, Any], int]  # -1, 0, 1 as the database orders the bound values


def _sign(x: Any, y: Any) -> int:
    return (x > y) - (x < y)


def _compare_ints(x: Any, y: Any) -> int:
    if type(x) is int and type(y) is int and _INT64[0] <= x < _INT64[1] and _INT64[0] <= y < _INT64[1]:
        return (x > y) - (x < y)
    raise _Incomparable  # bool, float, str...: left to the database


def _float(v: Any) -> float:
    if type(v) is float:
        if math.isnan(v):  # SQLite binds NaN as NULL; PostgreSQL sorts it above everything
            raise _Incomparable
        return v
    if type(v) is int:
        return float(v)  # REAL affinity / float8: compared as a double
    raise _Incomparable


def _compare_floats(x: Any, y: Any) -> int:
    if type(x) is float and type(y) is float and x == x and y == y:  # not NaN
        return (x > y) - (x < y)
    return _sign(_float(x), _float(y))


def _timestamp(v: Any) -> Any:
    if type(v) is bool:
        raise _Incomparable
    try:
        return _UTC.process_bind_param(v, None)  # type: ignore[arg-type]  # the value that is bound
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        raise _Incomparable from exc


def _compare_timestamps(x: Any, y: Any) -> int:
    if type(x) is float and type(y) is float:  # epoch seconds, as rows carry them
        d = x - y
        if d > _ROUNDING:
            return 1
        if d < -_ROUNDING:
            return -1
        if d == 0.0:
            return 0
    return _sign(_timestamp(x), _timestamp(y))  # close (or not floats): compare what is bound


def _comparator(column: sa.Column[Any]) -> Compare:
    kind = column.type
    if isinstance(kind, UtcDateTime):
        return _compare_timestamps
    if isinstance(kind, sa.Integer):
        return _compare_ints
    if isinstance(kind, sa.Float):
        return _compare_floats
    raise TypeError(f"no Python comparison for {column.table.name}.{column.name} ({kind!r})")


class _Folder:
    """The per-table fold, with everything it needs looked up once."""

    def __init__(self, table: str, upsert: Upsert) -> None:
        t = TABLES[table]
        self.conflict = upsert.conflict
        self.insert_only = not upsert.merges
        self.merges = dict(upsert.merges)
        self.newer = tuple(c for c, m in upsert.merges.items() if m == NEWER)
        self.newer_by = upsert.newer_by
        compared = {c for c, m in upsert.merges.items() if m in (GREATEST, LEAST)}
        if self.newer:
            assert self.newer_by is not None, f"{table}: NEWER merges need newer_by"
            compared.add(self.newer_by)
        self.compare = {c: _comparator(t.c[c]) for c in compared}
        self.plan = tuple(
            (c, m, self.compare.get(c, _sign)) for c, m in upsert.merges.items() if m != NEWER
        )  # columns not listed are kept on conflict: `a`'s value stays
        # columns `b` may bring that `a` lacks: merged ones without a default (f(b, NULL) = b)
        self.late_ok = frozenset(
            c.name for c in t.columns
            if c.name in self.merges and c.default is None and c.server_default is None
        )  # fmt: skip

    def key(self, row: Row) -> Any:
        c = self.conflict
        return row[c[0]] if len(c) == 1 else tuple(row[k] for k in c)

    def fold(self, a: Row, b: Row) -> Row | None:
        """The row whose upsert equals upserting `a` then `b`; None when there is none."""
        try:
            return self._fold(a, b)
        except _Incomparable:
            return None

    def _fold(self, a: Row, b: Row) -> Row | None:
        c = dict(a)
        merges = self.merges
        if self.newer:
            by = self.newer_by
            assert by is not None
            va, vb = a.get(by), b.get(by)
            if va is None or vb is None:
                order = None if va is None and vb is None else (1 if va is None else -1)  # NULL < all
            else:
                order = self.compare[by](vb, va)
            b_newer = order is not None and order >= 0  # vb not NULL and vb >= va (or va NULL)
            a_newest = order is None or order <= 0  # vb NULL, or va not NULL and vb <= va
            for x in self.newer:
                if x in b:
                    if x in a:
                        if b_newer:
                            c[x] = b[x]
                    elif b_newer or order is None:
                        c[x] = b[x]
                    else:
                        return None
                elif x in a and not a_newest:
                    return None
        if b.keys() != a.keys():
            for col in b.keys() - a.keys():
                if col not in self.late_ok:
                    return None  # kept on conflict, or has a default: `a`'s insert would not be NULL
                if merges[col] != NEWER:
                    c[col] = b[col]  # f(b, NULL) = b
        for col, merge, compare in self.plan:  # columns both rows carry
            vb = b.get(col, _MISSING)
            if vb is _MISSING or col not in a:
                continue
            if merge == COALESCE:
                if vb is not None:
                    c[col] = vb
            elif merge == NEW:
                c[col] = vb
            elif vb is not None:
                va = a[col]
                if va is None:
                    c[col] = vb
                else:
                    order = compare(vb, va)
                    if order > 0 if merge == GREATEST else order < 0:
                        c[col] = vb
        return c


_FOLDERS: dict[str, _Folder] = {name: _Folder(name, upsert) for name, upsert in UPSERTS.items()}


def coalesce(table: str, rows: Iterable[Row]) -> list[list[Row]]:
    """`rows` of `table` (arrival order) folded per conflict key, as waves: apply wave after
    wave; no wave holds a key twice; keys keep their first-arrival order.  Input rows are never
    modified.  Raises KeyError when a row lacks a conflict key (as the old path did)."""
    folder = _FOLDERS[table]
    key = folder.key
    if folder.insert_only:
        first: dict[Any, Row] = {}
        for row in rows:
            first.setdefault(key(row), row)
        return [list(first.values())] if first else []
    chains: dict[Any, list[Row]] = {}
    fold = folder.fold
    for row in rows:
        k = key(row)
        chain = chains.get(k)
        if chain is None:
            chains[k] = [row]
        else:
            merged = fold(chain[-1], row)
            if merged is None:
                chain.append(row)
            else:
                chain[-1] = merged
    waves: list[list[Row]] = []
    for chain in chains.values():
        for n, row in enumerate(chain):
            if n == len(waves):
                waves.append([])
            waves[n].append(row)
    return waves


def merge_call_updates(rows: Iterable[Row]) -> list[Row]:
    """call_updates rows folded per call id (later values win, per column), in first-arrival
    order.  Raises ValueError for a row without an id."""
    merged: dict[Any, Row] = {}
    for row in rows:
        if "id" not in row:
            raise ValueError(f"call_updates rows need an id: {sorted(row)}")
        prev = merged.get(row["id"])
        merged[row["id"]] = row if prev is None else {**prev, **row}
    return list(merged.values())
