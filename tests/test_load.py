"""Load: the generation cap, the per-user cap, and queue positions that move."""

from __future__ import annotations

from tests.conftest import wait_until


async def test_waiting_requests_show_their_place_and_it_moves(easel_factory) -> None:
    easel = await easel_factory(MAX_CONCURRENT_GENERATIONS="1")
    easel.openai.latency = 2.0  # longer than the queue messages' 1.5 s update spacing
    easel.openai.gate.clear()  # the first image waits until both others have said their place
    stamps = []
    for i, channel in enumerate(("C1", "C2", "C3")):
        ts, _ = await easel.sender.mention(f"picture {i}", channel=channel, user=f"U{i}")
        stamps.append((channel, ts))
    await wait_until(lambda: easel.openai.in_flight == 1, what="first generation")

    def queued() -> set[str]:
        return {c.args["channel"] for c in easel.slack.calls_to("chat.postMessage")
                if "queue" in c.args.get("text", "")}

    await wait_until(lambda: queued() == {"C2", "C3"}, what="two queue messages")
    easel.openai.gate.set()
    await easel.jobs_settled(3, timeout=30)
    assert len(easel.slack.shared_files) == 3
    posts = {(c.args["channel"], c.args.get("thread_ts")): c.args["text"]
             for c in easel.slack.calls_to("chat.postMessage") if "queue" in c.args.get("text", "")}
    assert "you're next" in posts[stamps[1]]
    assert "number 2 in the queue" in posts[stamps[2]]
    updates = [c.args for c in easel.slack.calls_to("chat.update")]
    third = [u["text"] for u in updates if u["channel"] == "C3"]
    assert any("you're next" in t for t in third), third  # moved from 2 to 1
    assert any("Drawing with" in t for t in third)  # its turn came: the same message shows the drawing
    # every job's status message is gone once the answers landed (the first one's said it was drawing)
    deleted = {(c.args["channel"]) for c in easel.slack.calls_to("chat.delete")}
    assert deleted == {"C1", "C2", "C3"}
    assert not any("queue" in c.args.get("text", "") for c in easel.slack.calls_to("chat.postMessage")
                   if c.args["channel"] == "C1")  # the first one never waited


async def test_generation_cap_holds(easel_factory) -> None:
    easel = await easel_factory(MAX_CONCURRENT_GENERATIONS="2")
    easel.openai.latency = 0.3
    peak = 0
    for i in range(6):
        await easel.sender.mention(f"image {i}", channel=f"C{i}", user=f"U{i}")

    def track() -> bool:
        nonlocal peak
        peak = max(peak, easel.openai.in_flight)
        return len(easel.slack.shared_files) == 6

    await wait_until(track, timeout=30, what="six images")
    assert peak == 2


async def test_per_user_cap_says_so_and_keeps_the_rest(easel_factory) -> None:
    easel = await easel_factory(MAX_QUEUED_PER_USER="2")
    easel.openai.latency = 5
    for i in range(2):
        await easel.sender.mention(f"mine {i}", channel=f"C{i}")
    ts, _ = await easel.sender.mention("one too many", channel="C9")
    result = await easel.sender.command("and another")
    assert "2 requests in progress" in result.body_text
    await easel.slack.wait_until(
        lambda: any("2 requests in progress" in m["text"] and m["thread_ts"] == ts for m in easel.slack.messages),
        what="the cap message")
    jobs = await easel.store.jobs.all()
    assert [j.kind.value for j in jobs] == ["generate", "generate", "reaction", "notice"]
