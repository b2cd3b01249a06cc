"""The storage contract, on SQLite and PostgreSQL (the `store` fixture runs each test on both)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from storage import DuplicateJob, Store, TooManyPending, open_store
from storage.models import ChainStep, Generation, Job, JobKind, JobOptions, JobProgress, JobStatus, NewJob
from storage.schema import jobs as jobs_table
from tests.conftest import wait_until

TEAM = "T0001"
CHANNEL = "C0001"
USER = "U0001"

_counter = iter(range(1, 1_000_000))


def new_job(
    *,
    thread_ts: str | None = "1.0",
    kind: JobKind = JobKind.GENERATE,
    user: str = USER,
    team: str = TEAM,
    key: str | None = None,
    **extra: Any,
) -> NewJob:
    n = next(_counter)
    return NewJob(
        dedupe_key=key or f"msg:{team}:{CHANNEL}:{n}.000",
        kind=kind,
        source="mention" if thread_ts else "command",
        team_id=team,
        channel_id=CHANNEL,
        user_id=user,
        text=f"prompt {n}",
        message_ts=f"{n}.000" if thread_ts else None,
        thread_ts=thread_ts,
        **extra,
    )


async def enqueue(store: Store, new: NewJob, **kw: Any) -> Job:
    """Store.enqueue returns the new id; these tests look at the whole row."""
    return await store.jobs.get(await store.jobs.enqueue(new, **kw))


async def queued(store: Store, new: NewJob) -> Job:
    """Enqueue a job and take it through the noticer, so the runner may claim it."""
    job = await enqueue(store, new)
    taken = await store.leases.claim_new(worker_id="noticer", lease=60)
    assert taken is not None and taken.id == job.id
    await store.jobs.noticed(job.id, lease_no=taken.lease_no)
    return await store.jobs.get(job.id)


async def lease_until(store: Store, job_id: int) -> float | None:
    async with store.engine.connect() as conn:
        stmt = sa.select(jobs_table.c.lease_until).where(jobs_table.c.id == job_id)
        return (await conn.execute(stmt)).scalar()


# -- accepting -------------------------------------------------------------------------------------


async def test_enqueue_returns_a_new_job(store: Store) -> None:
    new = new_job(options=JobOptions(tool={"model": "gpt-image-2"}), files=[{"id": "F1", "url": "https://f"}],
                  force_image=True, response_url="https://hooks.example/x")
    job = await enqueue(store, new)
    assert job.id > 0
    assert job.status == "new"
    assert job.kind is JobKind.GENERATE
    assert (job.dedupe_key, job.team_id, job.channel_id, job.user_id, job.text) == (
        new.dedupe_key, TEAM, CHANNEL, USER, new.text
    )
    assert job.thread_ts == "1.0"
    assert job.thread_key == f"{TEAM}:{CHANNEL}:1.0"
    assert job.options == JobOptions(tool={"model": "gpt-image-2"})
    assert job.files == [{"id": "F1", "url": "https://f"}]
    assert job.force_image is True
    assert job.response_url == "https://hooks.example/x"
    assert job.attempts == 0 and job.noticed is False and job.progress == JobProgress() and job.error is None
    assert job.started_at is None
    assert await store.jobs.get(job.id) == job
    assert [j.id for j in await store.jobs.all()] == [job.id]


async def test_same_dedupe_key_twice_is_a_duplicate(store: Store) -> None:
    first = await enqueue(store, new_job(key="msg:T:C:1.0"))
    with pytest.raises(DuplicateJob):
        await enqueue(store, new_job(key="msg:T:C:1.0", kind=JobKind.NOTICE))
    assert [j.id for j in await store.jobs.all()] == [first.id]


async def test_start_thread_creates_the_thread_with_its_options(store: Store) -> None:
    assert await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="5.0") is None
    await enqueue(store, new_job(thread_ts="5.0"), start_thread=True,
                        thread_options={"model": "gpt-image-1.5"})
    thread = await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="5.0")
    assert thread is not None
    assert (thread.team_id, thread.channel_id, thread.thread_ts) == (TEAM, CHANNEL, "5.0")
    assert thread.started_by == USER
    assert thread.options == {"model": "gpt-image-1.5"}
    assert thread.last_response_id is None and thread.last_image_file_id is None
    # another team's or channel's thread with the same ts is not this one
    assert await store.threads.get(team_id="T9", channel_id=CHANNEL, thread_ts="5.0") is None
    assert await store.threads.get(team_id=TEAM, channel_id="C9", thread_ts="5.0") is None


async def test_enqueue_without_start_thread_creates_no_thread(store: Store) -> None:
    await enqueue(store, new_job(thread_ts="6.0"), thread_options={"quality": "low"})
    assert await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="6.0") is None


async def test_reply_updates_the_threads_sticky_options(store: Store) -> None:
    sticky = {"model": "gpt-image-1.5"}
    await enqueue(store, new_job(thread_ts="7.0"), start_thread=True, thread_options=sticky)
    await enqueue(store, new_job(thread_ts="7.0"), thread_options={**sticky, "quality": "high"})
    thread = await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="7.0")
    assert thread is not None and thread.options == {"model": "gpt-image-1.5", "quality": "high"}
    # a second start_thread does not replace who started it
    await enqueue(store, new_job(thread_ts="7.0", user="U0002"), start_thread=True)
    thread = await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="7.0")
    assert thread is not None and thread.started_by == USER


# -- claiming --------------------------------------------------------------------------------------


async def test_claim_new_marks_noticing_and_claim_skips_new_and_noticing(store: Store) -> None:
    job = await enqueue(store, new_job())
    assert await store.leases.claim(worker_id="w", lease=60) is None  # new
    taken = await store.leases.claim_new(worker_id="n1", lease=60)
    assert taken is not None and taken.id == job.id
    assert taken.status == "noticing"
    assert await store.leases.claim_new(worker_id="n2", lease=60) is None  # leased to n1
    assert await store.leases.claim(worker_id="w", lease=60) is None  # noticing
    await store.jobs.noticed(job.id, lease_no=taken.lease_no)
    after = await store.jobs.get(job.id)
    assert after.status == "queued" and after.noticed is True
    claimed = await store.leases.claim(worker_id="w", lease=60)
    assert claimed is not None and claimed.id == job.id
    assert claimed.status == "running"
    assert claimed.attempts == 1
    assert claimed.started_at is not None
    assert await store.leases.claim(worker_id="w2", lease=60) is None


async def test_claim_new_with_free_slots_starts_message_jobs_first_in_their_thread(store: Store) -> None:
    first = await enqueue(store, new_job(thread_ts="7.0"))
    second = await enqueue(store, new_job(thread_ts="7.0"))  # a reply behind it in the same thread
    other = await enqueue(store, new_job(thread_ts="8.0"))
    command = await enqueue(store, new_job(thread_ts=None))  # must post its thread's first message first
    notice = await enqueue(store, new_job(thread_ts="9.0", kind=JobKind.NOTICE))
    taken = {j.id: j for j in await store.leases.claim_new_batch(worker_id="n", lease=60, limit=10, start=True)}
    assert {i: str(j.status) for i, j in taken.items()} == {
        first.id: "running", second.id: "noticing", other.id: "running",
        command.id: "noticing", notice.id: "noticing",
    }
    started = taken[first.id]
    assert started.noticed is True and started.attempts == 1 and started.started_at is not None
    assert taken[second.id].attempts == 0 and taken[second.id].noticed is False
    assert await store.leases.claim(worker_id="w", lease=60) is None  # running ones are leased, the rest noticing


async def test_a_new_request_does_not_start_ahead_of_one_waiting_for_a_slot(store: Store) -> None:
    """A generate job queued for a slot (noticed, not yet running) keeps its turn: a newer request in another
    thread is noticed, not started at once beside it, even when the claim has a free slot."""
    waiting = await enqueue(store, new_job(thread_ts="7.0"))
    [noticing] = await store.leases.claim_new_batch(worker_id="n", lease=60, limit=1, start=False)
    await store.jobs.noticed(waiting.id, lease_no=noticing.lease_no)
    newer = await enqueue(store, new_job(thread_ts="8.0"))
    [taken] = await store.leases.claim_new_batch(worker_id="n", lease=60, limit=1, start=True)
    assert taken.id == newer.id and taken.status == "noticing"
    [first] = await store.leases.claim_batch(worker_id="w", lease=60, limit=1)
    assert first.id == waiting.id  # and once it runs, nothing is queued ahead of the next new request
    later = await enqueue(store, new_job(thread_ts="9.0"))
    [started] = await store.leases.claim_new_batch(worker_id="n", lease=60, limit=1, start=True)
    assert started.id == later.id and started.status == "running"


async def test_claim_new_without_start_only_notices(store: Store) -> None:
    job = await enqueue(store, new_job(thread_ts="7.0"))
    [taken] = await store.leases.claim_new_batch(worker_id="n", lease=60, limit=10, start=False)
    assert taken.id == job.id and taken.status == "noticing" and taken.attempts == 0


async def test_claim_new_takes_in_id_order(store: Store) -> None:
    ids = [(await enqueue(store, new_job(thread_ts=f"{i}.5"))).id for i in range(3)]
    got = [(await store.leases.claim_new(worker_id="n", lease=60)).id for _ in ids]
    assert got == ids
    assert await store.leases.claim_new(worker_id="n", lease=60) is None


async def test_claim_takes_jobs_in_id_order(store: Store) -> None:
    ids = [(await queued(store, new_job(thread_ts=f"{i}.1"))).id for i in range(4)]
    got = []
    for _ in ids:
        job = await store.leases.claim(worker_id="w", lease=60)
        assert job is not None
        got.append(job.id)
    assert got == ids
    assert await store.leases.claim(worker_id="w", lease=60) is None


@pytest.mark.parametrize("first_state", ["new", "noticing", "running"])
async def test_second_job_in_a_thread_waits_for_the_first(store: Store, first_state: str) -> None:
    first = await enqueue(store, new_job(thread_ts="8.0"))
    noticing = await store.leases.claim_new(worker_id="n1", lease=60)
    assert noticing.id == first.id
    second = await enqueue(store, new_job(thread_ts="8.0"))
    taken = await store.leases.claim_new(worker_id="n2", lease=60)
    assert taken.id == second.id
    await store.jobs.noticed(second.id, lease_no=taken.lease_no)
    if first_state == "new":
        await store.leases.release(first.id, worker_id="n1", lease_no=noticing.lease_no)  # it stopped before noticing
    if first_state == "running":
        await store.jobs.noticed(first.id, lease_no=noticing.lease_no)
        assert (await store.leases.claim(worker_id="w", lease=60)).id == first.id
    assert (await store.jobs.get(first.id)).status == first_state
    assert (await store.jobs.get(second.id)).status == "queued"
    assert await store.leases.claim(worker_id="w2", lease=60) is None


async def test_a_queued_first_job_is_claimed_before_the_second(store: Store) -> None:
    first = await queued(store, new_job(thread_ts="8.0"))
    second = await queued(store, new_job(thread_ts="8.0"))
    assert (await store.leases.claim(worker_id="w", lease=60)).id == first.id
    assert await store.leases.claim(worker_id="w", lease=60) is None
    assert (await store.jobs.get(second.id)).status == "queued"


@pytest.mark.parametrize("outcome", [JobStatus.DONE, JobStatus.FAILED])
async def test_second_job_in_a_thread_is_claimable_once_the_first_finishes(
    store: Store, outcome: JobStatus
) -> None:
    first = await queued(store, new_job(thread_ts="9.0"))
    second = await queued(store, new_job(thread_ts="9.0"))
    claimed = await store.leases.claim(worker_id="w", lease=60)
    assert claimed.id == first.id
    assert await store.leases.claim(worker_id="w", lease=60) is None
    # finish says the thread's next job is waiting: the worker looks for runnable jobs only then
    assert await store.jobs.finish(first.id, lease_no=claimed.lease_no, status=outcome,
                              error="boom" if outcome is JobStatus.FAILED else None)
    finished = await store.jobs.get(first.id)
    assert finished.status == outcome.value
    assert finished.error == ("boom" if outcome is JobStatus.FAILED else None)
    claimed = await store.leases.claim(worker_id="w", lease=60)
    assert claimed is not None and claimed.id == second.id


async def test_finish_says_whether_a_later_job_of_the_thread_is_queued(store: Store) -> None:
    gen = Generation(job_id=0, team_id=TEAM, channel_id=CHANNEL, thread_ts="9.5", user_id=USER,
                     request_text="x", options={}, model="m", status="posted")
    first = await queued(store, new_job(thread_ts="9.5"))
    elsewhere = await queued(store, new_job(thread_ts="9.6"))  # queued too, but in another thread
    claimed = await store.leases.claim(worker_id="w", lease=60)
    assert claimed.id == first.id
    later_new = await enqueue(store, new_job(thread_ts="9.5"))  # not noticed yet: the noticer will say
    step = ChainStep(team_id=TEAM, channel_id=CHANNEL, thread_ts="9.5", response_id="resp_1", image_file_id="F1")
    for shape in ({"generations": [dataclasses.replace(gen, job_id=first.id)] * 2, "chain": step}, {}):
        assert await store.jobs.finish(first.id, lease_no=claimed.lease_no, status=JobStatus.DONE, **shape) is False
    assert (await store.jobs.get(first.id)).response_id is None  # the chain's response id went to the thread only
    assert (await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="9.5")) is None  # not started here
    assert [g["job_id"] for g in await store.generations.all(job_id=first.id)] == [first.id, first.id]
    assert elsewhere.status == "queued" and later_new.status == "new"


async def test_jobs_in_different_threads_are_both_claimable(store: Store) -> None:
    a = await queued(store, new_job(thread_ts="10.0"))
    b = await queued(store, new_job(thread_ts="11.0"))
    first = await store.leases.claim(worker_id="w1", lease=60)
    second = await store.leases.claim(worker_id="w2", lease=60)
    assert {first.id, second.id} == {a.id, b.id}


async def test_same_ts_in_another_channel_is_another_thread(store: Store) -> None:
    a = await queued(store, new_job(thread_ts="12.0"))
    other = NewJob(dedupe_key="msg:T0001:C0002:12.0", kind=JobKind.GENERATE, source="mention", team_id=TEAM,
                   channel_id="C0002", user_id=USER, text="x", message_ts="12.0", thread_ts="12.0")
    b = await queued(store, other)
    first = await store.leases.claim(worker_id="w", lease=60)
    second = await store.leases.claim(worker_id="w", lease=60)
    got = {first.id, second.id}
    assert got == {a.id, b.id}


async def test_notice_jobs_never_come_out_of_claim_and_do_not_block(store: Store) -> None:
    notice = await queued(store, new_job(thread_ts="13.0", kind=JobKind.NOTICE))
    assert notice.status == "queued"
    assert await store.leases.claim(worker_id="w", lease=60) is None
    generate = await queued(store, new_job(thread_ts="13.0"))
    claimed = await store.leases.claim(worker_id="w", lease=60)
    assert claimed is not None and claimed.id == generate.id
    assert await store.leases.claim(worker_id="w", lease=60) is None
    assert (await store.jobs.get(notice.id)).status == "queued"


async def test_noticed_gives_a_command_job_its_thread(store: Store) -> None:
    job = await enqueue(store, new_job(thread_ts=None, key="cmd:T0001:trigger-1"))
    assert job.thread_ts is None
    assert job.thread_key == "new:cmd:T0001:trigger-1"
    taken = await store.leases.claim_new(worker_id="n", lease=60)
    assert taken.id == job.id
    await store.jobs.noticed(job.id, lease_no=taken.lease_no, thread_ts="20.0", thread_options={"size": "1024x1536"})
    after = await store.jobs.get(job.id)
    assert after.thread_ts == "20.0"
    assert after.thread_key == f"{TEAM}:{CHANNEL}:20.0"
    assert after.status == "queued" and after.noticed
    thread = await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="20.0")
    assert thread is not None
    assert thread.started_by == USER
    assert thread.options == {"size": "1024x1536"}
    # a reply in that thread now waits behind the command's job
    reply = await queued(store, new_job(thread_ts="20.0"))
    claimed = await store.leases.claim(worker_id="w", lease=60)
    assert claimed.id == job.id
    assert await store.leases.claim(worker_id="w", lease=60) is None
    await store.jobs.finish(job.id, lease_no=claimed.lease_no, status=JobStatus.DONE)
    assert (await store.leases.claim(worker_id="w", lease=60)).id == reply.id


# -- leases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lease", [-0.5, -60.0])
async def test_expired_running_lease_is_claimed_again(store: Store, lease: float) -> None:
    job = await queued(store, new_job())
    first = await store.leases.claim(worker_id="dead", lease=lease)
    assert first is not None and first.attempts == 1
    again = await store.leases.claim(worker_id="alive", lease=60)
    assert again is not None and again.id == job.id
    assert again.attempts == 2
    assert again.status == "running"
    assert again.started_at == first.started_at  # the first start is kept
    assert await store.leases.claim(worker_id="third", lease=60) is None


async def test_zero_lease_expires(store: Store) -> None:
    job = await queued(store, new_job())
    assert (await store.leases.claim(worker_id="dead", lease=0.0)).id == job.id
    stored = await lease_until(store, job.id)
    assert stored is not None and stored <= time.time()
    got = await wait_until(lambda: store.leases.claim(worker_id="alive", lease=60), timeout=5,
                           what="the zero lease to expire")
    assert got.id == job.id and got.attempts == 2


async def test_expired_noticing_lease_is_taken_by_another_noticer(store: Store) -> None:
    job = await enqueue(store, new_job())
    assert (await store.leases.claim_new(worker_id="dead", lease=-1.0)).id == job.id
    again = await store.leases.claim_new(worker_id="alive", lease=60)
    assert again is not None and again.id == job.id and again.status == "noticing"


async def test_a_live_lease_is_not_taken(store: Store) -> None:
    await queued(store, new_job())
    assert await store.leases.claim(worker_id="owner", lease=60) is not None
    assert await store.leases.claim(worker_id="thief", lease=60) is None


async def test_renew_extends_only_the_callers_leases(store: Store) -> None:
    mine = await queued(store, new_job(thread_ts="30.0"))
    theirs = await queued(store, new_job(thread_ts="31.0"))
    noticing = await enqueue(store, new_job(thread_ts="32.0"))
    claimed = await store.leases.claim(worker_id="me", lease=60)
    assert claimed.id == mine.id
    held_by_them = await store.leases.claim(worker_id="them", lease=60)
    assert held_by_them.id == theirs.id
    taken = await store.leases.claim_new(worker_id="me", lease=60)
    assert taken.id == noticing.id
    theirs_before = await lease_until(store, theirs.id)
    # a renewal in the past expires exactly the caller's leases: others may then take them, not theirs
    everything = {mine.id, theirs.id, noticing.id}
    numbers = await store.leases.renew(worker_id="me", job_ids=everything, lease=-10)
    assert numbers == {mine.id: claimed.lease_no, theirs.id: held_by_them.lease_no, noticing.id: taken.lease_no}
    assert await lease_until(store, theirs.id) == theirs_before
    retaken = await store.leases.claim(worker_id="other", lease=60)
    assert retaken is not None and retaken.id == mine.id and retaken.attempts == 2
    assert retaken.lease_no == claimed.lease_no + 1  # a new lease: the first claim's writes no longer land
    assert await store.leases.claim(worker_id="other", lease=60) is None
    renoticed = await store.leases.claim_new(worker_id="other", lease=60)
    assert renoticed is not None and renoticed.id == noticing.id and renoticed.lease_no == taken.lease_no + 1
    # and a renewal into the future extends only the caller's
    assert (await store.leases.renew(worker_id="them", job_ids=everything, lease=3600))[mine.id] == retaken.lease_no
    assert await lease_until(store, theirs.id) > time.time() + 3000
    assert await lease_until(store, mine.id) < time.time() + 120
    before = await lease_until(store, mine.id)
    await store.leases.renew(worker_id="me", job_ids=everything, lease=3600)  # it holds nothing any more
    assert await lease_until(store, mine.id) == before
    assert await store.leases.renew(worker_id="nobody", job_ids=set(), lease=60) == {}


async def test_renew_extends_only_the_jobs_it_is_given(store: Store) -> None:
    """A job whose run here has ended without its end being recorded is not renewed: once its lease runs out,
    another worker takes it (the heartbeat does not keep it from them)."""
    given = await queued(store, new_job(thread_ts="33.0"))
    left = await queued(store, new_job(thread_ts="34.0"))
    taken = await store.leases.claim_batch(worker_id="me", lease=-1, limit=2)  # both leases have run out
    assert [j.id for j in taken] == [given.id, left.id]
    await store.leases.renew(worker_id="me", job_ids={given.id}, lease=60)
    retaken = await store.leases.claim(worker_id="other", lease=60)
    assert retaken is not None and retaken.id == left.id
    assert await store.leases.claim(worker_id="other", lease=60) is None


async def test_renew_does_not_touch_finished_jobs(store: Store) -> None:
    job = await queued(store, new_job())
    claimed = await store.leases.claim(worker_id="me", lease=60)
    await store.jobs.finish(job.id, lease_no=claimed.lease_no, status=JobStatus.DONE)
    assert await store.leases.renew(worker_id="me", job_ids={job.id}, lease=60) == {job.id: claimed.lease_no}
    assert await lease_until(store, job.id) is None


async def test_expire_leases_frees_the_jobs_of_gone_workers_at_once(store: Store) -> None:
    running = await queued(store, new_job(thread_ts="40.0"))
    assert (await store.leases.claim(worker_id="gone", lease=60)).id == running.id
    noticing = await enqueue(store, new_job(thread_ts="41.0"))
    assert (await store.leases.claim_new(worker_id="gone", lease=60)).id == noticing.id
    alive = await queued(store, new_job(thread_ts="42.0"))
    assert (await store.leases.claim(worker_id="alive", lease=60)).id == alive.id
    untouched = await enqueue(store, new_job(thread_ts="43.0", kind=JobKind.NOTICE))
    assert sorted(await store.leases.holders()) == ["alive", "gone"]
    assert await store.leases.expire({"gone"}) == 2
    assert await store.leases.holders() == ["alive"]
    again = await store.leases.claim(worker_id="new", lease=60)
    assert again is not None and again.id == running.id and again.attempts == 2
    assert await store.leases.claim(worker_id="new", lease=60) is None  # the live worker's job stays with it
    renoticed = await store.leases.claim_new(worker_id="new", lease=60)
    assert renoticed is not None and renoticed.id == noticing.id
    assert (await store.jobs.get(untouched.id)).status == "new"
    assert await store.leases.expire(set()) == 0


async def test_release_gives_back_only_the_workers_job(store: Store) -> None:
    job = await queued(store, new_job(thread_ts="50.0"))
    claimed = await store.leases.claim(worker_id="w", lease=60)
    assert claimed.id == job.id
    await store.leases.release(job.id, worker_id="someone-else", lease_no=claimed.lease_no)
    assert (await store.jobs.get(job.id)).status == "running"
    await store.leases.release(job.id, worker_id="w", lease_no=claimed.lease_no - 1)  # an older lease of its own
    assert (await store.jobs.get(job.id)).status == "running"
    await store.leases.release(job.id, worker_id="w", lease_no=claimed.lease_no)
    assert (await store.jobs.get(job.id)).status == "queued"
    assert await lease_until(store, job.id) is None
    noticing = await enqueue(store, new_job(thread_ts="51.0"))
    taken = await store.leases.claim_new(worker_id="n", lease=60)
    assert taken.id == noticing.id
    await store.leases.release(noticing.id, worker_id="n", lease_no=taken.lease_no)
    assert (await store.jobs.get(noticing.id)).status == "new"
    assert (await store.leases.claim(worker_id="w", lease=60)).id == job.id


# -- progress --------------------------------------------------------------------------------------


async def test_update_job_writes_progress_whole_and_leaves_other_columns(store: Store) -> None:
    """Only the job's runner writes progress, from its own copy: the store writes what it is given."""
    job = await queued(store, new_job())
    held = (await store.leases.claim(worker_id="w", lease=60)).lease_no
    record = {"file_id": "F1", "upload_url": "https://files.example/1"}
    await store.jobs.update(job.id, lease_no=held, progress=JobProgress(notices=("n",)))
    await store.jobs.update(job.id, lease_no=held, progress=JobProgress(notices=("n",), uploads={"0": record}),
                           response_id="resp_1")
    after = await store.jobs.get(job.id)
    assert after.progress == JobProgress(notices=("n",), uploads={"0": record})
    assert after.response_id == "resp_1"
    await store.jobs.update(job.id, lease_no=held, response_id="resp_2", queue_ts="9.9", queue_pos=2)
    after = await store.jobs.get(job.id)
    assert after.response_id == "resp_2" and after.progress.uploads == {"0": record}
    assert (after.queue_ts, after.queue_pos) == ("9.9", 2)
    # Rows as the code before the typed progress and options wrote them still load: keys that are gone are
    # passed over, keys that are missing take their defaults.
    old_progress = {"notices": [], "paced": 2, "files": {"0": "F0"}, "text_posted": True}
    old_options = {"tool": {"model": "gpt-image-2"}, "notices": ["note"], "web": True, "stage": "x"}
    async with store.engine.begin() as conn:
        await conn.execute(sa.update(jobs_table).where(jobs_table.c.id == job.id)
                           .values(progress=old_progress, options=old_options))
    after = await store.jobs.get(job.id)
    assert after.progress == JobProgress(notices=(), paced=2, text_posted=True)
    assert after.options == JobOptions(tool={"model": "gpt-image-2"}, notices=("note",), web=True)
    assert after.options.chosen is None  # stored before "chosen" was: every value counts as chosen


