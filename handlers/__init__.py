"""Slack listeners. Each acknowledges at once and turns a payload into a stored job; none does slow work."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.confirming import BudgetDesk
from bot.intake import Intake
from handlers import commands, confirm, events, installs
from handlers.payloads import Context


def register_handlers(app: AsyncApp, *, intake: Intake, ctx: Context, desk: BudgetDesk | None = None) -> None:
    events.register(app, intake=intake, ctx=ctx)
    commands.register(app, intake=intake, ctx=ctx, desk=desk)
    installs.register(app, intake=intake)
    if desk is not None:
        confirm.register(app, desk=desk)
