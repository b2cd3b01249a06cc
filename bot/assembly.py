"""Composition root: builds every piece from `Settings`.

Nothing else in the code base builds clients, apps or stores; everything receives them. The process that
answers Slack builds only its half (`build_intake`): it never imports the OpenAI side, which is the largest
part of a process's memory. Running the pieces (the processes, their start and stop) is `bot.processes`;
the HTTP side is `bot.web`.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import sqlalchemy as sa
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import checks
from bot.admins import Admins
from bot.budgets import Budgets
from bot.config import Settings
from bot.confirming import BudgetDesk
from bot.home import HomeDesk
from bot.image_models import utc_today
from bot.installs import INSTALL_PATH, REDIRECT_PATH, Installations
from bot.intake import Intake
from bot.interactions import Interactions
from bot.lifecycle import Lifecycle, Refresher
from bot.metrics import Metrics
from bot.openai_client import openai_client
from bot.settings_desk import SettingsDesk
from bot.slack import SlackAdapter, retry_handlers
from bot.slack_budget import Budget, SlackBudget, Unlimited
from bot.usergroups import UserGroups
from bot.web import WellFormed
from handlers import register_handlers
from handlers.payloads import Context
from storage import Store, open_store
from storage.home import Recent
from storage.limits import Limits
from storage.retention import Retention
from storage.settings import Settings as SettingsStore
from storage.spend import Spend

if TYPE_CHECKING:
    import openai

    from bot.inputs import Inputs
    from bot.pacing import Clock
    from bot.worker import Worker

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Easel:
    settings: Settings
    store: Store
    bolt: AsyncApp
    slack: SlackAdapter
    lifecycle: Lifecycle
    worker: Worker | None = None  # None in the process that only answers Slack
    openai_client: openai.AsyncOpenAI | None = None
    socket_connected: Callable[[], Awaitable[bool]] | None = None
    not_ready: str | None = None  # why /healthz says 503 while start-up waits (Slack unreachable, say)
    metrics: Metrics = dataclasses.field(default_factory=Metrics)
    refresher: Refresher | None = None  # the worker's reads of OpenAI's model list (started by `run_worker`)
    attachments: Inputs | None = None  # the worker's downloaded input images (on disk)
    budgets: Budgets | None = None  # what requests may spend, and what they spent
    slack_budget: Budget = dataclasses.field(default_factory=Unlimited)  # Slack's rate limits, as kept here

    async def close(self) -> None:
        if self.refresher is not None:
            await self.refresher.stop()
        if self.attachments is not None:
            self.attachments.close()
        await self.slack.close()
        if self.openai_client is not None:
            await self.openai_client.close()
        await self.store.close()

class _WithoutClientWarning(logging.Filter):
    """Bolt reads SLACK_BOT_TOKEN from the environment and then warns that the client it was given wins. Easel
    gives that client (the same token, with Easel's retry policy and connection pool) on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped

        message = record.getMessage()
        if message == warning_client_prioritized_and_token_skipped():
            return False
        # Bolt quotes what a request names (an unknown event type, say) in its warnings; a lone surrogate there
        # would make the line unwritable as UTF-8 (a logging error instead of the line). It is shown escaped.
        safe = message.encode("utf-8", "backslashreplace").decode("utf-8")
        if safe != message:
            record.msg, record.args = safe, None
        return True


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("slack_bolt")
    if not any(isinstance(f, _WithoutClientWarning) for f in logger.filters):
        logger.addFilter(_WithoutClientWarning())
    return logger


async def build_intake(
    settings: Settings,
    *,
    wake: Callable[[], None],
    today: Callable[[], datetime.date] = utc_today,
    now: Callable[[], float] = time.monotonic,
) -> Easel:
    """The half that answers Slack: store, Web API client, Bolt app and listeners. `wake` tells the worker
    (in another process, or built by `build`) that a job is waiting. `today` is the date the model table goes
    by; `now` the clock of its reads from the database."""
    try:
        store = await open_store(settings.database_url)
    except (OSError, sa.exc.SQLAlchemyError) as e:
        raise checks.database_error(settings, e) from None
    lifecycle = Lifecycle(table=settings.model_table(today=today), store=store.lifecycle, now=now)
    # One connection pool for every Slack call (slack_sdk otherwise opens a new session per call).
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120, sock_connect=10))
    metrics = Metrics()
    # Slack's rate limits per workspace and method, kept by every replica through the database.
    budget: Budget = Unlimited()
    if settings.slack_rate_limits == "on":
        budget = SlackBudget(Limits(store.db), on_limited=lambda m: metrics.slack_rate_limited.labels(m).inc())
    web_client = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=retry_handlers(budget=budget),
        session=http,
    )
    installs = _installations(settings, store)
    bolt = AsyncApp(
        client=web_client,
        signing_secret=settings.slack_signing_secret,
        request_verification_enabled=not settings.socket_mode,
        # The listeners only store a job (milliseconds), and it must be stored before Slack hears "ok".
        process_before_response=True,
        logger=_bolt_logger(),
        before_authorize=WellFormed(admit=installs.admit if installs else None),
        **_oauth(settings, installs),
    )
    place_settings = SettingsStore(store.db)
    intake = Intake(store=store, wake=wake, max_pending_per_user=settings.max_queued_per_user, metrics=metrics,
                    lifecycle=lifecycle,
                    forget_workspace=(lambda team: installs.remove(team_id=team)) if installs else None,
                    purge_on_uninstall=settings.purge_on_uninstall, settings=place_settings)
    slack = SlackAdapter(web_client, session=http, tokens=installs.token if installs else None, budget=budget)
    budgets = Budgets(spend=Spend(store.db), limits=settings.budget_limits(), prices=settings.price_table(),
                      chat_model=settings.openai_model, settings=place_settings)
    desk = BudgetDesk(store=store, budgets=budgets, slack=slack, wake=wake, max_pending=settings.max_queued_per_user,
                      admins=Admins(listed=settings.easel_admins, is_workspace_admin=slack.is_workspace_admin))
    settings_desk = SettingsDesk(settings=place_settings, is_admin=desk.is_admin, usergroups=UserGroups(slack))
    home_desk = HomeDesk(recent=Recent(store.db), budgets=budgets, settings=place_settings, is_admin=desk.is_admin,
                         slack=slack)
    register_handlers(bolt, intake=intake, ctx=Context(defaults=settings.image_defaults(), table=lifecycle.table),
                      interactions=Interactions(store=store, slack=slack), desk=desk, settings_desk=settings_desk,
                      home_desk=home_desk)
    return Easel(settings=settings, store=store, bolt=bolt, slack=slack, metrics=metrics, lifecycle=lifecycle,
                 budgets=budgets, slack_budget=budget)


