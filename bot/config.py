"""Settings: read once from the environment, validated, then passed around explicitly.

`Settings.from_env(os.environ)` is the only place that reads the environment. Missing or malformed values
raise `ConfigError`, whose message is one line naming every variable to set or correct (all at once, so a
deployment is fixed in one go rather than one variable per restart).
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import pydantic
from pydantic import Field, field_validator, model_validator

from bot import image_models, options
from bot.budgets import BudgetLimits, micros
from bot.prices import Prices

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
OPENAI_TOOLS = ("image_generation", "web_search")


class ConfigError(Exception):
    """A setting is missing or malformed. str(e) is the one line to show."""


def _default_database_url() -> str:
    return "sqlite:///" + os.path.abspath("easel.db")


def _url(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http(s) URL, like https://example.com/")
    return value


def _iso_date(value: str | None, what: str) -> str | None:
    if value is not None:
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{what} must be a date like 2027-06-30") from None
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ImageModelCapabilities(pydantic.BaseModel):
    """One entry of EXTRA_IMAGE_MODELS: what a model OpenAI shipped after this release can do. Fields left
    out take the defaults of `bot.image_models.ImageModel` (an entry written for an older release still works:
    `retired` is `shutdown_date`, and `input_fidelity` may be true or false)."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    transparent: bool = True
    flexible_sizes: bool = False
    max_edge: pydantic.PositiveInt = 3840
    max_pixels: pydantic.PositiveInt = 3840 * 2160
    qualities: list[Literal["low", "medium", "high", "xhigh", "max", "auto"]] | None = None
    input_fidelity: bool | list[Literal["high", "low"]] = False
    complexity: bool | list[Literal["low", "medium", "high"]] = False
    masks: bool | None = None
    formats: list[Literal["png", "jpeg", "webp", "gif", "svg"]] | None = None
    shutdown_date: str | None = None
    replacement: str | None = None
    retired: str | None = None

    @field_validator("shutdown_date", "retired")
    @classmethod
    def _dates(cls, v: str | None) -> str | None:
        return _iso_date(v, "a shutdown date")


_JSON_EXAMPLES = {
    "PRICES": '{"gpt-5.4": {"text_in": 2.5, "cached_in": 0.25, "text_out": 15}}',
    "EXTRA_IMAGE_MODELS": '{"gpt-image-3": {"transparent": true}}',
}


