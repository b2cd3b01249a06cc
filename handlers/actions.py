"""Button clicks (`block_actions`) on the buttons under Easel's images.

Reroll, Vary and HD: the image is looked up (Easel's record of it, in the click's workspace and channel), the
click claimed (a double click is one job) and the job stored; then Slack is answered. Edit… opens the modal
with the click's trigger (`views.open`, within Slack's 3 seconds): the one call a listener makes before it
returns. Anything that is not one of Easel's images there gets a private, polite refusal.

Other modules add their own buttons with action ids of their own namespace (`easel.<name>`); the ones here
are matched exactly.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import buttons
from bot.intake import Intake, Submitted
from bot.interactions import Interactions
from handlers import clicks
from handlers.payloads import Context

log = logging.getLogger(__name__)
CANNOT_OPEN = ":warning: Slack would not open the Edit window (it took too long, or the click was too old). " \
              "Click Edit… again."


def register(app: AsyncApp, *, intake: Intake, interactions: Interactions, ctx: Context) -> None:
    async def on_click(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond, client: AsyncWebClient) -> None:
        c = clicks.click(body)
        if c is None:
            await ack()
            return
        image = await interactions.image(team_id=c.team_id, channel_id=c.channel_id, file_id=c.file_id)
        if image is None:
            await ack()
            await _refuse(respond, clicks.NOT_EASELS)
            return
        if c.action_id == buttons.EDIT:
            await ack()
            await open_edit(client, respond, c.trigger_id, clicks.edit_view(clicks.easel_target(c, image),
                                                                            image.options or {}, ctx))
            return
        await intake.models()
        job = clicks.click_job(c, image, ctx)
        if isinstance(job, str):
            await ack()
            await _refuse(respond, job)
            return
        if await interactions.claim(c.claim_key, at=c.action_ts):
            outcome = await intake.submit(job)
            if outcome is Submitted.DUPLICATE:
                log.info("click %s delivered twice", job.dedupe_key)
        else:
            log.info("double click ignored: %s", c.claim_key)
        await ack()

    for action_id in (*buttons.CLICKS, buttons.EDIT):
        app.action(action_id)(on_click)


async def open_edit(client: AsyncWebClient, respond: AsyncRespond | None, trigger_id: str | None,
                    view: dict[str, Any]) -> None:
    from slack_sdk.errors import SlackApiError

    try:
        await client.views_open(trigger_id=trigger_id or "", view=view)
    except SlackApiError as e:
        log.warning("views.open failed: %s", e.response.get("error") if e.response is not None else e)
        if respond is not None:
            await _refuse(respond, CANNOT_OPEN)


async def _refuse(respond: AsyncRespond, text: str) -> None:
    try:
        await respond(text=text, response_type="ephemeral", replace_original=False)
    except Exception as e:  # noqa: BLE001 - a refusal that cannot be said changes nothing
        log.warning("could not answer a click privately: %s", type(e).__name__)
