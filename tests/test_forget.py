"""`@Easel forget` in a thread: its chain and records go at once, for the person who started it or an admin (a
workspace admin or owner by users.info, or one of EASEL_ADMINS); on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.conftest import Running


async def _thread(easel: Running, user: str = "U1") -> str:
    ts, _ = await easel.sender.mention("a paper boat", user=user)
    await easel.jobs_settled(1)
    assert await easel.store.threads.get(team_id=easel.slack.team_id, channel_id="C0001", thread_ts=ts) is not None
    return ts


def _said(easel: Running, ts: str) -> list[str]:
    return [m.get("text", "") for m in easel.slack.thread("C0001", ts)]


async def _forget(easel: Running, ts: str, user: str) -> None:
    await easel.sender.mention("forget", thread_ts=ts, user=user)
    await easel.jobs_settled()  # (a thread forgotten takes its finished jobs with it)


async def test_the_starter_makes_easel_forget_the_thread(easel: Running) -> None:
    ts = await _thread(easel)
    await _forget(easel, ts, "U1")
    assert await easel.store.threads.get(team_id=easel.slack.team_id, channel_id="C0001", thread_ts=ts) is None
    assert any("Forgotten" in text for text in _said(easel, ts))
    gens = list(await easel.store.generations.all())
    assert gens and all(g["request_text"] == "" and g["revised_prompt"] is None for g in gens)
    # a later reply there is no longer Easel's: nothing is asked of OpenAI
    creates = len(easel.openai.create_requests())
    await easel.sender.message("make it red", thread_ts=ts, user="U1")
    assert [j.kind for j in await easel.store.jobs.all()] == ["forget"]  # the reply made no job
    assert len(easel.openai.create_requests()) == creates


async def test_someone_else_is_refused_and_nothing_is_forgotten(easel: Running) -> None:
    ts = await _thread(easel)
    await _forget(easel, ts, "U2")
    assert await easel.store.threads.get(team_id=easel.slack.team_id, channel_id="C0001", thread_ts=ts) is not None
    assert any("Only <@U1>" in text for text in _said(easel, ts))
    assert [c.args["user"] for c in easel.slack.calls_to("users.info")] == ["U2"]


async def test_a_workspace_admin_may(easel: Running) -> None:
    easel.slack.users["U3"] = {"is_admin": True}
    ts = await _thread(easel)
    await _forget(easel, ts, "U3")
    assert await easel.store.threads.get(team_id=easel.slack.team_id, channel_id="C0001", thread_ts=ts) is None


async def test_an_easel_admin_may(easel_factory) -> None:
    easel = await easel_factory(EASEL_ADMINS="U4")
    ts = await _thread(easel)
    await _forget(easel, ts, "U4")
    assert await easel.store.threads.get(team_id=easel.slack.team_id, channel_id="C0001", thread_ts=ts) is None
    assert easel.slack.calls_to("users.info") == []


async def test_forget_outside_a_thread_says_where(easel: Running) -> None:
    ts, _ = await easel.sender.mention("forget")
    await easel.jobs_settled(1)
    assert any("in the thread you want me to forget" in text for text in _said(easel, ts))
    assert easel.openai.create_requests() == []
