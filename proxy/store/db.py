"""Database access: the async engine, Alembic migrations run in-process, and the SQL sink.

    make_engine(url)        ─▶ AsyncEngine (SQLite: WAL, busy_timeout; PostgreSQL: pre-ping)
    upgrade(url)            ─▶ alembic upgrade head, blocking (CLI; asyncio.to_thread in the app)
    upgrade_engine(engine)  ─▶ the same on an engine's connection, awaited in the running loop
    SqlSink(engine)         ─▶ RowSink: one transaction per batch, dialect-native idempotent upserts;
                               rows sharing a key are folded first (proxy/store/coalesce.py); each
                               statement is compiled once and fed positional tuples (_Prepared);
                               PostgreSQL: calls and guard events by binary COPY (_Copy), the
                               batch redone with ON CONFLICT inserts when an id already exists

Everything here runs in background tasks or at start-up, never on the request path.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, make_url
from sqlalchemy.engine.interfaces import BindTyping
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.compiler import SQLCompiler

from proxy.store.coalesce import (
    COALESCE,
    GREATEST,
    LEAST,
    NEW,
    NEWER,
    UPSERTS,
    Upsert,
    coalesce,
    merge_call_updates,
)
from proxy.store.models import TABLES
from proxy.store.rows import CALL_UPDATE_COLUMNS, TABLE_ORDER, Record, Row
from proxy.store.writer import RecordRejected

SQLITE_BUSY_MS = 5000
COPY_MIN_ROWS = 16  # below this, a COPY's extra round trips cost more than the INSERTs it saves
# Upsert conflict targets; calls and guard_events are insert-only (ON CONFLICT DO NOTHING).
_CONFLICT_KEYS: dict[str, tuple[str, ...]] = {name: u.conflict for name, u in UPSERTS.items()}
_TABLES_OF = operator.attrgetter(*TABLE_ORDER)  # record ─▶ its row lists, in TABLE_ORDER


def database_failure(exc: BaseException) -> str | None:
    """Why the database could not be used, in one line, when `exc` is such a failure (cannot
    connect, cannot open the file, not migrated); None for anything else."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return "the database has no Interlock tables yet; run `interlock db upgrade` first"
    if isinstance(exc, sa.exc.SQLAlchemyError | OSError | TimeoutError) or type(exc).__module__.startswith("asyncpg"):
        return f"cannot use the database ({type(inner).__name__}: {text})"
    return None


def async_url(url: str) -> str:
    """`url` with an async driver: sqlite → sqlite+aiosqlite, postgresql → postgresql+asyncpg."""
    scheme, sep, rest = url.partition("://")
    drivers = {
        "sqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
    }
    return drivers.get(scheme, scheme) + sep + rest


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """The one AsyncEngine for `url` (sync drivers in the URL are swapped for async ones).
    Called at start-up; does not connect yet.  Extra keyword arguments go to SQLAlchemy."""
    url = async_url(url)
    kwargs.setdefault("json_serializer", lambda obj: orjson.dumps(obj).decode())
    kwargs.setdefault("json_deserializer", orjson.loads)
    if make_url(url).get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)
    kwargs["connect_args"] = {"check_same_thread": False, **kwargs.get("connect_args", {})}
    if make_url(url).database in (None, "", ":memory:"):
        kwargs.setdefault("poolclass", StaticPool)  # one shared in-memory database
    engine = create_async_engine(url, **kwargs)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={SQLITE_BUSY_MS}"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


# migrations ---------------------------------------------------------------------------------


def migrations_dir() -> Path:
    """The Alembic script directory: `migrations/` at the repository root (beside `proxy/`),
    else `./migrations` (an image or install that copied it next to the working directory)."""
    candidates = [Path(__file__).resolve().parents[2] / "migrations", Path.cwd() / "migrations"]
    for path in candidates:
        if (path / "env.py").is_file():
            return path
    raise FileNotFoundError(f"Alembic migrations not found; looked in {', '.join(map(str, candidates))}")


