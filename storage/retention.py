"""Forgetting: rows older than the retention period, and single threads on request.

The purge runs in small batches, each its own short transaction, so that on SQLite the file's one write lock is
never held for long (the process answering Slack needs it too) and on PostgreSQL no long transaction holds
back vacuum. What goes:
- finished jobs (done or failed) that ended before the cut-off, with their texts, options and files;
- the prompt and the revised prompt of generations made before it (the rows stay, with the model, the usage
  and the timings, so that spend stays countable; they no longer point at a job);
- threads idle since before it, with no unfinished job: a later reply there is no longer Easel's thread;
- everything of a workspace that uninstalled Easel before it (threads, jobs, generations).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from storage import models
from storage.database import Database
from storage.schema import channel_settings, generations, jobs, settings_audit, threads, workspaces_removed

FINISHED = (models.JobStatus.DONE.value, models.JobStatus.FAILED.value)


@dataclasses.dataclass
class Purged:
    jobs: int = 0
    generations: int = 0
    threads: int = 0

    def __bool__(self) -> bool:
        return bool(self.jobs or self.generations or self.threads)


class Retention:
    def __init__(self, db: Database, *, batch: int = 500):
        self._db = db
        self._batch = batch

    async def purge(self, *, before: float) -> Purged:
        """Everything older than `before` (Unix seconds), batch after batch until none is left."""
        done = Purged()
        while True:
            step = await self._db.txn(lambda conn: self._one_batch(conn, before))
            done.jobs += step.jobs
            done.generations += step.generations
            done.threads += step.threads
            if max(step.jobs, step.generations, step.threads) < self._batch:
                return done

    def _one_batch(self, conn: sa.Connection, before: float) -> Purged:
        step = Purged()
        for team in conn.execute(sa.select(workspaces_removed.c.team_id)
                                 .where(workspaces_removed.c.removed_at < before).limit(self._batch)).scalars():
            gone = self._team(conn, team)
            step.jobs, step.generations, step.threads = (step.jobs + gone.jobs, step.generations + gone.generations,
                                                         step.threads + gone.threads)
        old = (sa.select(generations.c.id)
               .where(generations.c.created_at < before,
                      sa.or_(generations.c.request_text != "", generations.c.revised_prompt.is_not(None),
                             generations.c.job_id.is_not(None)))
               .limit(self._batch))
        ids = list(conn.execute(old).scalars())
        if ids:
            step.generations = conn.execute(
                sa.update(generations).where(generations.c.id.in_(ids))
                .values(request_text="", revised_prompt=None, job_id=None)).rowcount
        finished = (sa.select(jobs.c.id)
                    .where(jobs.c.status.in_(FINISHED), jobs.c.finished_at < before)
                    .limit(self._batch))
        ids = list(conn.execute(finished).scalars())
        if ids:
            conn.execute(sa.update(generations).where(generations.c.job_id.in_(ids)).values(job_id=None))
            step.jobs = conn.execute(sa.delete(jobs).where(jobs.c.id.in_(ids))).rowcount
        busy = (sa.select(jobs.c.id)
                .where(jobs.c.team_id == threads.c.team_id, jobs.c.channel_id == threads.c.channel_id,
                       jobs.c.thread_ts == threads.c.thread_ts, jobs.c.status.not_in(FINISHED))
                .exists())
        idle = (sa.select(threads.c.team_id, threads.c.channel_id, threads.c.thread_ts)
                .where(threads.c.updated_at < before, ~busy)
                .limit(self._batch))
        for key in conn.execute(idle).all():
            step.threads += conn.execute(sa.delete(threads).where(*_thread_is(*key))).rowcount
        return step

    @staticmethod
    def _team(conn: sa.Connection, team_id: str) -> Purged:
        gone = Purged()
        gone.generations = conn.execute(sa.delete(generations).where(generations.c.team_id == team_id)).rowcount
        gone.jobs = conn.execute(sa.delete(jobs).where(jobs.c.team_id == team_id)).rowcount
        gone.threads = conn.execute(sa.delete(threads).where(threads.c.team_id == team_id)).rowcount
        for table in (channel_settings, settings_audit):  # its settings, and who changed them
            conn.execute(sa.delete(table).where(table.c.team_id == team_id))
        conn.execute(sa.delete(workspaces_removed).where(workspaces_removed.c.team_id == team_id))
        return gone

    async def workspace_removed(self, team_id: str, *, now: float, purge: bool) -> int:
        """A workspace uninstalled Easel: its waiting jobs are cancelled (nothing more is posted there), and its
        data is deleted now (`purge`) or once the retention period has passed. Returns the jobs cancelled."""
        waiting = (models.JobStatus.NEW.value, models.JobStatus.NOTICING.value, models.JobStatus.QUEUED.value)

        def work(conn: sa.Connection) -> int:
            cancelled = conn.execute(
                sa.update(jobs).where(jobs.c.team_id == team_id, jobs.c.status.in_(waiting))
                .values(status=models.JobStatus.FAILED.value, error="workspace uninstalled Easel", worker_id=None,
                        lease_until=None, finished_at=now,
                        lease_no=jobs.c.lease_no + 1)).rowcount  # a worker noticing one loses it
            if purge:
                self._team(conn, team_id)
            else:
                conn.execute(sa.delete(workspaces_removed).where(workspaces_removed.c.team_id == team_id))
                conn.execute(sa.insert(workspaces_removed).values(team_id=team_id, removed_at=now))
            return cancelled

        return await self._db.txn(work)

    async def workspace_back(self, team_id: str) -> None:
        """Installed again: its data is no longer due for deletion."""
        await self._db.txn(lambda conn: conn.execute(
            sa.delete(workspaces_removed).where(workspaces_removed.c.team_id == team_id)))

    async def forget_thread(self, *, team_id: str, channel_id: str, thread_ts: str) -> bool:
        """Forget one thread now: its chain and sticky options, its finished jobs' texts, its generations'
        prompts. True if Easel knew the thread. A later reply there is not Easel's any more."""
        def work(conn: sa.Connection) -> bool:
            gone = conn.execute(sa.delete(threads).where(*_thread_is(team_id, channel_id, thread_ts))).rowcount
            in_thread = sa.and_(jobs.c.team_id == team_id, jobs.c.channel_id == channel_id,
                                jobs.c.thread_ts == thread_ts)
            conn.execute(sa.update(generations)
                         .where(generations.c.team_id == team_id, generations.c.channel_id == channel_id,
                                generations.c.thread_ts == thread_ts)
                         .values(request_text="", revised_prompt=None, job_id=None))
            conn.execute(sa.delete(jobs).where(in_thread, jobs.c.status.in_(FINISHED)))
            return bool(gone)

        return await self._db.txn(work)


def _thread_is(team_id: Any, channel_id: Any, thread_ts: Any) -> tuple[Any, ...]:
    return threads.c.team_id == team_id, threads.c.channel_id == channel_id, threads.c.thread_ts == thread_ts
