"""The generation cap and the queue's order are the deployment's, held in the database: claims from several
workers never start more than the cap together, and waiting generations are served round-robin between
workspaces and people (the queue places told agree with that order). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from storage import Store, open_store
from storage.models import JobStatus
from storage.schema import jobs as jobs_table
from tests.conftest import wait_until
from tests.test_store import enqueue, new_job, queued


async def _running(store: Store) -> int:
    stmt = sa.select(sa.func.count()).where(jobs_table.c.status == "running")
    return int(await store.db.read(lambda conn: conn.execute(stmt).scalar_one()))


async def test_run_claims_take_at_most_the_room_under_the_cap(store: Store) -> None:
    for i in range(6):
        await queued(store, new_job(thread_ts=f"{i}.2", user=f"U{i}"))
    first = await store.leases.claim_batch(worker_id="a", lease=60, limit=2, cap=3)
    second = await store.leases.claim_batch(worker_id="b", lease=60, limit=5, cap=3)
    assert (len(first), len(second)) == (2, 1)  # b's claim found two running: room for one
    assert await store.leases.claim_batch(worker_id="c", lease=60, limit=5, cap=3) == []
    assert await _running(store) == 3
    # a running job whose lease ran out holds no place: the next claim takes it (or another) in its stead
    await store.leases.expire(["a"])
    taken = await store.leases.claim_batch(worker_id="c", lease=60, limit=5, cap=3)
    assert len(taken) == 2


async def test_no_cap_given_claims_as_before(store: Store) -> None:
    for i in range(4):
        await queued(store, new_job(thread_ts=f"{i}.3", user=f"U{i}"))
    assert len(await store.leases.claim_batch(worker_id="a", lease=60, limit=10)) == 4


async def test_new_jobs_start_at_once_only_with_room_under_the_cap(store: Store) -> None:
    for i in range(2):
        await queued(store, new_job(thread_ts=f"{i}.4", user=f"U{i}"))
    assert len(await store.leases.claim_batch(worker_id="a", lease=60, limit=2, cap=3)) == 2
    await enqueue(store, new_job(thread_ts="5.4"))
    await enqueue(store, new_job(thread_ts="6.4"))
    taken = await store.leases.claim_new_batch(worker_id="n", lease=60, limit=2, start=True, cap=3)
    assert sorted(str(j.status) for j in taken) == ["noticing", "noticing"]  # two would pass the cap of 3
    await enqueue(store, new_job(thread_ts="7.4"))
    [one] = await store.leases.claim_new_batch(worker_id="n", lease=60, limit=1, start=True, cap=3)
    assert one.status == "running"
    assert await _running(store) == 3


async def test_concurrent_claims_from_many_workers_never_pass_the_cap(database_url: str) -> None:
    stores = [await open_store(database_url) for _ in range(4)]
    try:
        for i in range(40):
            await queued(stores[0], new_job(thread_ts=f"{i}.6", user=f"U{i % 7}"))
        claims = [s.leases.claim_batch(worker_id=f"w{n}-{k}", lease=60, limit=3, cap=5)
                  for k in range(3) for n, s in enumerate(stores)]
        taken = [j for batch in await asyncio.gather(*claims) for j in batch]
        assert len(taken) == 5 and len({j.id for j in taken}) == 5
        assert await _running(stores[0]) == 5
    finally:
        for s in stores:
            await s.close()


async def test_a_heavy_user_takes_turns_with_the_others(store: Store) -> None:
    heavy = [await queued(store, new_job(thread_ts=f"{i}.7", user="UHEAVY")) for i in range(5)]
    light = await queued(store, new_job(thread_ts="10.7", user="ULIGHT"))
    other_team = await queued(store, new_job(thread_ts="11.7", user="UOTHER", team="T0002"))
    later = await queued(store, new_job(thread_ts="12.7", user="ULATE"))
    # places agree with the order the claims will take
    places = {job.id: (await store.queue.place(job.id))[1] for job in (*heavy, light, other_team, later)}
    order = []
    while (job := await store.leases.claim(worker_id="w", lease=60, cap=10)) is not None:
        order.append(job.id)
    # team T0001: heavy#1, light, late, heavy#2..#5 interleaved with team T0002's single job in the first round
    assert order[:2] == [heavy[0].id, other_team.id]
    assert order.index(light.id) < order.index(heavy[1].id)
    assert order.index(later.id) < order.index(heavy[1].id)
    assert order[-4:] == [j.id for j in heavy[1:]]
    assert sorted(places, key=places.get) == order


async def test_a_thread_keeps_its_order_under_fair_serving(store: Store) -> None:
    a = [await queued(store, new_job(thread_ts=f"{i}.8", user="UA")) for i in range(2)]
    b = [await queued(store, new_job(thread_ts="20.8", user="UB")) for _ in range(3)]  # one thread, in order
    c = await queued(store, new_job(thread_ts="21.8", user="UC"))
    first = await store.leases.claim_batch(worker_id="w", lease=60, limit=10, cap=10)
    assert sorted(j.id for j in first) == [a[0].id, a[1].id, b[0].id, c.id]  # b's next ones wait for b[0]
    for job in first:
        await store.jobs.finish(job.id, lease_no=job.lease_no, status=JobStatus.DONE)
    [second] = await store.leases.claim_batch(worker_id="w", lease=60, limit=10, cap=10)
    assert second.id == b[1].id


def _said(easel: Any, channel: str, ts: str) -> list[str]:
    return [m["text"] for m in easel.slack.messages if m["channel"] == channel and m.get("thread_ts") == ts]


async def test_one_heavy_user_does_not_keep_a_single_request_waiting(easel_factory) -> None:
    """Through Slack: with one generation at a time, a person's five requests and then someone else's one;
    the other's starts second, and its queue message said it was next."""
    easel = await easel_factory(MAX_CONCURRENT_GENERATIONS="1")
    easel.openai.latency = 0.5
    easel.openai.gate.clear()  # hold the generations until every request is in
    heavy = [await easel.sender.mention(f"heavy {i}", channel=f"CH{i}", user="UHEAVY") for i in range(5)]
    await wait_until(lambda: easel.openai.in_flight == 1, timeout=20, what="the first generation")
    light_ts, _ = await easel.sender.mention("light one", channel="CL", user="ULIGHT")
    await wait_until(lambda: _said(easel, "CL", light_ts), timeout=20, what="the light one's place")
    [told] = _said(easel, "CL", light_ts)
    assert "you're next" in told
    def heavy_behind() -> bool:  # the heavy user's waiting ones move behind it (their messages are updated)
        return all(f"number {i + 1} in the queue" in " ".join(_said(easel, f"CH{i}", ts))
                   for i, (ts, _) in enumerate(heavy[1:], start=1))

    await wait_until(heavy_behind, timeout=20, what="the heavy user's places moved back")
    easel.openai.gate.set()
    await wait_until(lambda: len(easel.slack.shared_files) == 6, timeout=60, what="six images")
    prompts = [c["input"][0]["content"][0]["text"] for c in easel.openai.create_requests()]
    assert prompts == ["heavy 0", "light one", "heavy 1", "heavy 2", "heavy 3", "heavy 4"]
    assert easel.openai.peak_in_flight == 1
