"""Slack listeners. Each acknowledges at once and turns a payload into a stored job; none does slow work
(but for opening the Edit modal and reading a mask, which Slack wants done before the answer)."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.confirming import BudgetDesk
from bot.intake import Intake
from bot.interactions import Interactions
from handlers import actions, commands, confirm, events, installs, views
from handlers.payloads import Context


def register_handlers(app: AsyncApp, *, intake: Intake, ctx: Context, interactions: Interactions,
                      desk: BudgetDesk | None = None) -> None:
    events.register(app, intake=intake, ctx=ctx)
    commands.register(app, intake=intake, ctx=ctx, desk=desk)
    installs.register(app, intake=intake)
    actions.register(app, intake=intake, interactions=interactions, ctx=ctx)
    views.register(app, intake=intake, interactions=interactions, ctx=ctx)
    if desk is not None:
        confirm.register(app, desk=desk)