def alembic_config(url: str | None = None, *, script_location: Path | None = None) -> Config:
    """An Alembic Config without an ini file (so the application's logging is left alone)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location or migrations_dir()))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`.  Blocking, with its own event loop: call it from the
    CLI, or as `await asyncio.to_thread(upgrade, url)` from a running application."""
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """`alembic check`, blocking: raise alembic.util.AutogenerateDiffsDetected if the models
    and the migrated database disagree."""
    command.check(alembic_config(url))


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """`upgrade` on one of `engine`'s connections, inside the running loop (connect_args such
    as a PostgreSQL search_path apply).  Raises on failure."""
    await _with_alembic(engine, lambda cfg: command.upgrade(cfg, revision))


async def downgrade_engine(engine: AsyncEngine, revision: str) -> None:
    """Revert migrations down to `revision` (e.g. "base") on `engine`."""
    await _with_alembic(engine, lambda cfg: command.downgrade(cfg, revision))


async def check_engine(engine: AsyncEngine) -> None:
    """`check` on `engine`."""
    await _with_alembic(engine, command.check)


async def _with_alembic(engine: AsyncEngine, run: Callable[[Config], Any]) -> None:
    cfg = alembic_config()
    async with engine.begin() as conn:
        await conn.run_sync(_run_on, cfg, run)


def _run_on(connection: Connection, cfg: Config, run: Callable[[Config], Any]) -> None:
    cfg.attributes["connection"] = connection  # migrations/env.py uses it instead of connecting
    run(cfg)


# the SQL sink --------------------------------------------------------------------------------


