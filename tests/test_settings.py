"""Settings per channel: stored with an audit entry per change; the effective options (workspace, channel,
thread, message) clamped by the channel's policy; Easel off, or open to listed people only; the channel's own
daily limit and costs hidden. On SQLite and PostgreSQL, through signed HTTP and the fakes."""

from __future__ import annotations

import asyncio
import time

from storage import Store
from storage.settings import WORKSPACE, ChannelSettings, Settings
from storage.spend import Spend
from tests.test_budgets import WORST, dollars


async def _set(easel, channel: str = "C0001", **fields) -> None:
    await Settings(easel.store.db).change(easel.slack.team_id, channel, ChannelSettings(**fields), by="U0009",
                                          now=time.time())


def _tools(easel) -> list[dict]:
    return [next(t for t in r["tools"] if t["type"] == "image_generation") for r in easel.openai.create_requests()]


# -- stored, with the audit log ----------------------------------------------------------------------------------

async def test_a_change_is_stored_with_an_audit_entry_per_field(store: Store) -> None:
    settings = Settings(store.db)
    assert (await settings.place("T1", "C1")).effective == ChannelSettings()
    changed = await settings.change("T1", "C1", ChannelSettings(model="gpt-image-2", models=("gpt-image-2",),
                                                                enabled=False), by="U9", now=100.0)
    assert sorted(c.field for c in changed) == ["enabled", "model", "models"]
    again = await settings.change("T1", "C1", ChannelSettings(model="gpt-image-2", models=("gpt-image-2",),
                                                              enabled=False), by="U9", now=101.0)
    assert again == []  # nothing changed, nothing recorded
    await settings.change("T1", "C1", ChannelSettings(model="gpt-image-2", enabled=True), by="U8", now=102.0)
    await settings.change("T1", WORKSPACE, ChannelSettings(quality="low", show_costs=False), by="U8", now=103.0)
    place = await settings.place("T1", "C1")
    assert place.channel == ChannelSettings(model="gpt-image-2", enabled=True)
    assert place.effective == ChannelSettings(model="gpt-image-2", enabled=True, quality="low", show_costs=False)
    log = await settings.log("T1")
    assert [c.at for c in log] == sorted((c.at for c in log), reverse=True)  # the newest first
    assert sorted((c.at, c.channel_id, c.user_id, c.field, repr(c.before), repr(c.after)) for c in log) == [
        (100.0, "C1", "U9", "enabled", "None", "False"),
        (100.0, "C1", "U9", "model", "None", "'gpt-image-2'"),
        (100.0, "C1", "U9", "models", "None", "['gpt-image-2']"),
        (102.0, "C1", "U8", "enabled", "False", "True"),
        (102.0, "C1", "U8", "models", "['gpt-image-2']", "None"),
        (103.0, "", "U8", "quality", "None", "'low'"),
        (103.0, "", "U8", "show_costs", "None", "False"),
    ]
    assert len(await settings.log("T1", channel_id="C1")) == 5
    assert (await settings.place("T1", "C2")).effective == ChannelSettings(quality="low", show_costs=False)
    assert (await settings.place("T2", "C1")).effective == ChannelSettings()


async def test_two_admins_saving_at_once_are_both_recorded(store: Store) -> None:
    settings = Settings(store.db)
    await asyncio.gather(*(settings.change("T1", "C1", ChannelSettings(daily_limit_micros=i * 1000), by=f"U{i}",
                                           now=float(i)) for i in range(1, 11)))
    log = await settings.log("T1", channel_id="C1")
    assert len(log) == 10
    final = (await settings.get("T1", "C1")).daily_limit_micros
    # each entry's "before" is what the one before it left: the changes form one chain ending in the stored value
    chain = {c.before: c.after for c in log}
    value, seen = None, 0
    while value in chain:
        value, seen = chain[value], seen + 1
    assert seen == 10 and value == final


# -- the policy: off, listed users, defaults, clamps ---------------------------------------------------------------

