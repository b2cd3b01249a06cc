"""Settings per channel: stored with an audit entry per change; the effective options (workspace, channel,
thread, message) clamped by the channel's policy; Easel off, or open to listed people only; the channel's own
daily limit and costs hidden. On SQLite and PostgreSQL, through signed HTTP and the fakes."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from storage import Store
from storage.models import ChannelSettings
from storage.settings import WORKSPACE, Settings
from storage.spend import Spend
from tests.conftest import wait_until
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


# -- the modal: /imagine settings ----------------------------------------------------------------------------------

def _values(view: dict, **chosen) -> dict:
    """A submission's values: each field as the modal shows it, but for `chosen` (a value, a list, or None)."""
    elements = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    values = {}
    for field, el in elements.items():
        given = chosen.get(field, el.get("initial_value", el.get("initial_option", el.get(
            "initial_options", el.get("initial_users")))))
        if el["type"] == "static_select":
            opt = next((o for o in el["options"] if o["value"] == given), given) if isinstance(given, str) else given
            values[field] = {"type": "static_select", "selected_option": opt}
        elif el["type"] == "multi_static_select":
            values[field] = {"type": "multi_static_select", "selected_options": [
                o for o in el["options"] if o["value"] in (given or [])]}
        elif el["type"] == "multi_users_select":
            values[field] = {"type": "multi_users_select", "selected_users": list(given or [])}
        else:
            values[field] = {"type": "plain_text_input", "value": given or None}
    return values


async def _open(easel, user: str = "U0009", channel: str = "C0001") -> tuple[dict, object]:
    before = len(easel.slack.calls_to("views.open"))
    result = await easel.sender.command("settings", user=user, channel=channel)
    calls = await easel.slack.wait_for("views.open", count=before + 1)
    view = calls[-1].args["view"]
    view = json.loads(view) if isinstance(view, str) else view
    [opened] = [v for v in easel.slack.views.values() if v["blocks"] == view["blocks"]][-1:]
    return opened, result


async def test_an_admin_opens_the_settings_modal_and_saves_it_with_an_audit_entry(easel_factory) -> None:
    easel = await easel_factory()
    easel.slack.users["U0009"] = {"is_admin": True}
    view, result = await _open(easel)
    assert result.status == 200 and not result.body_text.strip()  # nothing said: the modal is open
    assert view["callback_id"] == "easel.settings" and view["submit"]
    fields = [b["block_id"] for b in view["blocks"] if b["type"] == "input"]
    assert fields == ["enabled", "model", "quality", "size", "models", "max_quality", "moderation", "who", "users",
                      "usergroup", "daily_limit_micros", "show_costs"]
    values = _values(view, model="gpt-image-2", quality="medium", models=["gpt-image-2"], max_quality="medium",
                     users=["U0001", "U0009"], daily_limit_micros="2.50", show_costs="no", size="portrait",
                     moderation="low", who="users")
    saved = await easel.sender.action(easel.sender.view_submission_payload(view, values, user="U0009"))
    assert saved.status == 200 and not (saved.json or {}).get("errors")
    stored = await Settings(easel.store.db).get(easel.slack.team_id, "C0001")
    assert stored == ChannelSettings(model="gpt-image-2", quality="medium", size="1024x1536",
                                     models=("gpt-image-2",), max_quality="medium", users=("U0001", "U0009"),
                                     daily_limit_micros=2_500_000, show_costs=False, moderation="low", who="users")
    log = await Settings(easel.store.db).log(easel.slack.team_id)
    assert {c.field for c in log} == {"model", "quality", "size", "models", "max_quality", "users",
                                      "daily_limit_micros", "show_costs", "moderation", "who"}
    assert all(c.user_id == "U0009" and c.channel_id == "C0001" and c.before is None for c in log)
    again, _ = await _open(easel)  # the modal shows what was saved, and the changes
    elements = {b["block_id"]: b["element"] for b in again["blocks"] if b["type"] == "input"}
    assert elements["model"]["initial_option"]["value"] == "gpt-image-2"
    assert elements["users"]["initial_users"] == ["U0001", "U0009"]
    assert elements["daily_limit_micros"]["initial_value"] == "2.5"
    assert any("Changes" in (b.get("text") or {}).get("text", "") and "<@U0009>" in b["text"]["text"]
               for b in again["blocks"])
    text = (await easel.sender.command("settings log", user="U0009")).body_text
    assert "daily_limit_micros" in text and "<#C0001>" in text and "2500000" in text
    await easel.sender.mention("a fox")  # the saved policy is in force
    await easel.jobs_settled(1)
    assert [(t["model"], t["quality"], t["size"], t["moderation"]) for t in _tools(easel)] == [
        ("gpt-image-2", "medium", "1024x1536", "low")]


