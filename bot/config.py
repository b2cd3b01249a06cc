"""Settings: read once from the environment, validated, then passed around explicitly.

`Settings.from_env(os.environ)` is the only place that reads the environment. A missing or malformed value
raises `ConfigError` whose message is one line naming the variable to set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import pydantic
from pydantic import Field, field_validator, model_validator

from bot import models, options

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


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


class ImageModelCapabilities(pydantic.BaseModel):
    """One entry of EXTRA_IMAGE_MODELS: what a model OpenAI shipped after this release can do."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    transparent: bool = True
    flexible_sizes: bool = False
    max_edge: pydantic.PositiveInt = 3840
    max_pixels: pydantic.PositiveInt = 3840 * 2160
    input_fidelity: bool = False
    retired: str | None = None


class Settings(pydantic.BaseModel):
    """Everything Easel is configured with. Field aliases are the environment variable names."""

    model_config = pydantic.ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    slack_bot_token: str = Field(alias="SLACK_BOT_TOKEN", repr=False)
    slack_signing_secret: str | None = Field(None, alias="SLACK_SIGNING_SECRET", repr=False)
    slack_app_token: str | None = Field(None, alias="SLACK_APP_TOKEN", repr=False)
    slack_api_url: str = Field(DEFAULT_SLACK_API_URL, alias="SLACK_API_URL")
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
    extra_image_models: dict[str, ImageModelCapabilities] = Field(default_factory=dict, alias="EXTRA_IMAGE_MODELS")
    max_concurrent_generations: int = Field(50, alias="MAX_CONCURRENT_GENERATIONS", ge=1, le=10_000)
    max_queued_per_user: int = Field(5, alias="MAX_QUEUED_PER_USER", ge=1)
    max_images_in_memory: int = Field(4, alias="MAX_IMAGES_IN_MEMORY", ge=1, le=1000)
    database_url: str = Field(default_factory=_default_database_url, alias="DATABASE_URL", repr=False)
    shutdown_grace_seconds: float = Field(30.0, alias="SHUTDOWN_GRACE_SECONDS", ge=0)
    job_lease_seconds: float = Field(60.0, alias="JOB_LEASE_SECONDS", gt=0)
    worker_poll_seconds: float = Field(10.0, alias="WORKER_POLL_SECONDS", gt=0)
    log_level: str = Field("INFO", alias="LOG_LEVEL")

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, v: str) -> str:
        if not v.startswith("xoxb-"):
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

    @field_validator("extra_image_models", mode="before")
    @classmethod
    def _extra_models(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                v = json.loads(v) if v.strip() else {}
            except json.JSONDecodeError as e:
                example = '{"gpt-image-3": {"transparent": true}}'
                raise ValueError(f"EXTRA_IMAGE_MODELS must be JSON like {example} ({e})") from None
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
        if self.slack_app_token is None and not self.slack_signing_secret:
            raise ValueError("SLACK_SIGNING_SECRET is required in HTTP mode (or set SLACK_APP_TOKEN for Socket Mode)")
        table = self.model_table()
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
            options.resolve(options.ImageOptions(), defaults=self.image_defaults(), table=table)
        except options.OptionError as e:
            raise ValueError(f"the image defaults (IMAGE_MODEL, IMAGE_SIZE, IMAGE_QUALITY, IMAGE_FORMAT, "
                             f"IMAGE_BACKGROUND, IMAGE_COMPRESSION) do not fit together: {e}") from None
        return self

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def model_table(self) -> models.ModelTable:
        return models.ModelTable(extra={name: caps.model_dump() for name, caps in self.extra_image_models.items()})

    def image_defaults(self) -> options.Defaults:
        return options.Defaults(
            model=self.image_model,
            size=self.image_size,
            quality=self.image_quality,
            format=self.image_format,
            background=self.image_background,
            compression=self.image_compression,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        names = {f.alias for f in cls.model_fields.values() if f.alias}
        values = {k: v for k, v in env.items() if k in names and v != ""}
        try:
            return cls.model_validate(values)
        except pydantic.ValidationError as e:
            raise ConfigError(_one_line(e)) from None


def _one_line(e: pydantic.ValidationError) -> str:
    err = e.errors(include_url=False)[0]
    loc = [p for p in err.get("loc", ()) if isinstance(p, str)]
    name = next((f.alias for n, f in Settings.model_fields.items() if loc and loc[0] in (n, f.alias)), None)
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "missing":
        return f"Set {name}: it is required."
    if name and name in msg:
        return msg
    where = ".".join(str(p) for p in err.get("loc", ())[1:])
    if where:
        msg = f"{where}: {msg}"
    return f"Set {name} correctly: {msg}" if name else msg

