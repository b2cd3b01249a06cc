"""App Home: what a person sees on Easel's Home tab (their recent images, their spend and what is left), and
what admins see besides (the workspace's month, the newest changes to the settings)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.budgets import Budgets
from bot.slack import NotInstalled, SlackAdapter
from storage.home import Recent, RecentImage
from storage.settings import Change, Settings

log = logging.getLogger(__name__)

RECENT = 5
CHANGES = 10


@dataclasses.dataclass(frozen=True)
class Home:
    user_id: str
    admin: bool
    images: tuple[RecentImage, ...]
    spend: tuple[str, ...]  # lines of mrkdwn
    workspace: tuple[str, ...] = ()  # admins': the workspace's month
    changes: tuple[Change, ...] = ()  # admins': the newest changes to settings


Render = Callable[[Home, list[str | None]], dict[str, Any]]  # the view, given the links to the images' threads


class HomeDesk:
    def __init__(self, *, recent: Recent, budgets: Budgets, settings: Settings,
                 is_admin: Callable[[str, str], Awaitable[bool]], slack: SlackAdapter):
        self._recent = recent
        self._budgets = budgets
        self._settings = settings
        self._is_admin = is_admin
        self._slack = slack
        self._publishing: dict[tuple[str, str], asyncio.Task[None]] = {}  # (workspace, person) -> its publish

    def open(self, *, team_id: str, user_id: str, render: Render) -> None:
        """The person opened the Home tab: it is published in the background (the event is acknowledged at once),
        with the workspace this task serves (its token, its budgets). A publish for the same person still under
        way covers this one."""
        key = (team_id, user_id)
        if key in self._publishing:
            return
        task = asyncio.create_task(self._publish_logged(team_id, user_id, render), name="easel-home")
        self._publishing[key] = task
        task.add_done_callback(lambda _: self._publishing.pop(key, None))

    async def _publish_logged(self, team_id: str, user_id: str, render: Render) -> None:
        try:
            await self.publish(team_id=team_id, user_id=user_id, render=render)
        except Exception:
            log.exception("App Home of %s/%s: not published", team_id, user_id)

    async def publish(self, *, team_id: str, user_id: str, render: Render) -> bool:
        """Publish the person's Home tab: what `home` finds, with a link to each image's thread (within the
        workspace's Slack budgets: a link there is no budget for is left out). False if it was not published."""
        try:
            await self._slack.use_team(team_id)
        except NotInstalled:
            return False
        shown = await self.home(team_id=team_id, user_id=user_id)
        links = await asyncio.gather(*(self._slack.permalink(i.channel_id, i.thread_ts) for i in shown.images))
        return await self._slack.publish_home(user_id, render(shown, list(links)))

    async def home(self, *, team_id: str, user_id: str) -> Home:
        admin = await self._is_admin(team_id, user_id)
        images = await self._recent.images(team_id=team_id, user_id=user_id, limit=RECENT)
        mine, workspace = await self._budgets.summary(team_id=team_id, user_id=user_id, admin=admin)
        changes = await self._settings.log(team_id, limit=CHANGES) if admin else []
        return Home(user_id, admin, tuple(images), tuple(mine), tuple(workspace), tuple(changes))