def _installations(settings: Settings, store: Store) -> Installations | None:
    """With SLACK_CLIENT_ID: every workspace's installation, in Easel's database."""
    if not settings.oauth:
        return None
    assert settings.slack_client_id is not None
    return Installations(engine=store.engine, client_id=settings.slack_client_id,
                         on_saved=Retention(store.db).workspace_back)


def _oauth(settings: Settings, installs: Installations | None) -> dict[str, Any]:
    """Bolt's OAuth flow (GET /slack/install, GET /slack/oauth_redirect) and authorisation from the stored bot of
    each workspace; nothing with one token."""
    if installs is None:
        return {}
    from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings

    return {
        "oauth_settings": AsyncOAuthSettings(
            client_id=settings.slack_client_id, client_secret=settings.slack_client_secret,
            scopes=list(checks.NEEDED_SCOPES), installation_store=installs.installation_store,
            installation_store_bot_only=True, state_store=installs.state_store,
            install_path=INSTALL_PATH, redirect_uri_path=REDIRECT_PATH),
        "authorize": installs.authorize(),
    }


async def build(
    settings: Settings,
    *,
    today: Callable[[], datetime.date] = utc_today,
    now: Callable[[], float] = time.monotonic,
    refresh_every: float | None = None,
    retry_every: float | None = None,
    clock: Clock | None = None,
) -> Easel:
    """Everything, in this process: the intake and the worker that runs its jobs (the worker process, and
    tests, which run both in one process). The model list is read by `easel.refresher` once started, at
    first and then every `refresh_every` seconds (after a failure, `retry_every`). `clock` is the pacer's
    (tests drive their own)."""
    from bot.imaging import OpenAIImages, PayloadSlots, list_models
    from bot.inputs import Inputs
    from bot.jobs import JobRunner
    from bot.lineup import LineUp
    from bot.pacing import Pacer
    from bot.queue_status import Slots
    from bot.worker import Worker

    built: list[Worker] = []

    def wake() -> None:
        for worker in built:
            worker.wake()

    easel = await build_intake(settings, wake=wake, today=today, now=now)
    client = openai_client(settings)
    pacing = Pacer(Limits(easel.store.db), per_minute=settings.openai_images_per_minute, clock=clock)
    images = OpenAIImages(client, model=settings.openai_model, slots=PayloadSlots(settings.max_images_in_memory),
                          deadline=max(settings.openai_timeout * 2, 30.0), pacing=pacing)
    images.warm_up()
    attachments = Inputs(easel.slack)
    slots = Slots(settings.max_concurrent_generations)  # filled by the worker, read by the runner's queue status
    runner = JobRunner(store=easel.store, images=images, slack=easel.slack,
                       capacity=settings.max_concurrent_generations, slots=slots, metrics=easel.metrics,
                       pacing=pacing,
                       lease=settings.job_lease_seconds, publish_retry=settings.publish_retry_seconds,
                       lineup=LineUp(lifecycle=easel.lifecycle, chat_model=settings.openai_model),
                       safety_key=settings.safety_secret(), attachments=attachments,
                       prices=settings.price_table(),
                       admins=Admins(listed=settings.easel_admins, is_workspace_admin=easel.slack.is_workspace_admin),
                       budgets=easel.budgets, previews=settings.preview_images,
                       usergroups=UserGroups(easel.slack))
    timing = {k: v for k, v in (("every", refresh_every), ("retry", retry_every)) if v is not None}
    easel.refresher = Refresher(lifecycle=easel.lifecycle, list_models=lambda: list_models(client), now=now,
                                **timing)
    worker = Worker(
        store=easel.store, runner=runner, slots=slots,
        lease=settings.job_lease_seconds, poll=settings.worker_poll_seconds, pacing=pacing,
    )
    built.append(worker)
    easel.worker, easel.openai_client, easel.attachments = worker, client, attachments
    return easel
