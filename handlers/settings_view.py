"""The settings modal (`/imagine settings`, and the workspace's from App Home) and its submission. Pure code.

One input block per field (its block_id the field's name, its element's action_id "value"); nothing chosen
means "as the workspace says" (for the workspace itself: as the environment says). Others than admins see the
same settings as text, without inputs. A submission is read back into ChannelSettings, or into the errors
to show on its fields (`response_action: errors`).
"""

from __future__ import annotations

import datetime
import json
from decimal import Decimal, InvalidOperation
from typing import Any

from bot import options
from bot.policy import QUALITY_ORDER
from bot.settings_desk import Shown
from handlers.payloads import Context, slack_id
from storage.models import MODERATIONS, WHO, ChannelSettings

VIEW = "easel.settings"  # the modal's callback_id
INHERIT = "inherit"
QUALITIES = ("low", "medium", "high", "auto")
MAX_DAILY_USD = Decimal("100000")
MAX_MONTHLY_USD = Decimal("1000000")
LABELS = {
    "enabled": "Easel in this channel",
    "model": "Default image model",
    "quality": "Default quality",
    "size": "Default size",
    "models": "Image models allowed",
    "max_quality": "Highest quality allowed",
    "moderation": "Moderation of images",
    "who": "Who may use Easel here",
    "users": "The people listed",
    "usergroup": "The user group",
    "daily_limit_micros": "Daily limit (USD)",
    "user_daily_limit_micros": "Each person's daily limit (USD)",
    "workspace_monthly_limit_micros": "The workspace's monthly limit (USD)",
    "show_costs": "Costs under images",
}
WORKSPACE_ONLY = ("user_daily_limit_micros", "workspace_monthly_limit_micros")  # in the workspace's settings only
WHO_TEXT = {"everyone": "Everyone", "users": "The people listed below",
            "usergroup": "The members of the user group below"}
ENV = {"daily_limit_micros": "BUDGET_CHANNEL_DAILY_USD", "user_daily_limit_micros": "BUDGET_USER_DAILY_USD",
       "workspace_monthly_limit_micros": "BUDGET_WORKSPACE_MONTHLY_USD"}


def _opt(value: str, text: str | None = None) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": (text or value)[:75]}, "value": value}


def _select(options_: list[dict[str, Any]], current: str) -> dict[str, Any]:
    el: dict[str, Any] = {"type": "static_select", "action_id": "value", "options": options_}
    found = next((o for o in options_ if o["value"] == current), None)
    if found is not None:
        el["initial_option"] = found
    return el


def _input(field: str, element: dict[str, Any], hint: str | None = None, label: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "input", "block_id": field, "optional": True, "element": element,
                             "label": {"type": "plain_text", "text": label or LABELS[field]}}
    if hint:
        block["hint"] = {"type": "plain_text", "text": hint[:2000]}
    return block


def _usd(micros: int) -> str:
    return f"{(Decimal(micros) / 1_000_000).normalize():f}"


def who_text(s: ChannelSettings) -> str:
    """Who may use Easel where `s` is in force, in words (a group by its handle: nobody is notified)."""
    if s.audience == "users":
        return "the people listed: " + (" ".join(f"<@{u}>" for u in s.users) if s.users else "nobody")
    if s.audience == "usergroup":
        return f"the members of the user group @{s.usergroup_handle or s.usergroup}"
    return "everyone"


def describe(s: ChannelSettings, inherited: ChannelSettings | None = None, *, workspace: bool = False) -> list[str]:
    """The settings as lines of text (a field not set: what it inherits, or its default). `workspace`: the
    workspace's own settings, with the limits only it has."""
    eff = s.over(inherited or ChannelSettings())

    def mark(field: str) -> str:
        mine, theirs = (s.audience, eff.audience) if field == "who" else (getattr(s, field), getattr(eff, field))
        return "" if mine is not None else " _(inherited)_" if theirs is not None else " _(default)_"

    def limit(field: str) -> str:
        value = getattr(eff, field)
        return f"• {LABELS[field]}: {'$' + _usd(value) if value is not None else ENV[field]}{mark(field)}"

    return [
        f"• {LABELS['enabled']}: {'off' if eff.enabled is False else 'on'}{mark('enabled')}",
        f"• {LABELS['model']}: {eff.model or 'the environment default'}{mark('model')}",
        f"• {LABELS['quality']}: {eff.quality or 'the environment default'}{mark('quality')}",
        f"• {LABELS['size']}: {eff.size or 'the environment default'}{mark('size')}",
        f"• {LABELS['models']}: {', '.join(eff.models) if eff.models else 'all'}{mark('models')}",
        f"• {LABELS['max_quality']}: {eff.max_quality or 'any'}{mark('max_quality')}",
        f"• {LABELS['moderation']}: {eff.moderation or 'IMAGE_MODERATION'}{mark('moderation')}",
        f"• {LABELS['who']}: {who_text(eff)}{mark('who')}",
        limit("daily_limit_micros"),
        *([limit(f) for f in WORKSPACE_ONLY] if workspace else []),
        f"• {LABELS['show_costs']}: {'hidden' if eff.show_costs is False else 'shown'}{mark('show_costs')}",
    ]