async def test_finish_records_status_and_error(store: Store) -> None:
    job = await queued(store, new_job())
    held = (await store.leases.claim(worker_id="w", lease=60)).lease_no
    await store.jobs.finish(job.id, lease_no=held, status=JobStatus.FAILED, error="moderation")
    after = await store.jobs.get(job.id)
    assert after.status == JobStatus.FAILED
    assert after.error == "moderation"
    assert await lease_until(store, job.id) is None
    assert await store.leases.claim(worker_id="w", lease=60) is None


async def own_thread(store: Store, thread_ts: str) -> None:
    """Make a thread Easel's (as a mention starting it does), leaving no unfinished job behind."""
    job_id = await store.jobs.enqueue(new_job(thread_ts=thread_ts, kind=JobKind.NOTICE), start_thread=True)
    taken = await store.leases.claim_new(worker_id="n", lease=60)
    assert taken is not None and taken.id == job_id
    await store.jobs.finish(job_id, lease_no=taken.lease_no, status=JobStatus.DONE)


async def test_finish_moves_the_threads_chain(store: Store) -> None:
    key = {"team_id": TEAM, "channel_id": CHANNEL, "thread_ts": "60.0"}
    await own_thread(store, "60.0")
    for n, (response, image) in enumerate((("resp_1", "F1"), ("resp_2", None), ("resp_3", "F2"))):
        job = await queued(store, new_job(thread_ts="60.0", key=f"msg:T:C:60.{n}"))
        taken = await store.leases.claim(worker_id="w", lease=60)
        assert taken is not None and taken.id == job.id
        await store.jobs.finish(job.id, lease_no=taken.lease_no, status=JobStatus.DONE,
                           chain=ChainStep(**key, response_id=response, image_file_id=image))
        thread = await store.threads.get(**key)
        expected_image = image or "F1"  # a text answer keeps the thread's last image
        assert (thread.last_response_id, thread.last_image_file_id) == (response, expected_image)


