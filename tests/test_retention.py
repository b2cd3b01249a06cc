"""Retention: old finished jobs, prompts and idle threads purged in small batches; a thread forgotten at once;
on SQLite and PostgreSQL. And the migrations build exactly the schema the code declares."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from bot.processes import purge_periodically
from bot.slack_budget import Priority, SlackBudget
from storage import MIGRATIONS, Store, make_engine, open_store
from storage.limits import Limits
from storage.models import ChainStep, Generation, JobKind, JobStatus
from storage.retention import Retention
from storage.schema import generations, jobs, metadata, threads
from tests.conftest import wait_until
from tests.test_store import CHANNEL, TEAM, USER, enqueue, new_job

DAY = 86400.0


async def _finished_job(store: Store, *, thread_ts: str, age_days: float, prompt: str = "a secret plan") -> int:
    await enqueue(store, new_job(thread_ts=thread_ts), start_thread=True)
    job = await store.leases.claim_new(worker_id="w", lease=60)  # taken, as a worker would (its end is fenced on it)
    assert job is not None
    generation = Generation(job_id=job.id, team_id=TEAM, channel_id=CHANNEL, thread_ts=thread_ts, user_id=USER,
                            request_text=prompt, options={}, model="gpt-5.4", status="posted",
                            image_model="gpt-image-2", revised_prompt=f"{prompt}, detailed",
                            usage={"input_tokens": 10}, generation_ms=1234)
    await store.jobs.finish(job.id, lease_no=job.lease_no, status=JobStatus.DONE, generations=[generation],
                       chain=ChainStep(team_id=TEAM, channel_id=CHANNEL, thread_ts=thread_ts, response_id="resp_1",
                                       image_file_id="F1"))
    then = time.time() - age_days * DAY

    def age(conn: sa.Connection) -> None:
        conn.execute(sa.update(jobs).where(jobs.c.id == job.id).values(finished_at=then, created_at=then))
        conn.execute(sa.update(generations).where(generations.c.job_id == job.id).values(created_at=then))
        conn.execute(sa.update(threads).where(threads.c.thread_ts == thread_ts).values(updated_at=then))

    await store.db.txn(age)
    return job.id


async def _rows(store: Store) -> tuple[list[int], list[dict], list[str]]:
    def read(conn: sa.Connection) -> tuple[list[int], list[dict], list[str]]:
        return (list(conn.execute(sa.select(jobs.c.id).order_by(jobs.c.id)).scalars()),
                [dict(r._mapping) for r in conn.execute(sa.select(generations).order_by(generations.c.id))],
                list(conn.execute(sa.select(threads.c.thread_ts).order_by(threads.c.thread_ts)).scalars()))

    return await store.db.read(read)


async def test_purge_takes_only_what_is_older_than_the_cut_off(store: Store) -> None:
    old = [await _finished_job(store, thread_ts=f"10{i}.0", age_days=100) for i in range(5)]
    recent = await _finished_job(store, thread_ts="200.0", age_days=10)
    waiting = await enqueue(store, new_job(thread_ts="300.0"))  # unfinished, however old, stays

    purged = await Retention(store.db, batch=2).purge(before=time.time() - 90 * DAY)  # several batches
    assert (purged.jobs, purged.generations, purged.threads) == (5, 5, 5)

    job_ids, gens, thread_list = await _rows(store)
    assert job_ids == [recent, waiting.id]
    assert thread_list == ["200.0"]
    assert len(gens) == 6  # every generation stays, for the spend it records
    for g in gens[:5]:
        assert (g["request_text"], g["revised_prompt"], g["job_id"]) == ("", None, None)
        assert g["usage"] == {"input_tokens": 10} and g["image_model"] == "gpt-image-2"
    assert gens[5]["request_text"] == "a secret plan" and gens[5]["job_id"] == recent
    assert old  # and a second purge finds nothing more
    assert not await Retention(store.db).purge(before=time.time() - 90 * DAY)


async def test_a_thread_with_unfinished_work_is_kept(store: Store) -> None:
    await _finished_job(store, thread_ts="100.0", age_days=100)
    await enqueue(store, new_job(thread_ts="100.0"))  # a reply still waiting in that thread
    await Retention(store.db).purge(before=time.time() - 90 * DAY)
    assert (await _rows(store))[2] == ["100.0"]


async def test_forget_one_thread(store: Store) -> None:
    await _finished_job(store, thread_ts="100.0", age_days=0)
    await _finished_job(store, thread_ts="200.0", age_days=0, prompt="another")
    retention = Retention(store.db)
    assert await retention.forget_thread(team_id=TEAM, channel_id=CHANNEL, thread_ts="100.0")
    assert await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="100.0") is None
    assert await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="200.0") is not None
    _, gens, _ = await _rows(store)
    assert [g["request_text"] for g in gens] == ["", "another"]
    assert not await retention.forget_thread(team_id=TEAM, channel_id=CHANNEL, thread_ts="100.0")


async def test_the_periodic_purge_runs_until_stopped(store: Store) -> None:
    await _finished_job(store, thread_ts="100.0", age_days=100)
    stop = asyncio.Event()
    task = asyncio.create_task(purge_periodically(Retention(store.db), days=90, stop=stop, every=3600))

    async def purged() -> bool:
        return (await _rows(store))[0] == []

    await wait_until(purged, what="the first purge, at start")
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_the_periodic_purge_forgets_slack_buckets_idle_for_an_hour(store: Store) -> None:
    limits = Limits(store.db)
    budget = SlackBudget(limits)  # the system clock, as in the worker
    for channel in ("C1", "C2"):
        assert await budget.admit(TEAM, "chat.postMessage", Priority.RESULT, channel=channel)
    stop = asyncio.Event()
    later = time.time() + 2 * 3600  # the purge's clock: two hours on
    task = asyncio.create_task(purge_periodically(Retention(store.db), days=0, stop=stop, slack_budget=budget,
                                                  now=lambda: later))

    async def forgotten() -> bool:
        return await limits.bucket(f"slack:{TEAM}:chat.postMessage:C1") is None

    await wait_until(forgotten, what="the idle buckets forgotten")
    assert await limits.bucket(f"slack:{TEAM}:chat.postMessage") is None
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_the_migrations_build_the_declared_schema(database_url: str) -> None:
    """Migrated from the revision before the last, with rows in it: the schema is the declared one, its checks
    on a job's status and kind (which alembic does not compare) list every state and kind of the enums, and the
    rows are kept, the generations' references to their jobs too."""
    engine = make_engine(database_url)
    now = time.time()
    job_row = {"dedupe_key": "old", "kind": "generate", "source": "mention", "team_id": TEAM, "channel_id": CHANNEL,
               "user_id": USER, "thread_ts": "1.0", "thread_key": f"{TEAM}:{CHANNEL}:1.0", "text": "a cat",
               "options": {"tool": {"model": "gpt-image-2"}}, "files": [], "force_image": False, "status": "done",
               "progress": {"paced": 1}, "created_at": now}

    def before(conn: sa.Connection) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0010")
        job_id = conn.execute(sa.insert(jobs).values(**job_row).returning(jobs.c.id)).scalar_one()
        conn.execute(sa.insert(generations).values(
            job_id=job_id, team_id=TEAM, channel_id=CHANNEL, thread_ts="1.0", user_id=USER, request_text="a cat",
            options={}, model="gpt-5.4", status="posted", created_at=now))

    try:
        async with engine.begin() as conn:
            await conn.run_sync(before)
    finally:
        await engine.dispose()
    store = await open_store(database_url)
    try:
        def differences(conn: sa.Connection) -> list:
            return compare_metadata(MigrationContext.configure(conn), metadata)

        def checks(conn: sa.Connection) -> dict[str, set[str]]:
            found = {c["name"]: set(re.findall(r"'(\w+)'", c["sqltext"]))
                     for c in sa.inspect(conn).get_check_constraints("jobs")}
            declared = {c.name: set(re.findall(r"'(\w+)'", str(c.sqltext)))
                        for c in jobs.constraints if isinstance(c, sa.CheckConstraint)}
            assert found == declared
            return found

        async with store.engine.connect() as conn:
            assert await conn.run_sync(differences) == []
            assert await conn.run_sync(checks) == {"ck_jobs_status": {s.value for s in JobStatus},
                                                   "ck_jobs_kind": {k.value for k in JobKind}}
        [job] = await store.jobs.all()
        assert (job.dedupe_key, job.status, job.options.tool, job.progress.paced) == (
            "old", JobStatus.DONE, {"model": "gpt-image-2"}, 1)
        assert [g["job_id"] for g in await store.generations.all()] == [job.id]
        with pytest.raises(sa.exc.IntegrityError):
            async with store.engine.begin() as conn:
                await conn.execute(sa.insert(jobs).values(**{**job_row, "dedupe_key": "new", "status": "paused"}))
    finally:
        await store.close()
