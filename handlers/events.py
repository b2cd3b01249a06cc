"""`app_mention` and `message` events (channels, private channels, DMs, group DMs).

Both event types go through one function, so a message that arrives as both (a mention in a channel Easel is
in) or is redelivered by Slack becomes one job: the dedupe key is the message itself.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.intake import Intake
from handlers import payloads

log = logging.getLogger(__name__)


def register(app: AsyncApp, *, intake: Intake, ctx: payloads.Context) -> None:
    async def on_event(event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
        await handle_event(event, body=body, context=context, intake=intake, ctx=ctx)

    app.event("app_mention")(on_event)
    app.event("message")(on_event)


async def handle_event(
    event: dict[str, Any],
    *,
    body: dict[str, Any],
    context: AsyncBoltContext,
    intake: Intake,
    ctx: payloads.Context,
) -> None:
    if not isinstance(event, dict) or payloads.is_ignored(
        event, bot_user_id=context.bot_user_id, bot_id=context.bot_id
    ):
        return
    team_id = payloads.slack_id(context.team_id or body.get("team_id"))
    if team_id is None:
        return
    await intake.models()
    thread = None
    if (thread_ts := payloads.thread_of(event)) is not None:
        thread = await intake.thread(team_id=team_id, channel_id=event["channel"], thread_ts=thread_ts)
    if not payloads.addressed(event, bot_user_id=context.bot_user_id, thread=thread):
        return
    policy = await intake.policy(team_id=team_id, channel_id=event["channel"])
    routed = payloads.route_event(
        event, team_id=team_id, bot_user_id=context.bot_user_id, thread=thread, ctx=ctx, policy=policy
    )
    if routed is not None:
        await intake.submit(routed.job, start_thread=routed.start_thread, thread_options=routed.thread_options)