def log_lines(entries: Any) -> list[str]:
    out = []
    for c in entries:
        when = datetime.datetime.fromtimestamp(c.at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        where = "the workspace" if not c.channel_id else f"<#{c.channel_id}>"
        out.append(f"• {when} <@{c.user_id}> {where} {c.field}: {json.dumps(c.before)} → {json.dumps(c.after)}")
    return out


def view(shown: Shown, ctx: Context) -> dict[str, Any]:
    where = "the workspace" if not shown.channel_id else f"<#{shown.channel_id}>"
    meta = json.dumps({"team": shown.team_id, "channel": shown.channel_id})
    title = "Easel: workspace" if not shown.channel_id else "Easel: this channel"
    base: dict[str, Any] = {"type": "modal", "callback_id": VIEW, "private_metadata": meta,
                            "title": {"type": "plain_text", "text": title},
                            "close": {"type": "plain_text", "text": "Close"}}
    if not shown.admin:
        text = "\n".join([f"*Easel's settings in {where}*",
                          *describe(shown.own, shown.inherited, workspace=not shown.channel_id),
                          "Only Easel's admins change these."])
        return {**base, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]}
    s, up = shown.own, shown.inherited
    inherit = "As the workspace" if shown.channel_id else "As the environment"
    models = list(ctx.table.available())[:99]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Easel's settings in {where}*. Leave a field "
                                     f"empty (or _{inherit.lower()}_) to follow "
                                     f"{'the workspace' if shown.channel_id else 'the environment'}."}},
        _input("enabled", _select([_opt(INHERIT, inherit), _opt("on", "On"), _opt("off", "Off")],
                                  {True: "on", False: "off", None: INHERIT}[s.enabled]),
               label="Easel here" if shown.channel_id else "Easel in every channel"),
        _input("model", _select([_opt(INHERIT, inherit), *(_opt(m) for m in models)], s.model or INHERIT)),
        _input("quality", _select([_opt(INHERIT, inherit), *(_opt(q) for q in QUALITIES)], s.quality or INHERIT)),
        _input("size", {"type": "plain_text_input", "action_id": "value", "initial_value": s.size or "",
                        "placeholder": {"type": "plain_text", "text": "1024x1536, portrait, auto…"}}),
        _input("models", {"type": "multi_static_select", "action_id": "value",
                          "options": [_opt(m) for m in models],
                          **({"initial_options": [_opt(m) for m in s.models if m in models]} if s.models else {})},
               hint="None chosen: every model."),
        _input("max_quality", _select([_opt(INHERIT, inherit), *(_opt(q) for q in QUALITY_ORDER[:3])],
                                      s.max_quality or INHERIT)),
        _input("moderation", _select([_opt(INHERIT, inherit), _opt("auto", "auto: OpenAI's standard filtering"),
                                      _opt("low", "low: less restrictive filtering")], s.moderation or INHERIT)),
        _input("who", _select([_opt(INHERIT, inherit), *(_opt(w, WHO_TEXT[w]) for w in WHO)],
                              s.audience or INHERIT)),
        _input("users", {"type": "multi_users_select", "action_id": "value",
                         **({"initial_users": list(s.users)} if s.users else {})},
               hint="With “The people listed below”."),
        _input("usergroup", {"type": "plain_text_input", "action_id": "value", "max_length": 80,
                             "initial_value": f"@{s.usergroup_handle}" if s.usergroup_handle else s.usergroup or "",
                             "placeholder": {"type": "plain_text", "text": "@designers"}},
               hint="A Slack user group's handle (or its ID), with “The members of the user group below”. "
                    "Membership is checked with Slack when a request comes in."),
        _limit_input("daily_limit_micros", s, label=None if shown.channel_id else "Each channel's daily limit (USD)"),
        *([_limit_input(f, s) for f in WORKSPACE_ONLY] if not shown.channel_id else []),
        _input("show_costs", _select([_opt(INHERIT, inherit), _opt("yes", "Shown"), _opt("no", "Hidden")],
                                     {True: "yes", False: "no", None: INHERIT}[s.show_costs])),
    ]
    if shown.channel_id:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "\n".join(
            ["The workspace's settings:", *describe(up, workspace=True)])[:3000]}]})
    if shown.log:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(
            ["*Changes* (newest first)", *log_lines(shown.log)])[:3000]}})
    return {**base, "blocks": blocks, "submit": {"type": "plain_text", "text": "Save"}}


def _limit_input(field: str, s: ChannelSettings, label: str | None = None) -> dict[str, Any]:
    value = getattr(s, field)
    return _input(field, {"type": "plain_text_input", "action_id": "value",
                          "initial_value": _usd(value) if value is not None else ""},
                  hint=f"In dollars, like 5 or 2.50. Empty: {ENV[field]}.", label=label)


