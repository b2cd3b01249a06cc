"""What Easel does with one job. Each step records its progress, so a job taken again after a crash resumes
where it stopped: the same OpenAI response is collected again by its id (stored responses stay retrievable,
so an image is never paid for twice and is never written to the database), and images already in Slack are
not posted twice.

Database writes are few on purpose (a burst of images is mostly bookkeeping otherwise): the response id as
soon as it exists, each upload's file id before sharing, and one final transaction with the status, the
generations and the thread's next chain step. Each is fenced on the job's lease (`bot.holding.Hold`), and the
lease is checked again right before anything Slack shows: a run whose job another worker took over stops
without a word.

`JobRunner` is stage 2, the generation (the turn with OpenAI, how its failures end the job); stage 1, the sign
of work, is `bot.noticing`, and the answer's publication in Slack is `bot.publication`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable

from bot import buttons, messages
from bot.admins import Admins
from bot.answers import GenerationError, Image, Outcome
from bot.budgets import Budgets, NotSent
from bot.cleanup import Cleanup
from bot.holding import Hold
from bot.identity import safety_identifier
from bot.imaging import OpenAIImages, Turn
from bot.inputs import Inputs
from bot.lineup import LineUp
from bot.metrics import Metrics
from bot.noticing import Noticer
from bot.pacing import Paced, Pacing, Unpaced
from bot.posts import Posts, ran_before
from bot.prices import Prices
from bot.progress import Estimates, Progress
from bot.publication import Publisher, Run, elapsed_ms
from bot.queue_status import QueueStatus, Slots, Step
from bot.slack import (
    CannotPost,
    DownloadError,
    NotInstalled,
    SlackAdapter,
    SlackUnavailable,
)
from bot.spending import Spending
from bot.usergroups import UserGroups
from storage import LeaseLost, Store
from storage.models import Job, JobStatus, Thread

log = logging.getLogger(__name__)


MAX_PACED = 10  # 429s one job may meet (each time it waits for its turn again) before it is given up


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
        budgets: Budgets | None = None,
        buttons: bool = True,
        previews: int = 0,
        usergroups: UserGroups | None = None,
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
        self._posts = Posts(slack)  # the posts that are not images, each made once across crashes
        # What a finished job leaves up in Slack comes down after it, at Slack's pace.
        self.cleanup = Cleanup(use_team=slack.use_team)
        self._previews = previews  # partial images asked for on each turn (PREVIEW_IMAGES), shown as they come
        # What a waiting request's thread shows: its place in the queue (given the deployment's generation slots,
        # and the OpenAI account's rate limit: how many may start now), then its turn.
        # Then, while it draws, the time so far and the time left (going by the recent generations), and previews.
        self.queue = QueueStatus(store=store, slack=slack, capacity=capacity, pacing=pacing or Unpaced(),
                                 slots=slots, posts=self._posts,
                                 progress=Progress(slack=slack, estimates=Estimates(store.generations)))
        self._noticer = Noticer(store=store, slack=slack, attachments=attachments, admins=self._admins,
                                queue=self.queue, posts=self._posts, lease=lease, usergroups=usergroups)
        self._publisher = Publisher(slack=slack, posts=self._posts, prices=self._prices, metrics=metrics,
                                    chat_model=images.model, buttons=buttons)
        # None: nothing counted
        self._spending = Spending(budgets=budgets, slack=slack, posts=self._posts) if budgets else None

    # -- stage 1: a visible sign of work, within a second of the request (bot/noticing.py) ----------------------

    def _hold(self, job: Job) -> Hold:
        return Hold(self._store, job, lease=self._lease)

    async def notice(self, job: Job) -> Awaitable[None] | None:
        """The sign of work. For a message with attachments, returns the rest (downloading and checking them,
        then the place in the queue): the worker runs it beside its noticer, in no slot of its own."""
        return await self._noticer.notice(job)

    async def sign(self, job: Job) -> None:
        """Only the sign of work, for a message job that starts generating at once (best effort)."""
        await self._noticer.sign(job)

    async def notice_failed(self, job: Job) -> None:
        """Slack failed us while showing the sign of work (after its retries)."""
        await self._noticer.notice_failed(job)

    async def _wait_again(self, run: Run) -> None:
        """OpenAI answered 429: the job waits for its turn again (the worker hands it back to the queue, where
        its id keeps its place), and its place is told."""
        await self.queue.waits_again(run.job, run.hold, run.saved(paced=run.progress.paced + 1),
                                     ts=run.drawing.ts if run.drawing else None)

    # -- stage 2: the generation itself -----------------------------------------------------------------------

    async def run(self, job: Job, *, sign: Awaitable[None] | None = None) -> bool:
        """Generate and publish. `sign`, when given, is the sign of work going up meanwhile: it is awaited
        before the sign is taken down. Returns whether the thread's next job is queued (it can run now)."""
        run = Run(job=job, hold=self._hold(job), progress=job.progress, response_id=job.response_id)
        try:
            return await self._run(run, sign)
        except LeaseLost:
            log.info("job %s: another worker holds it now; stopping here", job.id)
            return False
        finally:
            for leftover in run.prepared.values():  # uploads begun for images the answer did not keep
                leftover.cancel()
            await asyncio.gather(*run.prepared.values(), return_exceptions=True)

    async def _run(self, run: Run, sign: Awaitable[None] | None) -> bool:
        job = run.job
        sign_ts = job.message_ts or job.thread_ts or ""
        status, error = JobStatus.DONE, None
        try:
            await self._slack.use_team(job.team_id)
            await self._generate(run)
        except LeaseLost:
            raise
        except NotInstalled:
            status, error = JobStatus.FAILED, "the workspace uninstalled Easel"
        except Paced as e:  # nothing was generated: the job waits for its turn again (or, often refused, ends)
            await self.queue.progress.finished(job.id)
            if run.progress.paced < MAX_PACED:
                await self._wait_again(run)
                raise
            status, error = JobStatus.FAILED, f"rate_limit: {e}"
            run.generations.append(self._publisher.failure(run, error))
            await self._tell(run, messages.RATE_LIMITED)
        except NotSent as e:
            assert self._spending is not None
            status, error = await self._spending.not_sent(run, e, self._tell)
        except GenerationError as e:
            status, error = JobStatus.FAILED, f"{e.kind}: {e.detail}"
            self._metrics.openai_errors.labels(e.kind).inc()
            run.generations.append(self._publisher.failure(run, error, usage=e.usage, tool_usage=e.tool_usage))
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
        if self._spending is not None:
            await self._spending.settle(run, status)
        if sign is not None:
            await sign
        if run.previews is not None:
            await run.previews.settle()
        # The status message, its previews, then the sign of work come down now, as far as the workspace's
        # budget allows at once; the rest after the job's end, in the background, at Slack's pace.
        await self.queue.progress.finished(job.id)
        steps = [*self.queue.take_down(job, run.drawing, run.progress.previews),
                 lambda wait: self._slack.unreact(job.channel_id, sign_ts, wait=wait)]
        left = await _take_down(steps, wait=False)
        if status is JobStatus.FAILED:
            await run.hold.confirm()
            await self._slack.react(job.channel_id, sign_ts, messages.FAILED_REACTION)
        later = await run.hold.finish(status=status, error=error, generations=run.generations,
                                      chain=run.chain if status is JobStatus.DONE else None)
        if left:
            self.cleanup.later(job.team_id, lambda: _take_down(left, wait=True))
        if run.drawing is not None:
            self.queue.progress.learned(run.drawing.model)
        self._metrics.jobs_finished.labels(job.kind.value, status.value).inc()
        # A key OpenAI refuses fails every request until an operator acts: an error, not news.
        level = logging.ERROR if error and error.startswith("auth:") else logging.INFO
        log.log(level, "job %s %s%s", job.id, status.value, f" ({error})" if error else "")
        return later

    async def _tell(self, run: Run, text: str) -> None:
        """Say what happened in the thread, if the job is still this worker's (LeaseLost otherwise); never
        raises for Slack's sake (the job is failing already)."""
        job = run.job
        await run.hold.confirm()
        try:
            await self._posts.once(job, job.thread_ts, text, what="failure", resumed=ran_before(job))
        except Exception as e:  # noqa: BLE001 - nothing more can be done for this job
            log.warning("could not tell job %s's thread about its failure: %s", job.id, type(e).__name__)

    def _image_arrived(self, run: Run, image: Image) -> None:
        """The final image is in: no preview follows it, and its upload starts."""
        self.queue.progress.final(run.job.id)
        self._publisher.image_arrived(run, image)

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

    async def _generate(self, run: Run) -> None:
        job = run.job
        assert job.thread_ts is not None, "a generate job runs only once its thread is known"
        began = time.time()
        outcome = await self._ask(run)
        await self.queue.progress.finished(job.id)  # no status rewrite or preview under way as the answer goes up
        try:
            await self._publish_patiently(run, outcome, queued_ms=elapsed_ms(began - job.created_at),
                                          generation_ms=elapsed_ms(time.time() - began))
        finally:
            outcome.release()

    async def _publish_patiently(self, run: Run, outcome: Outcome, **timings: int) -> None:
        """Publish the answer; while Slack fails (SlackUnavailable), keep the answer and try again with
        back-off, for up to `publish_retry` seconds from the first failure, before giving up. An image that
        was paid for is not thrown away for a few seconds (or minutes) of Slack errors."""
        give_up, delay = None, 1.0
        while True:
            try:
                await self._publisher.publish(run, outcome, **timings)
                return
            except SlackUnavailable as e:
                now = time.monotonic()
                give_up = now + self._publish_retry if give_up is None else give_up
                if now + delay > give_up:
                    raise
                log.warning("job %s: Slack is failing (%s); publishing again in %.0f s", run.job.id, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _ask(self, run: Run) -> Outcome:
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
        # A turn started now says "working on it" until its stream says the image has begun (a text answer
        # never says "drawing"); one picked up again after a restart cannot know, and says "drawing".
        run.drawing = await self.queue.drawing(job, run.hold, tool, thinking=job.response_id is None)
        if self._previews and run.drawing is not None and job.response_id is None:
            tool = {**tool, "partial_images": self._previews}
            run.previews = self.queue.progress.previews(
                run.drawing, before=run.hold.confirm,
                on_file=lambda file_id: self._publisher.save(run, previews=(*run.progress.previews, file_id)))
        run.tool, run.chat_model = tool, chat
        images, mask = buttons.split_mask(job, await self._inputs(job))
        turn = Turn(
            prompt=job.text,
            tool=tool,
            force_image=job.force_image,
            images=images,
            mask=mask,
            previous_response_id=buttons.chain_on(job, thread),
            metadata={"easel_job": str(job.id)},
            model=chat,
            safety_identifier=safety_identifier(self._safety_key, job.team_id, job.user_id)
            if self._safety_key else None,
            web_search=job.options.web,
        )

        async def started(response_id: str) -> None:
            run.response_id = response_id
            await run.hold.update(response_id=response_id, progress=run.saved())

        if job.response_id is None and self._spending is not None:  # (a started response was reserved for)
            await self._spending.before_send(run, turn)
        resume_id, adapted = job.response_id, False
        while True:
            try:
                answer = await self._images.run(turn, resume_id=resume_id, on_started=started,
                                                on_image=lambda image: self._image_arrived(run, image),
                                                previews=run.previews,
                                                on_image_begun=lambda: self.queue.progress.began_image(job.id))
                run.parent = turn.previous_response_id
                return answer
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
                if self._spending is not None:  # the retry may cost more: its reservation is raised first
                    await self._spending.before_send(run, turn, retry=True)
                resume_id = None


async def _take_down(steps: list[Step], *, wait: bool) -> list[Step]:
    """Run `steps` in order until one is not done (a preview file goes only after the message showing it);
    the steps left."""
    for i, step in enumerate(steps):
        if not await step(wait):
            return steps[i:]
    return []
