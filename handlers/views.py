"""The Edit modal's submission (`view_submission`), and the message shortcut "Edit with Easel" that opens the
same modal for an image in any message.

A submission is checked before the modal closes: an instruction, options the model takes, and a mask that
is a PNG with an alpha channel the size of the image (downloaded and read here, within Slack's 3 seconds).
What is wrong is shown on its field (`response_action: errors`) and nothing is stored or sent to OpenAI;
otherwise the job is stored, then the modal closes. The result goes in the image's thread.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot import buttons
from bot.intake import Intake
from bot.interactions import Interactions
from handlers import clicks
from handlers.actions import open_edit
from handlers.payloads import Context, _str

log = logging.getLogger(__name__)


def register(app: AsyncApp, *, intake: Intake, interactions: Interactions, ctx: Context) -> None:
    async def on_shortcut(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond,
                          client: AsyncWebClient) -> None:
        await ack()
        target = clicks.shortcut_target(body)
        if isinstance(target, str):
            if _str(body.get("response_url")):
                await respond(text=target, response_type="ephemeral", replace_original=False)
            return
        image = await interactions.image(team_id=target.team_id, channel_id=target.channel_id,
                                         file_id=target.file_id)
        tool: dict[str, Any] = {}
        if image is not None:  # one of Easel's own: the edit chains on its response, as Edit… does
            target = clicks.easel_target_of(target, image)
            tool = image.options or {}
        await open_edit(client, None, _str(body.get("trigger_id")), clicks.edit_view(target, tool, ctx))

    async def on_submit(ack: AsyncAck, body: dict[str, Any]) -> None:
        s = clicks.submission(body)
        if s is None:
            await ack(response_action="errors", errors={"instruction": "Easel could not read this form; "
                                                                       "close it and open it again."})
            return
        t = s.target
        image = await interactions.image(team_id=t.team_id, channel_id=t.channel_id, file_id=t.file_id) \
            if t.easel else None
        if t.easel and image is None:
            await ack(response_action="errors", errors={"instruction": clicks.NOT_EASELS.removeprefix(":wave: ")})
            return
        await intake.models()
        job = clicks.submission_job(s, image, ctx)
        if isinstance(job, dict):
            await ack(response_action="errors", errors=job)
            return
        if s.mask is not None:
            size = (t.width, t.height) if t.width and t.height else None
            problem = await interactions.mask(team_id=t.team_id, file=s.mask, size=size)
            if problem is not None:
                await ack(response_action="errors", errors={"mask": problem})
                return
        await intake.submit(job, start_thread=not t.easel)
        await ack()

    app.shortcut(buttons.SHORTCUT)(on_shortcut)
    app.view(buttons.EDIT_VIEW)(on_submit)
