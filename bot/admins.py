"""Who is an admin of Easel in a workspace: its Slack admins and owners (`users.info`), and EASEL_ADMINS."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

CACHE_SECONDS = 600.0


class Admins:
    def __init__(self, *, listed: frozenset[str], is_workspace_admin: Callable[[str], Awaitable[bool]],
                 now: Callable[[], float] = time.monotonic):
        """`is_workspace_admin(user_id)`: Slack's word, asked with the running job's workspace token."""
        self._listed = listed
        self._ask = is_workspace_admin
        self._now = now
        self._known: dict[tuple[str, str], tuple[bool, float]] = {}

    async def is_admin(self, team_id: str, user_id: str) -> bool:
        if user_id in self._listed:
            return True
        found = self._known.get((team_id, user_id))
        if found is not None and self._now() - found[1] < CACHE_SECONDS:
            return found[0]
        answer = await self._ask(user_id)
        self._known[(team_id, user_id)] = (answer, self._now())
        return answer