class SqlSink:
    """RowSink over an AsyncEngine.  `write` runs in the writer's background task: one
    transaction per batch; inserts ignore known ids, upserts merge (min/max/newest), so a batch
    written twice leaves the database as written once.  Raises on database errors; raises
    RecordRejected, after writing the rest, when single records are bad data.

    `fast` (the default) sends each statement as SQL compiled once plus positional tuples the
    dialect's bind processors made (`_Prepared`), skipping SQLAlchemy's per-row parameter work;
    fast=False keeps `Connection.execute` with dict rows (the reference the tests compare to).

    `copy_min_rows` (PostgreSQL, fast only; 0 turns it off): a batch with at least that many
    calls or guard-event rows sends them by COPY into the table itself.  COPY cannot skip
    known ids, so a replayed id fails the COPY and the whole batch is rolled back and redone
    with the ON CONFLICT statements (replays are rare: recovery after a crash)."""

    def __init__(self, engine: AsyncEngine, *, fast: bool = True, copy_min_rows: int = COPY_MIN_ROWS) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._statements: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._fast = fast and not engine.get_execution_options().get("schema_translate_map")
        # (table, keys, executemany?) ─▶ the compiled form; None: Connection.execute handles it
        self._prepared: dict[tuple[str, tuple[str, ...], bool], _Prepared | None] = {}
        pg = engine.dialect.name == "postgresql"
        self._copy_min = copy_min_rows if self._fast and pg and copy_min_rows > 0 else 0
        self._copiers = {name: _Copy(TABLES[name], engine.dialect) for name in _COPIED} if self._copy_min else {}

    async def write(self, batch: Sequence[Record]) -> None:
        """Write `batch` atomically; on a data error, write record by record and reject the bad."""
        try:
            try:
                async with self._engine.begin() as conn:
                    await self._apply(conn, batch, copy=bool(self._copy_min))
            except _Replayed:
                async with self._engine.begin() as conn:
                    await self._apply(conn, batch)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            await self._isolate(batch, exc)

    async def _isolate(self, batch: Sequence[Record], cause: Exception) -> None:
        rejected: list[Record] = []
        for record in batch:
            try:
                async with self._engine.begin() as conn:
                    await self._apply(conn, [record])
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                rejected.append(record)
        if rejected:
            raise RecordRejected(rejected, cause)

    async def _apply(self, conn: AsyncConnection, batch: Sequence[Record], copy: bool = False) -> None:
        # All of a table's rows go before the next table's (TABLE_ORDER), as they always have:
        # runs rows of a batch are upserted before its run_merges delete merged runs.
        if not batch:
            return
        by_table = zip(*map(_TABLES_OF, batch), strict=True)  # per table: each record's row list
        for table, lists in zip(TABLE_ORDER, by_table, strict=True):
            rows = [row for rows in lists for row in rows]
            if rows and table == "call_updates":
                await self._update_calls(conn, rows)
            elif rows and table == "run_merges":
                await self._merge_runs(conn, rows)
            elif copy and table in self._copiers and len(rows) >= self._copy_min:
                (wave,) = coalesce(table, rows)  # insert-only: one wave, distinct ids
                await self._copy(conn, table, wave)
            elif rows:
                # One wave unless a key's rows cannot be folded (coalesce.py); keys keep
                # their first-arrival order.
                for wave in coalesce(table, rows):
                    for keys, group in _by_keys(wave):
                        await self._execute(conn, table, keys, group)

    async def _execute(
        self, conn: AsyncConnection, table: str, keys: tuple[str, ...], rows: list[Row]
    ) -> None:
        """`table`'s statement for `rows` (all with exactly `keys`; "call_updates": the UPDATE),
        through its `_Prepared` form when it has one, else `Connection.execute` as before."""
        many = len(rows) > 1
        slot = (table, keys, many)
        if slot in self._prepared:
            prepared = self._prepared[slot]
        else:
            prepared = self._prepared[slot] = self._prepare(table, keys, many) if self._fast else None
        if prepared is None:
            await conn.execute(self._generic(table, keys), _generic_params(table, rows))
            return
        try:
            params = prepared.bind(rows)
        except Exception as exc:
            # What SQLAlchemy raises when a bind processor fails (Connection._handle_dbapi_exception
            # before a context exists): a StatementError, so is_data_error rejects the record.
            raise DBAPIError.instance(
                prepared.sql, _generic_params(table, rows), exc, conn.dialect.loaded_dbapi.Error,
                hide_parameters=self._engine.sync_engine.hide_parameters, dialect=conn.dialect, ismulti=False,
            ) from exc  # fmt: skip
        await conn.exec_driver_sql(prepared.sql, params)

    async def _copy(self, conn: AsyncConnection, table: str, rows: list[Row]) -> None:
        """`rows` into `table` by binary COPY, inside the batch's transaction.  Raises _Replayed
        when an id is already stored; other database errors carry their SQLSTATE (is_data_error)."""
        copier = self._copiers[table]
        try:
            records = copier.bind(rows)
        except Exception as exc:  # the bind processors' errors, as _execute raises them
            raise DBAPIError.instance(
                f"COPY {table}", _generic_params(table, rows), exc, conn.dialect.loaded_dbapi.Error,
                hide_parameters=self._engine.sync_engine.hide_parameters, dialect=conn.dialect, ismulti=True,
            ) from exc  # fmt: skip
        # The asyncpg adapter opens its transaction lazily, at the first statement: start it.
        await conn.exec_driver_sql("SELECT 1")
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None  # a checked-out connection always has one
        try:
            await driver.copy_records_to_table(table, records=records, columns=copier.columns)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) == _UNIQUE_VIOLATION:
                raise _Replayed from exc
            raise

    def _generic(self, table: str, keys: tuple[str, ...]) -> Any:
        return self._update_statement(keys) if table == "call_updates" else self._statement(table, keys)

    def _prepare(self, table: str, keys: tuple[str, ...], many: bool) -> _Prepared | None:
        """The compiled form of `table`'s statement for rows with `keys`; None when it has none
        or compiling fails (`Connection.execute` then does, and raises, exactly as before)."""
        params = {f"u_{k}": k for k in keys} if table == "call_updates" else {k: k for k in keys}
        try:
            return _Prepared.compile(self._generic(table, keys), self._engine.dialect, params, many)
        except Exception:
            return None

    def _statement(self, table: str, keys: tuple[str, ...]) -> Any:
        stmt = self._statements.get((table, keys))
        if stmt is None:
            stmt = self._statements[(table, keys)] = self._build(table, keys)
        return stmt

    def _build(self, table: str, keys: tuple[str, ...]) -> Any:
        t = TABLES[table]
        stmt = self._insert(t)
        conflict = _CONFLICT_KEYS[table]
        if table in ("calls", "guard_events"):
            return stmt.on_conflict_do_nothing(index_elements=list(conflict))
        merge = _MERGES[table](t, stmt.excluded)
        set_ = {k: v for k, v in merge.items() if k in keys and k not in conflict}
        if not set_:
            return stmt.on_conflict_do_nothing(index_elements=list(conflict))
        return stmt.on_conflict_do_update(index_elements=list(conflict), set_=set_)

    async def _merge_runs(self, conn: AsyncConnection, rows: list[Row]) -> None:
        """Idempotent: moving an already-moved run touches no row."""
        for row in rows:
            old, new = str(row["from"]), str(row["into"])
            for name in ("calls", "edges", "guard_events"):
                t = TABLES[name]
                await conn.execute(sa.update(t).where(t.c.run_id == old).values(run_id=new))
            runs = TABLES["runs"]
            await conn.execute(sa.delete(runs).where(runs.c.id == old))

    async def _update_calls(self, conn: AsyncConnection, rows: list[Row]) -> None:
        """One UPDATE per column set: rows for one call are folded first (later values win)."""
        groups: dict[tuple[str, ...], list[Row]] = {}
        for keys, group in _by_keys(merge_call_updates(rows)):
            groups.setdefault(keys, []).extend(group)  # distinct ids: their order is irrelevant
        for keys, group in groups.items():
            await self._execute(conn, "call_updates", keys, group)

    def _update_statement(self, keys: tuple[str, ...]) -> Any:
        stmt = self._statements.get(("call_updates", keys))
        if stmt is not None:
            return stmt
        columns = [k for k in keys if k != "id"]
        unknown = set(columns) - CALL_UPDATE_COLUMNS
        if unknown or "id" not in keys:
            raise ValueError(
                f"call_updates rows need id and only {sorted(CALL_UPDATE_COLUMNS)}: {sorted(keys)}"
            )
        calls = TABLES["calls"]
        stmt = self._statements[("call_updates", keys)] = (
            sa.update(calls)
            .where(calls.c.id == sa.bindparam("u_id"))
            .values({c: sa.bindparam(f"u_{c}", type_=calls.c[c].type) for c in columns})
        )
        return stmt


