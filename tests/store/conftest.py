"""Engines for store tests: a migrated SQLite file, and a migrated PostgreSQL schema of its own
(skipped when PostgreSQL is absent, failing when CI=true)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from proxy.store.db import make_engine, upgrade_engine
from tests.services import postgres_url


@contextlib.asynccontextmanager
async def sqlite_database(directory: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite:///{directory / 'interlock.db'}")
    try:
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[AsyncEngine]:
    """An engine whose connections live in a fresh schema (search_path), dropped afterwards."""
    url = postgres_url()
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    admin = make_engine(url, poolclass=NullPool)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, connect_args={"server_settings": {"search_path": schema}})
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated database on each backend."""
    database = sqlite_database(tmp_path) if request.param == "sqlite" else pg_database()
    async with database as engine:
        await upgrade_engine(engine)
        yield engine


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite file database."""
    async with sqlite_database(tmp_path) as engine:
        await upgrade_engine(engine)
        yield engine


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine_pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two migrated databases on each backend, to compare two ways of writing the same rows."""

    def database(n: int) -> contextlib.AbstractAsyncContextManager[AsyncEngine]:
        if request.param == "postgresql":
            return pg_database()
        (tmp_path / f"db{n}").mkdir()
        return sqlite_database(tmp_path / f"db{n}")

    async with database(1) as first, database(2) as second:
        await upgrade_engine(first)
        await upgrade_engine(second)
        yield first, second
