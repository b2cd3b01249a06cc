"""The connections every table group goes through: transactions (SQLite's one writer thread, PostgreSQL's
one-statement autocommit), reads, and small writes from concurrent callers grouped into one transaction.

The table groups (`storage.jobs`, `storage.leases`, `storage.queue`, `storage.threads`, `storage.generations`,
and the smaller ones) each hold their own statements and run them through one `Database`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.errors import LeaseLost

P = ParamSpec("P")
T = TypeVar("T")


def uncancellable(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Let a database call finish even when its caller is cancelled (a graceful stop cancels jobs): a
    statement cut off halfway can leave a SQLite connection holding its write lock."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.shield(method(*args, **kwargs))

    return wrapper


class RolledBack(Exception):
    """Ends a transaction whose writes must not be kept."""


def one_of(column: Any, values: Any) -> Any:
    """`column IN (...)` with one bound parameter per value. (`in_()` of plain values is an "expanding"
    parameter instead, which SQLAlchemy writes into the statement's text again on every execution: a
    noticeable share of the CPU of storing a request.)"""
    return column.in_([sa.literal(str(v)) for v in values])


class Database:
    """An engine, and how statements run on it. `writer`, for SQLite: a synchronous engine on the same file,
    through which every statement runs, on one thread."""

    def __init__(self, engine: AsyncEngine, *, writer: sa.Engine | None = None):
        self.engine = engine
        self.dialect = engine.dialect.name
        self._writer = writer
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="easel-sqlite-writer") if writer else None

    @property
    def postgresql(self) -> bool:
        return self.dialect == "postgresql"

    async def close(self) -> None:
        await self.engine.dispose()
        if self._writer is not None and self._writer_thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer_thread, self._writer.dispose)
            self._writer_thread.shutdown(wait=False)

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT (for ON CONFLICT)."""
        return (pg_dialect.insert if self.postgresql else sqlite_dialect.insert)(table)

    async def _pg_txn(self, work: Callable[[sa.Connection], T], one_statement: bool) -> T:
        if one_statement:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await conn.run_sync(work)
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def txn(self, work: Callable[[sa.Connection], T], *, one_statement: bool = False) -> T:
        """Run `work(connection)` in one transaction.

        `one_statement`: the work is a single statement (or one statement run for several callers' rows, each a
        write of its own); on PostgreSQL it then runs without BEGIN and COMMIT, saving two round trips.

        On SQLite the whole transaction runs in one call on the writer thread, so the file's single write lock
        is held for the time the statements take (well under a millisecond), never across turns of this
        process's event loop, which in a busy worker can last many milliseconds: the process that answers
        Slack would wait that long for its own write. On PostgreSQL it runs on the async engine."""
        if self._writer is None:
            try:
                return await self._pg_txn(work, one_statement)
            except sa.exc.DBAPIError as e:
                if not e.connection_invalidated:
                    raise
                return await self._pg_txn(work, one_statement)  # the server restarted: once more, afresh
        writer = self._writer

        def run() -> T:
            with writer.begin() as conn:
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, run)

    async def read(self, work: Callable[[sa.Connection], T]) -> T:
        """Run `work(connection)`, which only reads. On PostgreSQL without a transaction of its own (each
        statement sees what is committed when it starts, as in one at READ COMMITTED; the driver would
        otherwise send BEGIN and ROLLBACK around it). On SQLite on the writer thread too, in one call: through
        aiosqlite each step of a query is a trip to its thread and back, which costs several times the CPU."""
        if self._writer is None:
            return await self._pg_txn(work, one_statement=True)  # without BEGIN and ROLLBACK: 2 trips fewer
        writer = self._writer

        def run() -> T:
            with writer.connect() as conn:
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, run)


class Grouped:
    """One kind of small write from concurrent callers, made together: each caller's write goes into the
    next transaction (one statement, executed for every caller's parameters), and the caller returns once
    that transaction has committed, as it would have on its own. A burst's hundreds of such writes become a
    few transactions; on SQLite each transaction takes the one write lock, which the process that answers
    Slack needs too."""

    def __init__(self, db: Database, stmt: Any, *, landed: Any = None):
        """`landed`, for a write fenced on a job's lease (its parameters name `job_id` and `held_lease`): a
        select of (id, lease_no) of the given `ids` whose write took effect. A caller whose write did not
        (its lease was lost) hears LeaseLost. It runs only when the row count does not already say that every
        write landed (on PostgreSQL, for every batch of more than one)."""
        self._db, self.stmt, self._landed = db, stmt, landed
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flushing: asyncio.Task[None] | None = None

    async def write(self, params: dict[str, Any]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((params, done))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                # one caller's row runs as a plain execute: executemany costs more per call, and most flushes
                # carry a single write
                rows: list[dict[str, Any]] | dict[str, Any] = [params for params, _ in batch]
                if len(batch) == 1:
                    rows = rows[0]
                try:
                    landed = await self._db.txn(lambda conn, rows=rows: self._write(conn, rows), one_statement=True)
                except Exception as e:  # noqa: BLE001 - every caller of this batch hears of it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(e)
                else:
                    for params, done in batch:
                        if done.done():
                            continue
                        if landed is None or (params["job_id"], params["held_lease"]) in landed:
                            done.set_result(None)
                        else:
                            done.set_exception(LeaseLost(params["job_id"]))
        finally:
            self._flushing = None

    def _write(self, conn: sa.Connection, rows: list[dict[str, Any]] | dict[str, Any]) -> set[tuple[int, int]] | None:
        """Run the batch; for a fenced write, the (job, lease) pairs whose write landed, or None if all did."""
        count = conn.execute(self.stmt, rows).rowcount
        batch = rows if isinstance(rows, list) else [rows]
        if self._landed is None or count == len(batch):
            return None
        ids = sorted({params["job_id"] for params in batch})
        return {(r[0], r[1]) for r in conn.execute(self._landed, {"ids": ids})}
