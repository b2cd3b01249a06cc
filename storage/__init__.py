"""Persistence for Easel. `await open_store(url)` returns a migrated `Store`.

Drivers are imported by SQLAlchemy only for the URL in use (aiosqlite for sqlite:, asyncpg for postgresql:).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.errors import DuplicateJob, LeaseLost, TooManyPending, unavailable
from storage.store import Store

__all__ = ["DuplicateJob", "LeaseLost", "Store", "TooManyPending", "driver_url", "open_store", "unavailable"]

MIGRATIONS = Path(__file__).parent / "migrations"


def driver_url(url: str) -> str:
    """`sqlite:////abs.db` -> aiosqlite, `postgresql://...` -> asyncpg."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> AsyncEngine:
    target = driver_url(url)
    if target.startswith("sqlite"):
        # SQLite has one writer: one connection serialises writes without "database is locked" errors.
        engine = create_async_engine(target, pool_size=1, max_overflow=0, pool_timeout=60)
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip on every checkout, and a job makes several short transactions (it
    # was about a sixth of the worker's CPU per image). A connection found dead instead invalidates the pool,
    # and `Store._txn` runs the transaction again once on a fresh connection.
    return create_async_engine(target, pool_size=10, max_overflow=10, pool_pre_ping=False)


def _upgrade(sync_conn: Any) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def make_writer(url: str) -> sa.Engine | None:
    """For SQLite, the synchronous engine every write goes through (see `Database.txn`); None otherwise."""
    target = driver_url(url)
    if not target.startswith("sqlite"):
        return None
    writer = sa.create_engine(target.replace("sqlite+aiosqlite:", "sqlite+pysqlite:", 1), pool_size=1,
                              max_overflow=0, connect_args={"check_same_thread": False})
    sa.event.listen(writer, "connect", _sqlite_pragmas)
    return writer


async def open_store(url: str) -> Store:
    """Connect, bring the schema to the newest migration, and return the store. Raises FileNotFoundError for
    a SQLite file whose folder does not exist (before a driver thread is started for it)."""
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise FileNotFoundError(f"the folder {folder} does not exist")
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    except BaseException:
        await engine.dispose()
        raise
    return Store(engine, writer=make_writer(url))


def describe_url(url: str) -> str:
    """The database URL as it may be shown: without its password."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url.split("://", 1)[0] + "://..."
