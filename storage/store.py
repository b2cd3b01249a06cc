"""The database behind Easel: jobs, thread chains, generations. SQLAlchemy Core, async, SQLite or PostgreSQL.

A job moves through these states:

    new --(noticer: shows a sign of work)--> noticing --> queued --(runner)--> running --> done | failed

`noticing` and `running` carry a lease (`worker_id`, `lease_until`) that the owner renews; a job whose lease ran
out (its process died) is taken again by the next claim. Each claim takes the job's next `lease_no`, and every
write about a job names the lease it was claimed under, checked in the same statement: a worker that lost its
job (paused past its lease, or cut off from the database meanwhile) changes nothing of it and hears
`LeaseLost`. Jobs with the same `thread_key` run one after another, in id order; different threads run in
parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import models
from storage.schema import generations as generations_table
from storage.schema import jobs, threads

if TYPE_CHECKING:
    from storage.lifecycle import LifecycleStore


def _one_of(column: Any, values: Sequence[str]) -> Any:
    """`column IN (...)` with one bound parameter per value. (`in_()` of plain values is an "expanding"
    parameter instead, which SQLAlchemy writes into the statement's text again on every execution: it was a
    tenth of the CPU of storing a request.)"""
    return column.in_([sa.literal(v) for v in values])


_S = models.JobStatus
_WAITING = (_S.NEW.value, _S.NOTICING.value, _S.QUEUED.value)
_HELD = (_S.NOTICING.value, _S.RUNNING.value)  # the states in which a job has a lease
_NEW_JOB_COLUMNS = ("dedupe_key", "kind", "source", "team_id", "channel_id", "user_id", "message_ts", "thread_ts",
                    "thread_key", "text", "response_url", "options", "files", "force_image", "created_at")
_ACTIVE = (*_WAITING, _S.RUNNING.value)
_QUEUE_SHOWN = (  # waiting generate jobs that show a queue message (looked up now and then, mostly to find none)
    sa.select(jobs.c.id, jobs.c.channel_id, jobs.c.queue_ts, jobs.c.queue_pos)
    .where(jobs.c.kind == models.JobKind.GENERATE.value, _one_of(jobs.c.status, _WAITING), jobs.c.queue_ts.is_not(None))
    .order_by(jobs.c.id)
)
_earlier = jobs.alias("earlier")
# An earlier generate job of the same thread is not finished, so this one must wait for it. Built once: an
# alias's column collections are costly to set up, and the claim queries use this on every call.
_EARLIER_UNFINISHED = (
    sa.select(_earlier.c.id)
    .where(
        _earlier.c.thread_key == jobs.c.thread_key,
        _earlier.c.id < jobs.c.id,
        _one_of(_earlier.c.status, _ACTIVE),
        _earlier.c.kind == models.JobKind.GENERATE.value,
    )
    .exists()
)


P = ParamSpec("P")
T = TypeVar("T")


def _uncancellable(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Let a database call finish even when its caller is cancelled (a graceful stop cancels jobs): a
    statement cut off halfway can leave a SQLite connection holding its write lock."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.shield(method(*args, **kwargs))

    return wrapper


class _RolledBack(Exception):
    """Ends a transaction whose writes must not be kept."""


class LeaseLost(Exception):
    """The job is no longer held under the caller's lease: another claim took it (the lease ran out), or it
    was given back. Nothing was written."""


class DuplicateJob(Exception):
    """This Slack message or command was accepted before."""


class TooManyPending(Exception):
    """The user already has as many requests waiting or running as allowed."""


def _job(row: Any) -> models.Job:
    m = row._mapping
    return models.Job(
        id=m["id"],
        dedupe_key=m["dedupe_key"],
        kind=models.JobKind(m["kind"]),
        source=m["source"],
        team_id=m["team_id"],
        channel_id=m["channel_id"],
        user_id=m["user_id"],
        message_ts=m["message_ts"],
        thread_ts=m["thread_ts"],
        thread_key=m["thread_key"],
        text=m["text"],
        options=models.JobOptions.from_json(m["options"]),
        files=list(m["files"] or []),
        force_image=bool(m["force_image"]),
        response_url=m["response_url"],
        status=models.JobStatus(m["status"]),
        attempts=m["attempts"],
        noticed=bool(m["noticed"]),
        response_id=m["response_id"],
        progress=models.JobProgress.from_json(m["progress"]),
        queue_ts=m["queue_ts"],
        queue_pos=m["queue_pos"],
        error=m["error"],
        created_at=m["created_at"],
        started_at=m["started_at"],
        lease_no=m["lease_no"],
    )


class _Grouped:
    """One kind of small write from concurrent callers, made together: each caller's write goes into the
    next transaction (one statement, executed for every caller's parameters), and the caller returns once
    that transaction has committed, as it would have on its own. A burst's hundreds of such writes become a
    few transactions; on SQLite each transaction takes the one write lock, which the process that answers
    Slack needs too."""

    def __init__(self, store: Store, stmt: Any, *, landed: Any = None):
        """`landed`, for a write fenced on a job's lease (its parameters name `job_id` and `held_lease`): a
        select of (id, lease_no) of the given `ids` whose write took effect. A caller whose write did not
        (its lease was lost) hears LeaseLost. It runs only when the row count does not already say that every
        write landed (on PostgreSQL, for every batch of more than one)."""
        self._store, self._stmt, self._landed = store, stmt, landed
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
                    landed = await self._store._txn(lambda conn, rows=rows: self._write(conn, rows),
                                                    one_statement=True)
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
        count = conn.execute(self._stmt, rows).rowcount
        batch = rows if isinstance(rows, list) else [rows]
        if self._landed is None or count == len(batch):
            return None
        ids = sorted({params["job_id"] for params in batch})
        return {(r[0], r[1]) for r in conn.execute(self._landed, {"ids": ids})}


def _fence() -> tuple[Any, ...]:
    """The job named `job_id` is held (noticing or running) under the lease named `held_lease`."""
    return (jobs.c.id == sa.bindparam("job_id"), jobs.c.lease_no == sa.bindparam("held_lease", type_=sa.Integer),
            _one_of(jobs.c.status, _HELD))


def _landed(*where: Any) -> Any:
    return sa.select(jobs.c.id, jobs.c.lease_no).where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)), *where)


class Store:
    """All persistence Easel does. Methods are keyword-only where it helps reading call sites."""

    def __init__(self, engine: AsyncEngine, *, writer: sa.Engine | None = None):
        """`writer`, for SQLite: a synchronous engine on the same file, through which every write runs."""
        self.engine = engine
        self.dialect = engine.dialect.name
        self._writer = writer
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="easel-sqlite-writer") if writer else None
        self._prepare()

    async def close(self) -> None:
        await self.engine.dispose()
        if self._writer is not None and self._writer_thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer_thread, self._writer.dispose)
            self._writer_thread.shutdown(wait=False)

    async def _pg_txn(self, work: Callable[[sa.Connection], T], one_statement: bool) -> T:
        if one_statement:
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                return await conn.run_sync(work)
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def _txn(self, work: Callable[[sa.Connection], T], *, one_statement: bool = False) -> T:
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

    async def _read(self, work: Callable[[sa.Connection], T]) -> T:
        """Run `work(connection)`, which only reads. On PostgreSQL without a transaction of its own (each
        statement sees what is committed when it starts, as in one at READ COMMITTED; the driver would
        otherwise send BEGIN and ROLLBACK around it). On SQLite on the writer thread too, in one call: through
        aiosqlite each step of a query is a trip to its thread and back (about 0.4 ms of CPU for a lookup,
        against 0.1 ms in one call)."""
        if self._writer is None:
            return await self._pg_txn(work, one_statement=True)  # without BEGIN and ROLLBACK: 2 trips fewer
        writer = self._writer

        def run() -> T:
            with writer.connect() as conn:
                return work(conn)

        return await asyncio.get_running_loop().run_in_executor(self._writer_thread, run)

    @functools.cached_property
    def lifecycle(self) -> LifecycleStore:
        """What OpenAI has said about the models (storage/lifecycle.py)."""
        from storage.lifecycle import LifecycleStore

        return LifecycleStore(self)

    @_uncancellable
    async def ping(self) -> bool:
        await self._read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())
        return True

    def _insert(self, table: sa.Table) -> Any:
        return (pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert)(table)

    # -- accepting requests ------------------------------------------------------------------------------

    @_uncancellable
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
        if self.dialect == "postgresql":
            thread = None if new.thread_ts is None else "start" if start_thread else \
                "options" if thread_options is not None else None
            stmt = self._enqueue_in_one(check, thread)
            params = {f"e_{c}": v for c, v in self._new_job_params(new, now).items()}
            params.update(e_max_pending=max_pending, e_t_options=thread_options or {}, e_now=now,
                          e_replace=thread_options is not None)
            job_id, pending = await self._txn(lambda conn: conn.execute(stmt, params).one(), one_statement=True)
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
                conn.execute(self._thread_stmt, {
                    "team_id": new.team_id, "channel_id": new.channel_id, "thread_ts": new.thread_ts,
                    "started_by": new.user_id, "options": thread_options or {}, "now": now,
                    "replace": thread_options is not None,
                })
            elif new.thread_ts is not None and thread_options is not None:
                conn.execute(
                    sa.update(threads)
                    .where(*self._thread_is(new.team_id, new.channel_id, new.thread_ts))
                    .values(options=thread_options)
                )
            return int(job_id)

        return await self._txn(work)

    @staticmethod
    def _new_job_params(new: models.NewJob, now: float) -> dict[str, Any]:
        """A new job's row, by the names of `_NEW_JOB_COLUMNS`."""
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

        columns = list(_NEW_JOB_COLUMNS)
        row = sa.select(*(p(c) for c in columns), sa.literal(_S.NEW.value), sa.literal(0), sa.literal(False),
                        sa.literal({}, jobs.c.progress.type))
        pending = None
        if check:
            pending = (sa.select(sa.func.count().label("n"))
                       .where(jobs.c.team_id == p("team_id"), jobs.c.user_id == p("user_id"),
                              jobs.c.kind == models.JobKind.GENERATE.value, _one_of(jobs.c.status, _ACTIVE))
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

    def _prepare(self) -> None:
        """Statements on the hot path, built once (SQLAlchemy then reuses their compiled form)."""
        insert = pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        new_job = {c: sa.bindparam(c, type_=jobs.c[c].type) for c in _NEW_JOB_COLUMNS}
        self._enqueue_stmt = (
            insert(jobs)
            .values(**new_job, status=_S.NEW.value, attempts=0, noticed=False,
                    progress=sa.literal({}, jobs.c.progress.type))
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(jobs.c.id)
        )
        row = {c: sa.bindparam(c, type_=threads.c[c].type) for c in ("team_id", "channel_id", "thread_ts",
                                                                     "started_by", "options")}
        now = sa.bindparam("now", type_=sa.Float)
        stmt = insert(threads).values(**row, created_at=now, updated_at=now)
        self._thread_stmt = stmt.on_conflict_do_update(
            index_elements=["team_id", "channel_id", "thread_ts"],
            set_={"options": sa.case((sa.bindparam("replace", type_=sa.Boolean), stmt.excluded.options),
                                     else_=threads.c.options)},
        )
        self._claim_new_stmt, self._claim_run_stmt = self._claims()
        self._work_waiting = sa.select(
            sa.exists().where(self._takeable_new),
            sa.exists().where(jobs.c.kind == models.JobKind.GENERATE.value, self._takeable_run),
            sa.exists(_QUEUE_SHOWN),
        )
        self._finish_stmt = (
            sa.update(jobs).where(*_fence())
            .values(status=sa.bindparam("status"), error=sa.bindparam("error"), finished_at=sa.bindparam("now"),
                    worker_id=sa.null(), lease_until=sa.null(), queue_ts=sa.null())
        )
        self._generation_stmt = sa.insert(generations_table)
        self._later_than_job = (  # a later generate job of the same thread (given its key) waits to run
            jobs.c.id > sa.bindparam("job_id"), jobs.c.status == _S.QUEUED.value,
            jobs.c.kind == models.JobKind.GENERATE.value)
        this_thread = sa.select(jobs.c.thread_key).where(jobs.c.id == sa.bindparam("job_id")).scalar_subquery()
        self._later_queued = sa.select(sa.exists().where(jobs.c.thread_key == this_thread, *self._later_than_job))
        self._finish_shapes: dict[tuple[int, bool], Any] = {}
        self._enqueue_shapes: dict[tuple[bool, str | None], Any] = {}
        self._chain_stmt = (
            sa.update(threads)
            .where(threads.c.team_id == sa.bindparam("t_team"), threads.c.channel_id == sa.bindparam("t_channel"),
                   threads.c.thread_ts == sa.bindparam("t_ts"))
            .values(last_response_id=sa.bindparam("chain_response_id"),
                    last_image_file_id=sa.func.coalesce(sa.bindparam("chain_image_file_id", type_=sa.String),
                                                        threads.c.last_image_file_id),
                    updated_at=sa.bindparam("now"))
        )
        self._thread_select = sa.select(threads).where(
            threads.c.team_id == sa.bindparam("t_team"), threads.c.channel_id == sa.bindparam("t_channel"),
            threads.c.thread_ts == sa.bindparam("t_ts"))
        self._noticed_stmt = (
            sa.update(jobs).where(*_fence(), jobs.c.status == _S.NOTICING.value)
            .values(status=_S.QUEUED.value, noticed=True, worker_id=None, lease_until=None)
        )
        self._updates: dict[frozenset[str], Any] = {}  # update_job statements, by the columns they set
        self._update_groups: dict[frozenset[str], _Grouped] = {}
        self._still_held = _landed(_one_of(jobs.c.status, _HELD))
        self._noticed = _Grouped(self, self._noticed_stmt, landed=_landed(jobs.c.noticed,
                                                                             jobs.c.status != _S.NOTICING.value))
        self._holds = _Grouped(self, sa.update(jobs).where(*_fence()).values(
            lease_until=sa.bindparam("h_until", type_=sa.Float)), landed=self._still_held)
        self._ended = sa.select(jobs.c.status).where(jobs.c.id == sa.bindparam("job_id"),
                                                      jobs.c.lease_no == sa.bindparam("held_lease"))
        self._pending_stmt = sa.select(sa.func.count()).where(
            jobs.c.team_id == sa.bindparam("team"),
            jobs.c.user_id == sa.bindparam("user"),
            jobs.c.kind == models.JobKind.GENERATE.value,
            _one_of(jobs.c.status, _ACTIVE),
        )

    def _update_stmt(self, columns: frozenset[str]) -> Any:
        stmt = self._updates.get(columns)
        if stmt is None:
            stmt = self._updates[columns] = (
                sa.update(jobs).where(*_fence())
                .values({c: sa.bindparam(f"v_{c}", type_=jobs.c[c].type) for c in columns})
            )
        return stmt

    async def warm_up(self) -> None:
        """Compile the statements a request and its job run, so that the first request after a start does not
        pay for it (some 150 ms here): each runs once, on no row or a row that is thrown away, in a
        transaction that is rolled back."""
        now, none = time.time(), {"t_team": "", "t_channel": "", "t_ts": ""}

        def work(conn: sa.Connection) -> None:
            conn.execute(self._pending_stmt, {"team": "", "user": ""})
            job_id = conn.execute(self._enqueue_stmt, {
                "dedupe_key": f"warm-up:{now}", "kind": models.JobKind.NOTICE.value, "source": "warm-up", "team_id": "",
                "channel_id": "", "user_id": "", "message_ts": None, "thread_ts": None, "thread_key": "warm-up",
                "text": "", "response_url": None, "options": {}, "files": [], "force_image": False,
                "created_at": now,
            }).scalar_one()
            conn.execute(self._thread_stmt, {"team_id": "", "channel_id": "", "thread_ts": "", "started_by": "",
                                             "options": {}, "now": now, "replace": False})
            conn.execute(self._noticed_stmt, [{"job_id": -1, "held_lease": 0}])
            conn.execute(self._holds._stmt, [{"job_id": -1, "held_lease": 0, "h_until": now}])
            for columns in (("response_id", "progress"), ("progress",), ("queue_ts", "queue_pos")):
                conn.execute(self._update_stmt(frozenset(columns)),
                             [{"job_id": -1, "held_lease": 0, **{f"v_{c}": None for c in columns}}])
            generation = models.Generation(job_id=job_id, team_id="", channel_id="", thread_ts=None, user_id="",
                                           request_text="", options={}, model="", status="posted")
            params, rows = self._finish_params(job_id, 0, models.JobStatus.DONE, None, [generation],
                                               models.ChainStep("", "", "", "", None))
            if self.dialect == "postgresql":  # the usual shapes: a mention, a reply; an image posted, a notice done
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
                conn.execute(self._generation_stmt, rows)
                conn.execute(self._chain_stmt, params)
                conn.execute(self._later_queued, params)
            for claim in (self._claim_new_stmt, self._claim_run_stmt):
                conn.execute(claim, {"now": now, "lease_until": now, "worker_id": "warm-up", "lim": 0,
                                     "start": False})
            raise _RolledBack

        with contextlib.suppress(_RolledBack):
            await self._txn(work)
        def reads(conn: sa.Connection) -> None:
            conn.execute(self._thread_select, none).all()
            conn.execute(self._work_waiting, {"now": now}).all()

        await self._read(reads)

    def _claims(self) -> tuple[Any, Any]:
        """The two claim statements (new jobs for the noticer; runnable jobs for the runner), with bound
        `now`, `lease_until`, `worker_id`, `lim` (and `start` for the first)."""
        now = sa.bindparam("now", type_=sa.Float)
        lim = sa.bindparam("lim", type_=sa.Integer)
        owner = {"worker_id": sa.bindparam("worker_id", type_=sa.String),
                 "lease_until": sa.bindparam("lease_until", type_=sa.Float)}

        def claim(takeable: Any, where: tuple[Any, ...], values: dict[str, Any]) -> Any:
            candidates = sa.select(jobs.c.id).where(takeable, *where).order_by(jobs.c.id).limit(lim)
            if self.dialect == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            # A CTE, not `id IN (subquery)`: PostgreSQL may run such a subquery more than once, and with LIMIT
            # and SKIP LOCKED each run can pick other rows, so one claim could take more jobs than it asked for.
            picked = candidates.cte("picked")
            return (
                sa.update(jobs).where(jobs.c.id == picked.c.id, takeable)
                .values(**values, **owner).returning(*jobs.c)
            )

        new = self._takeable_new = sa.or_(
            jobs.c.status == _S.NEW.value, sa.and_(jobs.c.status == _S.NOTICING.value, jobs.c.lease_until < now))
        fast = sa.and_(
            sa.bindparam("start", type_=sa.Boolean), jobs.c.kind == models.JobKind.GENERATE.value,
            jobs.c.source != "command", jobs.c.thread_ts.is_not(None), ~_EARLIER_UNFINISHED,
            sa.cast(jobs.c.files, sa.Text) == "[]",  # attachments are fetched first, outside any slot
        )
        claim_new = claim(new, (), {
            "lease_no": jobs.c.lease_no + 1,
            "status": sa.case((fast, _S.RUNNING.value), else_=_S.NOTICING.value),
            "noticed": sa.case((fast, True), else_=jobs.c.noticed),
            "attempts": sa.case((fast, jobs.c.attempts + 1), else_=jobs.c.attempts),
            "started_at": sa.case((fast, sa.func.coalesce(jobs.c.started_at, now)), else_=jobs.c.started_at),
        })
        runnable = self._takeable_run = sa.or_(
            jobs.c.status == _S.QUEUED.value, sa.and_(jobs.c.status == _S.RUNNING.value, jobs.c.lease_until < now))
        claim_run = claim(runnable, (jobs.c.kind == models.JobKind.GENERATE.value, ~_EARLIER_UNFINISHED), {
            "lease_no": jobs.c.lease_no + 1,
            "status": _S.RUNNING.value,
            "attempts": jobs.c.attempts + 1,
            "started_at": sa.func.coalesce(jobs.c.started_at, now),
        })
        return claim_new, claim_run

    @staticmethod
    def _thread_is(team_id: str, channel_id: str, thread_ts: str) -> tuple[Any, ...]:
        return threads.c.team_id == team_id, threads.c.channel_id == channel_id, threads.c.thread_ts == thread_ts

    def _ensure_thread(
        self, conn: Any, team: str, channel: str, ts: str, user: str, now: float, options: dict | None = None
    ) -> None:
        stmt = self._insert(threads).values(
            team_id=team, channel_id=channel, thread_ts=ts, started_by=user, options=options or {},
            created_at=now, updated_at=now,
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["team_id", "channel_id", "thread_ts"]))

    # -- claiming work -----------------------------------------------------------------------------------

    async def _claim(self, stmt: Any, *, worker_id: str, lease: float, limit: int, **extra: Any) -> list[models.Job]:
        now = time.time()
        params = {"now": now, "lease_until": now + lease, "worker_id": worker_id, "lim": limit, **extra}
        rows = await self._txn(lambda conn: conn.execute(stmt, params).all(), one_statement=True)
        return sorted((_job(r) for r in rows), key=lambda j: j.id)

    async def claim_new(self, *, worker_id: str, lease: float) -> models.Job | None:
        """Take the oldest job that has had no sign of work yet (or whose noticer died)."""
        taken = await self.claim_new_batch(worker_id=worker_id, lease=lease, limit=1)
        return taken[0] if taken else None

    async def claim(self, *, worker_id: str, lease: float) -> models.Job | None:
        """Take the oldest runnable job: queued (or running with a dead owner), and first in its thread."""
        taken = await self.claim_batch(worker_id=worker_id, lease=lease, limit=1)
        return taken[0] if taken else None

    @_uncancellable
    async def claim_new_batch(
        self, *, worker_id: str, lease: float, limit: int, start: bool = False
    ) -> list[models.Job]:
        """Take the oldest jobs that have had no sign of work yet (or whose noticer died).

        With `start` (the caller has a free generation slot for each), message jobs that are first in their
        thread go straight to "running" (their sign of work goes up while they generate); the others, and
        every slash command (which must post its thread's first message before anything else), are
        "noticing". Each job's status says which."""
        return await self._claim(self._claim_new_stmt, worker_id=worker_id, lease=lease, limit=limit, start=start)

    @_uncancellable
    async def claim_batch(self, *, worker_id: str, lease: float, limit: int) -> list[models.Job]:
        """Take the oldest runnable jobs: queued (or running with a dead owner), each first in its thread."""
        return await self._claim(self._claim_run_stmt, worker_id=worker_id, lease=lease, limit=limit)

    @_uncancellable
    async def work_waiting(self) -> tuple[bool, bool, bool]:
        """For a worker's periodic look, in one read: (a job waits for its sign of work, a generate job waits
        for a runner, a waiting job shows a queue message). Counts jobs whose owner's lease ran out."""
        params = {"now": time.time()}
        row = await self._read(lambda conn: conn.execute(self._work_waiting, params).one())
        return bool(row[0]), bool(row[1]), bool(row[2])

    @_uncancellable
    async def renew(self, *, worker_id: str, job_ids: Collection[int], lease: float) -> dict[int, int]:
        """Extend this worker's leases on the given jobs (those it is working on: no others, so a job whose run
        ended here without its end being recorded is not kept from other workers). Returns each job's lease
        number now: a job whose number is not the one its run claimed it under was taken over meanwhile."""
        if not job_ids:
            return {}
        params = {"w": worker_id, "ids": sorted(job_ids), "until": time.time() + lease}
        ids = jobs.c.id.in_(sa.bindparam("ids", expanding=True))
        renew = (sa.update(jobs).where(jobs.c.worker_id == sa.bindparam("w"), _one_of(jobs.c.status, _HELD), ids)
                 .values(lease_until=sa.bindparam("until", type_=sa.Float)))
        numbers = sa.select(jobs.c.id, jobs.c.lease_no).where(ids)
        if self.dialect == "postgresql":  # one statement: the renewal as a data-modifying CTE
            stmt = numbers.add_cte(renew.returning(jobs.c.id).cte("renewed"))
            rows = await self._txn(lambda conn: conn.execute(stmt, params).all(), one_statement=True)
        else:
            def work(conn: sa.Connection) -> Sequence[Any]:
                conn.execute(renew, params)
                return conn.execute(numbers, params).all()

            rows = await self._txn(work)
        return {int(r[0]): int(r[1]) for r in rows}

    @_uncancellable
    async def hold(self, job_id: int, *, lease_no: int, lease: float) -> None:
        """Confirm that the job is still held under `lease_no` and extend its lease by `lease` seconds from
        now, before doing something that cannot be undone (posting in Slack). Raises LeaseLost if another
        claim took it. Calls from many jobs at once share transactions."""
        await self._holds.write({"job_id": job_id, "held_lease": lease_no, "h_until": time.time() + lease})

    @_uncancellable
    async def lease_holders(self) -> list[str]:
        """The workers that hold live leases now."""
        stmt = (sa.select(jobs.c.worker_id).distinct()
                .where(_one_of(jobs.c.status, _HELD), jobs.c.lease_until >= time.time(), jobs.c.worker_id.is_not(None)))
        return [str(w) for w in await self._read(lambda conn: conn.execute(stmt).scalars().all())]

    @_uncancellable
    async def expire_leases(self, worker_ids: Collection[str]) -> int:
        """End the leases of workers known to be gone (their process is dead): their jobs can be claimed at
        once (each under a new lease number) instead of when the leases run out. Returns how many."""
        if not worker_ids:
            return 0
        stmt = (sa.update(jobs).where(jobs.c.worker_id.in_(sorted(worker_ids)), _one_of(jobs.c.status, _HELD))
                .values(lease_until=0.0))
        return await self._txn(lambda conn: conn.execute(stmt).rowcount, one_statement=True)

    @_uncancellable
    async def release(self, job_id: int, *, worker_id: str, lease_no: int) -> None:
        """Give a job back (graceful stop): it runs again on the next start, resuming from its progress."""
        held = (jobs.c.id == job_id, jobs.c.worker_id == worker_id, jobs.c.lease_no == lease_no)

        def work(conn: sa.Connection) -> None:
            conn.execute(
                sa.update(jobs).where(*held, jobs.c.status == _S.RUNNING.value)
                .values(status=_S.QUEUED.value, worker_id=None, lease_until=None)
            )
            conn.execute(
                sa.update(jobs).where(*held, jobs.c.status == _S.NOTICING.value)
                .values(status=_S.NEW.value, worker_id=None, lease_until=None)
            )

        await self._txn(work)

    # -- progress of one job -------------------------------------------------------------------------------

    @_uncancellable
    async def noticed(
        self, job_id: int, *, lease_no: int, thread_ts: str | None = None, thread_options: dict[str, Any] | None = None
    ) -> None:
        """The sign of work is up: the job may run. A slash command's job gets its thread here. Raises
        LeaseLost if the job is no longer being noticed under `lease_no`."""
        if thread_ts is None:
            await self._noticed.write({"job_id": job_id, "held_lease": lease_no})
            return
        values: dict[str, Any] = {"status": _S.QUEUED.value, "noticed": True, "worker_id": None, "lease_until": None}

        def work(conn: sa.Connection) -> None:
            job = _job(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one())
            values["thread_ts"] = thread_ts
            values["thread_key"] = f"{job.team_id}:{job.channel_id}:{thread_ts}"
            self._ensure_thread(conn, job.team_id, job.channel_id, thread_ts, job.user_id, time.time(),
                                thread_options)
            update = sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_no == lease_no,
                                           jobs.c.status == _S.NOTICING.value)
            if conn.execute(update.values(**values)).rowcount == 0:
                raise LeaseLost(job_id)  # and the thread's row goes with the transaction

        await self._txn(work)

    @_uncancellable
    async def update_job(self, job_id: int, *, lease_no: int, **values: Any) -> None:
        """Record progress: `response_id`, `progress` (the whole of it: only the job's runner writes it),
        `queue_ts`, `queue_pos`. Raises LeaseLost if the job is no longer held under `lease_no`."""
        if "progress" in values:
            values["progress"] = values["progress"].to_json()
        columns = frozenset(values)
        group = self._update_groups.get(columns)
        if group is None:
            group = self._update_groups[columns] = _Grouped(self, self._update_stmt(columns), landed=self._still_held)
        await group.write({"job_id": job_id, "held_lease": lease_no, **{f"v_{c}": v for c, v in values.items()}})

    @_uncancellable
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
        if self.dialect == "postgresql":
            stmt = self._finish_in_one(len(rows), chain is not None)
            later, ended = await self._txn(lambda conn: conn.execute(stmt, params).one(), one_statement=True)
            if ended:
                return bool(later)
            return await self._txn(lambda conn: self._ended_before(conn, params), one_statement=True)

        def work(conn: sa.Connection) -> bool:
            if conn.execute(self._finish_stmt, params).rowcount == 0:
                return self._ended_before(conn, params)
            if rows:
                conn.execute(self._generation_stmt, rows)
            if chain is not None:
                conn.execute(self._chain_stmt, params)
            return bool(conn.execute(self._later_queued, params).scalar())

        return await self._txn(work)

    def _ended_before(self, conn: sa.Connection, params: dict[str, Any]) -> bool:
        """`finish` found the job not held under its lease: if it ended under that lease (an earlier call
        went through), what that call would have returned; otherwise LeaseLost."""
        status = conn.execute(self._ended, params).scalar()
        if status not in (models.JobStatus.DONE.value, models.JobStatus.FAILED.value):
            raise LeaseLost(params["job_id"])
        return bool(conn.execute(self._later_queued, params).scalar())

    @staticmethod
    def _finish_params(
        job_id: int, lease_no: int, status: models.JobStatus, error: str | None,
        generations: Sequence[models.Generation], chain: models.ChainStep | None,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The parameters of `finish`'s statements, and its generation rows (also as g<i>_<column>)."""
        now = time.time()
        rows = [{**{f: getattr(g, f) for f in models.Generation.__dataclass_fields__}, "created_at": now}
                for g in generations]
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
            # INSERT ... SELECT, one SELECT of parameters per row: a multi-row VALUES has no cache key, and was
            # compiled again on every call (some 1.5 ms of CPU).
            columns = [c.name for c in generations_table.c if c.name != "id"]
            rows = [sa.select(*(sa.bindparam(f"g{i}_{c}", type_=generations_table.c[c].type) for c in columns))
                    .where(went) for i in range(generations)]
            recorded = sa.insert(generations_table).from_select(columns, sa.union_all(*rows) if generations > 1
                                                                 else rows[0])
            stmt = stmt.add_cte(recorded.cte("recorded"))
        if chain:
            stmt = stmt.add_cte(self._chain_stmt.where(went).cte("chained"))
        self._finish_shapes[(generations, chain)] = stmt
        return stmt

    @_uncancellable
    async def job(self, job_id: int) -> models.Job:
        stmt = sa.select(jobs).where(jobs.c.id == job_id)
        return _job(await self._read(lambda conn: conn.execute(stmt).one()))

    @_uncancellable
    async def jobs(self) -> list[models.Job]:
        stmt = sa.select(jobs).order_by(jobs.c.id)
        return [_job(r) for r in await self._read(lambda conn: conn.execute(stmt).all())]

    @_uncancellable
    async def queue_place(self, job_id: int) -> tuple[int, int]:
        """(generate jobs running now, generate jobs waiting ahead of this one)."""
        kind = jobs.c.kind == models.JobKind.GENERATE.value
        running = sa.select(sa.func.count()).where(kind, jobs.c.status == _S.RUNNING.value)
        ahead = sa.select(sa.func.count()).where(kind, _one_of(jobs.c.status, _WAITING), jobs.c.id < job_id)
        return await self._read(lambda conn: (int(conn.execute(running).scalar_one()),
                                              int(conn.execute(ahead).scalar_one())))

    @_uncancellable
    async def queue_messages(self) -> tuple[int, list[int], list[tuple[int, str, str, int | None]]]:
        """For moving queue messages along: (running count, ids of all waiting generate jobs in order,
        (id, channel, queue_ts, queue_pos) of the waiting jobs that show a queue message)."""
        kind = jobs.c.kind == models.JobKind.GENERATE.value
        waiting = sa.and_(kind, _one_of(jobs.c.status, _WAITING))
        def work(conn: sa.Connection) -> tuple[int, list[int], list[tuple[int, str, str, int | None]]]:
            shown = conn.execute(_QUEUE_SHOWN).all()
            if not shown:
                return 0, [], []
            running = conn.execute(sa.select(sa.func.count()).where(kind, jobs.c.status == _S.RUNNING.value)
                                   ).scalar_one()
            ids = conn.execute(sa.select(jobs.c.id).where(waiting).order_by(jobs.c.id)).scalars().all()
            return int(running), list(ids), [tuple(r) for r in shown]  # type: ignore[misc]

        return await self._read(work)

    @_uncancellable
    async def move_queue_message(self, job_id: int, position: int) -> bool:
        """Record a queue message's new position, if the job is still waiting. False once it has started."""
        stmt = sa.update(jobs).where(jobs.c.id == job_id, _one_of(jobs.c.status, _WAITING)).values(queue_pos=position)
        return await self._txn(lambda conn: conn.execute(stmt).rowcount == 1, one_statement=True)

    # -- threads -----------------------------------------------------------------------------------------------

    @_uncancellable
    async def thread(self, *, team_id: str, channel_id: str, thread_ts: str) -> models.Thread | None:
        params = {"t_team": team_id, "t_channel": channel_id, "t_ts": thread_ts}
        row = await self._read(lambda conn: conn.execute(self._thread_select, params).first())
        if row is None:
            return None
        values = {k: row._mapping[k] for k in models.Thread.__dataclass_fields__}
        return models.Thread(**{**values, "options": dict(values["options"] or {})})

    async def newest_request(self, *, team_id: str, user_id: str) -> int | None:
        """The id of the person's newest generate job. It stays the same for as long as they are at the
        per-person cap (nothing new is accepted meanwhile), so it names one burst of refused requests."""
        stmt = sa.select(sa.func.max(jobs.c.id)).where(
            jobs.c.team_id == team_id, jobs.c.user_id == user_id, jobs.c.kind == models.JobKind.GENERATE.value)
        return await self._read(lambda conn: conn.execute(stmt).scalar())

    # -- generations and usage -----------------------------------------------------------------------------

    @_uncancellable
    async def generations(self, *, job_id: int | None = None) -> Sequence[dict[str, Any]]:
        stmt = sa.select(generations_table).order_by(generations_table.c.id)
        if job_id is not None:
            stmt = stmt.where(generations_table.c.job_id == job_id)
        return [dict(r._mapping) for r in await self._read(lambda conn: conn.execute(stmt).all())]

    # -- figures for monitoring --------------------------------------------------------------------------------

    @_uncancellable
    async def stats(self) -> dict[str, Any]:
        """For `/metrics`, the whole deployment's: jobs by status, generate jobs waiting, the oldest one's wait."""
        waiting = sa.and_(jobs.c.kind == models.JobKind.GENERATE.value, _one_of(jobs.c.status, _WAITING))
        by_status = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        queue = sa.select(sa.func.count(), sa.func.min(jobs.c.created_at)).where(waiting)

        def work(conn: sa.Connection) -> dict[str, Any]:
            counts = {str(status): int(n) for status, n in conn.execute(by_status).all()}
            depth, oldest = conn.execute(queue).one()
            return {"jobs_by_status": counts, "queue_depth": int(depth),
                    "oldest_wait_seconds": max(0.0, time.time() - oldest) if oldest is not None else 0.0}

        return await self._read(work)