async def test_a_failed_job_does_not_move_the_chain(store: Store) -> None:
    await own_thread(store, "61.0")
    job = await queued(store, new_job(thread_ts="61.0", key="msg:T:C:61.1"))
    held = (await store.leases.claim(worker_id="w", lease=60)).lease_no
    await store.jobs.finish(job.id, lease_no=held, status=JobStatus.FAILED, error="moderation")
    thread = await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="61.0")
    assert thread.last_response_id is None


async def test_finish_records_generations(store: Store) -> None:
    a = await queued(store, new_job(thread_ts="70.0"))
    b = await queued(store, new_job(thread_ts="71.0"))
    held = {j.id: j.lease_no for j in await store.leases.claim_batch(worker_id="w", lease=60, limit=2)}
    gen = Generation(
        job_id=a.id, team_id=TEAM, channel_id=CHANNEL, thread_ts="70.0", user_id=USER, request_text="a cat",
        options={"tool": {"model": "gpt-image-2"}}, model="gpt-5.4", status="posted",
        image_model="gpt-image-2",
        response_id="resp_1", image_call_id="ig_1", revised_prompt="A cat, detailed", slack_file_id="F1",
        usage={"input_tokens": 10, "output_tokens": 20}, tool_usage={"image_gen": {"images": 1}},
        queued_ms=5, generation_ms=1000, upload_ms=30,
    )
    text = Generation(job_id=a.id, team_id=TEAM, channel_id=CHANNEL, thread_ts="70.0", user_id=USER,
                      request_text="a cat", options={}, model="gpt-5.4", status="text")
    await store.jobs.finish(a.id, lease_no=held[a.id], status=JobStatus.DONE, generations=[gen, text])
    await store.jobs.finish(b.id, lease_no=held[b.id], status=JobStatus.FAILED, generations=[
        Generation(job_id=b.id, team_id=TEAM, channel_id=CHANNEL, thread_ts="71.0", user_id=USER,
                   request_text="a dog", options={}, model="gpt-5.4", status="failed", error="timed out")])
    everything = await store.generations.all()
    assert [g["job_id"] for g in everything] == [a.id, a.id, b.id]
    for_a = await store.generations.all(job_id=a.id)
    assert [g["status"] for g in for_a] == ["posted", "text"]
    first = for_a[0]
    for field in Generation.__dataclass_fields__:
        assert first[field] == getattr(gen, field), field
    assert first["created_at"] > 0
    [for_b] = await store.generations.all(job_id=b.id)
    assert for_b["error"] == "timed out" and for_b["usage"] is None


