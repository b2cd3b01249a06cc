"""The queue as people see it: how many generations run, who waits ahead of a job, the queue messages that
are up, and the deployment's figures for monitoring."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from storage.database import Database, one_of, uncancellable
from storage.fairness import fair_rank, running_live, waiting
from storage.job_table import GENERATE, QUEUE_SHOWN, WAITING
from storage.schema import jobs


class Queue:
    def __init__(self, db: Database):
        self._db = db
        now = sa.bindparam("now", type_=sa.Float)
        others, me = fair_rank("others"), fair_rank("me")
        before = sa.or_(others.c.team_rank < me.c.team_rank,
                        sa.and_(others.c.team_rank == me.c.team_rank, others.c.id < me.c.id))
        # (generations running now in the deployment, waiting jobs served before this one), in one read
        ranked_ahead = (sa.select(sa.func.count()).select_from(others).join(me, before)
                        .where(me.c.id == sa.bindparam("job_id", type_=sa.Integer), waiting(now, others))
                        .scalar_subquery())
        running = running_live(now)
        least = sa.func.least if db.postgresql else sa.func.min
        # When every waiting job can start now (at most `starting` of them, given the room under the cap and
        # the pacer's tokens `ready`), none is ahead of another that matters: the ranking is not worked out.
        everyone_starts = (sa.select(sa.func.count()).where(waiting(now)).scalar_subquery()
                           <= least(sa.bindparam("cap", type_=sa.Integer) - running,
                                    sa.bindparam("ready", type_=sa.Integer)))
        self._place = sa.select(running, sa.case((everyone_starts, 0), else_=ranked_ahead))
        self._running = sa.select(running_live(now))
        ranked = fair_rank()
        self._in_order = sa.select(ranked.c.id).where(waiting(now, ranked)).order_by(ranked.c.team_rank, ranked.c.id)

    @uncancellable
    async def place(self, job_id: int, *, cap: int = 2**31 - 1, ready: int = 0) -> tuple[int, int]:
        """(generate jobs running now in the whole deployment, waiting generate jobs served before this one in
        the fair order the run-claim takes them in). With the deployment's `cap` and the pacer's tokens `ready`:
        0 ahead when every waiting job starts now anyway (its place is then no place in a queue)."""
        params = {"now": time.time(), "job_id": job_id, "cap": cap, "ready": ready}
        row = await self._db.read(lambda conn: conn.execute(self._place, params).one())
        return int(row[0]), int(row[1])

    @uncancellable
    async def messages(self) -> tuple[int, list[int], list[tuple[int, str, str, int | None, str]]]:
        """For moving queue messages along: (running count, ids of all waiting generate jobs in the order they
        are served, (id, channel, queue_ts, queue_pos, team) of the waiting jobs that show a queue message)."""
        params = {"now": time.time()}

        def work(conn: sa.Connection) -> tuple[int, list[int], list[tuple[int, str, str, int | None, str]]]:
            shown = conn.execute(QUEUE_SHOWN).all()
            if not shown:
                return 0, [], []
            running = conn.execute(self._running, params).scalar_one()
            ids = conn.execute(self._in_order, params).scalars().all()
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
