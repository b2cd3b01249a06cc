"""Today's models, end to end on both databases: options per model, shutdowns (built in, learned from
GET /v1/models, and passing while Easel runs), refusals turned into a retry or a plain answer, and what every
request carries (safety_identifier, moderation, web search)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from bot import assembly as easel_app
from bot import web as easel_web
from tests.conftest import SIGNING_SECRET, Running, settings_for, stop_easel, wait_until
from tests.fakes.openai_api import FakeOpenAI, Fault
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender

Start = Callable[..., Awaitable[Running]]


class Clock:
    """The day Easel and the fake OpenAI both go by."""

    def __init__(self, day: datetime.date):
        self.day = day

    def __call__(self) -> datetime.date:
        return self.day


@pytest.fixture
def clock(fake_openai: FakeOpenAI) -> Clock:
    c = Clock(datetime.date(2026, 12, 1))
    fake_openai.today = c
    return c


@pytest.fixture
async def start(fake_slack: FakeSlack, fake_openai: FakeOpenAI, database_url: str,
                clock: Clock) -> AsyncIterator[Start]:
    """Start Easel on `clock`'s day; `await start(refresh=True, ENV=...)` also starts its model-list reads."""
    started: list[tuple[Running, web.AppRunner]] = []

    async def go(*, refresh: bool = False, build: dict[str, Any] | None = None, **env: str) -> Running:
        settings = settings_for(fake_slack, fake_openai, database_url, **env)
        easel = await easel_app.build(settings, today=clock, **(build or {}))
        runner = web.AppRunner(easel_web.web_app(easel))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        easel.worker.start()
        if refresh:
            easel.refresher.start()
        sender = SlackSender(url=url + easel_web.EVENTS_PATH, signing_secret=SIGNING_SECRET,
                             team_id=fake_slack.team_id, bot_user_id=fake_slack.bot_user_id)
        running = Running(easel=easel, slack=fake_slack, openai=fake_openai, sender=sender, url=url)
        started.append((running, runner))
        return running

    yield go
    for running, runner in started:
        await stop_easel(running, runner)


def _texts(easel: Running, ts: str, channel: str = "C0001") -> list[str]:
    return [m["text"] for m in easel.slack.thread(channel, ts) if m.get("text")]


async def _image(easel: Running, n: int = 1) -> dict:
    await easel.slack.wait_for("files.completeUploadExternal", count=n)
    await easel.jobs_settled(n)
    return easel.slack.shared_files[n - 1]


def _models_sent(easel: Running) -> list[str]:
    return [c["tools"][0]["model"] for c in easel.openai.create_requests()]


# -- options per model, shut-down models -----------------------------------------------------------


async def test_xhigh_and_complexity_go_only_to_models_that_take_them(start: Start) -> None:
    easel = await start()
    ts, _ = await easel.sender.mention("a poster --quality xhigh")
    [call] = await easel.slack.wait_for("chat.postMessage")
    assert "gpt-image-2: it takes low, medium, high, auto" in call.args["text"]
    await easel.sender.mention("a poster --quality max --complexity high --model gpt-image-2.6-flare", channel="C2")
    await _image(easel)
    [create] = easel.openai.create_requests()
    assert (create["tools"][0]["quality"], create["tools"][0]["complexity"]) == ("max", "high")


async def test_a_shut_down_model_asked_for_is_refused_with_its_date_and_never_sent(start: Start) -> None:
    easel = await start()
    ts, _ = await easel.sender.mention("a logo --model gpt-image-1.5")
    [call] = await easel.slack.wait_for("chat.postMessage")
    assert call.args["thread_ts"] == ts
    assert "shut down by OpenAI on 2026-12-01" in call.args["text"]
    assert "--model gpt-image-2.6-sunburst" in call.args["text"]
    result = await easel.sender.command("a logo --model chatgpt-image-latest")
    assert "2026-12-01" in result.body_text
    await easel.jobs_settled(1)
    assert easel.openai.create_requests() == []


