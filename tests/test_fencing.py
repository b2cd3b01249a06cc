"""Writes fenced on a job's lease, on SQLite and PostgreSQL: once another claim has taken a job, whatever its
former holder writes about it lands nowhere, the holder hears LeaseLost, and its run posts nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from storage import LeaseLost, Store
from storage.models import ChainStep, Generation, Job, JobKind, JobProgress, JobStatus
from storage.schema import jobs as jobs_table
from tests.conftest import Running, wait_until
from tests.test_store import CHANNEL, TEAM, USER, enqueue, new_job, own_thread, queued


async def _taken_over(store: Store, thread_ts: str) -> tuple[Job, Job]:
    """A job claimed by `old`, whose lease ran out, then claimed again by `new`: (old's copy, new's copy)."""
    await queued(store, new_job(thread_ts=thread_ts))
    old = await store.leases.claim(worker_id="old", lease=-1)
    new = await store.leases.claim(worker_id="new", lease=60)
    assert old is not None and new is not None and new.id == old.id and new.lease_no == old.lease_no + 1
    return old, new


async def test_the_former_holder_writes_nothing(store: Store) -> None:
    await own_thread(store, "1.0")
    old, new = await _taken_over(store, "1.0")
    await store.jobs.update(new.id, lease_no=new.lease_no, response_id="resp_new", progress=JobProgress(root_ts="new"))
    with pytest.raises(LeaseLost):
        await store.jobs.update(old.id, lease_no=old.lease_no, response_id="resp_old",
                               progress=JobProgress(root_ts="old"))
    with pytest.raises(LeaseLost):
        await store.leases.hold(old.id, lease_no=old.lease_no, lease=60)
    gen = Generation(job_id=old.id, team_id=TEAM, channel_id=CHANNEL, thread_ts="1.0", user_id=USER,
                     request_text="x", options={}, model="m", status="posted", slack_file_id="F_OLD")
    step = ChainStep(team_id=TEAM, channel_id=CHANNEL, thread_ts="1.0", response_id="resp_old", image_file_id="F_OLD")
    with pytest.raises(LeaseLost):
        await store.jobs.finish(old.id, lease_no=old.lease_no, status=JobStatus.FAILED, error="old", generations=[gen],
                           chain=step)
    await store.leases.release(old.id, worker_id="old", lease_no=old.lease_no)
    after = await store.jobs.get(new.id)
    assert (after.status, after.response_id, after.progress, after.error) == (
        "running", "resp_new", JobProgress(root_ts="new"), None)
    assert await store.generations.all(job_id=new.id) == []
    assert (await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="1.0")).last_response_id is None
    # the new holder's writes still land
    await store.leases.hold(new.id, lease_no=new.lease_no, lease=60)
    await store.jobs.finish(new.id, lease_no=new.lease_no, status=JobStatus.DONE)
    assert (await store.jobs.get(new.id)).status == "done"
    with pytest.raises(LeaseLost):  # and a job that ended is no one's to write about
        await store.jobs.update(new.id, lease_no=new.lease_no, progress=JobProgress())
    with pytest.raises(LeaseLost):
        await store.leases.hold(new.id, lease_no=new.lease_no, lease=60)


async def test_a_finish_that_went_through_may_be_made_again(store: Store) -> None:
    """When the answer to `finish` is lost (the database went away after committing), the call is made again:
    the job is found ended under the same lease, and nothing is recorded twice."""
    await queued(store, new_job(thread_ts="2.0"))
    later = await queued(store, new_job(thread_ts="2.0"))
    job = await store.leases.claim(worker_id="w", lease=60)
    assert job is not None and job.id != later.id
    gen = Generation(job_id=job.id, team_id=TEAM, channel_id=CHANNEL, thread_ts="2.0", user_id=USER,
                     request_text="x", options={}, model="m", status="posted", slack_file_id="F1")
    for _ in range(2):
        assert await store.jobs.finish(job.id, lease_no=job.lease_no, status=JobStatus.DONE, generations=[gen]) is True
    assert len(await store.generations.all(job_id=job.id)) == 1


async def test_a_noticer_that_lost_its_job_notices_nothing(store: Store) -> None:
    command = await enqueue(store, new_job(thread_ts=None, key="cmd:T0001:lost"))
    old = await store.leases.claim_new(worker_id="old", lease=-1)
    new = await store.leases.claim_new(worker_id="new", lease=60)
    assert old is not None and new is not None and old.id == new.id == command.id
    with pytest.raises(LeaseLost):
        await store.jobs.noticed(old.id, lease_no=old.lease_no, thread_ts="3.0")
    with pytest.raises(LeaseLost):
        await store.jobs.update(old.id, lease_no=old.lease_no, queue_ts="3.5", queue_pos=1)
    assert await store.threads.get(team_id=TEAM, channel_id=CHANNEL, thread_ts="3.0") is None  # rolled back with it
    after = await store.jobs.get(command.id)
    assert (after.status, after.thread_ts, after.queue_ts) == ("noticing", None, None)
    await store.jobs.noticed(new.id, lease_no=new.lease_no, thread_ts="3.1")
    assert (await store.jobs.get(command.id)).status == "queued"

    message = await enqueue(store, new_job(thread_ts="4.0"))
    old = await store.leases.claim_new(worker_id="old", lease=-1)
    new = await store.leases.claim_new(worker_id="new", lease=60)
    assert old.id == new.id == message.id
    with pytest.raises(LeaseLost):
        await store.jobs.noticed(old.id, lease_no=old.lease_no)
    assert (await store.jobs.get(message.id)).status == "noticing"
    await store.jobs.noticed(new.id, lease_no=new.lease_no)
    assert (await store.jobs.get(message.id)).status == "queued"


async def test_grouped_writes_tell_each_caller_whether_its_own_landed(store: Store) -> None:
    """Many jobs' writes go into one statement; on PostgreSQL the row count of such a batch says nothing, so
    the store looks up which landed. Only the callers whose lease was lost hear it."""
    for i in range(12):
        await enqueue(store, new_job(thread_ts=f"{10 + i}.0", kind=JobKind.GENERATE))
    first = {j.id: j for j in await store.leases.claim_new_batch(worker_id="old", lease=-1, limit=12)}
    again = {j.id: j for j in await store.leases.claim_new_batch(worker_id="new", lease=60, limit=6)}
    assert len(first) == 12 and len(again) == 6

    async def write(job: Job) -> str:
        try:
            await store.jobs.update(job.id, lease_no=job.lease_no, progress=JobProgress(paced=job.lease_no))
            await store.leases.hold(job.id, lease_no=job.lease_no, lease=60)
            await store.jobs.noticed(job.id, lease_no=job.lease_no)
        except LeaseLost:
            return "lost"
        return "landed"

    outcomes = await asyncio.gather(*(write(j) for j in [*first.values(), *again.values()]))
    by_job = dict(zip([*first, *(f"again-{i}" for i in again)], outcomes, strict=True))
    assert [by_job[i] for i in first] == ["lost" if i in again else "landed" for i in first]
    assert all(by_job[f"again-{i}"] == "landed" for i in again)
    for job in await store.jobs.all():
        lease_no = (again.get(job.id) or first[job.id]).lease_no
        assert job.status == "queued" and job.progress == JobProgress(paced=lease_no)


async def test_hold_extends_the_lease(store: Store) -> None:
    await queued(store, new_job(thread_ts="30.0"))
    job = await store.leases.claim(worker_id="w", lease=-1)  # its lease has run out, but no one took it yet
    await store.leases.hold(job.id, lease_no=job.lease_no, lease=60)
    assert await store.leases.claim(worker_id="other", lease=60) is None


async def _steal(store: Store) -> Job:
    """Another worker takes the running job over, as if its holder had been paused past its lease."""
    def expire(conn: sa.Connection) -> None:
        conn.execute(sa.update(jobs_table).where(jobs_table.c.status == "running").values(lease_until=0.0))

    async def taken() -> Job | None:
        # (the holder's heartbeat may renew the lease between the two steps: then both go again)
        await store.db.txn(expire)
        return await store.leases.claim(worker_id="thief", lease=600)

    return await wait_until(taken, what="the job taken over")


@pytest.mark.parametrize("lease", ["60", "0.6"], ids=["checked before sharing", "stopped by the heartbeat"])
async def test_a_run_whose_job_was_taken_over_posts_nothing(easel_factory: Any, lease: str) -> None:
    """While the generation runs, another worker takes the job over. The run finds out (its next write, the
    check before the share, or, with a short lease, its heartbeat) and stops: no image, no word to the user,
    nothing recorded over the new holder's work."""
    easel: Running = await easel_factory(JOB_LEASE_SECONDS=lease)
    easel.openai.gate.clear()
    ts, _ = await easel.sender.mention("a contested picture")
    await easel.openai.wait_for_creates(1)
    stolen = await _steal(easel.store)
    if lease == "60":  # the heartbeat is 20 s away: the answer comes, and the run finds out as it publishes
        easel.openai.gate.set()
    await wait_until(lambda: easel.easel.worker.busy == 0, timeout=30, what="the run to stop")
    easel.openai.gate.set()
    assert easel.slack.shared_files == []
    assert [c for c in easel.slack.calls_to("files.completeUploadExternal") if c.args.get("channel_id")] == []
    assert not any(":warning:" in (m.get("text") or "") for m in easel.slack.messages)
    after = await easel.store.jobs.get(stolen.id)
    assert (after.status, after.lease_no, after.error) == ("running", stolen.lease_no, None)
    assert await easel.store.generations.all(job_id=stolen.id) == []