async def test_easel_off_in_a_channel_refuses_in_the_thread_and_privately(easel_factory) -> None:
    easel = await easel_factory()
    await _set(easel, enabled=False)
    ts, _ = await easel.sender.mention("a fox")
    await easel.jobs_settled(1)
    assert any("turned off in this channel" in m.get("text", "") for m in easel.slack.thread("C0001", ts))
    result = await easel.sender.command("a fox")
    assert "turned off in this channel" in result.body_text
    await easel.sender.mention("a fox", channel="C0002")  # another channel: on
    await easel.jobs_settled(2)  # the command stored nothing
    assert len(easel.openai.create_requests()) == 1


async def test_only_listed_people_may_use_easel_in_a_channel(easel_factory) -> None:
    easel = await easel_factory()
    await _set(easel, users=("U0002",))
    ts, _ = await easel.sender.mention("a fox")
    await easel.sender.mention("a hen", user="U0002")
    await easel.jobs_settled(2)
    assert any("not one of them" in m.get("text", "") for m in easel.slack.thread("C0001", ts))
    assert "not one of them" in (await easel.sender.command("a fox")).body_text
    assert len(easel.openai.create_requests()) == 1


async def test_effective_options_workspace_then_channel_then_thread_then_message(easel_factory) -> None:
    easel = await easel_factory()
    await _set(easel, WORKSPACE, quality="low", size="1024x1536")
    await _set(easel, "C0001", quality="medium")
    ts, _ = await easel.sender.mention("a fox")  # channel's quality, workspace's size
    await easel.jobs_settled(1)
    await easel.sender.mention("a hen --size 1536x1024", thread_ts=ts)  # the message's flag, sticky
    await easel.jobs_settled(2)
    await easel.sender.mention("a cow --quality high", thread_ts=ts)  # the thread's size, the message's quality
    await easel.jobs_settled(3)
    await easel.sender.mention("a pig", channel="C0002")  # the workspace's
    await easel.jobs_settled(4)
    got = [(t["quality"], t["size"]) for t in _tools(easel)]
    assert got == [("medium", "1024x1536"), ("medium", "1536x1024"), ("high", "1536x1024"), ("low", "1024x1536")]


async def test_a_choice_the_channel_forbids_is_refused_with_the_reason(easel_factory) -> None:
    easel = await easel_factory()
    await _set(easel, models=("gpt-image-2",), max_quality="medium")
    ts, _ = await easel.sender.mention("a fox --quality high")
    await easel.jobs_settled(1)
    assert any("above this channel's highest quality, medium" in m.get("text", "")
               for m in easel.slack.thread("C0001", ts))
    result = await easel.sender.command("a fox --model gpt-image-2.6-flare")
    assert "allows only these image models: gpt-image-2 (not gpt-image-2.6-flare)" in result.body_text
    await easel.sender.mention("a hen")  # auto quality, clamped to the highest allowed
    await easel.jobs_settled(2)
    assert [(t["model"], t["quality"]) for t in _tools(easel)] == [("gpt-image-2", "medium")]


async def test_a_channels_own_daily_limit_is_enforced(easel_factory) -> None:
    easel = await easel_factory(BUDGET_CHANNEL_DAILY_USD="5")
    await _set(easel, daily_limit_micros=WORST - 1)
    ts, _ = await easel.sender.mention("a fox")
    await easel.sender.mention("a fox", channel="C0002")  # the environment's limit there
    [a, b] = sorted(await easel.jobs_settled(2), key=lambda j: j.id)
    assert a.status == "failed" and a.error.startswith("budget:") and b.status == "done"
    [told] = [m["text"] for m in easel.slack.thread("C0001", ts) if "Not drawn" in m.get("text", "")]
    assert "this channel's daily limit" in told and f"of ${dollars(WORST - 1)[:4]}" in told
    assert await Spend(easel.store.db).reservation(a.id) is None


async def test_costs_hidden_under_images_when_a_channel_says_so(easel_factory) -> None:
    easel = await easel_factory()
    await _set(easel, show_costs=False)
    await easel.sender.mention("a fox")
    await easel.sender.mention("a hen", channel="C0002")
    await easel.jobs_settled(2)
    comments = {c.args.get("channel_id") or c.args.get("channel"): str(c.args.get("initial_comment", ""))
                for c in easel.slack.calls_to("files.completeUploadExternal")}
    assert "≈ $" not in comments["C0001"] and "≈ $" in comments["C0002"]
