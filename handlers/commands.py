"""`/imagine`: store the job, then acknowledge with a private note (or the help, or what is wrong)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import messages
from bot.intake import Intake, Submitted
from handlers import payloads


def register(app: AsyncApp, *, intake: Intake, ctx: payloads.Context, name: str = "/imagine") -> None:
    async def imagine(ack: AsyncAck, command: dict[str, Any]) -> None:
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