def is_data_error(exc: BaseException) -> bool:
    """True when retrying cannot help: the data is bad (constraint, value, encoding), as
    opposed to the database being down, slow, locked or not migrated yet."""
    if isinstance(exc, IntegrityError | DataError | ValueError | TypeError | KeyError):
        return True
    state = getattr(exc, "sqlstate", None)
    if type(exc).__module__.startswith("asyncpg") and isinstance(state, str):
        return state[:2] in ("22", "23")  # raised by COPY, not through SQLAlchemy
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(code, str):
            return code[:2] in ("22", "23")  # data exception, integrity constraint violation
        return isinstance(getattr(exc.orig, "__cause__", None), ValueError)  # asyncpg's client-side DataError
    return isinstance(exc, StatementError)  # failed while binding parameters, before the database


def _greatest(a: Any, b: Any) -> Any:
    return sa.case((a > b, a), else_=sa.func.coalesce(b, a))


def _least(a: Any, b: Any) -> Any:
    return sa.case((a < b, a), else_=sa.func.coalesce(b, a))


def _merge_sql(upsert: Upsert, t: sa.Table, new: Any) -> dict[str, Any]:
    """The SET clauses for `upsert.merges` (coalesce.py folds rows with the same rules)."""
    out: dict[str, Any] = {}
    for c, merge in upsert.merges.items():
        if merge == COALESCE:
            out[c] = sa.func.coalesce(new[c], t.c[c])
        elif merge == GREATEST:
            out[c] = _greatest(new[c], t.c[c])
        elif merge == LEAST:
            out[c] = _least(new[c], t.c[c])
        elif merge == NEW:
            out[c] = new[c]
        elif merge == NEWER:
            by = upsert.newer_by
            assert by is not None
            out[c] = sa.case((new[by] >= t.c[by], new[c]), else_=t.c[c])
        else:
            raise ValueError(f"unknown merge {merge!r} for {t.name}.{c}")
    return out


def _merges(upsert: Upsert) -> Callable[[sa.Table, Any], dict[str, Any]]:
    return lambda t, new: _merge_sql(upsert, t, new)


# Upsert merges (coalesce.UPSERTS): counters are absolute totals, so max() makes replays and
# reordering harmless.
_MERGES: dict[str, Callable[[sa.Table, Any], dict[str, Any]]] = {
    name: _merges(upsert) for name, upsert in UPSERTS.items() if upsert.merges
}


