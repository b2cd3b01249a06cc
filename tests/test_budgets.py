"""Budgets: reserved at the worst case before a request is sent, all or nothing, once per job; settled to the
reported cost, released on failure; refusals that say which limit, what is left and when it resets; the
confirmation button; /imagine usage and the workspace's time zone; a retry on a dearer model reserving its own
worst case first; reservations no job will settle released by the periodic purge. On SQLite and PostgreSQL,
through signed HTTP and the fakes."""

from __future__ import annotations

import asyncio
import datetime
import json
import time

import pytest

from bench.budgets import hammer
from bot.budgets import CONFIRM_ACTION, periods
from bot.config import ConfigError, Settings
from bot.prices import Prices
from bot.processes import purge_periodically
from storage import Store
from storage.models import Generation, JobStatus
from storage.retention import Retention
from storage.spend import Counter, Refused, Reservation, Spend, scopes
from tests.conftest import Running, start_easel, stop_easel, wait_until
from tests.fakes.openai_api import Fault

# A request with the default options (gpt-image-2, quality and size auto, the unpriced chat model's stand-in, one
# preview while it draws: PREVIEW_IMAGES=1).
WORST = Prices().worst_case(chat_model="gpt-5.4", image_model="gpt-image-2", quality="auto", size="auto",
                            previews=1)


def dollars(micros: int) -> str:
    return f"{micros / 1_000_000:.6f}"


# -- the storage: all or nothing, once per job ------------------------------------------------------------------

async def _reserve(spend: Spend, job_id: int, *, user: str = "U1", amount: int = 100,
                   limits: list[Counter] | None = None) -> Reservation | Refused:
    return await spend.reserve(job_id=job_id, team_id="T1", channel_id="C1", user_id=user, model="gpt-image-2",
                               day="2026-12-01", month="2026-12", amount_micros=amount, limits=limits or [],
                               now=0.0)


async def test_concurrent_reservations_never_overrun_a_limit(store: Store) -> None:
    spend = Spend(store.db)
    user, channel, team = scopes("T1", "C1", "U1")
    limits = [Counter(user, "2026-12-01", 350), Counter(team, "2026-12", 10_000)]
    found = await asyncio.gather(*(_reserve(spend, i, limits=limits) for i in range(1, 51)))
    held = [r for r in found if isinstance(r, Reservation)]
    refused = [r for r in found if isinstance(r, Refused)]
    assert len(held) == 3 and len(refused) == 47
    assert all(r.counter.scope == user and r.left_micros == 50 for r in refused)
    tallies = await spend.tallies([(user, "2026-12-01"), (channel, "2026-12-01"), (team, "2026-12")])
    assert [t.reserved_micros for t in tallies.values()] == [300, 300, 300]  # a refusal holds nothing anywhere


async def test_a_job_reserves_once_and_settles_once(store: Store) -> None:
    spend = Spend(store.db)
    user = scopes("T1", "C1", "U1")[0]
    first = await _reserve(spend, 7, amount=500)
    again = await _reserve(spend, 7, amount=500)  # the job run again after a crash
    assert isinstance(first, Reservation) and first.fresh
    assert isinstance(again, Reservation) and not again.fresh
    assert (await spend.tallies([(user, "2026-12-01")]))[(user, "2026-12-01")].reserved_micros == 500
    assert (await spend.settle(7, cost_micros=120)) is not None
    assert (await spend.settle(7, cost_micros=120)) is None  # once only
    tally = (await spend.tallies([(user, "2026-12-01")]))[(user, "2026-12-01")]
    assert (tally.spent_micros, tally.reserved_micros) == (120, 0)
    assert (await _reserve(spend, 7)).state == "settled"  # a settled job holds nothing more when run again


async def test_a_released_reservation_frees_its_room(store: Store) -> None:
    spend = Spend(store.db)
    user = scopes("T1", "C1", "U1")[0]
    limits = [Counter(user, "2026-12-01", 100)]
    assert isinstance(await _reserve(spend, 1, limits=limits), Reservation)
    assert isinstance(await _reserve(spend, 2, limits=limits), Refused)
    await spend.settle(1, cost_micros=0, released=True)
    assert isinstance(await _reserve(spend, 2, limits=limits), Reservation)


