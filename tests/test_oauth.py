"""Installs in many workspaces: Bolt's OAuth flow through the fake Slack (oauth.v2.access), two workspaces with
their own tokens side by side (every Slack call checked for the right token), uninstall and revoke; on SQLite
and PostgreSQL."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from storage.limits import Limits
from tests.conftest import SIGNING_SECRET, Running, wait_until
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender

WORKSPACES = {  # team id -> (name, bot token, bot user)
    "T0AAA": ("Acme", "xoxb-acme-token-1111", "UBOTAAA"),
    "T0BBB": ("Bolt Works", "xoxb-bolt-token-2222", "UBOTBBB"),
}


async def _install(easel: Running, slack: FakeSlack, team: str) -> aiohttp.ClientResponse:
    """A person clicks Add to Slack, approves, and Slack sends the browser back with a code."""
    name, token, bot_user = WORKSPACES[team]
    code = slack.add_workspace(team_id=team, team=name, bot_token=token, bot_user_id=bot_user)
    async with aiohttp.ClientSession() as browser:
        async with browser.get(easel.url + "/slack/install") as page:
            assert page.status == 200
            html = await page.text()
            cookie = page.cookies  # the state, bound to this browser (sent back by hand: it is a Secure cookie)
        [link] = re.findall(r'href="(https://slack.com/oauth/v2/authorize[^"]+)"', html)
        query = parse_qs(urlsplit(link.replace("&amp;", "&")).query)
        assert set(query["scope"][0].split(",")) >= {"chat:write", "files:write", "app_mentions:read"}
        sent = "; ".join(f"{k}={m.value}" for k, m in cookie.items())
        async with browser.get(easel.url + "/slack/oauth_redirect", headers={"Cookie": sent},
                               params={"code": code, "state": query["state"][0]}) as done:
            await done.read()
            return done


@pytest.fixture
async def oauth_easel(easel_factory, fake_slack: FakeSlack) -> Running:
    return await easel_factory(SLACK_BOT_TOKEN="", SLACK_CLIENT_ID=fake_slack.client_id,
                               SLACK_CLIENT_SECRET=fake_slack.client_secret)


def _sender(easel: Running, team: str) -> SlackSender:
    return SlackSender(url=easel.url + "/slack/events", signing_secret=SIGNING_SECRET, team_id=team,
                       bot_user_id=WORKSPACES[team][2])


async def test_two_workspaces_install_and_each_is_served_with_its_own_token(
    oauth_easel: Running, fake_slack: FakeSlack
) -> None:
    for team in WORKSPACES:
        done = await _install(oauth_easel, fake_slack, team)
        assert done.status == 200
    assert len(fake_slack.calls_to("oauth.v2.access")) == 2

    threads: dict[str, str] = {}
    for team in WORKSPACES:
        async with _sender(oauth_easel, team) as sender:
            ts, result = await sender.mention(f"a logo for {team}", channel=f"C{team}")
            assert result.status == 200
            threads[team] = ts
    await oauth_easel.jobs_settled(2, timeout=30)
    jobs = await oauth_easel.store.jobs.all()
    assert {j.team_id for j in jobs} == set(WORKSPACES) and all(j.status == "done" for j in jobs)
    assert len(fake_slack.shared_files) == 2

    # every call about a workspace's channel went with that workspace's token, never the other's
    checked = 0
    for call in fake_slack.calls:
        channel = str(call.args.get("channel") or call.args.get("channel_id") or "")
        for team, (_, token, _) in WORKSPACES.items():
            if channel == f"C{team}":
                assert fake_slack.token_of(call) == token, (call.method, team)
                checked += 1
    assert checked >= 6  # reactions, the upload's completion, ... for each


async def test_a_workspace_that_never_installed_is_ignored(oauth_easel: Running, fake_slack: FakeSlack) -> None:
    await _install(oauth_easel, fake_slack, "T0AAA")
    async with _sender(oauth_easel, "T0BBB") as stranger:
        _, result = await stranger.mention("let me in", channel="CT0BBB")
    assert result.status == 200
    assert await oauth_easel.store.jobs.all() == []


async def test_uninstall_cancels_waiting_jobs_and_later_events_are_ignored(
    oauth_easel: Running, fake_slack: FakeSlack
) -> None:
    for team in WORKSPACES:
        await _install(oauth_easel, fake_slack, team)
    await oauth_easel.easel.worker.stop(grace=0)  # nothing runs: the jobs wait
    async with _sender(oauth_easel, "T0AAA") as acme, _sender(oauth_easel, "T0BBB") as bolt:
        await acme.mention("one", channel="CT0AAA")
        await bolt.mention("two", channel="CT0BBB")
        result = await acme.post_event({"type": "app_uninstalled"})
        assert result.status == 200
        jobs = {j.team_id: j for j in await oauth_easel.store.jobs.all()}
        assert jobs["T0AAA"].status == "failed" and "uninstalled" in (jobs["T0AAA"].error or "")
        assert jobs["T0BBB"].status == "new"  # the other workspace is untouched
        _, later = await acme.mention("again", channel="CT0AAA")
        assert later.status == 200
    assert len(await oauth_easel.store.jobs.all()) == 2  # the later mention made no job


async def test_revoked_bot_token_counts_as_uninstalled(oauth_easel: Running, fake_slack: FakeSlack) -> None:
    await _install(oauth_easel, fake_slack, "T0AAA")
    async with _sender(oauth_easel, "T0AAA") as acme:
        result = await acme.post_event({"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UBOTAAA"]}})
        assert result.status == 200
        await acme.mention("hello?", channel="CT0AAA")
    assert await oauth_easel.store.jobs.all() == []


async def test_purge_on_uninstall_deletes_the_workspace_data_at_once(easel_factory, fake_slack: FakeSlack) -> None:
    easel = await easel_factory(SLACK_BOT_TOKEN="", SLACK_CLIENT_ID=fake_slack.client_id,
                                SLACK_CLIENT_SECRET=fake_slack.client_secret, PURGE_ON_UNINSTALL="true")
    for team in WORKSPACES:
        await _install(easel, fake_slack, team)
    for team in WORKSPACES:
        async with _sender(easel, team) as sender:
            await sender.mention(f"a picture for {team}", channel=f"C{team}")
    await easel.jobs_settled(2, timeout=30)
    async with _sender(easel, "T0AAA") as acme:
        await acme.post_event({"type": "app_uninstalled"})

    async def gone() -> bool:
        jobs = await easel.store.jobs.all()
        gens: list[dict[str, Any]] = list(await easel.store.generations.all())
        return {j.team_id for j in jobs} == {"T0BBB"} and {g["team_id"] for g in gens} == {"T0BBB"}

    await wait_until(gone, what="the uninstalled workspace's data to go")
    assert await easel.store.threads.get(team_id="T0AAA", channel_id="CT0AAA", thread_ts="x") is None


async def test_app_home_asks_slack_with_its_own_workspaces_token(oauth_easel: Running, fake_slack: FakeSlack) -> None:
    """App Home is published from the serving process, outside any job: who is an admin (users.info), the
    links and the view must still go with the workspace's own token, and be counted in its budgets."""
    for team in WORKSPACES:
        assert (await _install(oauth_easel, fake_slack, team)).status == 200
    fake_slack.users["U0009"] = {"is_admin": True}
    async with _sender(oauth_easel, "T0BBB") as sender:
        assert (await sender.app_home_opened("U0009")).status == 200
    [published] = await fake_slack.wait_for("views.publish")
    [asked] = fake_slack.calls_to("users.info")
    assert fake_slack.token_of(asked) == fake_slack.token_of(published) == WORKSPACES["T0BBB"][1]
    blocks = fake_slack.homes["U0009"]["blocks"]
    assert any("The workspace this month" in ((b.get("text") or {}).get("text") or "") for b in blocks)
    bucket = await Limits(oauth_easel.store.db).bucket("slack:T0BBB:views.publish")
    assert bucket is not None and bucket.taken >= 1  # (a few tokens at once: the spare ones kept a moment)


async def test_the_settings_modal_asks_who_is_an_admin_with_its_workspaces_token(
    oauth_easel: Running, fake_slack: FakeSlack
) -> None:
    """`/imagine settings` opens its modal from the listener: the admin check (users.info) must go with the
    workspace of the command, or an admin of a second workspace would only ever see the settings read-only."""
    for team in WORKSPACES:
        assert (await _install(oauth_easel, fake_slack, team)).status == 200
    fake_slack.users["U0009"] = {"is_admin": True}
    async with _sender(oauth_easel, "T0BBB") as sender:
        assert (await sender.command("settings", user="U0009", channel="CT0BBB")).status == 200
    [opened] = await fake_slack.wait_for("views.open")
    [asked] = fake_slack.calls_to("users.info")
    assert fake_slack.token_of(asked) == WORKSPACES["T0BBB"][1]
    view = opened.args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    assert view.get("submit"), "an admin gets the settings to change, not read-only"
