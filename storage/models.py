"""Rows as plain frozen dataclasses; JSON-safe fields only."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class JobStatus(enum.StrEnum):
    NEW = "new"  # stored, no sign of work yet
    NOTICING = "noticing"  # a worker is putting up the sign of work
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobKind(enum.StrEnum):
    FORGET = "forget"  # `@Easel forget` in a thread: forget its chain and records, for its starter or an admin
    GENERATE = "generate"  # ask OpenAI, post what comes back
    NOTICE = "notice"  # post a fixed text in the thread (help, a bad flag): no OpenAI call
    REACTION = "reaction"  # only react to the message with the emoji named by `text` (a request not taken)


def _known(cls: type, data: Any) -> dict[str, Any]:
    """The keys of a stored JSON object that name fields of `cls` (rows written by older code may carry keys
    that are gone, and lack newer ones: those take their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in (data or {}).items() if k in names}


def _non_default(obj: Any) -> dict[str, Any]:
    """`obj`'s fields that differ from their defaults: what its JSON column keeps (a field left out reads as
    its default, in this code and in the code before these types)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if value != default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class JobOptions:
    """A generate job's options as the request resolved them (the `options` column)."""

    tool: dict[str, Any] = dataclasses.field(default_factory=dict)  # the image_generation tool as it is sent
    notices: tuple[str, ...] = ()  # said with the answer (a model replaced, a flag adjusted)
    chosen: tuple[str, ...] | None = None  # options the person chose (None: stored before this was recorded)
    web: bool = False  # the web search tool too
    shown: dict[str, Any] | None = None  # a slash command's: the options its first message shows
    sticky: dict[str, Any] | None = None  # a slash command's: the options that stick to its new thread
    branch: bool = False  # a button's: chain on `chain_on` (None: a new chain), not on the thread's newest
    chain_on: str | None = None
    mask: bool = False  # the last of the job's files is a mask for the first (the tool's input_image_mask)
    confirmed_from: int | None = None  # a request its requester confirmed (over CONFIRM_ABOVE_USD): that job's id
    show_cost: bool = True  # the cost under the image (a channel's settings may turn it off)
    usergroup: str | None = None  # the channel is open to this Slack user group only: checked in the worker

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> JobOptions:
        known = _known(cls, data)
        for name in ("notices", "chosen"):
            if known.get(name) is not None:
                known[name] = tuple(known[name])
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return _non_default(self)


@dataclasses.dataclass(frozen=True, slots=True)
class JobProgress:
    """What a job's runs have done so far (the `progress` column): a run taken again after a crash resumes
    from it. Written only by the worker running the job."""

    root_ts: str | None = None  # a slash command's first message, once posted
    notices: tuple[str, ...] | None = None  # the answer's notices as the run settled them (None: not yet)
    paced: int = 0  # 429s met so far (each time the job waited for its turn again)
    uploads: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # image index -> upload record
    blocked_posted: bool = False  # the note on images moderation blocked is in the thread
    text_posted: bool = False  # the model's words are in the thread, in a message of their own
    buttons_posted: bool = False  # the images' buttons are in the thread
    confirm_ts: str | None = None  # the job ended asking its requester to confirm its cost: that message
    previews: tuple[str, ...] = ()  # preview files uploaded for the status message (deleted once it is done)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> JobProgress:
        known = _known(cls, data)
        if known.get("notices") is not None:
            known["notices"] = tuple(known["notices"])
        if known.get("previews") is not None:
            known["previews"] = tuple(known["previews"])
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return _non_default(self)


@dataclasses.dataclass(frozen=True)
class NewJob:
    """A request accepted from Slack, before it has an id."""

    dedupe_key: str
    kind: JobKind
    source: str  # mention | reply | dm | command
    team_id: str
    channel_id: str
    user_id: str
    text: str
    message_ts: str | None = None
    thread_ts: str | None = None
    options: JobOptions = JobOptions()
    files: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    force_image: bool = False
    response_url: str | None = None  # a slash command's, to answer privately when posting fails

    @property
    def thread_key(self) -> str:
        if self.thread_ts is None:  # a slash command: its thread does not exist yet
            return f"new:{self.dedupe_key}"
        return f"{self.team_id}:{self.channel_id}:{self.thread_ts}"