async def test_others_see_the_settings_read_only_and_cannot_save(easel_factory) -> None:
    easel = await easel_factory()
    await _set(easel, models=("gpt-image-2",))
    view, _ = await _open(easel, user="U0001")
    assert "submit" not in view and not [b for b in view["blocks"] if b["type"] == "input"]
    text = view["blocks"][0]["text"]["text"]
    assert "gpt-image-2" in text and "Only Easel's admins" in text and "Changes" not in text
    easel.slack.users["U0009"] = {"is_admin": True}
    admin_view, _ = await _open(easel, user="U0009")
    forged = easel.sender.view_submission_payload(admin_view, _values(admin_view, enabled="off"), user="U0001")
    refused = await easel.sender.action(forged)
    assert refused.json["response_action"] == "errors" and "Only Easel's admins" in refused.json["errors"]["enabled"]
    assert (await Settings(easel.store.db).get(easel.slack.team_id, "C0001")).enabled is None
    assert "Only Easel's admins" in (await easel.sender.command("settings log")).body_text


@pytest.mark.parametrize(("chosen", "field", "said"), [
    ({"daily_limit_micros": "lots"}, "daily_limit_micros", "A number of dollars"),
    ({"daily_limit_micros": "-1"}, "daily_limit_micros", "A number of dollars"),
    ({"size": "huge"}, "size", "is not a size"),
    ({"model": "gpt-image-2.6-flare", "models": ["gpt-image-2"]}, "model", "one of the models allowed"),
    ({"quality": "high", "max_quality": "low"}, "quality", "above the highest allowed"),
])
async def test_a_bad_submission_is_shown_on_its_field_and_nothing_is_saved(easel_factory, chosen: dict, field: str,
                                                                          said: str) -> None:
    easel = await easel_factory()
    easel.slack.users["U0009"] = {"is_owner": True}
    view, _ = await _open(easel)
    result = await easel.sender.action(easel.sender.view_submission_payload(view, _values(view, **chosen),
                                                                            user="U0009"))
    assert result.json["response_action"] == "errors" and said in result.json["errors"][field]
    assert await Settings(easel.store.db).log(easel.slack.team_id) == []


async def test_the_time_zone_still_changes_and_is_in_the_audit_log(easel_factory) -> None:
    easel = await easel_factory()
    easel.slack.users["U0009"] = {"is_admin": True}
    result = await easel.sender.command("settings tz Europe/Paris", user="U0009")
    assert "now counted in Europe/Paris" in result.body_text
    [entry] = await Settings(easel.store.db).log(easel.slack.team_id)
    assert (entry.field, entry.before, entry.after, entry.user_id, entry.channel_id) == (
        "time_zone", None, "Europe/Paris", "U0009", "")


# -- App Home ----------------------------------------------------------------------------------------------------

async def _home(easel, user: str) -> dict:
    before = len(easel.slack.calls_to("views.publish"))
    assert (await easel.sender.app_home_opened(user)).status == 200
    calls = await easel.slack.wait_for("views.publish", count=before + 1)
    assert calls[-1].args["user_id"] == user
    return easel.slack.homes[user]


def _text_of(view: dict) -> str:
    return "\n".join((b.get("text") or {}).get("text", "") for b in view["blocks"])


async def test_app_home_shows_a_person_their_images_and_spend(easel_factory) -> None:
    easel = await easel_factory(BUDGET_USER_DAILY_USD="2")
    ts, _ = await easel.sender.mention("a fox in a bowler hat")
    await easel.sender.mention("a red balloon", user="U0002")
    await easel.jobs_settled(2)
    view = await _home(easel, "U0001")
    text = _text_of(view)
    assert view["type"] == "home"
    assert "a fox in a bowler hat" in text and "a red balloon" not in text
    [link] = [c.args for c in easel.slack.calls_to("chat.getPermalink")]
    assert link["channel"] == "C0001" and link["message_ts"] == ts  # the link goes to the image's thread
    assert "Your spend" in text and "left of $2.00" in text
    assert "The workspace" not in text and not [b for b in view["blocks"] if b["type"] == "actions"]
    again = await _home(easel, "U0001")  # opened again: the same Home view, updated
    assert again["id"] == view["id"]
    assert (await easel.sender.app_home_opened("U0001", tab="messages")).status == 200
    assert len(easel.slack.calls_to("views.publish")) == 2  # the Messages tab publishes nothing


async def test_app_home_is_acknowledged_at_once_and_published_after(easel_factory) -> None:
    easel = await easel_factory()
    held = easel.slack.hold_answer("users.info")  # who is an admin: Slack takes its time
    assert (await easel.sender.app_home_opened("U0001")).status == 200  # answered while Slack has not
    await easel.slack.wait_for("users.info")
    assert not easel.slack.calls_to("views.publish")
    held.set()
    await easel.slack.wait_for("views.publish")
    assert easel.slack.homes["U0001"]["type"] == "home"


