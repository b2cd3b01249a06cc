"""The `jobs` table's life from Slack's request to its end: a request stored (with its thread's row, in the
same transaction, before Slack is acknowledged), the sign of work up, progress recorded, and the end written
with the generations it produced and the thread's chain moved on.

A job moves through these states:

    new --(noticer: shows a sign of work)--> noticing --> queued --(runner)--> running --> done | failed

Claims and leases are `storage.leases`. Each claim takes the job's next `lease_no`, and every write about a job
names the lease it was claimed under, checked in the same statement: a worker that lost its job (paused past
its lease, or cut off from the database meanwhile) changes nothing of it and hears `LeaseLost`.

On PostgreSQL, `enqueue` and `finish` are each one statement (data-modifying CTEs), where SQLite runs several
in one transaction on its writer thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect

from storage import models
from storage.database import Database, Grouped, one_of, uncancellable
from storage.errors import DuplicateJob, LeaseLost, TooManyPending
from storage.generations import Generations
from storage.job_table import ACTIVE, GENERATE, HELD, NEW_JOB_COLUMNS, S, fence, landed, to_job
from storage.schema import jobs, threads
from storage.threads import Threads


class Jobs:
    def __init__(self, db: Database, *, threads: Threads, generations: Generations):
        self._db, self._threads, self._generations = db, threads, generations
        new_job = {c: sa.bindparam(c, type_=jobs.c[c].type) for c in NEW_JOB_COLUMNS}
        self._enqueue_stmt = (
            db.insert(jobs)
            .values(**new_job, status=S.NEW.value, attempts=0, noticed=False,
                    progress=sa.literal({}, jobs.c.progress.type))
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(jobs.c.id)
        )
        self._pending_stmt = sa.select(sa.func.count()).where(
            jobs.c.team_id == sa.bindparam("team"),
            jobs.c.user_id == sa.bindparam("user"),
            jobs.c.kind == GENERATE,
            one_of(jobs.c.status, ACTIVE),
        )
        self._finish_stmt = (
            sa.update(jobs).where(*fence())
            .values(status=sa.bindparam("status"), error=sa.bindparam("error"), finished_at=sa.bindparam("now"),
                    worker_id=sa.null(), lease_until=sa.null(), queue_ts=sa.null())
        )
        self._later_than_job = (  # a later generate job of the same thread (given its key) waits to run
            jobs.c.id > sa.bindparam("job_id"), jobs.c.status == S.QUEUED.value, jobs.c.kind == GENERATE)
        this_thread = sa.select(jobs.c.thread_key).where(jobs.c.id == sa.bindparam("job_id")).scalar_subquery()
        self._later_queued = sa.select(sa.exists().where(jobs.c.thread_key == this_thread, *self._later_than_job))
        self._finish_shapes: dict[tuple[int, bool], Any] = {}
        self._enqueue_shapes: dict[tuple[bool, str | None], Any] = {}
        self._noticed_stmt = (
            sa.update(jobs).where(*fence(), jobs.c.status == S.NOTICING.value)
            .values(status=S.QUEUED.value, noticed=True, worker_id=None, lease_until=None)
        )
        self._noticed = Grouped(db, self._noticed_stmt,
                                landed=landed(jobs.c.noticed, jobs.c.status != S.NOTICING.value))
        self._updates: dict[frozenset[str], Any] = {}  # update statements, by the columns they set
        self._update_groups: dict[frozenset[str], Grouped] = {}
        self._still_held = landed(one_of(jobs.c.status, HELD))
        self._ended = sa.select(jobs.c.status).where(jobs.c.id == sa.bindparam("job_id"),
                                                      jobs.c.lease_no == sa.bindparam("held_lease"))

    # -- accepting requests ------------------------------------------------------------------------------

    @uncancellable
    async def enqueue(
        self,
        new: models.NewJob,
        *,
        start_thread: bool = False,
        thread_options: dict[str, Any] | None = None,
        max_pending: int | None = None,
    ) -> int:
        """Store a request as a job (status `new`) and return its id, in one short transaction: this runs
        before Slack is acknowledged. Raises DuplicateJob if the dedupe key was seen before, TooManyPending if
        the user already has `max_pending` generate jobs waiting or running.

        `start_thread` also records the thread as Easel's, so a reply that arrives a moment later is
        recognised. `thread_options` become the thread's sticky image options.
        """
        now = time.time()
        check = max_pending is not None and new.kind is models.JobKind.GENERATE
        if self._db.postgresql:
            thread = None if new.thread_ts is None else "start" if start_thread else \
                "options" if thread_options is not None else None
            stmt = self._enqueue_in_one(check, thread)
            params = {f"e_{c}": v for c, v in self._new_job_params(new, now).items()}
            params.update(e_max_pending=max_pending, e_t_options=thread_options or {}, e_now=now,
                          e_replace=thread_options is not None)
            job_id, pending = await self._db.txn(lambda conn: conn.execute(stmt, params).one(), one_statement=True)
            if job_id is not None:
                return int(job_id)
            if check and pending >= max_pending:
                raise TooManyPending(pending)
            raise DuplicateJob(new.dedupe_key)

        def work(conn: sa.Connection) -> int:
            if check:
                pending = (conn.execute(
                    self._pending_stmt, {"team": new.team_id, "user": new.user_id}
                )).scalar_one()
                if pending >= max_pending:
                    raise TooManyPending(pending)
            job_id = conn.execute(self._enqueue_stmt, self._new_job_params(new, now)).scalar()
            if job_id is None:
                raise DuplicateJob(new.dedupe_key)
            if new.thread_ts is not None and start_thread:
                conn.execute(self._threads.start_stmt, {
                    "team_id": new.team_id, "channel_id": new.channel_id, "thread_ts": new.thread_ts,
                    "started_by": new.user_id, "options": thread_options or {}, "now": now,
                    "replace": thread_options is not None,
                })
            elif new.thread_ts is not None and thread_options is not None:
                conn.execute(
                    sa.update(threads)
                    .where(*self._threads.where(new.team_id, new.channel_id, new.thread_ts))
                    .values(options=thread_options)
                )
            return int(job_id)

        return await self._db.txn(work)

    @staticmethod
    def _new_job_params(new: models.NewJob, now: float) -> dict[str, Any]:
        """A new job's row, by the names of `NEW_JOB_COLUMNS`."""
        return {
            "dedupe_key": new.dedupe_key, "kind": new.kind.value, "source": new.source, "team_id": new.team_id,
            "channel_id": new.channel_id, "user_id": new.user_id, "message_ts": new.message_ts,
            "thread_ts": new.thread_ts, "thread_key": new.thread_key, "text": new.text,
            "response_url": new.response_url, "options": new.options.to_json(), "files": new.files,
            "force_image": new.force_image, "created_at": now,
        }

    def _enqueue_in_one(self, check: bool, thread: str | None) -> Any:
        """`enqueue` as one PostgreSQL statement, built once per shape: the user's pending count (if `check`),
        the job's insert (unless the count is at the cap, or the dedupe key is taken), and, if the job went in,
        the thread's row (`thread`: "start" inserts or updates it, "options" updates its options). Selects the
        new id (NULL if none) and the pending count. Every parameter is named e_*: an UPDATE would also set
        any column that a parameter is named after."""
        stmt = self._enqueue_shapes.get((check, thread))
        if stmt is not None:
            return stmt

        def p(column: str, table: sa.Table = jobs) -> Any:
            return sa.bindparam(f"e_{column}", type_=table.c[column].type)

        columns = list(NEW_JOB_COLUMNS)
        row = sa.select(*(p(c) for c in columns), sa.literal(S.NEW.value), sa.literal(0), sa.literal(False),
                        sa.literal({}, jobs.c.progress.type))
        pending = None
        if check:
            pending = (sa.select(sa.func.count().label("n"))
                       .where(jobs.c.team_id == p("team_id"), jobs.c.user_id == p("user_id"),
                              jobs.c.kind == GENERATE, one_of(jobs.c.status, ACTIVE))
                       .cte("pending"))
            row = row.where(sa.select(pending.c.n).scalar_subquery() < sa.bindparam("e_max_pending", type_=sa.Integer))
        inserted = (
            pg_dialect.insert(jobs).from_select([*columns, "status", "attempts", "noticed", "progress"], row)
            .on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(jobs.c.id).cte("inserted")
        )
        went_in = sa.exists(sa.select(inserted.c.id))
        options = sa.bindparam("e_t_options", type_=threads.c.options.type)
        stmt = sa.select(sa.select(inserted.c.id).scalar_subquery(),
                         sa.select(pending.c.n).scalar_subquery() if pending is not None else sa.null())
        where_thread = (threads.c.team_id == p("team_id"), threads.c.channel_id == p("channel_id"),
                        threads.c.thread_ts == p("thread_ts"))
        if thread == "start":
            now = sa.bindparam("e_now", type_=sa.Float)
            upsert = pg_dialect.insert(threads).from_select(
                ["team_id", "channel_id", "thread_ts", "started_by", "options", "created_at", "updated_at"],
                sa.select(p("team_id"), p("channel_id"), p("thread_ts"), p("user_id"), options, now, now)
                .where(went_in),
            )
            upsert = upsert.on_conflict_do_update(
                index_elements=["team_id", "channel_id", "thread_ts"],
                set_={"options": sa.case((sa.bindparam("e_replace", type_=sa.Boolean), upsert.excluded.options),
                                         else_=threads.c.options)},
            )
            stmt = stmt.add_cte(upsert.cte("threaded"))
        elif thread == "options":
            update = sa.update(threads).where(*where_thread, went_in).values(options=options)
            stmt = stmt.add_cte(update.cte("threaded"))
        self._enqueue_shapes[(check, thread)] = stmt
        return stmt

    async def newest_request(self, *, team_id: str, user_id: str) -> int | None:
        """The id of the person's newest generate job. It stays the same for as long as they are at the
        per-person cap (nothing new is accepted meanwhile), so it names one burst of refused requests."""
        stmt = sa.select(sa.func.max(jobs.c.id)).where(
            jobs.c.team_id == team_id, jobs.c.user_id == user_id, jobs.c.kind == GENERATE)
        return await self._db.read(lambda conn: conn.execute(stmt).scalar())

    # -- progress of one job -------------------------------------------------------------------------------

    @uncancellable
    async def noticed(
        self, job_id: int, *, lease_no: int, thread_ts: str | None = None, thread_options: dict[str, Any] | None = None
    ) -> None:
        """The sign of work is up: the job may run. A slash command's job gets its thread here. Raises
        LeaseLost if the job is no longer being noticed under `lease_no`."""
        if thread_ts is None:
            await self._noticed.write({"job_id": job_id, "held_lease": lease_no})
            return
        values: dict[str, Any] = {"status": S.QUEUED.value, "noticed": True, "worker_id": None, "lease_until": None}

        def work(conn: sa.Connection) -> None:
            job = to_job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())
            values["thread_ts"] = thread_ts
            values["thread_key"] = f"{job.team_id}:{job.channel_id}:{thread_ts}"
            self._threads.ensure(conn, job.team_id, job.channel_id, thread_ts, job.user_id, thread_options)
            update = sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_no == lease_no,
                                           jobs.c.status == S.NOTICING.value)
            if conn.execute(update.values(**values)).rowcount == 0:
                raise LeaseLost(job_id)  # and the thread's row goes with the transaction

        await self._db.txn(work)

    def _update_stmt(self, columns: frozenset[str]) -> Any:
        stmt = self._updates.get(columns)
        if stmt is None:
            stmt = self._updates[columns] = (
                sa.update(jobs).where(*fence())
                .values({c: sa.bindparam(f"v_{c}", type_=jobs.c[c].type) for c in columns})
            )
        return stmt

    @uncancellable
    async def update(self, job_id: int, *, lease_no: int, **values: Any) -> None:
        """Record progress: `response_id`, `progress` (the whole of it: only the job's runner writes it),
        `queue_ts`, `queue_pos`. Raises LeaseLost if the job is no longer held under `lease_no`."""
        if "progress" in values:
            values["progress"] = values["progress"].to_json()
        columns = frozenset(values)
        group = self._update_groups.get(columns)
        if group is None:
            group = self._update_groups[columns] = Grouped(self._db, self._update_stmt(columns),
                                                           landed=self._still_held)
        await group.write({"job_id": job_id, "held_lease": lease_no, **{f"v_{c}": v for c, v in values.items()}})

    # -- the end -------------------------------------------------------------------------------------------

    @uncancellable
    async def finish(
        self,
        job_id: int,
        *,
        lease_no: int,
        status: models.JobStatus,
        error: str | None = None,
        generations: Sequence[models.Generation] = (),
        chain: models.ChainStep | None = None,
    ) -> bool:
        """End a job held under `lease_no`, in one transaction: its status, the generations it produced, and
        (when it succeeded) the thread's chain moved on. Returns whether a later job of the same thread is
        queued (it can run now). On PostgreSQL all of it is one statement. Raises LeaseLost (writing nothing)
        if another claim took the job. Safe to call again when it is not known whether a call went through
        (the database went away meanwhile): a job already ended under this lease is left as it is."""
        params, rows = self._finish_params(job_id, lease_no, status, error, generations, chain)
        if self._db.postgresql:
            stmt = self._finish_in_one(len(rows), chain is not None)
            later, ended = await self._db.txn(lambda conn: conn.execute(stmt, params).one(), one_statement=True)
            if ended:
                return bool(later)
            return await self._db.txn(lambda conn: self._ended_before(conn, params), one_statement=True)

        def work(conn: sa.Connection) -> bool:
            if conn.execute(self._finish_stmt, params).rowcount == 0:
                return self._ended_before(conn, params)
            if rows:
                conn.execute(self._generations.insert_stmt, rows)
            if chain is not None:
                conn.execute(self._threads.chain_stmt, params)
            return bool(conn.execute(self._later_queued, params).scalar())

        return await self._db.txn(work)

    def _ended_before(self, conn: sa.Connection, params: dict[str, Any]) -> bool:
        """`finish` found the job not held under its lease: if it ended under that lease (an earlier call
        went through), what that call would have returned; otherwise LeaseLost."""
        status = conn.execute(self._ended, params).scalar()
        if status not in (models.JobStatus.DONE.value, models.JobStatus.FAILED.value):
            raise LeaseLost(params["job_id"])
        return bool(conn.execute(self._later_queued, params).scalar())

    def _finish_params(
        self, job_id: int, lease_no: int, status: models.JobStatus, error: str | None,
        generations: Sequence[models.Generation], chain: models.ChainStep | None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The parameters of `finish`'s statements, and its generation rows (also as g<i>_<column>)."""
        now = time.time()
        rows = self._generations.rows(generations, now)
        # (No key may be named like a column of `jobs` it does not set: an UPDATE would set that column too.)
        params: dict[str, Any] = {"job_id": job_id, "held_lease": lease_no, "status": status.value, "error": error,
                                  "now": now}
        if chain is not None:
            params.update(t_team=chain.team_id, t_channel=chain.channel_id, t_ts=chain.thread_ts,
                          chain_response_id=chain.response_id, chain_image_file_id=chain.image_file_id)
        for i, row in enumerate(rows):
            params.update({f"g{i}_{c}": v for c, v in row.items()})
        return params, rows

    def _finish_in_one(self, generations: int, chain: bool) -> Any:
        """`finish` as one PostgreSQL statement (data-modifying CTEs), built once per shape: the job's update,
        an insert of `generations` rows, the chain's update if `chain`, and whether a later job is queued."""
        stmt = self._finish_shapes.get((generations, chain))
        if stmt is not None:
            return stmt
        finished = self._finish_stmt.returning(jobs.c.thread_key).cte("finished")
        went = sa.exists(sa.select(finished.c.thread_key))  # the job was held under the lease: it ended now
        stmt = sa.select(sa.exists().where(
            jobs.c.thread_key == sa.select(finished.c.thread_key).scalar_subquery(), *self._later_than_job), went)
        if generations:
            stmt = stmt.add_cte(self._generations.insert_from_params(generations, when=went).cte("recorded"))
        if chain:
            stmt = stmt.add_cte(self._threads.chain_stmt.where(went).cte("chained"))
        self._finish_shapes[(generations, chain)] = stmt
        return stmt

    # -- reading ---------------------------------------------------------------------------------------------

    @uncancellable
    async def get(self, job_id: int) -> models.Job:
        stmt = sa.select(jobs).where(jobs.c.id == job_id)
        return to_job(await self._db.read(lambda conn: conn.execute(stmt).one()))

    @uncancellable
    async def all(self) -> list[models.Job]:
        stmt = sa.select(jobs).order_by(jobs.c.id)
        return [to_job(r) for r in await self._db.read(lambda conn: conn.execute(stmt).all())]

    # -- warm-up ---------------------------------------------------------------------------------------------

    def warm_up(self, conn: sa.Connection, now: float) -> None:
        """Run the statements a request and its job run, once each, on no row or a row the caller's
        transaction throws away (so that SQLAlchemy has them compiled before the first request)."""
        conn.execute(self._pending_stmt, {"team": "", "user": ""})
        job_id = conn.execute(self._enqueue_stmt, {
            "dedupe_key": f"warm-up:{now}", "kind": models.JobKind.NOTICE.value, "source": "warm-up", "team_id": "",
            "channel_id": "", "user_id": "", "message_ts": None, "thread_ts": None, "thread_key": "warm-up",
            "text": "", "response_url": None, "options": {}, "files": [], "force_image": False,
            "created_at": now,
        }).scalar_one()
        conn.execute(self._noticed_stmt, [{"job_id": -1, "held_lease": 0}])
        for columns in (("response_id", "progress"), ("progress",), ("queue_ts", "queue_pos")):
            conn.execute(self._update_stmt(frozenset(columns)),
                         [{"job_id": -1, "held_lease": 0, **{f"v_{c}": None for c in columns}}])
        generation = models.Generation(job_id=job_id, team_id="", channel_id="", thread_ts=None, user_id="",
                                       request_text="", options={}, model="", status="posted")
        params, rows = self._finish_params(job_id, 0, models.JobStatus.DONE, None, [generation],
                                           models.ChainStep("", "", "", "", None))
        if self._db.postgresql:  # the usual shapes: a mention, a reply; an image posted, a notice done
            for shape in ((True, "start"), (True, None)):
                conn.execute(self._enqueue_in_one(*shape), {
                    **{f"e_{c}": v for c, v in self._new_job_params(models.NewJob(
                        f"warm-up:{shape}:{now}", models.JobKind.GENERATE, "warm-up", "", "", "", "",
                        thread_ts="warm-up"), now).items()},
                    "e_max_pending": 1, "e_t_options": {}, "e_now": now, "e_replace": False})
            conn.execute(self._finish_in_one(1, True), params)
            conn.execute(self._finish_in_one(0, False), params)
        else:
            conn.execute(self._finish_stmt, params)
            conn.execute(self._generations.insert_stmt, rows)
            conn.execute(self._threads.chain_stmt, params)
            conn.execute(self._later_queued, params)
