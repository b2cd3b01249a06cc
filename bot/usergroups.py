"""Channels open only to a Slack user group: who is in it, asked of Slack when a request is taken by the worker
(never while Slack waits for the request's acknowledgement), and the group an admin names in the settings.

Members are asked with `usergroups.users.list` (scope `usergroups:read`, Slack's Tier 2: some 20 calls a
minute) and kept for `MEMBERS_SECONDS` per workspace and group, so a burst of requests asks Slack once; while
that one question is on its way, the others wait for its answer instead of asking again. A group Slack does not
know (deleted, disabled) refuses everyone; so does an answer Slack would not give (its error, or no answer), for
that request only: nothing is sent to OpenAI on a guess.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable

from bot import policy
from bot.slack import NotInstalled, SlackAdapter
from storage.models import Job, JobKind

log = logging.getLogger(__name__)

MEMBERS_SECONDS = 60.0  # how long a group's members are trusted before Slack is asked again
_UNSEEN = ("missing_scope", "plan_upgrade_required", "not_allowed_token_type")  # Slack shows Easel no groups
_GONE = ("no_such_subteam",)
_MENTION = re.compile(r"^<!subteam\^([A-Z0-9]+)(?:\|@?([^>]*))?>$")  # a group as Slack writes a mention of it
_ID = re.compile(r"^S[A-Z0-9]{2,31}$")


@dataclasses.dataclass(frozen=True)
class UserGroup:
    id: str
    handle: str


@dataclasses.dataclass(frozen=True)
class _Known:
    members: frozenset[str] | None  # None: Slack says there is no such group
    at: float


class UserGroups:
    def __init__(self, slack: SlackAdapter, *, ttl: float = MEMBERS_SECONDS,
                 now: Callable[[], float] = time.monotonic):
        self._slack = slack
        self._ttl = ttl
        self._now = now
        self._known: dict[tuple[str, str], _Known] = {}
        self._asking: dict[tuple[str, str], asyncio.Future[_Known | str]] = {}

    async def refusal(self, job: Job) -> str | None:
        """Why the person of a request may not use Easel where they asked (None: they may, or the channel is not
        open to a group only). Call with the job's workspace token in use (`SlackAdapter.use_team`)."""
        group = job.options.usergroup
        if job.kind is not JobKind.GENERATE or not group:
            return None
        known = await self._members(job.team_id, group)
        if isinstance(known, str):
            if known in _UNSEEN:
                return policy.GROUP_UNSEEN
            return policy.GROUP_UNCHECKED
        if known.members is None:
            return policy.GROUP_GONE
        return None if job.user_id in known.members else policy.NOT_IN_GROUP

    async def _members(self, team_id: str, group: str) -> _Known | str:
        key = (team_id, group)
        found = self._known.get(key)
        if found is not None and self._now() - found.at < self._ttl:
            return found
        asking = self._asking.get(key)
        if asking is None:  # the first to ask: the others wait for this answer
            asking = self._asking[key] = asyncio.get_running_loop().create_future()
            try:
                answer = await self._ask(group)
            except asyncio.CancelledError:
                asking.set_result("no_answer")  # those waiting are not left waiting
                raise
            except Exception as e:  # noqa: BLE001 - no answer (a connection error): this request is refused
                log.warning("usergroups.users.list for %s failed: %s", group, type(e).__name__)
                answer = "no_answer"
            finally:
                del self._asking[key]
            if isinstance(answer, _Known):
                self._known[key] = answer
            asking.set_result(answer)
            return answer
        return await asyncio.shield(asking)

    async def _ask(self, group: str) -> _Known | str:
        members = await self._slack.usergroup_members(group)
        if isinstance(members, str):
            if members in _GONE:
                return _Known(None, self._now())
            log.warning("usergroups.users.list for %s: %s", group, members)
            return members
        return _Known(members, self._now())

    async def find(self, team_id: str, given: str) -> UserGroup | str:
        """The workspace's enabled user group an admin named (its handle, with or without @, its id, or a
        mention of it), or the sentence to show on the settings field."""
        text = given.strip()
        m = _MENTION.match(text)
        wanted = (m.group(1) if m else text.lstrip("@")).strip()
        if not wanted:
            return "Name a user group by its handle, like @designers."
        try:
            await self._slack.use_team(team_id)
        except NotInstalled:
            return "Easel is not installed in this workspace any more."
        try:
            groups = await self._slack.usergroups()
        except Exception as e:  # noqa: BLE001 - said on the field; nothing is saved
            log.warning("usergroups.list failed: %s", type(e).__name__)
            groups = "no_answer"
        if isinstance(groups, str):
            if groups in _UNSEEN:
                return ("Slack shows Easel no user groups here (the app lacks the usergroups:read scope, or the "
                        "workspace's plan has none).")
            return "Slack did not list the user groups just now; try again in a moment."
        for g in groups:
            gid, handle = str(g.get("id") or ""), str(g.get("handle") or "")
            if (_ID.match(wanted) and gid == wanted) or handle.lower() == wanted.lower():
                return UserGroup(gid, handle)
        handles = ", ".join(f"@{g.get('handle')}" for g in groups[:10] if g.get("handle"))
        return (f"No user group @{wanted} in this workspace"
                + (f" (there are {handles})." if handles else "; it has no user groups."))[:150]
