"""Alembic environment for Interlock: the models in proxy.store.models, async drivers, SQLite
batch mode.

Where the database comes from, first match wins:
  1. a connection handed over by proxy.store.db.upgrade() (config.attributes["connection"]);
  2. `alembic -x url=...`;
  3. the `sqlalchemy.url` option (set by proxy.store.db.alembic_config(url));
  4. Interlock's settings: INTERLOCK_DATABASE_URL, interlock.yaml, default ./interlock.db.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from proxy.store.db import async_url, make_engine
from proxy.store.models import Base, UtcDateTime

_MIGRATION_LOCK = 0x1D7E_10C4  # pg advisory lock key: replicas starting together migrate one at a time

config = context.config
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name)  # CLI only: leave an embedding application's logging alone


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from proxy.settings import load_settings

        url = load_settings().database_url
    return async_url(url)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write UtcDateTime as the plain column type it stores, so migrations don't import models."""
    if type_ == "type" and isinstance(obj, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(target_metadata=Base.metadata, render_item=_render_item, compare_type=True, **kwargs)


def _run(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