async def test_the_per_user_cap_counts_only_active_generate_jobs(store: Store) -> None:
    q = await queued(store, new_job(thread_ts="82.0"))
    r = await queued(store, new_job(thread_ts="83.0"))
    d = await queued(store, new_job(thread_ts="84.0"))
    f = await queued(store, new_job(thread_ts="85.0"))
    running = {j.id: j.lease_no for j in [await store.leases.claim(worker_id="w", lease=60) for _ in range(4)]}
    assert set(running) == {q.id, r.id, d.id, f.id}
    await store.leases.release(q.id, worker_id="w", lease_no=running[q.id])  # back to queued
    await store.jobs.finish(d.id, lease_no=running[d.id], status=JobStatus.DONE)
    await store.jobs.finish(f.id, lease_no=running[f.id], status=JobStatus.FAILED)
    await enqueue(store, new_job(thread_ts="80.0"))
    await enqueue(store, new_job(thread_ts="81.0"))
    assert await store.leases.claim_new(worker_id="n", lease=60) is not None  # one new, one noticing
    await enqueue(store, new_job(thread_ts="86.0", kind=JobKind.NOTICE))
    # this user now has 4 active generate jobs: new, noticing, queued, running
    with pytest.raises(TooManyPending):
        await store.jobs.enqueue(new_job(thread_ts="90.0"), max_pending=4)
    await store.jobs.enqueue(new_job(thread_ts="91.0"), max_pending=5)
    await store.jobs.enqueue(new_job(thread_ts="92.0", kind=JobKind.NOTICE), max_pending=1)  # notices never count
    await store.jobs.enqueue(new_job(thread_ts="93.0", user="U0002"), max_pending=1)  # per user
    await store.jobs.enqueue(new_job(thread_ts="94.0", team="T0002"), max_pending=1)  # per team


