"""What Easel does with one job. Each step records its progress, so a job taken again after a crash resumes
where it stopped: the same OpenAI response is collected again by its id (stored responses stay retrievable,
so an image is never paid for twice and is never written to the database), and images already in Slack are
not posted twice.

Database writes are few on purpose (a burst of images is mostly bookkeeping otherwise): the response id as
soon as it exists, each upload's file id before sharing, and one final transaction with the status, the
generations and the thread's next chain step. Each is fenced on the job's lease (`bot.holding.Hold`), and the
lease is checked again right before anything Slack shows: a run whose job another worker took over stops
without a word.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot import messages, prices
from bot.admins import Admins
from bot.answers import GenerationError, Image, Outcome
from bot.holding import Hold
from bot.identity import safety_identifier
from bot.imaging import OpenAIImages, Turn
from bot.inputs import InputRefused, Inputs
from bot.lineup import LineUp
from bot.metrics import Metrics
from bot.pacing import Paced, Pacing, Unpaced
from bot.posts import Posts, noticed_before, ran_before
from bot.prices import Prices
from bot.queue_status import QueueStatus, Slots
from bot.slack import (
    EXTENSIONS,
    CannotPost,
    DownloadError,
    NotInstalled,
    SlackAdapter,
    SlackUnavailable,
    sniff,
)
from storage import LeaseLost, Store
from storage.models import ChainStep, Generation, Job, JobKind, JobProgress, JobStatus, Thread
from storage.retention import Retention

log = logging.getLogger(__name__)


MAX_PACED = 10  # 429s one job may meet (each time it waits for its turn again) before it is given up


@dataclasses.dataclass
class _Run:
    """One run of a job: its progress (owned by this run), and what the final transaction will record."""

    job: Job
    hold: Hold
    progress: JobProgress
    response_id: str | None = None
    notices: list[str] | None = None  # said with the answer, once the turn has settled them (kept in progress)
    generations: list[Generation] = dataclasses.field(default_factory=list)
    chain: ChainStep | None = None
    arrived: list[str] = dataclasses.field(default_factory=list)  # image call ids, as their events came
    prepared: dict[str, asyncio.Task[str]] = dataclasses.field(default_factory=dict)  # call id -> file id
    tool: dict[str, Any] | None = None  # the image tool as sent (the request's, or what it became)
    chat_model: str | None = None  # the conversational model, when not the configured one
    shared: dict[str, str] = dataclasses.field(default_factory=dict)  # image index -> file id, once in Slack
    upload_ms: dict[str, int] = dataclasses.field(default_factory=dict)
    publications: int = 0  # tries at publishing the answer so far (Slack may be down for a while)

    def saved(self, **changes: Any) -> JobProgress:
        """The progress with `changes` (and the notices as they are now), as it is to be recorded."""
        if self.notices is not None:
            changes["notices"] = tuple(self.notices)
        self.progress = dataclasses.replace(self.progress, **changes)
        return self.progress


class JobRunner:
    def __init__(
        self,
        *,
        store: Store,
        images: OpenAIImages,
        slack: SlackAdapter,
        capacity: int,
        slots: Slots,
        metrics: Metrics,
        attachments: Inputs,
        lineup: LineUp | None = None,
        safety_key: bytes | None = None,
        lease: float = 60.0,
        publish_retry: float = 300.0,
        prices: Prices | None = None,
        admins: Admins | None = None,
        pacing: Pacing | None = None,
    ):
        self._store = store
        self._images = images
        self._slack = slack
        self._metrics = metrics
        self._attachments = attachments
        self._lineup = lineup  # the models as OpenAI says they are today (None: requests go as stored)
        self._safety_key = safety_key  # for each request's safety_identifier
        self._lease = lease  # how long a check of a job's lease before a post extends it
        self._publish_retry = publish_retry  # how long Slack may fail an answer's publication before it is told
        self._prices = prices or Prices()
        self._admins = admins or Admins(listed=frozenset(), is_workspace_admin=slack.is_workspace_admin)
        # What a waiting request's thread shows: its place in the queue (given the generation slots here, and
        # the OpenAI account's rate limit: how many may start now), then its turn.
        self._posts = Posts(slack)  # the posts that are not images, each made once across crashes
        self.queue = QueueStatus(store=store, slack=slack, capacity=capacity, pacing=pacing or Unpaced(),
                                 slots=slots, posts=self._posts)

    # -- stage 1: a visible sign of work, within a second of the request --------------------------------------

    def _hold(self, job: Job) -> Hold:
        return Hold(self._store, job, lease=self._lease)

    async def notice(self, job: Job) -> Awaitable[None] | None:
        """The sign of work. For a message with attachments, returns the rest (downloading and checking them,
        then the place in the queue): the worker runs it beside its noticer, in no slot of its own."""
        hold = self._hold(job)
        try:
            try:
                await self._slack.use_team(job.team_id)
            except NotInstalled:
                await hold.finish(status=JobStatus.FAILED, error="the workspace uninstalled Easel")
                return None
            return await self._notice(job, hold)
        except LeaseLost:
            log.info("job %s: another worker holds it now; stopping here", job.id)
            return None

    async def _notice(self, job: Job, hold: Hold) -> Awaitable[None] | None:
        if job.kind is JobKind.FORGET:
            text = await self._forget(job, hold)
            await hold.confirm()
            await self._posts.once(job, job.thread_ts, text, what="forget", resumed=noticed_before(job))
            await hold.finish(status=JobStatus.DONE)
            return None
        if job.kind is JobKind.NOTICE:
            await hold.confirm()
            await self._posts.once(job, job.thread_ts, job.text, what="notice", resumed=noticed_before(job))
            await hold.finish(status=JobStatus.DONE)
            return None
        if job.kind is JobKind.REACTION:
            await hold.confirm()
            await self._slack.react(job.channel_id, job.message_ts or "", job.text)
            await hold.finish(status=JobStatus.DONE)
            return None
        if job.source != "command":
            await self._slack.react(job.channel_id, job.message_ts or "")
            if job.files:
                return self._fetch_inputs(job, hold)
            await self.queue.say_queued(job, hold, job.thread_ts)
            await hold.noticed()
            return None
        root_ts = job.progress.root_ts
        if not root_ts:
            text = messages.command_root(user_id=job.user_id, prompt=job.text, resolved=job.options.shown or {})
            await hold.confirm()
            try:
                [root_ts, *_] = await self._posts.once(job, None, text, what="root", resumed=noticed_before(job))
            except CannotPost:
                if job.response_url:
                    await self._slack.respond(job.response_url, messages.CANNOT_POST)
                await hold.finish(status=JobStatus.FAILED, error="cannot post in channel")
                return None
            await hold.update(progress=dataclasses.replace(job.progress, root_ts=root_ts))
        await self._slack.react(job.channel_id, root_ts)
        await self.queue.say_queued(job, hold, root_ts)
        await hold.noticed(thread_ts=root_ts, thread_options=job.options.sticky or {})
        return None

    async def _fetch_inputs(self, job: Job, hold: Hold) -> None:
        """A message's attachments, downloaded and checked before the job may run, so that a slow or refused
        one never holds a generation slot. A refusal ends the job here, said in the thread."""
        try:
            await self._fetch_and_queue(job, hold)
        except LeaseLost:
            log.info("job %s: another worker holds it now; stopping here", job.id)

    async def _fetch_and_queue(self, job: Job, hold: Hold) -> None:
        try:
            await self._slack.use_team(job.team_id)  # a task of its own: its calls need the workspace's token too
        except NotInstalled:
            await hold.finish(status=JobStatus.FAILED, error="the workspace uninstalled Easel")
            return
        try:
            await self._attachments.fetch(job)
        except Exception as e:
            if isinstance(e, InputRefused):
                text, error = e.message, f"download: {e}"
            else:
                log.exception("job %s: fetching its attachments failed unexpectedly", job.id)
                text, error = messages.INTERNAL, f"internal: {type(e).__name__}: {e}"
            await hold.confirm()
            try:
                await self._posts.once(job, job.thread_ts, text, what="refusal", resumed=noticed_before(job))
            except Exception as told:  # noqa: BLE001 - the job ends all the same
                log.warning("could not tell job %s's thread why: %s", job.id, type(told).__name__)
            await self._slack.unreact(job.channel_id, job.message_ts or "")
            await self._slack.react(job.channel_id, job.message_ts or "", messages.FAILED_REACTION)
            await hold.finish(status=JobStatus.FAILED, error=error)
            return
        await self.queue.say_queued(job, hold, job.thread_ts)
        await hold.noticed()

    async def _forget(self, job: Job, hold: Hold) -> str:
        """`@Easel forget`: the thread's chain and records go, if the person started the thread or is an admin."""
        assert job.thread_ts is not None
        where = {"team_id": job.team_id, "channel_id": job.channel_id, "thread_ts": job.thread_ts}
        thread = await hold.persist(lambda: self._store.threads.get(**where))
        if thread is None:
            return messages.NOTHING_TO_FORGET
        if job.user_id != thread.started_by and not await self._admins.is_admin(job.team_id, job.user_id):
            return messages.forget_not_yours(thread.started_by)
        await hold.persist(lambda: Retention(self._store.db).forget_thread(**where))
        log.info("job %s: thread %s forgotten at %s's request", job.id, job.thread_ts, job.user_id)
        return messages.FORGOTTEN

    async def sign(self, job: Job) -> None:
        """Only the sign of work, for a message job that starts generating at once (best effort)."""
        try:
            await self._slack.use_team(job.team_id)
            await self._slack.react(job.channel_id, job.message_ts or "")
        except Exception as e:  # noqa: BLE001 - the generation goes on without its hourglass
            log.warning("job %s: no sign of work (%s)", job.id, type(e).__name__)

    async def notice_failed(self, job: Job) -> None:
        """Slack failed us while showing the sign of work (after its retries). A generate job in an existing
        thread still runs (the sign is only a courtesy); a text-only notice, or a command whose thread could
        not be started, ends here, with a private word to the user where that is possible."""
        hold = self._hold(job)
        try:
            if job.kind is JobKind.GENERATE and job.source != "command":
                await hold.noticed()
                return
            if job.response_url:
                await hold.confirm()
                await self._slack.respond(job.response_url, messages.SLACK_POST_FAILED)
            await hold.finish(status=JobStatus.FAILED, error="slack: the first message failed")
        except LeaseLost:
            log.info("job %s: another worker holds it now; stopping here", job.id)

    async def _wait_again(self, run: _Run) -> None:
        """OpenAI answered 429: the job waits for its turn again (the worker hands it back to the queue, where
        its id keeps its place), and its place is told."""
        await self.queue.waits_again(run.job, run.hold, run.saved(paced=run.progress.paced + 1))

    # -- stage 2: the generation itself -----------------------------------------------------------------------

    async def run(self, job: Job, *, sign: Awaitable[None] | None = None) -> bool:
        """Generate and publish. `sign`, when given, is the sign of work going up meanwhile: it is awaited
        before the sign is taken down. Returns whether the thread's next job is queued (it can run now)."""
        run = _Run(job=job, hold=self._hold(job), progress=job.progress, response_id=job.response_id)
        try:
            return await self._run(run, sign)
        except LeaseLost:
            log.info("job %s: another worker holds it now; stopping here", job.id)
            return False
        finally:
            for leftover in run.prepared.values():  # uploads begun for images the answer did not keep
                leftover.cancel()
            await asyncio.gather(*run.prepared.values(), return_exceptions=True)

    async def _run(self, run: _Run, sign: Awaitable[None] | None) -> bool:
        job = run.job
        sign_ts = job.message_ts or job.thread_ts or ""
        status, error = JobStatus.DONE, None
        try:
            await self._slack.use_team(job.team_id)
            await self.queue.drawing(job)
            await self._generate(run)
        except LeaseLost:
            raise
        except NotInstalled:
            status, error = JobStatus.FAILED, "the workspace uninstalled Easel"
        except Paced as e:  # nothing was generated: the job waits for its turn again (or, often refused, ends)
            if run.progress.paced < MAX_PACED:
                await self._wait_again(run)
                raise
            status, error = JobStatus.FAILED, f"rate_limit: {e}"
            run.generations.append(dataclasses.replace(self._generation(run, None), status="failed", error=error))
            await self._tell(run, messages.RATE_LIMITED)
        except GenerationError as e:
            status, error = JobStatus.FAILED, f"{e.kind}: {e.detail}"
            self._metrics.openai_errors.labels(e.kind).inc()
            run.generations.append(dataclasses.replace(self._generation(run, None), status="failed", error=error))
            await self._tell(run, e.user_message)
        except DownloadError as e:
            status, error = JobStatus.FAILED, f"download: {e}"
            await self._tell(run, messages.attachment_failed(str(e)))
        except SlackUnavailable as e:
            status, error = JobStatus.FAILED, f"slack: {e}"
            await self._tell(run, messages.SLACK_FAILED.format(reason=e))
        except CannotPost as e:
            status, error = JobStatus.FAILED, f"cannot post: {e}"
            if job.response_url:
                await run.hold.confirm()
                await self._slack.respond(job.response_url, messages.CANNOT_POST)
        except Exception as e:  # a bug or an unexpected answer: the user hears, the job ends, the worker lives
            log.exception("job %s failed unexpectedly", job.id)
            status, error = JobStatus.FAILED, f"internal: {type(e).__name__}: {e}"
            await self._tell(run, messages.INTERNAL)
        for leftover in run.prepared.values():  # uploads begun for images the answer did not keep
            leftover.cancel()
        await asyncio.gather(*run.prepared.values(), return_exceptions=True)
        if sign is not None:
            await sign
        await self._slack.unreact(job.channel_id, sign_ts)
        await self.queue.ended(job)
        if status is JobStatus.FAILED:
            await run.hold.confirm()
            await self._slack.react(job.channel_id, sign_ts, messages.FAILED_REACTION)
        later = await run.hold.finish(status=status, error=error, generations=run.generations,
                                      chain=run.chain if status is JobStatus.DONE else None)
        self._metrics.jobs_finished.labels(job.kind.value, status.value).inc()
        # A key OpenAI refuses fails every request until an operator acts: an error, not news.
        level = logging.ERROR if error and error.startswith("auth:") else logging.INFO
        log.log(level, "job %s %s%s", job.id, status.value, f" ({error})" if error else "")
        return later

    async def _tell(self, run: _Run, text: str) -> None:
        """Say what happened in the thread, if the job is still this worker's (LeaseLost otherwise); never
        raises for Slack's sake (the job is failing already)."""
        job = run.job
        await run.hold.confirm()
        try:
            await self._posts.once(job, job.thread_ts, text, what="failure", resumed=ran_before(job))
        except Exception as e:  # noqa: BLE001 - nothing more can be done for this job
            log.warning("could not tell job %s's thread about its failure: %s", job.id, type(e).__name__)

    async def _save(self, run: _Run, **changes: Any) -> None:
        await run.hold.update(progress=run.saved(**changes))

    def _stager(self, run: _Run, key: str) -> Callable[[dict[str, str]], Awaitable[None]]:
        """Records an upload's file id in the job's progress (before the upload is completed)."""
        async def stage(record: dict[str, str]) -> None:
            await self._save(run, uploads={**run.progress.uploads, key: record})
        return stage

    def _image_arrived(self, run: _Run, image: Image) -> None:
        """An image is in, before the rest of the answer: start its upload (all but the sharing, whose
        message needs the whole answer) while the answer finishes streaming."""
        key = str(len(run.arrived))
        run.arrived.append(image.call_id)
        if key in run.progress.uploads:
            return  # begun before a restart: the usual path checks what Slack already has
        run.prepared[image.call_id] = asyncio.create_task(self._slack.prepare(
            data=image.data, filename=_filename(run.job, int(key), image.data), on_stage=self._stager(run, key)))

    async def _inputs(self, job: Job) -> tuple[tuple[str, bytes], ...]:
        """The attachments fetched at the notice (or now, if that happened elsewhere), as the turn sends them."""
        return await self._attachments.load(job)

    async def _last_image(self, thread: Thread | None) -> tuple[tuple[str, bytes], ...]:
        """The thread's newest image, to carry into a new chain when OpenAI has forgotten the old one."""
        if thread is None or not thread.last_image_file_id:
            return ()
        try:
            url = await self._slack.file_url(thread.last_image_file_id)
            return (await self._attachments.one(url),)
        except Exception as e:  # noqa: BLE001 - starting over without it is still better than failing
            log.warning("could not fetch the thread's last image: %s", e)
            return ()

    async def _generate(self, run: _Run) -> None:
        job = run.job
        assert job.thread_ts is not None, "a generate job runs only once its thread is known"
        began = time.time()
        outcome = await self._ask(run)
        try:
            await self._publish_patiently(run, outcome, queued_ms=_ms(began - job.created_at),
                                          generation_ms=_ms(time.time() - began))
        finally:
            outcome.release()

    async def _publish_patiently(self, run: _Run, outcome: Outcome, **timings: int) -> None:
        """Publish the answer; while Slack fails (SlackUnavailable), keep the answer and try again with
        back-off, for up to `publish_retry` seconds from the first failure, before giving up. An image that
        was paid for is not thrown away for a few seconds (or minutes) of Slack errors."""
        give_up, delay = None, 1.0
        while True:
            try:
                await self._publish(run, outcome, **timings)
                return
            except SlackUnavailable as e:
                now = time.monotonic()
                give_up = now + self._publish_retry if give_up is None else give_up
                if now + delay > give_up:
                    raise
                log.warning("job %s: Slack is failing (%s); publishing again in %.0f s", run.job.id, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _ask(self, run: _Run) -> Outcome:
        """One turn with OpenAI, or the pick-up of the one started before a restart. Before a turn is sent,
        its models are checked against the table as it is now (one may have been shut down since the request
        was taken); a refusal that says what the model lacks is tried once more where it can work."""
        job = run.job
        assert job.thread_ts is not None
        starts_thread = job.source == "command" or job.message_ts == job.thread_ts
        thread = None if starts_thread and job.source != "command" else await run.hold.persist(
            lambda: self._store.threads.get(team_id=job.team_id, channel_id=job.channel_id, thread_ts=job.thread_ts))
        notices = run.notices = list(job.options.notices if run.progress.notices is None else run.progress.notices)
        tool, chat = dict(job.options.tool), None
        if job.response_id is None and self._lineup is not None:  # (a started response is collected as it is)
            tool, chat = await self._lineup.current(job, tool, notices, starts_thread=starts_thread)
        run.tool, run.chat_model = tool, chat
        turn = Turn(
            prompt=job.text,
            tool=tool,
            force_image=job.force_image,
            images=await self._inputs(job),
            previous_response_id=thread.last_response_id if thread else None,
            metadata={"easel_job": str(job.id)},
            model=chat,
            safety_identifier=safety_identifier(self._safety_key, job.team_id, job.user_id)
            if self._safety_key else None,
            web_search=job.options.web,
        )

        async def started(response_id: str) -> None:
            run.response_id = response_id
            await run.hold.update(response_id=response_id, progress=run.saved())

        resume_id, adapted = job.response_id, False
        while True:
            try:
                return await self._images.run(turn, resume_id=resume_id, on_started=started,
                                              on_image=lambda image: self._image_arrived(run, image))
            except GenerationError as e:
                if e.kind == "chain_expired" and turn.previous_response_id:
                    log.info("job %s: chain %s expired; starting a new chain", job.id, turn.previous_response_id)
                    turn = dataclasses.replace(
                        turn, previous_response_id=None, images=turn.images + await self._last_image(thread)
                    )
                    notices.insert(0, messages.CHAIN_EXPIRED_NOTE)
                elif not adapted and e.kind in ("rejected", "unknown_model") and self._lineup is not None:
                    changed = await self._lineup.adapt(job, turn, e, notices)
                    if changed is None:
                        raise
                    turn, adapted = changed, True
                    run.tool, run.chat_model = turn.tool, turn.model
                else:
                    raise
                resume_id = None

    async def _publish(self, run: _Run, outcome: Outcome, *, queued_ms: int, generation_ms: int) -> None:
        job = run.job
        assert job.thread_ts is not None
        notices = list(run.notices or ())
        # The model's words that come with an image go in the image's own message (one message, one upload
        # step, instead of a second message and a record that it was posted); long ones get their own.
        # The words are the model's (escaped where they are shown); the web pages it cited are links under them.
        text = outcome.text.strip()
        links = messages.sources(outcome.sources) if outcome.sources else ""
        caption = text if outcome.images and len(messages.escape(text)) <= messages.CAPTION_LIMIT else ""
        sent = run.tool or job.options.tool
        image_model, quality = str(sent.get("model") or "unknown"), str(sent.get("quality") or "auto")
        cost = self._prices.cost(chat_model=run.chat_model or self._images.model, image_model=sent.get("model"),
                                 usage=outcome.usage, tool_usage=outcome.tool_usage)
        files, upload_ms = run.shared, run.upload_ms
        # Uploads recorded before: by a run before a restart, or by this run's earlier tries (Slack failed them,
        # perhaps after it had shared an image: it is asked).
        records = (run.progress if run.publications else run.job.progress).uploads
        run.publications += 1
        for i, image in enumerate(outcome.images):
            key = str(i)
            if key in files:  # posted already
                continue
            t0 = time.time()
            files[key] = await self._slack.upload(
                reserved=records.get(key),
                on_stage=self._stager(run, key),
                before_sharing=run.hold.confirm,
                prepared=run.prepared.pop(image.call_id, None),
                channel=job.channel_id,
                thread_ts=job.thread_ts,
                data=image.data,
                filename=_filename(job, i, image.data),
                comment=messages.image_comment(
                    revised_prompt=image.revised_prompt, notices=notices, index=i, count=len(outcome.images),
                    caption=caption, links=links if caption or not text else "",
                    cost=prices.shown(cost.micros),
                ),
            )
            upload_ms[key] = _ms(time.time() - t0)
        if outcome.blocked and outcome.images and not run.progress.blocked_posted:
            await run.hold.confirm()
            await self._posts.once(job, job.thread_ts, messages.partial_moderation(outcome.blocked), what="blocked",
                                   resumed=ran_before(job))
            await self._save(run, blocked_posted=True)
        if text and not caption and not run.progress.text_posted:
            text = "\n".join(part for part in (messages.escape(outcome.text).rstrip(), links) if part)
            if notices and not outcome.images:
                text = "\n".join([*(f":information_source: {n}" for n in notices), text])
            await run.hold.confirm()
            await self._posts.once(job, job.thread_ts, text, what="text", resumed=ran_before(job))
            await self._save(run, text_posted=True)
        base = dataclasses.replace(self._generation(run, outcome, queued_ms=queued_ms, generation_ms=generation_ms),
                                   cost_micros=cost.micros, cost_unpriced=bool(cost.unpriced))
        if cost.unpriced:
            log.info("job %s: no price for %s in the table (PRICES); counted at a stand-in rate", job.id,
                     ", ".join(cost.unpriced))
        self._metrics.generation_seconds.labels(image_model, quality).observe(generation_ms / 1000)
        self._metrics.cost_dollars.labels(image_model).inc(cost.micros / 1_000_000)
        if outcome.images:
            self._metrics.images_posted.labels(image_model).inc(len(outcome.images))
        for i, image in enumerate(outcome.images):
            run.generations.append(dataclasses.replace(
                base,
                status="posted",
                image_call_id=image.call_id or None,
                revised_prompt=image.revised_prompt,
                slack_file_id=files[str(i)],
                upload_ms=upload_ms.get(str(i)),
                usage=base.usage if i == 0 else None,  # usage is per response: counted once
                tool_usage=base.tool_usage if i == 0 else None,
                cost_micros=base.cost_micros if i == 0 else None,
                cost_unpriced=base.cost_unpriced and i == 0,
            ))
        if not outcome.images:
            run.generations.append(dataclasses.replace(base, status="text"))
        run.chain = ChainStep(
            team_id=job.team_id,
            channel_id=job.channel_id,
            thread_ts=job.thread_ts,
            response_id=outcome.response_id,
            image_file_id=files[str(len(outcome.images) - 1)] if outcome.images else None,
        )

    def _generation(self, run: _Run, outcome: Outcome | None, **timings: Any) -> Generation:
        job = run.job
        tool = run.tool or job.options.tool
        return Generation(
            job_id=job.id,
            team_id=job.team_id,
            channel_id=job.channel_id,
            thread_ts=job.thread_ts,
            user_id=job.user_id,
            request_text=job.text,
            options=tool,
            model=run.chat_model or self._images.model,
            image_model=tool.get("model"),
            response_id=outcome.response_id if outcome else run.response_id,
            usage=outcome.usage if outcome else None,
            tool_usage=outcome.tool_usage if outcome else None,
            status="failed",
            **timings,
        )


def _filename(job: Job, index: int, data: bytes) -> str:
    return f"easel-{job.id}-{index + 1}.{EXTENSIONS.get(sniff(data) or '', 'png')}"


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))
