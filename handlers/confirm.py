"""The "Draw it, up to $x" button: only the requester's click starts the request; anyone else hears so privately."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot.budgets import CONFIRM_ACTION
from bot.confirming import BudgetDesk, Confirmed
from handlers.payloads import slack_id


def register(app: AsyncApp, *, desk: BudgetDesk) -> None:
    async def confirm(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        team = slack_id((body.get("team") or {}).get("id"))
        user = slack_id((body.get("user") or {}).get("id"))
        actions = body.get("actions") or [{}]
        value = actions[0].get("value") if isinstance(actions[0], dict) else None
        if not (team and user and isinstance(value, str)):
            return
        click = await desk.confirm(team_id=team, user_id=user, value=value)
        if click.outcome is Confirmed.ACCEPTED:
            await respond(text=f":art: <@{user}> confirmed: drawing it now.", replace_original=True)
        elif click.outcome is Confirmed.NOT_YOURS:
            await respond(text=f"Only <@{click.requester}>, who asked for this image, can confirm its cost.",
                          response_type="ephemeral", replace_original=False)
        elif click.outcome is Confirmed.ALREADY:
            await respond(text="Already confirmed: it is on its way.", response_type="ephemeral",
                          replace_original=False)
        elif click.outcome is Confirmed.TOO_MANY:
            await respond(text="You have too many requests waiting; click again once one is done.",
                          response_type="ephemeral", replace_original=False)
        else:
            await respond(text="This request is no longer known.", response_type="ephemeral",
                          replace_original=False)

    app.action(CONFIRM_ACTION)(confirm)