async def test_app_home_shows_admins_the_workspaces_month_and_the_changes(easel_factory) -> None:
    easel = await easel_factory(BUDGET_WORKSPACE_MONTHLY_USD="100")
    easel.slack.users["U0009"] = {"is_admin": True}
    await easel.sender.mention("a fox")
    await easel.jobs_settled(1)
    await _set(easel, enabled=False)
    text = _text_of(await _home(easel, "U0009"))
    assert "The workspace this month" in text and "left of $100.00" in text and "Top users: <@U0001>" in text
    assert "Recent changes" in text and "<#C0001> enabled: null → false" in text


async def test_the_workspace_settings_open_from_app_home_and_apply_to_every_channel(easel_factory) -> None:
    easel = await easel_factory()
    easel.slack.users["U0009"] = {"is_admin": True}
    home = await _home(easel, "U0009")
    [actions] = [b for b in home["blocks"] if b["type"] == "actions"]
    [button] = actions["elements"]
    click = {"type": "block_actions", "team": {"id": easel.slack.team_id, "domain": "t"},
             "user": {"id": "U0009", "team_id": easel.slack.team_id}, "api_app_id": easel.sender.api_app_id,
             "token": easel.sender.verification_token, "trigger_id": f"{int(time.time())}.1.abc",
             "container": {"type": "view", "view_id": home["id"]}, "view": home,
             "actions": [{"action_id": button["action_id"], "block_id": actions["block_id"], "type": "button",
                          "value": button["value"], "action_ts": str(time.time())}]}
    assert (await easel.sender.action(click)).status == 200
    [opened] = await easel.slack.wait_for("views.open")
    view = [v for v in easel.slack.views.values()][-1]
    assert json.loads(view["private_metadata"])["channel"] == ""
    saved = await easel.sender.action(easel.sender.view_submission_payload(
        view, _values(view, quality="low"), user="U0009"))
    assert saved.status == 200 and not (saved.json or {}).get("errors")
    assert (await Settings(easel.store.db).get(easel.slack.team_id, WORKSPACE)).quality == "low"
    await easel.sender.mention("a fox", channel="C0007")
    await easel.jobs_settled(1)
    assert [t["quality"] for t in _tools(easel)] == ["low"]


async def test_the_fake_publishes_home_views_strictly(easel_factory) -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    easel = await easel_factory()
    client = AsyncWebClient(token=easel.slack.bot_token, base_url=easel.slack.api_url)
    home = {"type": "home", "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]}
    for args, error in (({"user_id": "", "view": home}, "invalid_arguments"),
                        ({"user_id": "C0001", "view": home}, "not_found"),
                        ({"user_id": "U0001", "view": {**home, "type": "modal"}}, "invalid_arguments"),
                        ({"user_id": "U0001", "view": {**home, "submit": {"type": "plain_text", "text": "x"}}},
                         "invalid_arguments"),
                        ({"user_id": "U0001", "view": {"type": "home", "blocks": [{"type": "nope"}]}},
                         "invalid_arguments"),
                        ({"user_id": "U0001", "view": home, "hash": "stale"}, "hash_conflict")):
        with pytest.raises(SlackApiError) as e:
            await client.views_publish(**args)
        assert e.value.response["error"] == error
    published = await client.views_publish(user_id="U0001", view=home)
    assert published["view"]["type"] == "home" and easel.slack.homes["U0001"]["id"] == published["view"]["id"]
    again = await client.views_publish(user_id="U0001", view=home, hash=published["view"]["hash"])
    assert again["view"]["id"] == published["view"]["id"]


# -- the buttons under images follow the channel's policy too -------------------------------------------------------

async def test_buttons_follow_the_channels_policy(easel_factory) -> None:
    from bot import buttons
    from tests.test_buttons import _click, _image

    easel = await easel_factory()
    _, message = await _image(easel, "a lighthouse --quality low")
    [shared] = easel.slack.shared_files
    await _set(easel, max_quality="medium")
    await _click(easel, buttons.HD, shared["file_id"], message, key="hd")
    [told] = await easel.slack.wait_for("response_url")
    assert "above this channel's highest quality, medium" in told.args["text"]
    await _set(easel, max_quality="medium", users=("U0002",))
    await _click(easel, buttons.REROLL, shared["file_id"], message, key="reroll")
    calls = await easel.slack.wait_for("response_url", count=2)
    assert "not one of them" in calls[-1].args["text"]
    assert len(easel.openai.create_requests()) == 1  # neither click drew anything
    await _click(easel, buttons.REROLL, shared["file_id"], message, user="U0002", key="reroll2")
    await wait_until(lambda: len(easel.openai.create_requests()) == 2, what="the listed person's reroll")


async def test_a_workspace_purged_loses_its_settings_and_their_log(store: Store) -> None:
    from storage.retention import Retention

    settings = Settings(store.db)
    for team in ("T1", "T2"):
        await settings.change(team, "C1", ChannelSettings(enabled=False), by="U9", now=1.0)
    await Retention(store.db).workspace_removed("T1", now=2.0, purge=True)
    assert (await settings.get("T1", "C1")) == ChannelSettings() and await settings.log("T1") == []
    assert (await settings.get("T2", "C1")).enabled is False and len(await settings.log("T2")) == 1
