"""`app_uninstalled` and `tokens_revoked`: the workspace is forgotten and its waiting jobs are cancelled."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext

from bot.intake import Intake


def register(app: AsyncApp, *, intake: Intake) -> None:
    async def uninstalled(body: dict[str, Any], context: AsyncBoltContext) -> None:
        team_id = context.team_id or body.get("team_id")
        if isinstance(team_id, str) and team_id:
            await intake.workspace_removed(team_id)

    async def revoked(event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
        tokens = event.get("tokens") if isinstance(event, dict) else None
        if isinstance(tokens, dict) and tokens.get("bot"):  # Easel holds only bot tokens
            await uninstalled(body, context)

    app.event("app_uninstalled")(uninstalled)
    app.event("tokens_revoked")(revoked)
