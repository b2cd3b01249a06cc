"""Shared fixtures: a scrubbed environment, a real database per test (SQLite file and PostgreSQL), the two
fakes, and a running Easel (Bolt's aiohttp app on 127.0.0.1 plus its worker) wired to them."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from bot import assembly as easel_app
from bot import web as easel_web
from bot.config import Settings
from storage import Store, open_store
from storage.models import Job
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SIGNING_SECRET = "test-signing-secret-0123456789"
BACKENDS = ("sqlite", "postgresql")

_SCRUB = (
    "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy",
    "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
    "SLACK_API_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "OPENAI_LOG", "IMAGE_MODEL",
    "DATABASE_URL", "MAX_CONCURRENT_GENERATIONS", "PORT", "OPENAI_IMAGES_PER_MINUTE",
)
# The fake OpenAI account has no image limit unless a test gives it one (tests/fakes/openai_limits.py); without
# this setting Easel would start as cautiously as with a real account of unknown limit (5 images a minute).
UNLIMITED_IMAGES_PER_MINUTE = "60000"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)


async def _admin() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(POSTGRES_URL.replace("postgresql://", "postgres://"), timeout=5)
    except (OSError, asyncpg.PostgresError) as e:
        pytest.fail(f"PostgreSQL is required for these tests and is not reachable at {POSTGRES_URL}: {e}")


@pytest.fixture
async def pg_database() -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Makes fresh, empty PostgreSQL databases; drops them afterwards."""
    made: list[str] = []

    async def make() -> str:
        name = f"easel_t_{uuid.uuid4().hex[:12]}"
        conn = await _admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        made.append(name)
        return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    if made:
        conn = await _admin()
        try:
            for name in made:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Any, pg_database: Any) -> str:
    """A URL to an empty database: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'easel.db'}"
    return await pg_database()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = await open_store(database_url)
    yield s
    await s.close()


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


async def wait_until(predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll a (sync or async) predicate until it is truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclasses.dataclass
class Running:
    """A running Easel and the fakes around it."""

    easel: easel_app.Easel
    slack: FakeSlack
    openai: FakeOpenAI
    sender: SlackSender
    url: str

    @property
    def store(self) -> Store:
        return self.easel.store

    async def jobs_settled(self, n: int | None = None, timeout: float = 15.0) -> list[Job]:
        """Wait until every stored job (at least `n` of them) is done or failed."""

        async def settled() -> list[Job] | None:
            jobs = await self.store.jobs.all()
            if n is not None and len(jobs) < n:
                return None
            ok = jobs and all(j.status in ("done", "failed") for j in jobs) and self.easel.worker.busy == 0
            return jobs if ok else None

        return await wait_until(settled, timeout=timeout, what=f"{n or 'all'} jobs to finish")


def settings_for(slack: FakeSlack, openai: FakeOpenAI, database_url: str, **env: str) -> Settings:
    return Settings.from_env({
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "OPENAI_API_KEY": openai.api_key,
        "OPENAI_BASE_URL": openai.base_url,
        "DATABASE_URL": database_url,
        "OPENAI_IMAGES_PER_MINUTE": UNLIMITED_IMAGES_PER_MINUTE,
        **env,
    })


async def start_easel(slack: FakeSlack, openai: FakeOpenAI, database_url: str,
                      **env: str) -> tuple[Running, web.AppRunner]:
    """Build Easel from settings pointing at the fakes; serve it on 127.0.0.1 and start its worker."""
    settings = settings_for(slack, openai, database_url, **env)
    easel = await easel_app.build(settings)
    runner = web.AppRunner(easel_web.web_app(easel))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    easel.worker.start()
    sender = SlackSender(url=url + easel_web.EVENTS_PATH, signing_secret=SIGNING_SECRET,
                         team_id=slack.team_id, bot_user_id=slack.bot_user_id)
    return Running(easel=easel, slack=slack, openai=openai, sender=sender, url=url), runner


async def stop_easel(running: Running, runner: web.AppRunner) -> None:
    await running.easel.worker.stop(grace=0.5)
    await running.sender.close()
    await runner.cleanup()
    await running.easel.close()


@pytest.fixture
async def easel_factory(
    fake_slack: FakeSlack, fake_openai: FakeOpenAI, database_url: str
) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """Start Easel against the fakes; `await easel_factory(MAX_CONCURRENT_GENERATIONS="2")` to tune."""
    started: list[tuple[Running, web.AppRunner]] = []

    async def start(**env: str) -> Running:
        started.append(await start_easel(fake_slack, fake_openai, database_url, **env))
        return started[-1][0]

    yield start
    for running, runner in started:
        await stop_easel(running, runner)


@pytest.fixture
async def easel(easel_factory: Callable[..., Awaitable[Running]]) -> Running:
    return await easel_factory()