async def test_reservations_no_job_will_settle_are_released_by_the_periodic_purge(store: Store) -> None:
    """Held by a job that runs now: kept. Held by a job that ended without settling (what its generations say
    OpenAI billed is kept), by a job that is gone, or for longer than a day: released by the purge, which runs
    even when RETENTION_DAYS=0 keeps everything else."""
    from tests.test_store import CHANNEL, TEAM, USER, enqueue, new_job

    spend = Spend(store.db)
    running, ended, stuck = [await enqueue(store, new_job(thread_ts=f"{i}.0")) for i in (1, 2, 3)]
    taken = {}
    for _ in range(3):  # claimed, as a worker would (a job's end is fenced on its claim)
        job = await store.leases.claim_new(worker_id="w", lease=60)
        assert job is not None
        taken[job.id] = job
    for job_id, age in ((running.id, 0), (ended.id, 0), (stuck.id, 2 * 86400), (999_999, 0)):
        await spend.reserve(job_id=job_id, team_id=TEAM, channel_id=CHANNEL, user_id=USER, model="gpt-image-2",
                            day="2026-12-01", month="2026-12", amount_micros=1000, limits=[],
                            now=time.time() - age)
    billed = Generation(job_id=ended.id, team_id=TEAM, channel_id=CHANNEL, thread_ts="2.0", user_id=USER,
                        request_text="a fox", options={}, model="gpt-5.4", status="failed", cost_micros=70)
    await store.jobs.finish(ended.id, lease_no=taken[ended.id].lease_no, status=JobStatus.FAILED,
                            error="internal: a crash between its end and its settling", generations=[billed])
    stop = asyncio.Event()
    task = asyncio.create_task(purge_periodically(Retention(store.db), days=0, stop=stop, spend=spend))

    async def released() -> bool:
        states = [(await spend.reservation(j)).state for j in (ended.id, stuck.id, 999_999)]
        return states == ["released"] * 3

    await wait_until(released, what="the purge to release what no job will settle")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert (await spend.reservation(running.id)).state == "reserved"
    assert [(await spend.reservation(j)).cost_micros for j in (ended.id, stuck.id, 999_999)] == [70, 0, 0]
    user = scopes(TEAM, CHANNEL, USER)[0]
    tally = (await spend.tallies([(user, "2026-12-01")]))[(user, "2026-12-01")]
    assert (tally.spent_micros, tally.reserved_micros) == (70, 1000)
    assert await spend.release_stale(now=time.time()) == 0  # once only
    assert await spend.settle(stuck.id, cost_micros=5) is None  # a late settle changes nothing


def test_days_and_months_follow_the_workspaces_time_zone() -> None:
    late = datetime.datetime(2026, 12, 31, 23, 30, tzinfo=datetime.UTC).timestamp()
    utc, paris = periods(late, None), periods(late, "Europe/Paris")
    assert (utc.day, utc.month) == ("2026-12-31", "2026-12")
    assert (paris.day, paris.month) == ("2027-01-01", "2027-01")  # 00:30 in Paris
    assert utc.day_ends == datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC).timestamp()
    assert paris.month_ends == datetime.datetime(2027, 1, 31, 23, tzinfo=datetime.UTC).timestamp()


def test_a_bad_budget_is_reported_with_the_other_problems() -> None:
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "OPENAI_API_KEY": "k",
                           "BUDGET_USER_DAILY_USD": "lots", "CONFIRM_ABOVE_USD": "-1", "PORT": "0"})
    text = str(e.value)
    assert "BUDGET_USER_DAILY_USD" in text and "CONFIRM_ABOVE_USD" in text and "PORT" in text.upper()
    ok = Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "OPENAI_API_KEY": "k",
                            "BUDGET_USER_DAILY_USD": "$2.50", "BUDGET_CHANNEL_DAILY_USD": ""})
    assert ok.budget_limits().user_daily == 2_500_000 and ok.budget_limits().channel_daily is None


# -- through Slack and OpenAI ------------------------------------------------------------------------------------

