"""Several Easel processes on one PostgreSQL database: each job runs once, a thread's order holds, the generation
cap holds for both together. (Which replica runs a job is whichever claims it first: with the cap reached, the
one whose generation just ended, so one replica may run them all; tests/test_three_replicas.py shows the
others taking over a dead one's.)"""

from __future__ import annotations

import collections

from tests.conftest import start_easel, stop_easel, wait_until


async def test_two_replicas_share_the_work_and_keep_thread_order(fake_slack, fake_openai, pg_database) -> None:
    url = await pg_database()
    a, runner_a = await start_easel(fake_slack, fake_openai, url, MAX_CONCURRENT_GENERATIONS="3")
    b, runner_b = await start_easel(fake_slack, fake_openai, url, MAX_CONCURRENT_GENERATIONS="3")
    try:
        fake_openai.latency = 0.2
        roots = []
        for i in range(12):  # Slack spreads requests over the replicas behind the load balancer
            sender = (a if i % 2 else b).sender
            ts, result = await sender.mention(f"picture {i}", channel=f"C{i}", user=f"U{i}")
            assert result.status == 200
            roots.append((f"C{i}", ts))
        channel, ts = roots[0]
        for n, sender in enumerate((a.sender, b.sender, a.sender)):  # quick replies, via both replicas
            await sender.message(f"step {n}", channel=channel, thread_ts=ts, user="U0")
        await wait_until(lambda: len(fake_slack.shared_files) == 15, timeout=60, what="15 images")
        await a.jobs_settled(15)
        per_thread = collections.Counter(f["thread_ts"] for f in fake_slack.shared_files)
        assert per_thread[ts] == 4 and all(per_thread[t] == 1 for _, t in roots[1:])
        assert len(fake_openai.create_requests()) == 15  # every job ran exactly once
        assert a.easel.worker.counts["ran"] + b.easel.worker.counts["ran"] == 15
        assert fake_openai.peak_in_flight <= 3  # the cap is the deployment's, not each replica's
        chain = [c for c in fake_openai.create_requests() if c["input"][0]["content"][0]["text"].startswith(
            ("picture 0", "step"))]
        assert [c["input"][0]["content"][0]["text"] for c in chain] == ["picture 0", "step 0", "step 1", "step 2"]
        ids = {r.request["input"][0]["content"][0]["text"]: r.id for r in fake_openai.responses.values()}
        assert chain[1]["previous_response_id"] == ids["picture 0"]
        assert chain[2]["previous_response_id"] == ids["step 0"]
        assert chain[3]["previous_response_id"] == ids["step 1"]
    finally:
        await stop_easel(a, runner_a)
        await stop_easel(b, runner_b)


async def test_a_job_longer_than_its_lease_stays_with_its_replica(fake_slack, fake_openai, pg_database) -> None:
    """The heartbeat renews the leases of the jobs a replica holds (and only while it holds some): a live
    replica's job is never taken over by another, however long it runs."""
    url = await pg_database()
    a, runner_a = await start_easel(fake_slack, fake_openai, url, JOB_LEASE_SECONDS="1", WORKER_POLL_SECONDS="0.2")
    b, runner_b = await start_easel(fake_slack, fake_openai, url, JOB_LEASE_SECONDS="1", WORKER_POLL_SECONDS="0.2")
    try:
        fake_openai.latency = 3.0  # three leases long; B looks for takeable jobs five times a second
        await a.sender.mention("a slow picture")
        await wait_until(lambda: len(fake_slack.shared_files) == 1, timeout=20, what="the image")
        await a.jobs_settled(1)
        assert len(fake_openai.create_requests()) == 1
        assert a.easel.worker.counts["ran"] + b.easel.worker.counts["ran"] == 1  # taken once, by either
    finally:
        await stop_easel(a, runner_a)
        await stop_easel(b, runner_b)
