"""A channel's policy applied to a request: who may use Easel there, its defaults, and what it allows. Pure.

Effective options, in order: the environment's defaults, the workspace's settings, the channel's, the
thread's sticky options, the message's own flags; then the channel's policy clamps them. The image tool's
moderation level has no flag: it is the channel's (or the workspace's, or IMAGE_MODERATION), for every request
there, the buttons' included. A default the
policy forbids is moved inside it (the highest quality allowed, the first model allowed); a choice the person
made that it forbids is refused, saying why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from bot import options
from storage.models import ChannelSettings

QUALITY_ORDER = ("low", "medium", "high", "xhigh", "max")
"""Qualities from the cheapest; `auto` lets OpenAI pick, which may be the dearest, so a highest quality allowed
turns `auto` into that quality."""

OFF = ":no_entry_sign: Easel is turned off in this channel. An admin can turn it on with `/imagine settings`."
NOT_LISTED = (":no_entry_sign: Easel is open only to some people in this channel, and you are not one of them. "
              "Ask an admin (`/imagine settings` shows who).")
NOT_IN_GROUP = (":no_entry_sign: Easel is open only to the members of a user group in this channel, and you are "
                "not in it. Ask an admin (`/imagine settings` shows which group).")
GROUP_GONE = (":no_entry_sign: Easel is open only to a Slack user group in this channel, and that group no longer "
              "exists (or is disabled), so nobody can use Easel here for now. Ask an admin to choose another in "
              "`/imagine settings`.")
GROUP_UNSEEN = (":warning: Easel is open only to a Slack user group in this channel, and Slack will not show Easel "
                "its user groups (the app lacks the `usergroups:read` scope, or the workspace's plan has no user "
                "groups). Ask an admin to reinstall Easel from its current manifest.")
GROUP_UNCHECKED = (":warning: Easel is open only to a Slack user group in this channel, and Slack did not say just "
                   "now whether you are in it. Nothing was sent; try again in a minute.")


@dataclasses.dataclass(frozen=True)
class Policy:
    """The settings in force in one channel (the workspace's under the channel's)."""

    settings: ChannelSettings = ChannelSettings()

    @property
    def show_costs(self) -> bool:
        return self.settings.show_costs is not False

    @property
    def usergroup(self) -> str | None:
        """The Slack user group whose members alone may use Easel here (None: no group). Membership is asked of
        Slack by the worker, when the request is taken (bot.usergroups), not while Slack waits for its answer."""
        s = self.settings
        return s.usergroup if s.audience == "usergroup" else None

    def refusal(self, user_id: str) -> str | None:
        """Why `user_id` may not use Easel here (None: they may, or it is for the worker to ask Slack whether
        they are in the channel's user group)."""
        s = self.settings
        if s.enabled is False:
            return OFF
        if s.audience == "users" and user_id not in (s.users or ()):
            return NOT_LISTED
        if s.audience == "usergroup" and not s.usergroup:
            return GROUP_GONE
        return None

    def moderation(self, base: options.Defaults) -> str:
        return self.settings.moderation or base.moderation

    def defaults(self, base: options.Defaults) -> options.Defaults:
        s = self.settings
        d = dataclasses.replace(base, model=s.model or base.model, quality=s.quality or base.quality,
                                size=s.size or base.size, moderation=self.moderation(base))
        if s.models and d.model not in s.models:
            d = dataclasses.replace(d, model=s.models[0])
        if s.max_quality and not _within(d.quality, s.max_quality):
            d = dataclasses.replace(d, quality=s.max_quality)
        return d

    def clamp(self, resolved: options.Resolved, chosen: Collection[str]) -> options.Resolved:
        """`resolved` inside the policy, or OptionError saying which choice it forbids."""
        s = self.settings
        if s.models and resolved.model not in s.models:
            raise options.OptionError(f"This channel allows only these image models: {', '.join(s.models)} "
                                      f"(not {resolved.model}).")
        if s.max_quality and not _within(resolved.quality, s.max_quality):
            if "quality" in chosen and resolved.quality != "auto":
                raise options.OptionError(f"`--quality {resolved.quality}` is above this channel's highest "
                                          f"quality, {s.max_quality}.")
            resolved = dataclasses.replace(resolved, quality=s.max_quality)
        return resolved


    def tool_problem(self, tool: dict[str, object]) -> str | None:
        """Why a stored request's tool (a button's: Reroll, Vary, HD) may not run here now (None: it may)."""
        s, model, quality = self.settings, str(tool.get("model") or ""), str(tool.get("quality") or "auto")
        if s.models and model not in s.models:
            return f"This channel allows only these image models now: {', '.join(s.models)} (not {model})."
        if s.max_quality and quality != "auto" and not _within(quality, s.max_quality):
            return f"Quality {quality} is above this channel's highest quality, {s.max_quality}."
        return None


def _within(quality: str, highest: str) -> bool:
    if quality not in QUALITY_ORDER or highest not in QUALITY_ORDER:
        return quality == highest
    return QUALITY_ORDER.index(quality) <= QUALITY_ORDER.index(highest)
