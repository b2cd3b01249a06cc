"""The queue as people see it: how many generations run, who waits ahead of a job, the queue messages that
are up, and the deployment's figures for monitoring."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from storage.database import Database, one_of, uncancellable
from storage.job_table import GENERATE, QUEUE_SHOWN, WAITING, S
from storage.schema import jobs


class Queue:
    def __init__(self, db: Database):
        self._db = db

    @uncancellable
    async def place(self, job_id: int) -> tuple[int, int]:
        """(generate jobs running now, generate jobs waiting ahead of this one)."""
        kind = jobs.c.kind == GENERATE
        running = sa.select(sa.func.count()).where(kind, jobs.c.status == S.RUNNING.value)
        ahead = sa.select(sa.func.count()).where(kind, one_of(jobs.c.status, WAITING), jobs.c.id < job_id)
        return await self._db.read(lambda conn: (int(conn.execute(running).scalar_one()),
                                                 int(conn.execute(ahead).scalar_one())))

    @uncancellable
    async def messages(self) -> tuple[int, list[int], list[tuple[int, str, str, int | None]]]:
        """For moving queue messages along: (running count, ids of all waiting generate jobs in order,
        (id, channel, queue_ts, queue_pos) of the waiting jobs that show a queue message)."""
        kind = jobs.c.kind == GENERATE
        waiting = sa.and_(kind, one_of(jobs.c.status, WAITING))

        def work(conn: sa.Connection) -> tuple[int, list[int], list[tuple[int, str, str, int | None]]]:
            shown = conn.execute(QUEUE_SHOWN).all()
            if not shown:
                return 0, [], []
            running = conn.execute(
                sa.select(sa.func.count()).where(kind, jobs.c.status == S.RUNNING.value)).scalar_one()
            ids = conn.execute(sa.select(jobs.c.id).where(waiting).order_by(jobs.c.id)).scalars().all()
            return int(running), list(ids), [tuple(r) for r in shown]  # type: ignore[misc]

        return await self._db.read(work)

    @uncancellable
    async def move_message(self, job_id: int, position: int) -> bool:
        """Record a queue message's new position, if the job is still waiting. False once it has started."""
        stmt = sa.update(jobs).where(jobs.c.id == job_id, one_of(jobs.c.status, WAITING)).values(queue_pos=position)
        return await self._db.txn(lambda conn: conn.execute(stmt).rowcount == 1, one_statement=True)

    @uncancellable
    async def stats(self) -> dict[str, Any]:
        """For `/metrics`, the whole deployment's: jobs by status, generate jobs waiting, the oldest one's wait."""
        waiting = sa.and_(jobs.c.kind == GENERATE, one_of(jobs.c.status, WAITING))
        by_status = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        queue = sa.select(sa.func.count(), sa.func.min(jobs.c.created_at)).where(waiting)

        def work(conn: sa.Connection) -> dict[str, Any]:
            counts = {str(status): int(n) for status, n in conn.execute(by_status).all()}
            depth, oldest = conn.execute(queue).one()
            return {"jobs_by_status": counts, "queue_depth": int(depth),
                    "oldest_wait_seconds": max(0.0, time.time() - oldest) if oldest is not None else 0.0}

        return await self._db.read(work)