async def _counter(easel: Running, scope: str, period: str) -> tuple[int, int]:
    tally = (await Spend(easel.store.db).tallies([(scope, period)]))[(scope, period)]
    return tally.spent_micros, tally.reserved_micros


def _today() -> tuple[str, str]:
    p = periods(datetime.datetime.now(datetime.UTC).timestamp(), None)
    return p.day, p.month


async def test_a_drawn_request_is_settled_to_what_openai_reported(easel_factory) -> None:
    easel = await easel_factory(BUDGET_USER_DAILY_USD="5")
    await easel.sender.mention("a fox in a bowler hat")
    [job] = await easel.jobs_settled(1)
    assert job.status == "done"
    generations = await easel.store.generations.all()
    cost = sum(g["cost_micros"] or 0 for g in generations)
    assert 0 < cost < WORST
    held = await Spend(easel.store.db).reservation(job.id)
    assert (held.state, held.reserved_micros, held.cost_micros) == ("settled", WORST, cost)
    day, month = _today()
    user, channel, team = scopes(easel.slack.team_id, "C0001", "U0001")
    for scope, period in ((user, day), (channel, day), (team, month)):
        assert await _counter(easel, scope, period) == (cost, 0)


@pytest.mark.parametrize(("setting", "named"), [
    ("BUDGET_USER_DAILY_USD", "your daily limit"),
    ("BUDGET_CHANNEL_DAILY_USD", "this channel's daily limit"),
    ("BUDGET_WORKSPACE_MONTHLY_USD", "the workspace's monthly limit"),
])
async def test_a_request_over_a_limit_is_not_sent_and_the_thread_is_told(easel_factory, setting: str,
                                                                         named: str) -> None:
    easel = await easel_factory(**{setting: dollars(WORST - 1)})
    ts, _ = await easel.sender.mention("a fox in a bowler hat")
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed" and job.error.startswith("budget:")
    assert easel.openai.create_requests() == []
    [told] = [m["text"] for m in easel.slack.thread("C0001", ts) if "Not drawn" in m.get("text", "")]
    assert named in told and "left of" in told and "resets" in told
    assert "up to $0.48" in told  # the worst case, rounded up
    assert "$0.47 left" in told  # what is left, rounded down
    assert (await Spend(easel.store.db).reservation(job.id)) is None


async def test_a_slash_command_over_its_limit_is_told_privately(easel_factory) -> None:
    easel = await easel_factory(BUDGET_USER_DAILY_USD="0.10")
    await easel.sender.command("a lighthouse", response_url=easel.slack.response_url("b1"))
    await easel.jobs_settled(1)
    calls = await easel.slack.wait_for("response_url")
    assert any("Not drawn" in c.args.get("text", "") and "your daily limit" in c.args["text"] for c in calls)
    assert easel.openai.create_requests() == []


async def test_a_failed_request_releases_its_reservation(easel_factory) -> None:
    easel = await easel_factory(BUDGET_USER_DAILY_USD="5")
    easel.openai.add_fault(Fault(fail_response=True, code="server_error", message="The server had an error"))
    await easel.sender.mention("a fox in a bowler hat")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "failed"
    held = await Spend(easel.store.db).reservation(job.id)
    assert (held.state, held.cost_micros) == ("released", 0)
    day, _ = _today()
    assert await _counter(easel, scopes(easel.slack.team_id, "C0001", "U0001")[0], day) == (0, 0)


async def test_a_moderation_block_costs_what_openai_billed(easel_factory) -> None:
    """Moderation blocks the image: the request fails, and what OpenAI billed for the turn is what it cost."""
    easel = await easel_factory(BUDGET_USER_DAILY_USD="5")
    await easel.sender.mention("a fox [[moderation]]")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "failed" and job.error.startswith("moderation")
    held = await Spend(easel.store.db).reservation(job.id)
    [generation] = await easel.store.generations.all()
    assert held.state == "released"
    assert held.cost_micros == generation["cost_micros"] > 0
    day, _ = _today()
    user = scopes(easel.slack.team_id, "C0001", "U0001")[0]
    assert await _counter(easel, user, day) == (held.cost_micros, 0)