class PriceRow(pydantic.BaseModel):
    """One entry of PRICES: a model's dollars per million tokens."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    text_in: str
    cached_in: str
    text_out: str
    image_in: str = "0"
    image_out: str = "0"

    @field_validator("*", mode="before")
    @classmethod
    def _decimal(cls, v: Any) -> Any:
        """Kept as written (a string), so that the price table reads it as an exact Decimal."""
        try:
            if isinstance(v, bool) or decimal.Decimal(str(v)) < 0:
                raise ValueError
        except (decimal.InvalidOperation, ValueError):
            raise ValueError(f"a price is a number of dollars per million tokens, not {v!r}") from None
        return str(v)


class Settings(pydantic.BaseModel):
    """Everything Easel is configured with. Field aliases are the environment variable names."""

    model_config = pydantic.ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    slack_bot_token: str | None = Field(None, alias="SLACK_BOT_TOKEN", repr=False)  # required but in console mode
    slack_signing_secret: str | None = Field(None, alias="SLACK_SIGNING_SECRET", repr=False)
    slack_app_token: str | None = Field(None, alias="SLACK_APP_TOKEN", repr=False)
    slack_api_url: str = Field(DEFAULT_SLACK_API_URL, alias="SLACK_API_URL")
    slack_client_id: str | None = Field(None, alias="SLACK_CLIENT_ID")
    slack_client_secret: str | None = Field(None, alias="SLACK_CLIENT_SECRET", repr=False)
    purge_on_uninstall: bool = Field(False, alias="PURGE_ON_UNINSTALL")
    port: int = Field(3000, alias="PORT", ge=1, le=65535)
    openai_api_key: str = Field(alias="OPENAI_API_KEY", repr=False)
    openai_base_url: str | None = Field(None, alias="OPENAI_BASE_URL")
    openai_model: str = Field("gpt-5.4", alias="OPENAI_MODEL", min_length=1)
    openai_timeout: float = Field(300.0, alias="OPENAI_TIMEOUT", gt=0)
    openai_max_retries: int = Field(3, alias="OPENAI_MAX_RETRIES", ge=0, le=10)
    openai_images_per_minute: int | None = Field(None, alias="OPENAI_IMAGES_PER_MINUTE", ge=1, le=1_000_000)
    image_model: str = Field("gpt-image-2", alias="IMAGE_MODEL", min_length=1)
    image_size: str = Field("auto", alias="IMAGE_SIZE")
    image_quality: str = Field("auto", alias="IMAGE_QUALITY")
    image_format: str = Field("png", alias="IMAGE_FORMAT")
    image_background: str = Field("auto", alias="IMAGE_BACKGROUND")
    image_compression: int | None = Field(None, alias="IMAGE_COMPRESSION", ge=0, le=100)
    image_moderation: Literal["auto", "low"] = Field("auto", alias="IMAGE_MODERATION")
    extra_image_models: dict[str, ImageModelCapabilities] = Field(default_factory=dict, alias="EXTRA_IMAGE_MODELS")
    openai_tools: tuple[str, ...] = Field(("image_generation",), alias="OPENAI_TOOLS")
    safety_key: str | None = Field(None, alias="EASEL_SAFETY_KEY", repr=False, min_length=16)
    max_concurrent_generations: int = Field(50, alias="MAX_CONCURRENT_GENERATIONS", ge=1, le=10_000)
    max_queued_per_user: int = Field(5, alias="MAX_QUEUED_PER_USER", ge=1)
    max_images_in_memory: int = Field(4, alias="MAX_IMAGES_IN_MEMORY", ge=1, le=1000)
    preview_images: int = Field(1, alias="PREVIEW_IMAGES", ge=0, le=3)  # partial images shown while drawing
    # "off": Slack calls are not budgeted by Slack's published tiers (a Slack of one's own, with other limits)
    slack_rate_limits: Literal["on", "off"] = Field("on", alias="SLACK_RATE_LIMITS")
    database_url: str = Field(default_factory=_default_database_url, alias="DATABASE_URL", repr=False)
    shutdown_grace_seconds: float = Field(30.0, alias="SHUTDOWN_GRACE_SECONDS", ge=0)
    job_lease_seconds: float = Field(60.0, alias="JOB_LEASE_SECONDS", gt=0)
    worker_poll_seconds: float = Field(10.0, alias="WORKER_POLL_SECONDS", gt=0)
    publish_retry_seconds: float = Field(300.0, alias="PUBLISH_RETRY_SECONDS", ge=0)
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    log_format: str = Field("text", alias="LOG_FORMAT")
    metrics_token: str | None = Field(None, alias="METRICS_TOKEN", repr=False)
    easel_admins: frozenset[str] = Field(frozenset(), alias="EASEL_ADMINS")
    prices: dict[str, PriceRow] = Field(default_factory=dict, alias="PRICES")
    retention_days: float = Field(90.0, alias="RETENTION_DAYS", ge=0)
    budget_user_daily_usd: str | None = Field(None, alias="BUDGET_USER_DAILY_USD")
    budget_channel_daily_usd: str | None = Field(None, alias="BUDGET_CHANNEL_DAILY_USD")
    budget_workspace_monthly_usd: str | None = Field(None, alias="BUDGET_WORKSPACE_MONTHLY_USD")
    confirm_above_usd: str | None = Field(None, alias="CONFIRM_ABOVE_USD")

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token", "openai_api_key", "metrics_token",
                     "slack_client_id", "slack_client_secret", mode="before")
    @classmethod
    def _clean_secret(cls, v: Any, info: pydantic.ValidationInfo) -> Any:
        """A token pasted with a space, or read from a .env file with Windows line ends, fails every call with a
        confusing answer later: refuse it now (without echoing it)."""
        if isinstance(v, str) and any(c.isspace() or not c.isprintable() for c in v):
            name = cls.model_fields[info.field_name].alias
            raise ValueError(f"{name} has spaces or control characters in it (a CRLF from a .env file?): "
                             "remove them")
        return v

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xoxb-"):
            raise ValueError("SLACK_BOT_TOKEN must be a bot token starting with xoxb-")
        return v

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("xapp-"):
            raise ValueError("SLACK_APP_TOKEN must be an app-level token starting with xapp-")
        return v

    @field_validator("slack_api_url")
    @classmethod
    def _slack_url(cls, v: str) -> str:
        v = _url(v, "SLACK_API_URL") or DEFAULT_SLACK_API_URL
        parts = urlsplit(v)
        if parts.scheme == "http" and not _loopback(parts.hostname or ""):
            # The bot token goes with every call: in clear text, only to this machine (a local proxy, tests).
            raise ValueError("SLACK_API_URL must be https:// (http:// only for a loopback address like 127.0.0.1)")
        return v if v.endswith("/") else v + "/"

    @field_validator("openai_base_url")
    @classmethod
    def _openai_url(cls, v: str | None) -> str | None:
        return _url(v, "OPENAI_BASE_URL")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        if v.startswith("sqlite:////") and len(v) > len("sqlite:////"):
            return v
        if v.startswith(("postgresql://", "postgres://")):
            return v
        raise ValueError("DATABASE_URL must be sqlite:////absolute/path.db or postgresql://user@host/db")

    @field_validator("easel_admins", mode="before")
    @classmethod
    def _admins(cls, v: Any) -> Any:
        if isinstance(v, str):
            ids = [u.strip() for u in v.split(",") if u.strip()]
            bad = [u for u in ids if not (u[:1] in ("U", "W") and u[1:].isalnum() and u.isupper())]
            if bad:
                raise ValueError(f"EASEL_ADMINS takes Slack user ids (U0123ABCD), comma-separated, not {bad[0]!r}")
            return frozenset(ids)
        return v

    @field_validator("budget_user_daily_usd", "budget_channel_daily_usd", "budget_workspace_monthly_usd",
                     "confirm_above_usd", mode="before")
    @classmethod
    def _dollars(cls, v: Any, info: pydantic.ValidationInfo) -> Any:
        """An amount in dollars, kept as written (exact); empty means none."""
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        name = cls.model_fields[info.field_name].alias
        try:
            amount = decimal.Decimal(str(v).strip().removeprefix("$"))
            if isinstance(v, bool) or not amount.is_finite() or amount < 0:
                raise ValueError
        except (decimal.InvalidOperation, ValueError):
            raise ValueError(f"{name} is an amount in dollars like 5 or 0.50, not {v!r}") from None
        return str(amount)

    @field_validator("prices", "extra_image_models", mode="before")
    @classmethod
    def _json(cls, v: Any, info: pydantic.ValidationInfo) -> Any:
        """A JSON setting: read as JSON (empty means none), or refused with an example of its shape."""
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as e:
                name = cls.model_fields[info.field_name].alias
                raise ValueError(f"{name} must be JSON like {_JSON_EXAMPLES[name]} ({e})") from None
        return v

    @field_validator("image_format", mode="before")
    @classmethod
    def _image_format(cls, v: Any) -> Any:
        return "jpeg" if isinstance(v, str) and v.lower() == "jpg" else v  # as `--format jpg` is

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        v = v.lower()
        if v not in ("text", "json"):
            raise ValueError("LOG_FORMAT must be text or json")
        return v

    @field_validator("openai_tools", mode="before")
    @classmethod
    def _tools(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [t.strip().lower() for t in v.split(",") if t.strip()]
        if isinstance(v, list | tuple):
            unknown = [t for t in v if t not in OPENAI_TOOLS]
            if unknown:
                raise ValueError(f"OPENAI_TOOLS takes {', '.join(OPENAI_TOOLS)} (comma-separated), not {unknown[0]}")
            if "image_generation" not in v:
                raise ValueError("OPENAI_TOOLS must include image_generation")
            v = tuple(dict.fromkeys(v))
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        v = v.upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        return v

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if (self.slack_client_id is None) != (self.slack_client_secret is None):
            raise ValueError("Set both SLACK_CLIENT_ID and SLACK_CLIENT_SECRET (installs through OAuth), or neither")
        if self.oauth and self.socket_mode:
            raise ValueError("OAuth installs (SLACK_CLIENT_ID) need HTTP mode: unset SLACK_APP_TOKEN")
        table = image_models.ModelTable(extra=self._extra(), warn=False)
        try:
            _, given = options.parse(
                f"--size {self.image_size} --quality {self.image_quality} --format {self.image_format} "
                f"--background {self.image_background}"
            )
            if given != options.ImageOptions(
                size=self.image_size, quality=self.image_quality, format=self.image_format,
                background=self.image_background,
            ):
                raise options.OptionError("write them in their canonical form (e.g. 1024x1024, jpeg)")
            # Each default must suit the default model (as if asked for); a shut-down IMAGE_MODEL is not an
            # error: Easel uses its replacement, and says so.
            options.resolve(given, defaults=self.image_defaults(), table=table, explicit=())
        except options.OptionError as e:
            raise ValueError(f"the image defaults (IMAGE_MODEL, IMAGE_SIZE, IMAGE_QUALITY, IMAGE_FORMAT, "
                             f"IMAGE_BACKGROUND, IMAGE_COMPRESSION) do not fit together: {e}") from None
        return self

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def oauth(self) -> bool:
        """Installs in many workspaces through Slack's OAuth flow, each with its own token (else one token)."""
        return self.slack_client_id is not None

    def _extra(self) -> dict[str, dict[str, Any]]:
        return {name: caps.model_dump() for name, caps in self.extra_image_models.items()}

    def model_table(self, today: Callable[[], datetime.date] = image_models.utc_today) -> image_models.ModelTable:
        return image_models.ModelTable(extra=self._extra(), today=today)

    def budget_limits(self) -> BudgetLimits:
        return BudgetLimits(user_daily=micros(self.budget_user_daily_usd),
                            channel_daily=micros(self.budget_channel_daily_usd),
                            workspace_monthly=micros(self.budget_workspace_monthly_usd),
                            confirm_above=micros(self.confirm_above_usd))

    def price_table(self) -> Prices:
        return Prices({name: row.model_dump() for name, row in self.prices.items()})

    def image_defaults(self) -> options.Defaults:
        return options.Defaults(
            model=self.image_model,
            size=self.image_size,
            quality=self.image_quality,
            format=self.image_format,
            background=self.image_background,
            compression=self.image_compression,
            moderation=self.image_moderation,
            web="web_search" in self.openai_tools,
        )

    def safety_secret(self) -> bytes:
        """The key of each request's `safety_identifier` (a keyed hash of the Slack team and user): the
        value of EASEL_SAFETY_KEY, or else one derived from the signing secret (or, in Socket Mode without
        one, the bot token), so that a person's identifier stays the same across restarts and replicas."""
        if self.safety_key:
            return self.safety_key.encode()
        base = self.slack_signing_secret or self.slack_bot_token or self.openai_api_key  # console: only a key
        return hmac.new(b"easel safety identifier", base.encode(), hashlib.sha256).digest()

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, console: bool = False) -> Settings:
        """Read and check the settings. `console`: the console mode, which needs no Slack settings at all."""
        names = {f.alias for f in cls.model_fields.values() if f.alias}
        values = {k: v for k, v in env.items() if k in names and v != ""}
        problems = [f"Set {name}: it is required{_WHY_REQUIRED.get(name, '')}."
                    for name in _required(values, console=console) if name not in values]
        try:
            settings = cls.model_validate(values)
        except pydantic.ValidationError as e:
            problems += [_one_line(err) for err in e.errors(include_url=False)]
            settings = None
        if problems:
            raise ConfigError(" ".join(dict.fromkeys(problems)))  # each once, in order
        assert settings is not None
        return settings