async def test_a_configured_shut_down_image_model_is_replaced_with_one_warning_and_told_once(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    easel = await start(IMAGE_MODEL="gpt-image-1.5")
    ts, _ = await easel.sender.mention("a castle")
    first = await _image(easel)
    assert "gpt-image-1.5 was shut down by OpenAI on 2026-12-01" in first["initial_comment"]
    assert "gpt-image-2.6-sunburst" in first["initial_comment"]
    await easel.sender.message("at night", thread_ts=ts)
    second = await _image(easel, 2)
    assert "shut down" not in second["initial_comment"]  # said once in the thread
    await easel.sender.mention("a boat", channel="C2")
    await _image(easel, 3)
    assert _models_sent(easel) == ["gpt-image-2.6-sunburst"] * 3  # never the shut-down model
    warnings = [r for r in caplog.records if "gpt-image-1.5 was shut down" in r.getMessage()]
    assert len(warnings) == 1


async def test_a_shut_down_conversational_model_is_replaced(start: Start, clock: Clock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    clock.day = datetime.date(2026, 12, 11)
    easel = await start(OPENAI_MODEL="gpt-5")
    await easel.sender.mention("a castle")
    shared = await _image(easel)
    await easel.sender.mention("a boat", channel="C2")
    await _image(easel, 2)
    assert [c["model"] for c in easel.openai.create_requests()] == ["gpt-5.4", "gpt-5.4"]
    assert "gpt-5 was shut down by OpenAI on 2026-12-11" in shared["initial_comment"]
    assert len([r for r in caplog.records if "OPENAI_MODEL gpt-5 was shut down" in r.getMessage()]) == 1
    gens = await easel.store.generations.all()
    assert gens[0]["model"] == "gpt-5.4"


# -- the lifecycle from GET /v1/models -------------------------------------------------------------


async def test_a_shutdown_date_that_passes_while_easel_runs_replaces_the_model_without_a_restart(
    start: Start, clock: Clock
) -> None:
    easel = await start()
    easel.openai.models["gpt-image-2"] = "2026-12-03"  # OpenAI announces it
    assert await easel.easel.refresher.refresh()
    assert easel.easel.lifecycle.table.ending_soon("gpt-image-2")
    clock.day = datetime.date(2026, 12, 2)
    easel.openai.latency = 0.5
    ts, _ = await easel.sender.mention("a house")
    await easel.openai.wait_for_creates(1)
    await easel.sender.message("add a garden", thread_ts=ts)  # taken on the 2nd, waits behind the first
    clock.day = datetime.date(2026, 12, 3)  # the date passes while the reply waits
    first = await _image(easel)
    assert "gpt-image-2 shuts down on 2026-12-03 (tomorrow)" in first["initial_comment"]
    easel.openai.latency = 0
    second = await _image(easel, 2)
    assert _models_sent(easel) == ["gpt-image-2", "gpt-image-2.5-flare"]  # the dead model is never sent
    assert "gpt-image-2 was shut down by OpenAI on 2026-12-03, so this is drawn with" in second["initial_comment"]
    await easel.sender.mention("a tree", channel="C2")  # a new request is resolved on today's line-up
    third = await _image(easel, 3)
    assert _models_sent(easel)[-1] == "gpt-image-2.5-flare" and "shut down" in third["initial_comment"]
    assert len(easel.openai.create_requests()) == 3  # nothing refused, nothing sent twice


async def test_an_unreachable_model_list_leaves_the_built_in_table_and_is_read_again(start: Start) -> None:
    easel = await start(build={"retry_every": 0.05})
    easel.openai.add_fault(Fault(route="models", status=500, times=2))  # both tries of the first read
    easel.openai.models["gpt-image-2.5-flare"] = "2026-12-10"
    refresher = easel.easel.refresher
    assert not await refresher.refresh()  # not fatal
    table = easel.easel.lifecycle.table
    assert table.shutdown_date("gpt-image-2.5-flare") is None  # the built-in table stands
    await easel.sender.mention("a sticker --background transparent")
    shared = await _image(easel)  # and serves
    assert _models_sent(easel) == ["gpt-image-2.5-flare"] and "shuts down" not in shared["initial_comment"]
    refresher.start()  # its first try is due already (a failure is retried soon)
    await wait_until(lambda: refresher.reads == 1, what="the list read again")
    assert table.ending_soon("gpt-image-2.5-flare")
    assert len([r for r in easel.openai.requests if r.path == "/v1/models"]) == 3
    assert (await easel.store.lifecycle.read()).shutdowns["gpt-image-2.5-flare"] == "2026-12-10"


async def test_the_process_answering_slack_learns_the_lifecycle_from_the_database(
    start: Start, clock: Clock, database_url: str
) -> None:
    easel = await start()
    t = [1000.0]
    intake = await easel_app.build_intake(settings_for(easel.slack, easel.openai, database_url), wake=lambda: None,
                                          today=clock, now=lambda: t[0])
    try:
        await intake.lifecycle.read()
        assert not intake.lifecycle.table.is_shut_down("gpt-image-2")
        easel.openai.models["gpt-image-2"] = "2026-11-30"
        await easel.easel.refresher.refresh()  # the worker reads the list and stores it
        t[0] += 60
        await intake.lifecycle.read()
        assert not intake.lifecycle.table.is_shut_down("gpt-image-2")  # read every few minutes, not per request
        t[0] += 300
        await intake.lifecycle.read()
        assert intake.lifecycle.table.is_shut_down("gpt-image-2")
        assert intake.lifecycle.table.available()[0] == "gpt-image-2.5-flare"
    finally:
        await intake.close()


# -- refusals ----------------------------------------------------------------------------------------

STALE_TWO = '{"gpt-image-2": {"flexible_sizes": true, "transparent": true}}'  # what was true before 09-30
QUALITY_TWO = '{"gpt-image-2": {"flexible_sizes": true, "transparent": false, "qualities": ["low", "xhigh", "auto"]}}'


async def test_a_refused_transparent_background_is_retried_once_on_a_model_that_can(start: Start) -> None:
    easel = await start(EXTRA_IMAGE_MODELS=STALE_TWO)
    await easel.sender.mention("a sticker --background transparent")
    shared = await _image(easel)
    assert _models_sent(easel) == ["gpt-image-2", "gpt-image-2.5-flare"]
    assert len(easel.openai.responses) == 1  # the refusal made no response: one generation, paid once
    assert "OpenAI says gpt-image-2 cannot take a transparent background, so this one is drawn with " \
           "gpt-image-2.5-flare" in shared["initial_comment"]
    assert (await easel.store.lifecycle.read()).lacks == {"gpt-image-2": ["transparent"]}
    await easel.sender.mention("another sticker --background transparent", channel="C2")
    await _image(easel, 2)
    assert _models_sent(easel)[2:] == ["gpt-image-2.5-flare"]  # learned: not sent to gpt-image-2 again


async def test_a_refused_default_is_left_out_and_retried_once(start: Start) -> None:
    easel = await start(EXTRA_IMAGE_MODELS=QUALITY_TWO, IMAGE_QUALITY="xhigh")
    await easel.sender.mention("a lighthouse")
    shared = await _image(easel)
    creates = easel.openai.create_requests()
    assert [c["tools"][0]["quality"] for c in creates] == ["xhigh", "auto"]
    assert _models_sent(easel) == ["gpt-image-2", "gpt-image-2"]
    assert "it was only a default, so it was left out" in shared["initial_comment"]


async def test_a_refusal_that_cannot_be_worked_around_is_told_plainly(start: Start) -> None:
    easel = await start(EXTRA_IMAGE_MODELS=QUALITY_TWO)
    ts, _ = await easel.sender.mention("a lighthouse --model gpt-image-2 --quality xhigh")
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed" and job.error.startswith("unsupported")
    assert len(easel.openai.create_requests()) == 1  # not sent again
    [text] = [t for t in _texts(easel, ts) if "Nothing was drawn" in t]
    assert "`--quality xhigh` does not work with gpt-image-2: it takes low, auto" in text
    assert "gpt-image-2.5-flare" in text  # what is possible
    assert "Invalid value" not in text  # Easel's words, not OpenAI's


async def test_a_refused_input_fidelity_is_told_plainly(start: Start) -> None:
    easel = await start(EXTRA_IMAGE_MODELS='{"gpt-image-2": {"flexible_sizes": true, "transparent": false, '
                                           '"input_fidelity": true}}')
    ts, _ = await easel.sender.mention("keep the faces --fidelity high")
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed" and "input_fidelity" in job.error
    assert easel.openai.create_requests()[0]["tools"][0]["input_fidelity"] == "high"
    assert len(easel.openai.create_requests()) == 1
    assert any("gpt-image-2 does not take `--fidelity`, and no image model here does" in t for t in _texts(easel, ts))
    assert (await easel.store.lifecycle.read()).lacks == {"gpt-image-2": ["input_fidelity"]}


async def test_a_model_openai_refuses_as_shut_down_is_learned_and_replaced(start: Start) -> None:
    easel = await start()
    easel.openai.models["gpt-image-2"] = "2026-11-15"  # OpenAI knows; Easel's table and its last read do not
    await easel.sender.mention("a harbour")
    shared = await _image(easel)
    assert _models_sent(easel) == ["gpt-image-2", "gpt-image-2.5-flare"]
    assert "shut down by OpenAI on 2026-11-15" in shared["initial_comment"]
    assert (await easel.store.lifecycle.read()).shutdowns["gpt-image-2"] == "2026-11-15"


# -- what every request carries --------------------------------------------------------------------


async def test_every_request_carries_a_keyed_safety_identifier_and_the_moderation_level(start: Start) -> None:
    easel = await start(IMAGE_MODERATION="low")
    await easel.sender.mention("one", user="U0042")
    await _image(easel)
    await easel.sender.mention("two", user="U0042", channel="C2")
    await _image(easel, 2)
    await easel.sender.mention("three", user="U0043", channel="C3")
    await _image(easel, 3)
    creates = easel.openai.create_requests()
    ids = [c["safety_identifier"] for c in creates]
    assert ids[0] == ids[1] != ids[2]  # stable per person, distinct between people
    key = easel.easel.settings.safety_secret()
    assert ids[0] == hmac.new(key, b"T0001:U0042", hashlib.sha256).hexdigest()
    assert all("U004" not in i and "T0001" not in i and len(i) <= 128 for i in ids)
    assert ids[0] != hashlib.sha256(b"T0001:U0042").hexdigest()  # keyed, not a plain hash
    assert all(c["tools"][0]["moderation"] == "low" for c in creates)


async def test_web_search_sources_are_posted_as_links(start: Start) -> None:
    easel = await start(OPENAI_TOOLS="image_generation,web_search")
    await easel.sender.mention("a poster with tomorrow's weather in Lyon [[web]]")
    shared = await _image(easel)
    [create] = easel.openai.create_requests()
    assert {"type": "web_search"} in create["tools"]
    comment = shared["initial_comment"]
    assert "*Sources:* <https://weather.example/lyon|Lyon: tomorrow's forecast>" in comment
    assert "<https://news.example/lyon%7Cquiz|Lyon &lt;news&gt; &amp; more>" in comment
    ts, _ = await easel.sender.mention("the same, offline --no-web [[web]]", channel="C2")
    await _image(easel, 2)
    assert {"type": "web_search"} not in easel.openai.create_requests()[1]["tools"]
    assert "Sources" not in easel.slack.shared_files[1]["initial_comment"]


async def test_web_on_request_when_not_configured(start: Start) -> None:
    easel = await start()
    ts, _ = await easel.sender.mention("what's on in Lyon tonight [[web]] [[text]] --web")
    await easel.jobs_settled(1)
    assert {"type": "web_search"} in easel.openai.create_requests()[0]["tools"]
    assert any("*Sources:* <https://weather.example/lyon|" in t for t in _texts(easel, ts))


# -- OpenAI's errors, in Easel's words -------------------------------------------------------------


async def test_openai_error_text_is_never_quoted_to_users(start: Start) -> None:
    easel = await start()
    secret = "Project proj_Zx81 of organization org-Q7secret has no access to this feature."
    easel.openai.add_fault(Fault(status=400, message=secret, param="tools[0]", match="a vase"))
    easel.openai.add_fault(Fault(fail_response=True, code="invalid_prompt", message=secret, match="a jug"))
    ts, _ = await easel.sender.mention("a vase")
    ts2, _ = await easel.sender.mention("a jug", channel="C2")
    jobs = await easel.jobs_settled(2)
    texts = _texts(easel, ts) + _texts(easel, ts2, "C2")
    assert texts and not any("org-Q7secret" in t or "proj_Zx81" in t for t in texts)
    assert any("OpenAI refused this request" in t for t in _texts(easel, ts))
    assert all("org-Q7secret" in j.error for j in jobs)  # the detail is kept for the log


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "nested"])
@pytest.mark.parametrize(("code", "said"), [("rate_limit_exceeded", "rate-limiting"),
                                            ("image_content_policy_violation", "safety system"),
                                            ("invalid_image_format", "could not use an attached image")])
async def test_a_stream_error_event_is_reported_by_its_kind(start: Start, nested: bool, code: str,
                                                            said: str) -> None:
    easel = await start()
    easel.openai.add_fault(Fault(error_event=True, nested_error=nested, code=code, message="org-Q7secret",
                                 omit_events=("response.created", "response.queued", "response.in_progress")))
    ts, _ = await easel.sender.mention("a vase")
    [job] = await easel.jobs_settled(1)
    texts = _texts(easel, ts)
    assert job.status == "failed"
    assert any(said in t for t in texts), texts
    assert not any("could not be reached" in t or "org-Q7secret" in t for t in texts)