async def test_a_job_taken_again_after_429s_reserves_once(easel_factory) -> None:
    """A job that met 429s runs again (twice) in its turn: its reservation is found, not made again (under a
    limit with room for one and a half of it, a second reservation would refuse the job)."""
    easel = await easel_factory(BUDGET_USER_DAILY_USD=dollars(WORST + WORST // 2), OPENAI_MAX_RETRIES="1")
    easel.openai.add_fault(Fault(status=429, code="rate_limit_exceeded", retry_after=0.01, times=2))
    await easel.sender.mention("a fox in a bowler hat")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "done" and job.progress.paced == 2
    held = await Spend(easel.store.db).reservation(job.id)
    assert held.state == "settled" and held.reserved_micros == WORST
    day, _ = _today()
    assert await _counter(easel, scopes(easel.slack.team_id, "C0001", "U0001")[0], day) == (held.cost_micros, 0)


# A model table that says gpt-image-2 takes a transparent background (OpenAI refuses it: the turn is tried once
# more on gpt-image-2.5-flare), and a price table where that model's images cost ten times as much.
TRANSPARENT_TWO = '{"gpt-image-2": {"flexible_sizes": true, "transparent": true}}'
DEAR_FLARE = {"gpt-image-2.5-flare": {"text_in": 5, "cached_in": 1.25, "text_out": 30, "image_in": 8,
                                      "image_out": 300}}
FIRST = Prices(DEAR_FLARE).worst_case(chat_model="gpt-5.4", image_model="gpt-image-2", quality="auto", size="auto",
                                      previews=1)
RETRY = Prices(DEAR_FLARE).worst_case(chat_model="gpt-5.4", image_model="gpt-image-2.5-flare", quality="auto",
                                      size="auto")  # at the least: without its preview


async def test_a_retry_on_a_dearer_model_reserves_its_own_worst_case_first(easel_factory) -> None:
    easel = await easel_factory(EXTRA_IMAGE_MODELS=TRANSPARENT_TWO, PRICES=json.dumps(DEAR_FLARE),
                                BUDGET_USER_DAILY_USD="50")
    await easel.sender.mention("a sticker --background transparent")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "done"
    first, retry = [c["tools"][0] for c in easel.openai.create_requests()]
    assert (first["model"], retry["model"]) == ("gpt-image-2", "gpt-image-2.5-flare")
    worst = easel.easel.budgets.worst_case(retry, chat_model=None, input_images=0)
    assert FIRST < RETRY <= worst
    held = await Spend(easel.store.db).reservation(job.id)
    assert (held.state, held.reserved_micros) == ("settled", worst)
    assert held.cost_micros <= RETRY
    day, _ = _today()
    assert await _counter(easel, scopes(easel.slack.team_id, "C0001", "U0001")[0], day) == (held.cost_micros, 0)


async def test_a_retry_that_would_overrun_a_limit_is_not_sent(easel_factory) -> None:
    """The first try fits the limit, its dearer retry does not: the retry is not sent, the person is told, and
    the reservation is released (the refused first try was not billed)."""
    limit = FIRST + (RETRY - FIRST) // 2
    easel = await easel_factory(EXTRA_IMAGE_MODELS=TRANSPARENT_TWO, PRICES=json.dumps(DEAR_FLARE),
                                BUDGET_USER_DAILY_USD=dollars(limit))
    ts, _ = await easel.sender.mention("a sticker --background transparent")
    [job] = await easel.jobs_settled(1, timeout=30)
    assert job.status == "failed" and job.error == "budget: user limit"
    assert [c["tools"][0]["model"] for c in easel.openai.create_requests()] == ["gpt-image-2"]
    [told] = [m["text"] for m in easel.slack.thread("C0001", ts) if "Not drawn" in m.get("text", "")]
    assert "tried once more another way" in told and "more than was set aside for it" in told
    assert "your daily limit" in told
    held = await Spend(easel.store.db).reservation(job.id)
    assert (held.state, held.reserved_micros, held.cost_micros) == ("released", FIRST, 0)
    day, _ = _today()
    assert await _counter(easel, scopes(easel.slack.team_id, "C0001", "U0001")[0], day) == (0, 0)


async def test_a_raise_is_all_or_nothing(store: Store) -> None:
    spend = Spend(store.db)
    user, channel, team = scopes("T1", "C1", "U1")
    limits = [Counter(user, "2026-12-01", 1000), Counter(team, "2026-12", 10_000)]
    assert isinstance(await _reserve(spend, 1, amount=400, limits=limits), Reservation)
    assert isinstance(await _reserve(spend, 2, amount=400, limits=limits), Reservation)
    refused = await spend.raise_to(1, amount_micros=700, limits=limits)  # 300 more: only 200 left
    assert isinstance(refused, Refused) and refused.counter.scope == user and refused.left_micros == 200
    raised = await spend.raise_to(1, amount_micros=600, limits=limits)
    assert isinstance(raised, Reservation) and raised.reserved_micros == 600
    assert (await spend.raise_to(1, amount_micros=500, limits=limits)).reserved_micros == 600  # never lowered
    tallies = await spend.tallies([(user, "2026-12-01"), (channel, "2026-12-01"), (team, "2026-12")])
    assert [t.reserved_micros for t in tallies.values()] == [1000, 1000, 1000]
    await spend.settle(1, cost_micros=650)
    tally = (await spend.tallies([(user, "2026-12-01")]))[(user, "2026-12-01")]
    assert (tally.spent_micros, tally.reserved_micros) == (650, 400)


# -- asking first --------------------------------------------------------------------------------------------------

def _button(message: dict) -> dict:
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    [button] = actions["elements"]
    return button


async def test_above_the_confirmation_threshold_nothing_is_spent_until_the_requester_clicks(
        easel_factory, fake_slack, fake_openai, database_url) -> None:
    easel = await easel_factory(CONFIRM_ABOVE_USD="0.43", BUDGET_USER_DAILY_USD="5")
    ts, _ = await easel.sender.mention("a fox in a bowler hat")
    [asked] = await easel.jobs_settled(1)
    assert asked.status == "done" and asked.progress.confirm_ts
    assert easel.openai.create_requests() == []
    assert await Spend(easel.store.db).reservation(asked.id) is None
    [question] = [m for m in easel.slack.thread("C0001", ts) if m.get("blocks")]
    button = _button(question)
    assert button["action_id"] == CONFIRM_ACTION
    assert button["text"]["text"] == "Draw it, up to $0.48"

    # a restart between the question and the click changes nothing: a second Easel on the same database
    again = await easel_factory(CONFIRM_ABOVE_USD="0.43", BUDGET_USER_DAILY_USD="5")
    sender = again.sender
    other = sender.block_actions_payload(CONFIRM_ACTION, value=button["value"], user="U0002",
                                         message_ts=question["ts"], thread_ts=ts,
                                         response_url=again.slack.response_url("c1"))
    assert (await sender.action(other)).status == 200
    [refusal] = await again.slack.wait_for("response_url")
    assert refusal.args["response_type"] == "ephemeral" and "Only <@U0001>" in refusal.args["text"]
    assert easel.openai.create_requests() == []

    mine = sender.block_actions_payload(CONFIRM_ACTION, value=button["value"], user="U0001",
                                        message_ts=question["ts"], thread_ts=ts,
                                        response_url=again.slack.response_url("c2"))
    assert (await sender.action(mine)).status == 200
    await sender.action(mine)  # a second click starts nothing more
    jobs = await again.jobs_settled(2, timeout=30)
    assert [j.status for j in jobs] == ["done", "done"]
    assert jobs[1].options.confirmed_from == asked.id
    assert len(easel.openai.create_requests()) == 1
    assert len(easel.slack.shared_files) == 1 and easel.slack.shared_files[0]["thread_ts"] == ts
    held = await Spend(again.store.db).reservation(jobs[1].id)
    assert held.state == "settled" and held.reserved_micros == WORST
    texts = [c.args.get("text", "") for c in again.slack.calls_to("response_url")]
    assert any("confirmed" in t for t in texts) and any("Already confirmed" in t for t in texts)


async def test_below_the_confirmation_threshold_it_just_draws(easel_factory) -> None:
    easel = await easel_factory(CONFIRM_ABOVE_USD="0.50")
    await easel.sender.mention("a fox in a bowler hat")
    [job] = await easel.jobs_settled(1)
    assert job.status == "done" and job.progress.confirm_ts is None
    assert len(easel.openai.create_requests()) == 1


# -- seeing it ------------------------------------------------------------------------------------------------------

async def test_usage_shows_a_person_their_spend_and_an_admin_the_channel_and_workspace(easel_factory) -> None:
    easel = await easel_factory(BUDGET_USER_DAILY_USD="2", BUDGET_WORKSPACE_MONTHLY_USD="100")
    await easel.sender.mention("a fox in a bowler hat")
    await easel.sender.mention("a red balloon", user="U0002")
    await easel.jobs_settled(2)
    result = await easel.sender.command("usage")
    text = result.json["text"] if result.json else result.body_text
    assert "Today" in text and "This month" in text and "gpt-image-2" in text
    assert "left of $2.00" in text
    assert "The workspace" not in text and "Top users" not in text  # not an admin
    easel.slack.users["U0009"] = {"is_admin": True}
    result = await easel.sender.command("usage", user="U0009")
    text = result.json["text"] if result.json else result.body_text
    assert "This channel" in text and "The workspace" in text and "left of $100.00" in text
    assert "Top users this month: " in text and "<@U0001>" in text and "<@U0002>" in text
    assert "Top channels this month: <#C0001>" in text
    assert easel.openai.create_requests() and len(easel.openai.create_requests()) == 2  # usage drew nothing


async def test_an_admin_sets_the_workspaces_time_zone(easel_factory) -> None:
    easel = await easel_factory()
    result = await easel.sender.command("settings tz Europe/Paris")
    assert "Only Easel's admins" in result.body_text
    easel.slack.users["U0009"] = {"is_owner": True}
    result = await easel.sender.command("settings tz Mars/Olympus", user="U0009")
    assert "not a time zone" in result.body_text
    result = await easel.sender.command("settings tz Europe/Paris", user="U0009")
    assert "now counted in Europe/Paris" in result.body_text
    assert await Spend(easel.store.db).time_zone(easel.slack.team_id) == "Europe/Paris"
    result = await easel.sender.command("usage")
    assert "Europe/Paris" in json.dumps(result.json or result.body_text)
    await easel.sender.mention("a fox in a bowler hat")
    [job] = await easel.jobs_settled(1)
    held = await Spend(easel.store.db).reservation(job.id)
    assert held.day == periods(time.time(), "Europe/Paris").day


# -- under load: two Easels, one database -----------------------------------------------------------------------------

async def test_100_concurrent_requests_over_two_easels_never_overrun_a_user_limit(
        fake_slack, fake_openai, pg_database) -> None:
    """10 people send 10 requests each, at once, half to each of two Easels on one PostgreSQL database, under a
    user limit that fits 3 requests at their worst case: 0 overruns, exactly 3 drawn each, 70 refused and told."""
    url = await pg_database()
    limit = 3 * WORST + WORST // 2
    env = {"BUDGET_USER_DAILY_USD": dollars(limit), "MAX_QUEUED_PER_USER": "100", "WORKER_POLL_SECONDS": "1"}
    started = [await start_easel(fake_slack, fake_openai, url, **env) for _ in range(2)]
    spend = Spend(started[0][0].store.db)

    async def counters(people):
        day, _ = _today()
        keys = [(scopes(fake_slack.team_id, "C0001", p)[0], day) for p in people]
        found = await spend.tallies(keys)
        return {p: found[k].used_micros for p, k in zip(people, keys, strict=True)}

    try:
        figures = await hammer(senders=[r.sender for r, _ in started], slack=fake_slack, openai=fake_openai,
                               counters=counters, limit_micros=limit, timeout=120)
        for running, _ in started:
            await running.jobs_settled(timeout=60)
    finally:
        for running, runner in started:
            await stop_easel(running, runner)
    print("\n".join(figures.lines()))
    assert figures.overruns_held == 0 and figures.overruns_final == 0
    assert figures.drawn == 30 and figures.exact and figures.creates == 30
    assert figures.refused_and_told == 70 and figures.refused_untold == 0 and figures.told_and_drawn == 0
