"""`/imagine settings` opens the settings modal (views.open with the command's trigger, before the listener
returns, within Slack's 3 seconds); its submission is checked field by field (a user group named is looked up
with Slack, `usergroups.list`, before the modal closes) and saved with its audit entries.
`/imagine settings log` lists the workspace's changes to admins. `/imagine settings tz <zone>` stays with the
budgets (bot/confirming.py)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.settings_desk import SettingsDesk
from handlers import settings_view
from handlers.payloads import Context

log = logging.getLogger(__name__)
NOT_ADMIN = "Only Easel's admins (the workspace's admins and owners, and EASEL_ADMINS) change settings."


async def open_modal(client: AsyncWebClient, trigger_id: str, *, desk: SettingsDesk, ctx: Context, team_id: str,
                     channel_id: str, user_id: str) -> str | None:
    """Open the settings of a channel ("": the workspace's); None, or the text to say when Slack would not."""
    shown = await desk.shown(team_id=team_id, channel_id=channel_id, user_id=user_id)
    try:
        await client.views_open(trigger_id=trigger_id, view=settings_view.view(shown, ctx))
    except SlackApiError as e:
        log.warning("views.open failed: %s", e.response.get("error") if e.response is not None else e)
        return "\n".join(["Slack would not open the settings window; here they are:",
                          *settings_view.describe(shown.own, shown.inherited, workspace=not channel_id)])
    return None


async def command(ack: AsyncAck, client: AsyncWebClient, command: dict[str, Any], *, args: str, team_id: str,
                  channel_id: str, user_id: str, desk: SettingsDesk, ctx: Context) -> None:
    """`/imagine settings` (the modal) and `/imagine settings log`."""
    if args.strip().lower() == "log":
        entries = await desk.log(team_id=team_id, user_id=user_id)
        if entries is None:
            await ack(text=f":lock: {NOT_ADMIN}")
        else:
            await ack(text="\n".join(["*Changes to Easel's settings* (newest first)",
                                      *(settings_view.log_lines(entries) or ["• none yet"])])[:3900])
        return
    trigger = command.get("trigger_id") if isinstance(command.get("trigger_id"), str) else ""
    said = await open_modal(client, trigger, desk=desk, ctx=ctx, team_id=team_id, channel_id=channel_id,
                            user_id=user_id)
    await ack(text=said) if said else await ack()


def register(app: AsyncApp, *, desk: SettingsDesk, ctx: Context) -> None:
    async def on_submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        place = settings_view.submitted_place(body)
        if place is None:
            await ack(response_action="errors", errors={"enabled": "Easel could not read this form; close it and "
                                                                   "open it again."})
            return
        team_id, channel_id, user_id = place
        parsed = settings_view.parse(body, ctx, workspace=not channel_id)
        if isinstance(parsed, dict):
            await ack(response_action="errors", errors=parsed)
            return
        if parsed.audience == "usergroup" and parsed.usergroup:  # as typed: Slack says which group it is
            if not await desk.is_admin(team_id, user_id):
                await ack(response_action="errors", errors={"enabled": NOT_ADMIN})
                return
            group = await desk.usergroup(team_id=team_id, given=parsed.usergroup)
            if isinstance(group, str):
                await ack(response_action="errors", errors={"usergroup": group})
                return
            parsed = dataclasses.replace(parsed, usergroup=group.id, usergroup_handle=group.handle)
        changes = await desk.save(team_id=team_id, channel_id=channel_id, user_id=user_id, new=parsed)
        if changes is None:
            await ack(response_action="errors", errors={"enabled": NOT_ADMIN})
            return
        log.info("settings of %s/%s changed by %s: %s", team_id, channel_id or "workspace", user_id,
                 ", ".join(c.field for c in changes) or "nothing")
        await ack()

    app.view(settings_view.VIEW)(on_submit)
