"""Channel and workspace settings from Slack: what `/imagine settings` and App Home show, and an admin's change
saved with its audit entries. Only admins change anything; everyone may see a channel's settings."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable

from bot.usergroups import UserGroup, UserGroups
from storage.models import ChannelSettings
from storage.settings import WORKSPACE, Change, Settings

LOG_SHOWN = 10  # audit entries an admin sees in the settings modal


@dataclasses.dataclass(frozen=True)
class Shown:
    """What the settings modal shows: a place's own settings, what it inherits, and (to admins) its log."""

    team_id: str
    channel_id: str  # WORKSPACE: the workspace's own settings
    own: ChannelSettings
    inherited: ChannelSettings  # the workspace's, under a channel's (nothing, for the workspace)
    admin: bool
    log: tuple[Change, ...] = ()


class SettingsDesk:
    def __init__(self, *, settings: Settings, is_admin: Callable[[str, str], Awaitable[bool]],
                 clock: Callable[[], float] = time.time, usergroups: UserGroups | None = None):
        """`is_admin(team_id, user_id)`: Easel's admins there (Slack's admins and owners, and EASEL_ADMINS).
        `usergroups`: the workspace's user groups, as Slack lists them (None: no group can be chosen)."""
        self._settings = settings
        self._is_admin = is_admin
        self._clock = clock
        self._usergroups = usergroups

    async def usergroup(self, *, team_id: str, given: str) -> UserGroup | str:
        """The user group an admin named in the settings, or what to say on its field."""
        if self._usergroups is None:
            return "User groups cannot be chosen here."
        return await self._usergroups.find(team_id, given)

    async def is_admin(self, team_id: str, user_id: str) -> bool:
        return await self._is_admin(team_id, user_id)

    async def shown(self, *, team_id: str, channel_id: str, user_id: str) -> Shown:
        admin = await self._is_admin(team_id, user_id)
        place = await self._settings.place(team_id, channel_id)
        own = place.workspace if channel_id == WORKSPACE else place.channel
        inherited = ChannelSettings() if channel_id == WORKSPACE else place.workspace
        log = await self._settings.log(team_id, channel_id=channel_id, limit=LOG_SHOWN) if admin else []
        return Shown(team_id, channel_id, own, inherited, admin, tuple(log))

    async def save(self, *, team_id: str, channel_id: str, user_id: str,
                   new: ChannelSettings) -> list[Change] | None:
        """The changes saved (and recorded), or None: `user_id` is not an admin."""
        if not await self._is_admin(team_id, user_id):
            return None
        return await self._settings.change(team_id, channel_id, new, by=user_id, now=self._clock())

    async def log(self, *, team_id: str, user_id: str, limit: int = 20) -> list[Change] | None:
        """The workspace's newest changes (None: not an admin)."""
        if not await self._is_admin(team_id, user_id):
            return None
        return await self._settings.log(team_id, limit=limit)

    async def record(self, *, team_id: str, field: str, before: object, after: object, by: str) -> None:
        """An audit entry for a workspace setting kept elsewhere (its time zone)."""
        await self._settings.record(team_id, WORKSPACE, field=field, before=before, after=after, by=by,
                                    now=self._clock())
