"""`/imagine`: store the job, then acknowledge with a private note (or the help, or what is wrong)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import messages
from bot.confirming import BudgetDesk
from bot.intake import Intake, Submitted
from bot.settings_desk import SettingsDesk
from handlers import payloads, settings


def register(app: AsyncApp, *, intake: Intake, ctx: payloads.Context, name: str = "/imagine",
             desk: BudgetDesk | None = None, settings_desk: SettingsDesk | None = None) -> None:
    async def imagine(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        if desk is not None and await _budget_command(ack, command, desk, client, settings_desk, ctx):
            return
        await intake.models()
        team, channel = payloads.slack_id(command.get("team_id")), payloads.slack_id(command.get("channel_id"))
        policy = await intake.policy(team_id=team, channel_id=channel) if team and channel else None
        routed = payloads.route_command(command, ctx=ctx, policy=policy)
        if isinstance(routed, str):
            await ack(text=routed)
            return
        outcome = await intake.submit(routed.job)
        if outcome is Submitted.TOO_MANY:
            await ack(text=messages.too_many_pending(intake.cap))
        else:
            await ack(text=messages.command_accepted(routed.job.text))

    app.command(name)(imagine)


async def _budget_command(ack: AsyncAck, command: dict[str, Any], desk: BudgetDesk, client: AsyncWebClient,
                          settings_desk: SettingsDesk | None, ctx: payloads.Context) -> bool:
    """`/imagine usage` and `/imagine settings ...`: answered privately (the settings modal opened); False for
    anything else."""
    text = command.get("text") if isinstance(command.get("text"), str) else ""
    word, _, rest = text.strip().partition(" ")
    if word.lower() not in ("usage", "settings") or (word.lower() == "usage" and rest.strip()):
        return False
    team, channel, user = (payloads.slack_id(command.get(k)) for k in ("team_id", "channel_id", "user_id"))
    if not (team and channel and user):
        await ack(text=":warning: Slack sent this command without its team, channel or user; try again.")
        return True
    if word.lower() == "usage":
        await ack(text=await desk.usage(team_id=team, channel_id=channel, user_id=user))
    elif settings_desk is not None and rest.split()[:1] in ([], ["log"]):
        await settings.command(ack, client, command, args=rest, team_id=team, channel_id=channel, user_id=user,
                               desk=settings_desk, ctx=ctx)
    else:
        await ack(text=await desk.settings(team_id=team, user_id=user, args=rest))
    return True