def submitted_place(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(team, channel, user) of a settings submission ("" channel: the workspace's), or None."""
    v = body.get("view") if isinstance(body.get("view"), dict) else {}
    try:
        meta = json.loads(v.get("private_metadata") or "")
    except (TypeError, ValueError):
        return None
    user = body.get("user") if isinstance(body.get("user"), dict) else {}
    team_of = body.get("team") if isinstance(body.get("team"), dict) else {}
    team, user_id = slack_id(team_of.get("id")), slack_id(user.get("id"))
    channel = meta.get("channel") if isinstance(meta, dict) else None
    if not (team and user_id and isinstance(channel, str)) or meta.get("team") != team:
        return None
    if channel and slack_id(channel) is None:
        return None
    return team, channel, user_id


def parse(body: dict[str, Any], ctx: Context, *, workspace: bool = False) -> ChannelSettings | dict[str, str]:
    """A submission as settings, or the errors to show by field. `workspace`: the workspace's settings (with
    its limits). A user group comes back as the admin typed it (in `usergroup`), for the desk to look up."""
    values = (body.get("view") or {}).get("state", {}).get("values", {})

    def element(field: str) -> dict[str, Any]:
        found = values.get(field, {}).get("value")
        return found if isinstance(found, dict) else {}

    def selected(field: str) -> str | None:
        opt = element(field).get("selected_option")
        value = opt.get("value") if isinstance(opt, dict) else None
        return None if value in (None, INHERIT) else str(value)

    def text(field: str) -> str:
        return str(element(field).get("value") or "").strip()

    errors: dict[str, str] = {}
    available = set(ctx.table.available())
    model = selected("model")
    if model is not None and model not in available:
        errors["model"] = f"{model} is not an image model Easel knows."
    quality = selected("quality")
    if quality is not None and quality not in QUALITIES:
        errors["quality"] = "Choose low, medium, high or auto."
    size = None
    if text("size"):
        try:
            size = options.parse_size(text("size"))
        except options.OptionError as e:
            errors["size"] = str(e).replace("`--size ", "`")[:150]
    chosen = element("models").get("selected_options")
    models = tuple(str(o.get("value")) for o in chosen if isinstance(o, dict)) if isinstance(chosen, list) else ()
    if any(m not in available for m in models):
        errors["models"] = "Choose models Easel knows."
    max_quality = selected("max_quality")
    if max_quality is not None and max_quality not in QUALITY_ORDER:
        errors["max_quality"] = "Choose low, medium or high."
    moderation = selected("moderation")
    if moderation is not None and moderation not in MODERATIONS:
        errors["moderation"] = "Choose auto or low."
    who = selected("who")
    if who is not None and who not in WHO:
        errors["who"] = "Choose everyone, the people listed or a user group."
    users_given = element("users").get("selected_users")
    users = tuple(u for u in users_given if slack_id(u)) if isinstance(users_given, list) else ()
    group = text("usergroup")
    if who is None and users and group:
        errors["who"] = "Choose whether the people listed or the user group's members may use Easel here."
    elif who is None and group:
        who = "usergroup"
    if who == "users" and not users:
        errors["users"] = "Choose the people who may use Easel here."
    if who == "usergroup" and not group:
        errors["usergroup"] = "Name the user group, like @designers."

    def dollars(field: str, highest: Decimal) -> int | None:
        if not text(field):
            return None
        try:
            amount = Decimal(text(field).lstrip("$").replace(",", ""))
            if not amount.is_finite() or amount < 0 or amount > highest:
                raise InvalidOperation
            return int(amount * 1_000_000)
        except InvalidOperation:
            errors[field] = f"A number of dollars from 0 to {highest:,}, like 5 or 2.50."
            return None

    limit = dollars("daily_limit_micros", MAX_DAILY_USD)
    user_daily = dollars("user_daily_limit_micros", MAX_DAILY_USD) if workspace else None
    monthly = dollars("workspace_monthly_limit_micros", MAX_MONTHLY_USD) if workspace else None
    if model and models and model not in models and "model" not in errors:
        errors["model"] = "The default model must be one of the models allowed."
    if quality and max_quality and quality in QUALITY_ORDER and QUALITY_ORDER.index(quality) > \
            QUALITY_ORDER.index(max_quality) and "quality" not in errors:
        errors["quality"] = f"The default quality is above the highest allowed ({max_quality})."
    if errors:
        return errors
    switch = {"on": True, "off": False, "yes": True, "no": False}
    return ChannelSettings(model=model, quality=quality, size=size, models=models or None, max_quality=max_quality,
                           users=users if users and who in (None, "users") else None, daily_limit_micros=limit,
                           show_costs=switch.get(selected("show_costs") or ""),
                           enabled=switch.get(selected("enabled") or ""), moderation=moderation,
                           who=who, usergroup=group if who == "usergroup" else None,
                           user_daily_limit_micros=user_daily, workspace_monthly_limit_micros=monthly)