@dataclasses.dataclass(frozen=True)
class Job:
    id: int
    dedupe_key: str
    kind: JobKind
    source: str
    team_id: str
    channel_id: str
    user_id: str
    message_ts: str | None
    thread_ts: str | None
    thread_key: str
    text: str
    options: JobOptions
    files: list[dict[str, Any]]
    force_image: bool
    response_url: str | None
    status: JobStatus
    attempts: int
    noticed: bool
    response_id: str | None
    progress: JobProgress
    queue_ts: str | None
    queue_pos: int | None
    error: str | None
    created_at: float
    started_at: float | None
    lease_no: int = 0  # the lease this copy was claimed under: every write about the job is fenced on it


@dataclasses.dataclass(frozen=True)
class Thread:
    team_id: str
    channel_id: str
    thread_ts: str
    started_by: str
    last_response_id: str | None
    last_image_file_id: str | None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Generation:
    """One outcome of a generate job: an image posted, a text answer, or a failure."""

    job_id: int
    team_id: str
    channel_id: str
    thread_ts: str | None
    user_id: str
    request_text: str
    options: dict[str, Any]
    model: str
    status: str  # posted | text | failed
    image_model: str | None = None
    response_id: str | None = None
    image_call_id: str | None = None
    revised_prompt: str | None = None
    slack_file_id: str | None = None
    usage: dict[str, Any] | None = None
    tool_usage: dict[str, Any] | None = None
    error: str | None = None
    queued_ms: int | None = None
    generation_ms: int | None = None
    upload_ms: int | None = None
    cost_micros: int | None = None  # what OpenAI billed for the response, in millionths of a dollar (exact)
    cost_unpriced: bool = False  # a model had no price in the table: counted at a stand-in rate
    parent_response_id: str | None = None  # the response this turn chained on (None: a new chain)
    width: int | None = None  # the posted image's size in pixels
    height: int | None = None


@dataclasses.dataclass(frozen=True)
class ChainStep:
    """A thread's chain moving on to a new response (and its newest image, if the turn made one)."""

    team_id: str
    channel_id: str
    thread_ts: str
    response_id: str
    image_file_id: str | None


@dataclasses.dataclass(frozen=True)
class ChannelSettings:
    """One place's settings; None everywhere means "as the workspace (or the environment) says"."""

    model: str | None = None  # the default image model
    quality: str | None = None  # the default quality
    size: str | None = None  # the default size
    models: tuple[str, ...] | None = None  # the image models allowed (None: all)
    max_quality: str | None = None  # the highest quality allowed (None: any)
    users: tuple[str, ...] | None = None  # the people listed, with who "users"
    daily_limit_micros: int | None = None  # the channel's daily limit (None: BUDGET_CHANNEL_DAILY_USD)
    show_costs: bool | None = None  # the cost under each image (None: shown)
    enabled: bool | None = None  # Easel answers here (None: on)
    moderation: str | None = None  # the image tool's moderation, "auto" or "low" (None: IMAGE_MODERATION)
    who: str | None = None
    """Who may use Easel here: one of WHO ("everyone"; "users": the people in `users`; "usergroup": the members
    of the Slack user group `usergroup`). None: as the workspace says (or "users" when `users` is set: rows
    stored before `who` was)."""
    usergroup: str | None = None  # the user group's id ("S0614TZR7"), with who "usergroup"
    usergroup_handle: str | None = None  # its handle when an admin chose it ("designers"), for showing
    user_daily_limit_micros: int | None = None  # the workspace's only: each person's daily limit
    workspace_monthly_limit_micros: int | None = None  # the workspace's only: its monthly limit
    """(None, for both: BUDGET_USER_DAILY_USD, BUDGET_WORKSPACE_MONTHLY_USD.)"""

    @property
    def audience(self) -> str | None:
        """Who may use Easel here, as set in these settings (None: not set here)."""
        return self.who or ("users" if self.users is not None else None)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ChannelSettings:
        known = {f.name: (data or {}).get(f.name) for f in dataclasses.fields(cls)}
        for name in ("models", "users"):
            if known[name] is not None:
                known[name] = tuple(known[name])
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if v is not None}

    def over(self, base: ChannelSettings) -> ChannelSettings:
        """These settings where set, `base`'s elsewhere. Who may use Easel is one setting: when these settings
        say who, none of `base`'s people or group is kept."""
        mine = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        if self.audience is not None:
            mine.update({k: getattr(self, k) for k in WHO_FIELDS})
        return dataclasses.replace(base, **mine)


WHO = ("everyone", "users", "usergroup")
WHO_FIELDS = ("who", "users", "usergroup", "usergroup_handle")  # who may use Easel: set and inherited together
MODERATIONS = ("auto", "low")  # the image_generation tool's moderation levels
