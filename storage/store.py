"""The database behind Easel, as its table groups: each holds its own statements and runs them through one
`Database` (SQLAlchemy Core, async, SQLite or PostgreSQL).

    store.jobs         requests stored, progress, the end (storage/jobs.py)
    store.leases       claims, renewals, holds, jobs given back (storage/leases.py)
    store.queue        queue places and messages, figures for monitoring (storage/queue.py)
    store.threads      Easel's threads, their chains and sticky options (storage/threads.py)
    store.generations  what each generate job produced (storage/generations.py)
    store.lifecycle    what OpenAI has said about the models (storage/lifecycle.py)
    store.clicks       clicks on image buttons, a double click one (storage/clicks.py)
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.clicks import Clicks
from storage.database import Database, RolledBack, uncancellable
from storage.generations import Generations
from storage.jobs import Jobs
from storage.leases import Leases
from storage.queue import Queue
from storage.threads import Threads

if TYPE_CHECKING:
    from storage.lifecycle import LifecycleStore


class Store:
    def __init__(self, engine: AsyncEngine, *, writer: sa.Engine | None = None):
        """`writer`, for SQLite: a synchronous engine on the same file, through which every statement runs."""
        self.db = Database(engine, writer=writer)
        self.threads = Threads(self.db)
        self.generations = Generations(self.db)
        self.jobs = Jobs(self.db, threads=self.threads, generations=self.generations)
        self.leases = Leases(self.db)
        self.queue = Queue(self.db)
        self.clicks = Clicks(self.db)

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    @functools.cached_property
    def lifecycle(self) -> LifecycleStore:
        from storage.lifecycle import LifecycleStore

        return LifecycleStore(self.db)

    async def close(self) -> None:
        await self.db.close()

    @uncancellable
    async def ping(self) -> bool:
        await self.db.read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())
        return True

    async def warm_up(self) -> None:
        """Compile the statements a request and its job run, so that the first request after a start does not
        pay for it: each runs once, on no row or a row that is thrown away, in a transaction that is rolled
        back."""
        now = time.time()

        def work(conn: sa.Connection) -> None:
            self.jobs.warm_up(conn, now)
            self.threads.warm_up(conn, now)
            self.leases.warm_up(conn, now)
            raise RolledBack

        with contextlib.suppress(RolledBack):
            await self.db.txn(work)

        def reads(conn: sa.Connection) -> None:
            self.threads.warm_up_reads(conn)
            self.leases.warm_up_reads(conn, now)

        await self.db.read(reads)
