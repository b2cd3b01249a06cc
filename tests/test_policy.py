"""The policies admins set from Slack: the image tool's moderation level per channel and workspace; channels open
only to a Slack user group (looked up when saved, membership asked of Slack by the worker, cached briefly; the
fake's usergroups methods as strict as Slack's); each person's daily and the workspace's monthly limit set at run
time over the environment's. On SQLite and PostgreSQL, through signed HTTP and the fakes."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import buttons
from storage.models import ChannelSettings
from storage.settings import WORKSPACE, Settings
from storage.spend import Spend, scopes
from tests.conftest import Running, wait_until
from tests.fakes.slack_api import DEFAULT_SCOPES, FakeSlack
from tests.test_budgets import WORST, _today, dollars
from tests.test_settings import _home, _open, _set, _tools, _values


def _texts(easel: Running, ts: str, channel: str = "C0001") -> list[str]:
    return [m.get("text", "") for m in easel.slack.thread(channel, ts)]


async def _workspace_modal(easel: Running, user: str = "U0009") -> dict:
    """The workspace's settings, opened from App Home's button as an admin would."""
    home = await _home(easel, user)
    [actions] = [b for b in home["blocks"] if b["type"] == "actions"]
    [button] = actions["elements"]
    before = len(easel.slack.calls_to("views.open"))
    click = {"type": "block_actions", "team": {"id": easel.slack.team_id, "domain": "t"},
             "user": {"id": user, "team_id": easel.slack.team_id}, "api_app_id": easel.sender.api_app_id,
             "token": easel.sender.verification_token, "trigger_id": f"{int(time.time())}.{before}.abc",
             "container": {"type": "view", "view_id": home["id"]}, "view": home,
             "actions": [{"action_id": button["action_id"], "block_id": actions["block_id"], "type": "button",
                          "value": button["value"], "action_ts": str(time.time())}]}
    assert (await easel.sender.action(click)).status == 200
    await easel.slack.wait_for("views.open", count=before + 1)
    view = list(easel.slack.views.values())[-1]
    assert json.loads(view["private_metadata"])["channel"] == ""
    return view


async def _submit(easel: Running, view: dict, user: str = "U0009", **chosen) -> dict:
    result = await easel.sender.action(easel.sender.view_submission_payload(view, _values(view, **chosen), user=user))
    assert result.status == 200
    return result.json or {}


# -- 1. moderation per channel and workspace ----------------------------------------------------------------------

async def test_moderation_follows_the_workspace_then_the_channel_and_is_in_the_audit_log(easel_factory) -> None:
    easel = await easel_factory(IMAGE_MODERATION="auto")
    easel.slack.users["U0009"] = {"is_admin": True}
    view = await _workspace_modal(easel)
    assert [o["value"] for o in next(b for b in view["blocks"] if b.get("block_id") == "moderation")["element"]
            ["options"]] == ["inherit", "auto", "low"]
    assert not (await _submit(easel, view, moderation="low")).get("errors")
    channel_view, _ = await _open(easel)
    assert not (await _submit(easel, channel_view, moderation="auto")).get("errors")
    ts, _ = await easel.sender.mention("a fox")  # the channel's own: auto
    await easel.jobs_settled(1)
    await easel.sender.mention("a hen", channel="C0002")  # the workspace's: low
    await easel.jobs_settled(2)
    await easel.sender.mention("a cow --quality low", thread_ts=ts)  # the thread's flags do not change it
    await easel.jobs_settled(3)
    assert [t["moderation"] for t in _tools(easel)] == ["auto", "low", "auto"]
    log = await Settings(easel.store.db).log(easel.slack.team_id)
    assert sorted((c.channel_id, c.field, c.before, c.after) for c in log) == [
        ("", "moderation", None, "low"), ("C0001", "moderation", None, "auto")]


async def test_a_button_uses_the_channels_moderation_as_it_is_now(easel_factory) -> None:
    from tests.test_buttons import _click, _image

    easel = await easel_factory()
    _, message = await _image(easel, "a lighthouse --quality low")
    [shared] = easel.slack.shared_files
    await _set(easel, moderation="low")
    await _click(easel, buttons.REROLL, shared["file_id"], message)
    await wait_until(lambda: len(easel.openai.create_requests()) == 2, what="the reroll")
    await easel.jobs_settled(2)
    assert [t["moderation"] for t in _tools(easel)] == ["auto", "low"]


# -- 2. channels open to a Slack user group ----------------------------------------------------------------------

async def test_the_fake_answers_usergroups_methods_as_slack_does() -> None:
    async with FakeSlack() as fake:
        designers = fake.add_usergroup("designers", ["U0001", "U0002"], name="Designers")
        old = fake.add_usergroup("old-team", ["U0003"], disabled=True)
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        listed = await client.usergroups_list()
        [group] = listed["usergroups"]
        assert (group["id"], group["handle"], group["name"], group["is_usergroup"], group["date_delete"]) == (
            designers, "designers", "Designers", True, 0)
        assert "users" not in group and "user_count" not in group  # only when asked
        full = await client.usergroups_list(include_users=True, include_count=True, include_disabled=True)
        assert [(g["id"], g["users"], g["user_count"]) for g in full["usergroups"]] == [
            (designers, ["U0001", "U0002"], 2), (old, ["U0003"], 1)]
        assert full["usergroups"][1]["date_delete"] > 0
        assert (await client.usergroups_users_list(usergroup=designers))["users"] == ["U0001", "U0002"]
        for args, error in (({"usergroup": "S0NOPE"}, "no_such_subteam"), ({"usergroup": old}, "no_such_subteam"),
                            ({"usergroup": ""}, "invalid_arguments")):
            with pytest.raises(SlackApiError) as e:
                await client.usergroups_users_list(**args)
            assert e.value.response["error"] == error
        assert (await client.usergroups_users_list(usergroup=old, include_disabled=True))["users"] == ["U0003"]
        fake.usergroups_on_plan = False
        with pytest.raises(SlackApiError) as e:
            await client.usergroups_list()
        assert e.value.response["error"] == "plan_upgrade_required"
    async with FakeSlack(scopes=[s for s in DEFAULT_SCOPES if s != "usergroups:read"]) as fake:
        client = AsyncWebClient(token=fake.bot_token, base_url=fake.api_url)
        for call in (client.usergroups_list(), client.usergroups_users_list(usergroup="S1")):
            with pytest.raises(SlackApiError) as e:
                await call
            assert e.value.response["error"] == "missing_scope" and e.value.response["needed"] == "usergroups:read"


async def test_an_admin_opens_a_channel_to_a_user_group_by_its_handle(easel_factory) -> None:
    easel = await easel_factory()
    easel.slack.users["U0009"] = {"is_admin": True}
    designers = easel.slack.add_usergroup("designers", ["U0002"])
    easel.slack.add_usergroup("ops", ["U0003"])
    view, _ = await _open(easel)
    said = await _submit(easel, view, who="usergroup", usergroup="@nobody")
    assert said["response_action"] == "errors"
    assert said["errors"]["usergroup"] == "No user group @nobody in this workspace (there are @designers, @ops)."
    said = await _submit(easel, view, who="usergroup", usergroup="")
    assert "Name the user group" in said["errors"]["usergroup"]
    said = await _submit(easel, view, who="users", users=[])
    assert "Choose the people" in said["errors"]["users"]
    assert await Settings(easel.store.db).log(easel.slack.team_id) == []  # nothing saved
    assert not (await _submit(easel, view, who="usergroup", usergroup="@Designers")).get("errors")
    stored = await Settings(easel.store.db).get(easel.slack.team_id, "C0001")
    assert (stored.who, stored.usergroup, stored.usergroup_handle, stored.users) == (
        "usergroup", designers, "designers", None)
    log = await Settings(easel.store.db).log(easel.slack.team_id)
    assert {(c.field, c.after) for c in log} == {("who", "usergroup"), ("usergroup", designers),
                                                 ("usergroup_handle", "designers")}
    again, _ = await _open(easel)  # shown as it was saved
    elements = {b["block_id"]: b["element"] for b in again["blocks"] if b["type"] == "input"}
    assert elements["usergroup"]["initial_value"] == "@designers"
    assert elements["who"]["initial_option"]["value"] == "usergroup"
    reader, _ = await _open(easel, user="U0001")  # others read it: the handle, no mention of the group
    assert "the members of the user group @designers" in reader["blocks"][0]["text"]["text"]
    assert "<!subteam" not in json.dumps(reader)
    easel.slack.scopes.remove("usergroups:read")  # an install from an older manifest
    said = await _submit(easel, again, who="usergroup", usergroup="designers")
    assert "usergroups:read" in said["errors"]["usergroup"]


async def test_only_the_groups_members_are_drawn_for_and_the_others_refused_politely(easel_factory) -> None:
    easel = await easel_factory()
    group = easel.slack.add_usergroup("designers", ["U0002"])
    await _set(easel, who="usergroup", usergroup=group, usergroup_handle="designers")
    result = await easel.sender.command("a lighthouse", user="U0001", response_url=easel.slack.response_url("c1"))
    assert result.status == 200 and not easel.slack.calls_to("usergroups.users.list")  # not in the 3-second path
    ts, _ = await easel.sender.mention("a fox", user="U0001")
    await easel.sender.mention("a hen", user="U0002")
    jobs = await easel.jobs_settled(3)
    assert sorted((j.user_id, j.status) for j in jobs) == [("U0001", "failed"), ("U0001", "failed"),
                                                            ("U0002", "done")]
    assert all(j.error == "policy: the channel's user group" for j in jobs if j.status == "failed")
    assert len(easel.openai.create_requests()) == 1  # only the member's
    assert any("you are not in it" in t for t in _texts(easel, ts))  # in the thread, for a message
    [told] = [c for c in easel.slack.calls_to("response_url") if c.path.endswith("/c1")]
    assert "you are not in it" in told.args["text"] and told.args["response_type"] == "ephemeral"
    command_posts = [m for m in easel.slack.messages if "a lighthouse" in m.get("text", "")]
    assert command_posts == []  # no thread was started for the refused command
    assert not easel.slack.reactions.get(("C0001", ts))  # no hourglass on a refused message
    assert await Spend(easel.store.db).reservation(min(j.id for j in jobs)) is None  # nothing reserved


async def test_a_burst_asks_slack_once_for_the_groups_members(easel_factory) -> None:
    easel = await easel_factory(MAX_QUEUED_PER_USER="20")
    group = easel.slack.add_usergroup("designers", ["U0001", "U0002", "U0003"])
    await _set(easel, who="usergroup", usergroup=group, usergroup_handle="designers")
    await asyncio.gather(*(easel.sender.mention(f"a fox {i}", user=f"U000{1 + i % 6}") for i in range(12)))
    jobs = await easel.jobs_settled(12, timeout=30)
    assert sorted(j.user_id for j in jobs if j.status == "done") == sorted(
        [f"U000{1 + i % 6}" for i in range(12) if i % 6 < 3])
    assert len(easel.openai.create_requests()) == 6
    assert len(easel.slack.calls_to("usergroups.users.list")) == 1  # kept for a minute: one call for the burst
    easel.slack.usergroups[group]["users"].append("U0004")  # within the minute, what Slack said stands
    ts, _ = await easel.sender.mention("a cat", user="U0004")
    await easel.jobs_settled(13)
    assert any("you are not in it" in t for t in _texts(easel, ts))
    assert len(easel.slack.calls_to("usergroups.users.list")) == 1


async def test_a_group_gone_or_unseen_refuses_and_a_button_is_refused_privately(easel_factory) -> None:
    from tests.test_buttons import _click, _image

    easel = await easel_factory()
    _, message = await _image(easel, "a lighthouse --quality low")
    [shared] = easel.slack.shared_files
    await _set(easel, who="usergroup", usergroup="S0GONE", usergroup_handle="old-team")
    await _click(easel, buttons.REROLL, shared["file_id"], message, key="gone")
    [told] = await easel.slack.wait_for("response_url")
    assert "that group no longer exists" in told.args["text"]
    group = easel.slack.add_usergroup("designers", ["U0001"])
    await _set(easel, who="usergroup", usergroup=group, usergroup_handle="designers")
    easel.slack.scopes.remove("usergroups:read")
    ts, _ = await easel.sender.mention("a fox")
    await easel.jobs_settled(3)
    assert any("lacks the `usergroups:read` scope" in t for t in _texts(easel, ts))
    assert len(easel.openai.create_requests()) == 1  # only the first image


async def test_an_edit_by_someone_outside_the_group_is_refused_to_them_alone(easel_factory) -> None:
    from tests.test_buttons import _image, _open_edit, _submission

    easel = await easel_factory()
    ts, message = await _image(easel, "a lighthouse --quality low")
    [shared] = easel.slack.shared_files
    view = await _open_edit(easel, shared["file_id"], message)
    group = easel.slack.add_usergroup("designers", ["U0002"])
    await _set(easel, who="usergroup", usergroup=group, usergroup_handle="designers")
    result = await easel.sender.action(_submission(easel, view, "make the sky stormy"))
    assert result.status == 200 and not result.body_text  # the modal closes; the worker asks Slack
    jobs = await easel.jobs_settled(2)
    assert sorted(j.status for j in jobs) == ["done", "failed"]
    [told] = easel.slack.ephemerals
    assert (told["ephemeral_user"], told.get("thread_ts")) == ("U0001", ts) and "you are not in it" in told["text"]
    assert not any("you are not in it" in t for t in _texts(easel, ts))  # nothing in the thread for others
    assert len(easel.openai.create_requests()) == 1


async def test_a_channel_saying_everyone_opens_what_the_workspace_keeps_to_a_group(easel_factory) -> None:
    easel = await easel_factory()
    group = easel.slack.add_usergroup("designers", ["U0002"])
    await _set(easel, WORKSPACE, who="usergroup", usergroup=group, usergroup_handle="designers")
    await _set(easel, "C0002", who="everyone")
    await _set(easel, "C0003", users=("U0001",))  # people listed (as stored before `who`): the group is not kept
    await easel.sender.mention("a fox")  # the workspace's group: refused
    await easel.sender.mention("a hen", channel="C0002")
    await easel.sender.mention("a cow", channel="C0003")
    jobs = sorted(await easel.jobs_settled(3), key=lambda j: j.id)
    assert [j.status for j in jobs] == ["failed", "done", "done"]
    place = await Settings(easel.store.db).place(easel.slack.team_id, "C0003")
    assert (place.effective.audience, place.effective.usergroup) == ("users", None)


# -- 3. limits set from Slack -------------------------------------------------------------------------------------

async def test_admins_set_the_user_and_workspace_limits_in_the_workspace_settings(easel_factory) -> None:
    easel = await easel_factory(BUDGET_USER_DAILY_USD="5", BUDGET_WORKSPACE_MONTHLY_USD="100")
    easel.slack.users["U0009"] = {"is_admin": True}
    view = await _workspace_modal(easel)
    fields = [b["block_id"] for b in view["blocks"] if b["type"] == "input"]
    assert fields[-4:] == ["daily_limit_micros", "user_daily_limit_micros", "workspace_monthly_limit_micros",
                           "show_costs"]
    channel_view, _ = await _open(easel)  # a channel's settings have neither
    assert "user_daily_limit_micros" not in json.dumps(channel_view["blocks"][1:-2])
    for chosen, field in (({"user_daily_limit_micros": "lots"}, "user_daily_limit_micros"),
                          ({"user_daily_limit_micros": "-1"}, "user_daily_limit_micros"),
                          ({"workspace_monthly_limit_micros": "1e9"}, "workspace_monthly_limit_micros"),
                          ({"workspace_monthly_limit_micros": "NaN"}, "workspace_monthly_limit_micros")):
        said = await _submit(easel, view, **chosen)
        assert said["response_action"] == "errors" and "A number of dollars" in said["errors"][field]
    assert await Settings(easel.store.db).log(easel.slack.team_id) == []
    assert not (await _submit(easel, view, user_daily_limit_micros=dollars(WORST - 1),
                              workspace_monthly_limit_micros="$1,000")).get("errors")
    log = await Settings(easel.store.db).log(easel.slack.team_id)
    assert sorted((c.channel_id, c.field, c.before, c.after) for c in log) == [
        ("", "user_daily_limit_micros", None, WORST - 1), ("", "workspace_monthly_limit_micros", None, 1_000_000_000)]
    ts, _ = await easel.sender.mention("a fox")  # the Slack-set limit, at once, over BUDGET_USER_DAILY_USD
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed" and job.error == "budget: user limit"
    [told] = [t for t in _texts(easel, ts) if "Not drawn" in t]
    assert "your daily limit" in told and f"of ${dollars(WORST - 1)[:4]}" in told
    assert easel.openai.create_requests() == []
    usage = (await easel.sender.command("usage", user="U0009")).body_text
    assert f"left of ${dollars(WORST - 1)[:4]}" in usage and "left of $1000.00" in usage
    again = await _workspace_modal(easel)  # shown as saved; emptied, the environment's limit is back
    elements = {b["block_id"]: b["element"] for b in again["blocks"] if b["type"] == "input"}
    assert elements["workspace_monthly_limit_micros"]["initial_value"] == "1000"
    assert not (await _submit(easel, again, user_daily_limit_micros="")).get("errors")
    await easel.sender.mention("a hen")
    jobs = await easel.jobs_settled(2)
    assert sorted(j.status for j in jobs) == ["done", "failed"]


async def test_a_workspace_monthly_limit_set_in_slack_is_reserved_against(easel_factory) -> None:
    easel = await easel_factory(BUDGET_WORKSPACE_MONTHLY_USD="100")
    await _set(easel, WORKSPACE, workspace_monthly_limit_micros=WORST - 1)
    ts, _ = await easel.sender.mention("a hen", channel="C0002")
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed" and job.error == "budget: team limit"
    assert any("the workspace's monthly limit" in t and f"of ${dollars(WORST - 1)[:4]}" in t
               for t in _texts(easel, ts, "C0002"))
    _, month = _today()
    team = scopes(easel.slack.team_id, "", "")[2]
    tally = (await Spend(easel.store.db).tallies([(team, month)]))[(team, month)]
    assert (tally.spent_micros, tally.reserved_micros) == (0, 0)
    await _set(easel, WORKSPACE)  # cleared: BUDGET_WORKSPACE_MONTHLY_USD again
    await easel.sender.mention("a fox")
    jobs = await easel.jobs_settled(2)
    assert sorted(j.status for j in jobs) == ["done", "failed"]


def test_a_channel_settings_who_is_one_setting() -> None:
    workspace = ChannelSettings(who="usergroup", usergroup="S1", usergroup_handle="designers", quality="low")
    assert ChannelSettings(who="everyone").over(workspace).usergroup is None
    assert ChannelSettings(users=("U1",)).over(workspace).audience == "users"
    assert ChannelSettings(model="gpt-image-2").over(workspace).usergroup == "S1"  # not said here: inherited
