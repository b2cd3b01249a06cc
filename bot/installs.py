"""Installs in many workspaces (Slack's OAuth flow): where each workspace's token lives, and how a request from a
workspace is authorised.

The installations and OAuth states are kept by slack_sdk's own async SQLAlchemy stores, on Easel's database
engine (their tables are created by Easel's migrations, like every other table). A request is authorised
from the stored bot alone (its token, user id and bot id were recorded at install time), with no `auth.test`
round trip before Slack's acknowledgement; a request from a workspace with no installation (uninstalled, or
never installed) is answered 200 and otherwise ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
_FOUND = "easel_installed_bot"  # where the quiet check leaves the bot it found, for `authorize` to use
# Events that arrive after the token is gone, and need no authorisation (Bolt skips it for them too).
_WITHOUT_TOKEN = ("app_uninstalled", "tokens_revoked", "team_access_revoked")


class _Store(AsyncSQLAlchemyInstallationStore):
    """slack_sdk's store, telling Easel when a workspace installs (again)."""

    def __init__(self, *, on_saved: Callable[[str], Awaitable[None]], **kwargs: Any):
        super().__init__(**kwargs)
        self._on_saved = on_saved

    async def async_save(self, installation: Installation) -> None:
        await super().async_save(installation)
        if installation.team_id:
            await self._on_saved(installation.team_id)


class Installations:
    """The workspaces that installed Easel, each with its own bot token."""

    def __init__(self, *, engine: AsyncEngine, client_id: str, on_saved: Callable[[str], Awaitable[None]],
                 state_expiration_seconds: int = 600):
        """`on_saved(team_id)`: a workspace installed Easel (again)."""
        self.installation_store = _Store(client_id=client_id, engine=engine, logger=log, on_saved=on_saved)
        self.state_store = AsyncSQLAlchemyOAuthStateStore(expiration_seconds=state_expiration_seconds,
                                                          engine=engine, logger=log)

    async def bot(self, *, team_id: str | None, enterprise_id: str | None = None) -> Bot | None:
        return await self.installation_store.async_find_bot(enterprise_id=enterprise_id, team_id=team_id)

    async def token(self, team_id: str) -> str | None:
        """The bot token of a workspace, or None if Easel is not installed there (any more)."""
        bot = await self.bot(team_id=team_id)
        return bot.bot_token if bot is not None else None

    async def remove(self, *, team_id: str | None, enterprise_id: str | None = None) -> None:
        """Forget a workspace's installation and tokens (it uninstalled Easel, or revoked its tokens)."""
        await self.installation_store.async_delete_all(enterprise_id=enterprise_id, team_id=team_id)

    def authorize(self) -> AsyncAuthorize:
        return _StoredBotAuthorize(self)

    async def admit(self, req: AsyncBoltRequest) -> BoltResponse | None:
        """Before authorisation: a request from a workspace without an installation is answered 200 and
        dropped here, quietly (Bolt would log an error and tell the user to reinstall). None: go on."""
        body = req.body or {}
        event = body.get("event") if isinstance(body.get("event"), dict) else {}
        if body.get("type") in ("url_verification", "ssl_check") or event.get("type") in _WITHOUT_TOKEN:
            return None
        bot = await self.bot(team_id=req.context.team_id, enterprise_id=req.context.enterprise_id)
        if bot is None or not bot.bot_token:
            log.info("request from workspace %s, where Easel is not installed: ignored", req.context.team_id)
            return BoltResponse(status=200, body="")
        req.context[_FOUND] = bot
        return None


class _StoredBotAuthorize(AsyncAuthorize):
    """Authorise from the stored bot (found by the middleware above), without calling auth.test."""

    def __init__(self, installations: Installations):
        self._installations = installations

    async def __call__(self, *, context: Any, enterprise_id: str | None, team_id: str | None,
                       user_id: str | None, **_: Any) -> AuthorizeResult | None:
        bot = context.get(_FOUND) or await self._installations.bot(team_id=team_id, enterprise_id=enterprise_id)
        if bot is None or not bot.bot_token:
            return None
        return AuthorizeResult(enterprise_id=bot.enterprise_id, team_id=bot.team_id, bot_user_id=bot.bot_user_id,
                               bot_id=bot.bot_id, bot_token=bot.bot_token, bot_scopes=bot.bot_scopes,
                               user_id=user_id)