_WHY_REQUIRED = {"SLACK_SIGNING_SECRET": " in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)"}


def _required(values: Mapping[str, str], *, console: bool) -> list[str]:
    """The variables this mode cannot start without."""
    if console:
        return ["OPENAI_API_KEY"]
    if "SLACK_CLIENT_ID" in values or "SLACK_CLIENT_SECRET" in values:  # OAuth: a token per installed workspace
        return ["SLACK_SIGNING_SECRET", "OPENAI_API_KEY"]
    if "SLACK_APP_TOKEN" in values:  # Socket Mode: requests come over the socket, unsigned
        return ["SLACK_BOT_TOKEN", "OPENAI_API_KEY"]
    return ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY"]


def _one_line(err: Any) -> str:
    """One validation error as a sentence naming its variable."""
    loc = [p for p in err.get("loc", ()) if isinstance(p, str)]
    name = next((f.alias for n, f in Settings.model_fields.items() if loc and loc[0] in (n, f.alias)), None)
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "missing":
        return f"Set {name}: it is required."
    if name and name in msg:
        return _sentence(msg)
    where = ".".join(str(p) for p in err.get("loc", ())[1:])
    if where:
        msg = f"{where}: {msg}"
    return _sentence(f"Set {name} correctly: {msg}" if name else msg)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", ")")) else text + "."
