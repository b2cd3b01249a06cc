"""Slack listeners. Each acknowledges at once and turns a payload into a stored job; none does slow work."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.intake import Intake
from handlers import commands, events, installs
from handlers.payloads import Context


def register_handlers(app: AsyncApp, *, intake: Intake, ctx: Context) -> None:
    events.register(app, intake=intake, ctx=ctx)
    commands.register(app, intake=intake, ctx=ctx)
    installs.register(app, intake=intake)