async def test_a_refused_request_leaves_its_thread_alone(store: Store) -> None:
    first = new_job(thread_ts="95.0")
    await store.jobs.enqueue(first, start_thread=True, thread_options={"quality": "low"})
    with pytest.raises(DuplicateJob):  # Slack's retry of the same event, with other flags
        await store.jobs.enqueue(first, start_thread=True, thread_options={"quality": "high"})
    with pytest.raises(DuplicateJob):
        await store.jobs.enqueue(first, thread_options={"quality": "high"})
    with pytest.raises(TooManyPending):  # the cap is checked first, and nothing of it is stored
        await store.jobs.enqueue(new_job(thread_ts="95.0"), thread_options={"quality": "high"}, max_pending=1)
    with pytest.raises(TooManyPending):
        await store.jobs.enqueue(new_job(thread_ts="96.0"), start_thread=True, max_pending=1)
    thread = await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="95.0")
    assert thread is not None and thread.options == {"quality": "low"}
    assert await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="96.0") is None
    assert len(await store.jobs.all()) == 1


async def test_work_waiting_is_what_a_claim_would_find(store: Store) -> None:
    assert await store.leases.work_waiting() == (False, False, False)
    job = await enqueue(store, new_job(thread_ts="97.0"))
    assert await store.leases.work_waiting() == (True, False, False)
    taken = await store.leases.claim_new(worker_id="w", lease=60)
    assert await store.leases.work_waiting() == (False, False, False)  # being noticed, by a live worker
    await store.jobs.noticed(job.id, lease_no=taken.lease_no)
    assert await store.leases.work_waiting() == (False, True, False)
    await store.leases.claim(worker_id="w", lease=-1)  # running, but its worker's lease has run out
    assert await store.leases.work_waiting() == (False, True, False)
    await store.leases.renew(worker_id="w", job_ids={job.id}, lease=60)
    assert await store.leases.work_waiting() == (False, False, False)
    waiting = await enqueue(store, new_job(thread_ts="98.0"))
    taken = await store.leases.claim_new(worker_id="w", lease=60)
    await store.jobs.update(waiting.id, lease_no=taken.lease_no, queue_ts="98.5", queue_pos=1)
    await store.leases.release(waiting.id, worker_id="w", lease_no=taken.lease_no)
    assert await store.leases.work_waiting() == (True, False, True)
    await enqueue(store, new_job(thread_ts="99.0", kind=JobKind.NOTICE))
    await store.leases.claim_new(worker_id="w", lease=-1)  # a noticer that died
    assert (await store.leases.work_waiting())[0]


