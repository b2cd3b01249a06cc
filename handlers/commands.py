"""`/imagine`: store the job, then acknowledge with a private note (or the help, or what is wrong)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import messages
from bot.confirming import BudgetDesk
from bot.intake import Intake, Submitted
from handlers import payloads


def register(app: AsyncApp, *, intake: Intake, ctx: payloads.Context, name: str = "/imagine",
             desk: BudgetDesk | None = None) -> None:
    async def imagine(ack: AsyncAck, command: dict[str, Any]) -> None:
        if desk is not None and await _budget_command(ack, command, desk):
            return
        await intake.models()
        routed = payloads.route_command(command, ctx=ctx)
        if isinstance(routed, str):
            await ack(text=routed)
            return
        outcome = await intake.submit(routed.job)
        if outcome is Submitted.TOO_MANY:
            await ack(text=messages.too_many_pending(intake.cap))
        else:
            await ack(text=messages.command_accepted(routed.job.text))

    app.command(name)(imagine)


async def _budget_command(ack: AsyncAck, command: dict[str, Any], desk: BudgetDesk) -> bool:
    """`/imagine usage` and `/imagine settings ...`: answered privately; False for anything else."""
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
    else:
        await ack(text=await desk.settings(team_id=team, user_id=user, args=rest))
    return True
