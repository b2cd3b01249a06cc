"""App Home: `app_home_opened` (the Home tab) publishes the person's view (`views.publish`); its "Workspace
settings" button, for admins, opens the settings modal for the whole workspace (the click's trigger)."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages
from bot.budgets import usd
from bot.home import Home, HomeDesk
from bot.settings_desk import SettingsDesk
from handlers import settings, settings_view
from handlers.payloads import Context, slack_id

log = logging.getLogger(__name__)
WORKSPACE_SETTINGS = "easel.settings.workspace"  # the button's action_id


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def view(home: Home, links: list[str | None]) -> dict[str, Any]:
    """The Home tab: `links[i]` is the permalink of `home.images[i]`'s thread (None: Slack gave none)."""
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": "Easel"}}]
    lines = ["*Your recent images*"]
    for image, link in zip(home.images, links, strict=True):
        when = datetime.datetime.fromtimestamp(image.created_at, datetime.UTC).strftime("%Y-%m-%d")
        prompt = messages.escape(image.prompt if len(image.prompt) <= 80 else image.prompt[:79] + "…")
        where = f"<{link}|{prompt}>" if link else f"{prompt} in <#{image.channel_id}>"
        cost = f", {usd(image.cost_micros, up=True)}" if image.cost_micros is not None else ""
        lines.append(f"• {where} ({image.model}, {when}{cost})")
    if not home.images:
        lines.append("• none yet: mention @Easel or use `/imagine` to make one")
    blocks.append(_section("\n".join(lines)))
    blocks.append(_section("\n".join(["*Your spend*", *home.spend])))
    if home.admin:
        blocks.append({"type": "divider"})
        blocks.append(_section("\n".join(["*The workspace this month*", *home.workspace])))
        changes = settings_view.log_lines(home.changes) or ["• none yet"]
        blocks.append(_section("\n".join(["*Recent changes to Easel's settings*", *changes])))
        blocks.append({"type": "actions", "block_id": "easel.home", "elements": [
            {"type": "button", "action_id": WORKSPACE_SETTINGS, "value": "workspace",
             "text": {"type": "plain_text", "text": "Workspace settings"}}]})
    return {"type": "home", "blocks": blocks}


def register(app: AsyncApp, *, home: HomeDesk, settings_desk: SettingsDesk, ctx: Context) -> None:
    async def on_home(event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
        if not isinstance(event, dict) or event.get("tab") != "home":
            return  # the Messages tab
        team, user = slack_id(context.team_id or body.get("team_id")), slack_id(event.get("user"))
        if team is None or user is None:
            return
        home.open(team_id=team, user_id=user, render=view)  # published after the acknowledgement

    async def on_workspace_settings(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        team = slack_id((body.get("team") or {}).get("id")) if isinstance(body.get("team"), dict) else None
        user = slack_id((body.get("user") or {}).get("id")) if isinstance(body.get("user"), dict) else None
        trigger = body.get("trigger_id") if isinstance(body.get("trigger_id"), str) else ""
        if team and user and trigger:
            await settings.open_modal(client, trigger, desk=settings_desk, ctx=ctx, team_id=team, channel_id="",
                                      user_id=user)

    app.event("app_home_opened")(on_home)
    app.action(WORKSPACE_SETTINGS)(on_workspace_settings)