async def test_queue_place(store: Store) -> None:
    a = await queued(store, new_job(thread_ts="90.0"))
    b = await queued(store, new_job(thread_ts="91.0"))
    await enqueue(store, new_job(thread_ts="92.0", kind=JobKind.NOTICE))
    c = await enqueue(store, new_job(thread_ts="93.0"))
    d = await enqueue(store, new_job(thread_ts="94.0"))
    assert await store.queue.place(a.id) == (0, 0)
    assert await store.queue.place(b.id) == (0, 1)
    assert await store.queue.place(c.id) == (0, 2)  # the notice does not count
    assert await store.queue.place(d.id) == (0, 3)
    claimed = await store.leases.claim(worker_id="w", lease=60)
    assert claimed.id == a.id  # running: no longer waiting
    assert await store.queue.place(d.id) == (1, 2)
    await store.jobs.finish(a.id, lease_no=claimed.lease_no, status=JobStatus.DONE)
    assert (await store.leases.claim(worker_id="w", lease=60)).id == b.id
    assert await store.queue.place(d.id) == (1, 1)
    assert await store.queue.place(c.id) == (1, 0)


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


# -- migrations ------------------------------------------------------------------------------------


async def test_opening_twice_is_idempotent_and_keeps_data(database_url: str) -> None:
    first = await open_store(database_url)
    try:
        job = await enqueue(first, new_job(thread_ts="100.0"), start_thread=True)
    finally:
        await first.close()
    second = await open_store(database_url)
    try:
        assert [j.id for j in await second.jobs.all()] == [job.id]
        assert await second.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="100.0") is not None
        with pytest.raises(DuplicateJob):
            await enqueue(second, new_job(key=job.dedupe_key))
    finally:
        await second.close()


