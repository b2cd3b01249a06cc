"""Who works on which job: claims (each under the job's next `lease_no`), renewals, holds before a step that
cannot be undone, leases ended for workers known to be dead, and jobs given back at a graceful stop.

`noticing` and `running` carry a lease (`worker_id`, `lease_until`) that the owner renews; a job whose lease ran
out (its process died) is taken again by the next claim. Jobs with the same `thread_key` run one after
another, in id order; different threads run in parallel.

The generation cap (`MAX_CONCURRENT_GENERATIONS`) holds for the whole deployment, however many workers share the
database: a claim that may start generations takes at most the cap less the generate jobs running now under
live leases, counted in the claim itself. On PostgreSQL such claims run one at a time (an advisory lock held
for the claim's short transaction), so two replicas never both take the last free place; on SQLite the one
writer does that. Waiting generations are served fairly (`storage.fairness`): round-robin between workspaces,
and between the people of a workspace, each thread's jobs still in order.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa

from storage import models
from storage.database import Database, Grouped, one_of, uncancellable
from storage.fairness import CLAIM_LOCK, fair_rank, running_live
from storage.job_table import ANY_QUEUED, EARLIER_UNFINISHED, GENERATE, HELD, QUEUE_SHOWN, S, fence, landed, to_job
from storage.schema import jobs

NO_CAP = 2**31 - 1


class Leases:
    def __init__(self, db: Database):
        self._db = db
        now = sa.bindparam("now", type_=sa.Float)
        self._takeable_new = sa.or_(
            jobs.c.status == S.NEW.value, sa.and_(jobs.c.status == S.NOTICING.value, jobs.c.lease_until < now))
        self._takeable_run = sa.or_(
            jobs.c.status == S.QUEUED.value, sa.and_(jobs.c.status == S.RUNNING.value, jobs.c.lease_until < now))
        self._claim_new_stmt, self._claim_run_stmt = self._claims(now)
        self._work_waiting = sa.select(
            sa.exists().where(self._takeable_new),
            sa.exists().where(jobs.c.kind == GENERATE, self._takeable_run),
            sa.exists(QUEUE_SHOWN),
        )
        self._holds = Grouped(db, sa.update(jobs).where(*fence()).values(
            lease_until=sa.bindparam("h_until", type_=sa.Float)), landed=landed(one_of(jobs.c.status, HELD)))

    def _claims(self, now: Any) -> tuple[Any, Any]:
        """The two claim statements (new jobs for the noticer; runnable jobs for the runner), with bound
        `now`, `lease_until`, `worker_id`, `lim` (and `start` for the first)."""
        lim = sa.bindparam("lim", type_=sa.Integer)
        cap = sa.bindparam("cap", type_=sa.Integer)
        free = sa.func.greatest if self._db.postgresql else sa.func.max
        least = sa.func.least if self._db.postgresql else sa.func.min
        room = free(0, cap - running_live(now))  # places under the deployment's cap
        owner = {"worker_id": sa.bindparam("worker_id", type_=sa.String),
                 "lease_until": sa.bindparam("lease_until", type_=sa.Float)}

        def claim(takeable: Any, where: tuple[Any, ...], values: dict[str, Any], *, fair: bool = False) -> Any:
            if fair:  # generations: in fair order, at most as many as the cap has room for
                ranked = fair_rank()
                candidates = (sa.select(jobs.c.id).join(ranked, ranked.c.id == jobs.c.id).where(takeable, *where)
                              .order_by(ranked.c.team_rank, jobs.c.id).limit(least(lim, room)))
            else:
                candidates = sa.select(jobs.c.id).where(takeable, *where).order_by(jobs.c.id).limit(lim)
            if self._db.postgresql:
                candidates = candidates.with_for_update(of=jobs, skip_locked=True)
            # A CTE, not `id IN (subquery)`: PostgreSQL may run such a subquery more than once, and with LIMIT
            # and SKIP LOCKED each run can pick other rows, so one claim could take more jobs than it asked for.
            picked = candidates.cte("picked")
            return (
                sa.update(jobs).where(jobs.c.id == picked.c.id, takeable)
                .values(**values, **owner).returning(*jobs.c)
            )

        fast = sa.and_(
            sa.bindparam("start", type_=sa.Boolean), lim <= room, jobs.c.kind == GENERATE,
            jobs.c.source != "command", jobs.c.thread_ts.is_not(None), ~EARLIER_UNFINISHED,
            sa.cast(jobs.c.files, sa.Text) == "[]",  # attachments are fetched first, outside any slot
            # a channel open to a user group only: the noticer asks Slack whether the person is in it first
            sa.cast(jobs.c.options, sa.Text).not_like('%"usergroup"%'),
            ~ANY_QUEUED,  # a request that waits for its turn keeps it: a new one does not overtake it
        )
        claim_new = claim(self._takeable_new, (), {
            "lease_no": jobs.c.lease_no + 1,
            "status": sa.case((fast, S.RUNNING.value), else_=S.NOTICING.value),
            "noticed": sa.case((fast, True), else_=jobs.c.noticed),
            "attempts": sa.case((fast, jobs.c.attempts + 1), else_=jobs.c.attempts),
            "started_at": sa.case((fast, sa.func.coalesce(jobs.c.started_at, now)), else_=jobs.c.started_at),
        })
        claim_run = claim(self._takeable_run, (jobs.c.kind == GENERATE, ~EARLIER_UNFINISHED), {
            "lease_no": jobs.c.lease_no + 1,
            "status": S.RUNNING.value,
            "attempts": jobs.c.attempts + 1,
            "started_at": sa.func.coalesce(jobs.c.started_at, now),
        }, fair=True)
        return claim_new, claim_run

    def warm_up(self, conn: sa.Connection, now: float) -> None:
        conn.execute(self._holds.stmt, [{"job_id": -1, "held_lease": 0, "h_until": now}])
        for claim in (self._claim_new_stmt, self._claim_run_stmt):
            conn.execute(claim, {"now": now, "lease_until": now, "worker_id": "warm-up", "lim": 0, "start": False,
                                 "cap": 0})

    def warm_up_reads(self, conn: sa.Connection, now: float) -> None:
        conn.execute(self._work_waiting, {"now": now}).all()

    async def _claim(self, stmt: Any, *, worker_id: str, lease: float, limit: int, cap: int | None, starts: bool,
                     **extra: Any) -> list[models.Job]:
        """`starts`: the claim may start generations, so it counts against the cap (None: no cap)."""
        now = time.time()
        params = {"now": now, "lease_until": now + lease, "worker_id": worker_id, "lim": limit,
                  "cap": NO_CAP if cap is None else cap, **extra}
        if starts and cap is not None and self._db.postgresql:
            def work(conn: sa.Connection) -> Sequence[Any]:
                # READ COMMITTED: the claim's snapshot is taken after the lock, so it sees every claim before it
                conn.execute(CLAIM_LOCK)
                return conn.execute(stmt, params).all()

            rows = await self._db.txn(work)
        else:
            rows = await self._db.txn(lambda conn: conn.execute(stmt, params).all(), one_statement=True)
        return sorted((to_job(r) for r in rows), key=lambda j: j.id)

    async def claim_new(self, *, worker_id: str, lease: float) -> models.Job | None:
        """Take the oldest job that has had no sign of work yet (or whose noticer died)."""
        taken = await self.claim_new_batch(worker_id=worker_id, lease=lease, limit=1)
        return taken[0] if taken else None

    async def claim(self, *, worker_id: str, lease: float, cap: int | None = None) -> models.Job | None:
        """Take the next runnable job: queued (or running with a dead owner), and first in its thread."""
        taken = await self.claim_batch(worker_id=worker_id, lease=lease, limit=1, cap=cap)
        return taken[0] if taken else None

    @uncancellable
    async def claim_new_batch(
        self, *, worker_id: str, lease: float, limit: int, start: bool = False, cap: int | None = None
    ) -> list[models.Job]:
        """Take the oldest jobs that have had no sign of work yet (or whose noticer died).

        With `start` (the caller has a free generation slot for each), message jobs that are first in their
        thread go straight to "running" (their sign of work goes up while they generate); the others, and
        every slash command (which must post its thread's first message before anything else), are
        "noticing". Each job's status says which. None start unless the deployment's `cap` has room for
        `limit` more."""
        return await self._claim(self._claim_new_stmt, worker_id=worker_id, lease=lease, limit=limit, start=start,
                                 cap=cap, starts=start)

    @uncancellable
    async def claim_batch(self, *, worker_id: str, lease: float, limit: int, cap: int | None = None
                          ) -> list[models.Job]:
        """Take runnable jobs in fair order: queued (or running with a dead owner), each first in its thread;
        at most as many as the deployment's `cap` has room for beside the generations running now."""
        return await self._claim(self._claim_run_stmt, worker_id=worker_id, lease=lease, limit=limit, cap=cap,
                                 starts=True)

    @uncancellable
    async def work_waiting(self) -> tuple[bool, bool, bool]:
        """For a worker's periodic look, in one read: (a job waits for its sign of work, a generate job waits
        for a runner, a waiting job shows a queue message). Counts jobs whose owner's lease ran out."""
        params = {"now": time.time()}
        row = await self._db.read(lambda conn: conn.execute(self._work_waiting, params).one())
        return bool(row[0]), bool(row[1]), bool(row[2])

    @uncancellable
    async def renew(self, *, worker_id: str, job_ids: Collection[int], lease: float) -> dict[int, int]:
        """Extend this worker's leases on the given jobs (those it is working on: no others, so a job whose run
        ended here without its end being recorded is not kept from other workers). Returns each job's lease
        number now: a job whose number is not the one its run claimed it under was taken over meanwhile."""
        if not job_ids:
            return {}
        params = {"w": worker_id, "ids": sorted(job_ids), "until": time.time() + lease}
        ids = jobs.c.id.in_(sa.bindparam("ids", expanding=True))
        renew = (sa.update(jobs).where(jobs.c.worker_id == sa.bindparam("w"), one_of(jobs.c.status, HELD), ids)
                 .values(lease_until=sa.bindparam("until", type_=sa.Float)))
        numbers = sa.select(jobs.c.id, jobs.c.lease_no).where(ids)
        if self._db.postgresql:  # one statement: the renewal as a data-modifying CTE
            stmt = numbers.add_cte(renew.returning(jobs.c.id).cte("renewed"))
            rows = await self._db.txn(lambda conn: conn.execute(stmt, params).all(), one_statement=True)
        else:
            def work(conn: sa.Connection) -> Sequence[Any]:
                conn.execute(renew, params)
                return conn.execute(numbers, params).all()

            rows = await self._db.txn(work)
        return {int(r[0]): int(r[1]) for r in rows}

    @uncancellable
    async def hold(self, job_id: int, *, lease_no: int, lease: float) -> None:
        """Confirm that the job is still held under `lease_no` and extend its lease by `lease` seconds from
        now, before doing something that cannot be undone (posting in Slack). Raises LeaseLost if another
        claim took it. Calls from many jobs at once share transactions."""
        await self._holds.write({"job_id": job_id, "held_lease": lease_no, "h_until": time.time() + lease})

    @uncancellable
    async def holders(self) -> list[str]:
        """The workers that hold live leases now."""
        stmt = (sa.select(jobs.c.worker_id).distinct()
                .where(one_of(jobs.c.status, HELD), jobs.c.lease_until >= time.time(), jobs.c.worker_id.is_not(None)))
        return [str(w) for w in await self._db.read(lambda conn: conn.execute(stmt).scalars().all())]

    @uncancellable
    async def expire(self, worker_ids: Collection[str]) -> int:
        """End the leases of workers known to be gone (their process is dead): their jobs can be claimed at
        once (each under a new lease number) instead of when the leases run out. Returns how many."""
        if not worker_ids:
            return 0
        stmt = (sa.update(jobs).where(jobs.c.worker_id.in_(sorted(worker_ids)), one_of(jobs.c.status, HELD))
                .values(lease_until=0.0))
        return await self._db.txn(lambda conn: conn.execute(stmt).rowcount, one_statement=True)

    @uncancellable
    async def release(self, job_id: int, *, worker_id: str, lease_no: int) -> None:
        """Give a job back (graceful stop): it runs again on the next start, resuming from its progress."""
        held = (jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.lease_no == lease_no)

        def work(conn: sa.Connection) -> None:
            conn.execute(
                sa.update(jobs).where(*held, jobs.c.status == S.RUNNING.value)
                .values(status=S.QUEUED.value, worker_id=None, lease_until=None)
            )
            conn.execute(
                sa.update(jobs).where(*held, jobs.c.status == S.NOTICING.value)
                .values(status=S.NEW.value, worker_id=None, lease_until=None)
            )

        await self._db.txn(work)