def _by_keys(rows: Iterable[Row]) -> Iterable[tuple[tuple[str, ...], list[Row]]]:
    """Consecutive runs of rows with the same columns (one executemany each), order kept."""
    sorted_keys: dict[tuple[str, ...], tuple[str, ...]] = {}

    def columns(row: Row) -> tuple[str, ...]:
        keys = tuple(row)
        found = sorted_keys.get(keys)
        if found is None:
            found = sorted_keys[keys] = tuple(sorted(keys))
        return found

    for keys, group in itertools.groupby(rows, key=columns):
        yield keys, list(group)


def _generic_params(table: str, rows: list[Row]) -> list[Row]:
    """`rows` as `Connection.execute` takes them: call_updates bind `u_<column>` (the UPDATE's
    SET and WHERE name the same columns)."""
    if table == "call_updates":
        return [{f"u_{k}": v for k, v in row.items()} for row in rows]
    return rows


Processor = Callable[[Any], Any]
_COPIED = ("calls", "guard_events")  # insert-only tables: COPY or ON CONFLICT DO NOTHING
_UNIQUE_VIOLATION = "23505"


class _Replayed(Exception):
    """A COPY met an id already stored: the batch is redone with ON CONFLICT inserts."""


class _Copy:
    """One table's rows as the tuples asyncpg's binary COPY takes: every column, in table
    order, each present value through the column type's bind processor (what `_Prepared`
    and `Connection.execute` send); an absent key is SQL NULL, as an INSERT without that
    column stores (the recorded tables have no server defaults)."""

    def __init__(self, table: sa.Table, dialect: Dialect) -> None:
        self.columns = [c.name for c in table.columns]
        self._processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns]

    def bind(self, rows: list[Row]) -> list[tuple[Any, ...]]:
        columns = []
        for name, process in zip(self.columns, self._processors, strict=True):
            if process is None:
                columns.append([row.get(name) for row in rows])
            else:
                columns.append([process(row[name]) if name in row else None for row in rows])
        return list(zip(*columns, strict=True))


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A statement compiled once, as `Connection.execute(stmt, rows)` compiles it, and what
    that does per row reduced to its result: for each positional parameter, the row's value
    run through the dialect's bind processor (None is processed too: JSON binds it as 'null').
    `Connection.exec_driver_sql(sql, tuples)` then sends the same SQL and values to the same
    DBAPI execute/executemany, without the per-row dicts, lookups and calls in between."""

    sql: str
    slots: tuple[tuple[Callable[[Row], Any], Processor | None], ...]  # (row ─▶ value, processor)

    @classmethod
    def compile(cls, stmt: Any, dialect: Dialect, params: Mapping[str, str], many: bool) -> _Prepared | None:
        """`stmt` compiled for rows whose key `params[name]` binds parameter `name`; None when
        some parameter is not such a plain value or SQLAlchemy would do more than bind them
        (named paramstyles, expanding/literal parameters, Python-side defaults, RETURNING,
        insertmanyvalues batching, setinputsizes, escaped names)."""
        compiled = stmt.compile(dialect=dialect, column_keys=sorted(params), for_executemany=many)
        if (
            not isinstance(compiled, SQLCompiler)
            or not compiled.positional
            or not compiled.positiontup
            or compiled.escaped_bind_names
            or compiled.literal_execute_params
            or compiled.post_compile_params
            or compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.effective_returning
            or compiled._insertmanyvalues is not None
            or compiled.schema_translate_map
            or dialect.bind_typing is BindTyping.SETINPUTSIZES
        ):
            return None
        processors = compiled._bind_processors
        slots = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            key = params.get(bind.key) or params.get(name)  # construct_params' lookup order
            process = processors.get(name)
            if key is None or not (process is None or callable(process)):  # a tuple: tuple_() types
                return None
            slots.append((operator.itemgetter(key), process))
        return cls(compiled.string, tuple(slots))

    def bind(self, rows: list[Row]) -> list[tuple[Any, ...]]:
        """The DBAPI parameters for `rows`, built a column at a time (map loops in C)."""
        columns = [
            list(map(get, rows)) if process is None else list(map(process, map(get, rows)))
            for get, process in self.slots
        ]
        return list(zip(*columns, strict=True))