# -- PostgreSQL: concurrent claimers in two processes ----------------------------------------------


async def _two_stores(pg_database: Callable[[], Awaitable[str]]) -> tuple[Store, Store]:
    url = await pg_database()
    first = await open_store(url)
    second = await open_store(url)
    assert first.engine is not second.engine
    return first, second


async def test_postgres_concurrent_claimers_take_each_job_once(
    pg_database: Callable[[], Awaitable[str]],
) -> None:
    one, two = await _two_stores(pg_database)
    try:
        ids = [(await queued(one, new_job(thread_ts=f"{200 + i}.0"))).id for i in range(40)]
        claimed: list[int] = []
        by_store = [0, 0]
        deadline = time.monotonic() + 30
        while any(j.status == "queued" for j in await one.jobs.all()):
            assert time.monotonic() < deadline, "claiming did not finish"
            results = await asyncio.gather(
                *(s.leases.claim(worker_id=f"{name}-{i}", lease=60) for name, s in (("a", one), ("b", two))
                  for i in range(3))
            )
            claimed.extend(j.id for j in results if j is not None)
            by_store[0] += sum(j is not None for j in results[:3])
            by_store[1] += sum(j is not None for j in results[3:])
        assert await one.leases.claim(worker_id="late", lease=60) is None
        assert len(claimed) == len(set(claimed)), f"claimed twice: {sorted(claimed)}"
        assert sorted(claimed) == ids
        assert all(by_store), by_store  # both "processes" took part
        assert all(j.status == "running" and j.attempts == 1 for j in await one.jobs.all())
    finally:
        await one.close()
        await two.close()


