"""A channel's policy applied to a request: who may use Easel there, its defaults, and what it allows. Pure.

Effective options, in order: the environment's defaults, the workspace's settings, the channel's, the
thread's sticky options, the message's own flags; then the channel's policy clamps them. A default the
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


@dataclasses.dataclass(frozen=True)
class Policy:
    """The settings in force in one channel (the workspace's under the channel's)."""

    settings: ChannelSettings = ChannelSettings()

    @property
    def show_costs(self) -> bool:
        return self.settings.show_costs is not False

    def refusal(self, user_id: str) -> str | None:
        """Why `user_id` may not use Easel here (None: they may)."""
        if self.settings.enabled is False:
            return OFF
        if self.settings.users is not None and user_id not in self.settings.users:
            return NOT_LISTED
        return None

    def defaults(self, base: options.Defaults) -> options.Defaults:
        s = self.settings
        d = dataclasses.replace(base, model=s.model or base.model, quality=s.quality or base.quality,
                                size=s.size or base.size)
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
