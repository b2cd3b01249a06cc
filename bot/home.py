"""App Home: what a person sees on Easel's Home tab (their recent images, their spend and what is left), and
what admins see besides (the workspace's month, the newest changes to the settings)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from bot.budgets import Budgets
from storage.home import Recent, RecentImage
from storage.settings import Change, Settings

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


class HomeDesk:
    def __init__(self, *, recent: Recent, budgets: Budgets, settings: Settings,
                 is_admin: Callable[[str, str], Awaitable[bool]]):
        self._recent = recent
        self._budgets = budgets
        self._settings = settings
        self._is_admin = is_admin

    async def home(self, *, team_id: str, user_id: str) -> Home:
        admin = await self._is_admin(team_id, user_id)
        images = await self._recent.images(team_id=team_id, user_id=user_id, limit=RECENT)
        mine, workspace = await self._budgets.summary(team_id=team_id, user_id=user_id, admin=admin)
        changes = await self._settings.log(team_id, limit=CHANGES) if admin else []
        return Home(user_id, admin, tuple(images), tuple(mine), tuple(workspace), tuple(changes))