async def test_postgres_concurrent_claimers_run_one_thread_one_at_a_time(
    pg_database: Callable[[], Awaitable[str]],
) -> None:
    one, two = await _two_stores(pg_database)
    try:
        ids = [(await queued(one, new_job(thread_ts="300.0"))).id for _ in range(10)]
        holding: set[int] = set()
        order: list[int] = []
        deadline = time.monotonic() + 30

        async def worker(store: Store, name: str) -> None:
            while len(order) < len(ids):
                assert time.monotonic() < deadline, "the thread's jobs did not all run"
                job = await store.leases.claim(worker_id=name, lease=60)
                if job is None:
                    continue
                assert not holding, f"{name} got job {job.id} while {holding} still runs"
                holding.add(job.id)
                order.append(job.id)
                running = [j.id for j in await store.jobs.all() if j.status == "running"]
                assert running == [job.id]
                holding.discard(job.id)
                await store.jobs.finish(job.id, lease_no=job.lease_no, status=JobStatus.DONE)

        await asyncio.gather(*(worker(s, f"{n}-{i}") for n, s in (("a", one), ("b", two)) for i in range(2)))
        assert order == ids  # in id order, each once
        assert all(j.status == "done" and j.attempts == 1 for j in await two.jobs.all())
    finally:
        await one.close()
        await two.close()


async def test_batch_claims_take_at_most_their_limit(store: Store) -> None:
    for n in range(10):
        await enqueue(store, new_job(key=f"msg:T:C:b{n}", thread_ts=f"b{n}.0"))
    noticing = await store.leases.claim_new_batch(worker_id="n", lease=60, limit=4)
    assert len(noticing) == 4
    assert sum(j.status == "noticing" for j in await store.jobs.all()) == 4
    for job in await store.leases.claim_new_batch(worker_id="n", lease=60, limit=100):
        await store.jobs.noticed(job.id, lease_no=job.lease_no)
    for job in noticing:
        await store.jobs.noticed(job.id, lease_no=job.lease_no)
    taken = await store.leases.claim_batch(worker_id="w", lease=60, limit=3)
    assert [j.id for j in taken] == sorted(j.id for j in taken) and len(taken) == 3
    assert sum(j.status == "running" for j in await store.jobs.all()) == 3


async def test_warm_up_leaves_nothing_behind(store: Store) -> None:
    job = await enqueue(store, new_job(thread_ts="5.0"))
    await store.warm_up()
    await store.warm_up()  # twice: nothing it wrote was kept (its job's dedupe key would collide otherwise)
    assert [j.id for j in await store.jobs.all()] == [job.id]
    assert await store.threads.get(team_id="", channel_id="", thread_ts="") is None


async def test_concurrent_small_writes_are_made_together_and_each_lands(store: Store) -> None:
    """noticed() and update_job() from many tasks at once share transactions; every write still lands, and
    every caller returns only once its own write is committed."""
    made = [await enqueue(store, new_job(thread_ts=f"{i}.0")) for i in range(40)]
    held = {j.id: j.lease_no for j in await store.leases.claim_new_batch(worker_id="n", lease=60, limit=40)}

    async def both(job: Job, i: int) -> None:
        await store.jobs.update(job.id, lease_no=held[job.id], response_id=f"resp_{i}",
                               progress=JobProgress(paced=i))
        await store.jobs.noticed(job.id, lease_no=held[job.id])
        assert (await store.jobs.get(job.id)).status == "queued"  # committed by the time noticed() returned

    await asyncio.gather(*(both(job, i) for i, job in enumerate(made)))
    after = {j.id: j for j in await store.jobs.all()}
    for i, job in enumerate(made):
        assert after[job.id].status == "queued" and after[job.id].noticed
        assert after[job.id].response_id == f"resp_{i}" and after[job.id].progress == JobProgress(paced=i)


async def test_postgres_writes_survive_their_connections_being_cut(
    pg_database: Callable[[], Awaitable[str]],
) -> None:
    """The pool does not ping before each use: when the server drops every connection (a restart, a
    failover), the next write finds its connection dead and runs again, once, on a fresh one."""
    import asyncpg

    url = await pg_database()
    store = await open_store(url)
    try:
        job = await enqueue(store, new_job(thread_ts="9.0"))
        [taken] = await store.leases.claim_new_batch(worker_id="n", lease=60, limit=5)
        admin = await asyncpg.connect(url.rsplit("/", 1)[0].replace("postgresql://", "postgres://") + "/test")
        try:
            cut = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()", url.rsplit("/", 1)[1])
        finally:
            await admin.close()
        assert cut >= 1
        await store.jobs.noticed(job.id, lease_no=taken.lease_no)  # a grouped, single-statement write
        claimed = await store.leases.claim(worker_id="w", lease=60)
        await store.jobs.finish(job.id, lease_no=claimed.lease_no, status=JobStatus.DONE)  # a multi-statement one
        assert (await store.jobs.get(job.id)).status == "done"
    finally:
        await store.close()
