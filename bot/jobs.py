"""What Easel does with one job. Each step records its progress, so a job taken again after a crash resumes
where it stopped: the same OpenAI response is collected again by its id (stored responses stay retrievable,
so an image is never paid for twice and is never written to the database), and images already in Slack are
not posted twice.

Database writes are few on purpose (a burst of images is mostly bookkeeping otherwise): the response id as
soon as it exists, each upload's file id before sharing, and one final transaction with the status, the
generations and the thread's next chain step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot import messages
from bot.imaging import GenerationError, Image, OpenAIImages, Outcome, Turn
from bot.pacing import Paced, Pacing, Unpaced
from bot.publishing import EXTENSIONS, CannotPost, DownloadError, SlackPublisher, SlackUnavailable, sniff
from storage import Store
from storage.models import ChainStep, Generation, Job, JobKind, JobStatus, Thread

log = logging.getLogger(__name__)


MAX_PACED = 10  # 429s one job may meet (each time it waits for its turn again) before it is given up


def queue_position(
    job_id: int, *, running: int, waiting_ids: list[int], capacity: int, ready: int | None = None
) -> int:
    """1 for the next job to start, 2 for the one after, ...; 0 if it can start now. A job starts with a free
    generation slot and, with `ready` (the pacer's tokens at hand), a token."""
    if job_id not in waiting_ids:
        return 0
    starting = max(0, capacity - running) if ready is None else min(max(0, capacity - running), ready)
    return max(0, waiting_ids.index(job_id) + 1 - starting)


@dataclasses.dataclass
class _Run:
    """One run of a job: its progress (owned by this run), and what the final transaction will record."""

    job: Job
    progress: dict[str, Any]
    response_id: str | None = None
    generations: list[Generation] = dataclasses.field(default_factory=list)
    chain: ChainStep | None = None
    arrived: list[str] = dataclasses.field(default_factory=list)  # image call ids, as their events came
    prepared: dict[str, asyncio.Task[str]] = dataclasses.field(default_factory=dict)  # call id -> file id


class JobRunner:
    def __init__(
        self,
        *,
        store: Store,
        images: OpenAIImages,
        slack: SlackPublisher,
        capacity: int,
        pacing: Pacing | None = None,
    ):
        self._store = store
        self._images = images
        self._slack = slack
        self._capacity = capacity
        self._pacing: Pacing = pacing or Unpaced()  # the OpenAI account's rate limit: how many may start now
        self.free_slots: Callable[[], int] = lambda: 0  # this process's idle generation slots (set by the worker)
        self.queue_shown = False  # queue messages may be up (the last look found some, or one was posted here)

    # -- stage 1: a visible sign of work, within a second of the request --------------------------------------

    async def notice(self, job: Job) -> None:
        if job.kind is JobKind.NOTICE:
            await self._slack.post(job.channel_id, job.thread_ts, job.text)
            await self._store.finish(job.id, status=JobStatus.DONE)
            return
        if job.source != "command":
            await self._slack.react(job.channel_id, job.message_ts or "")
            await self._say_queued(job, job.thread_ts)
            await self._store.noticed(job.id)
            return
        root_ts = job.progress.get("root_ts")
        if not root_ts:
            text = messages.command_root(user_id=job.user_id, prompt=job.text, resolved=job.options.get("shown", {}))
            try:
                [root_ts, *_] = await self._slack.post(job.channel_id, None, text)
            except CannotPost:
                if job.response_url:
                    await self._slack.respond(job.response_url, messages.CANNOT_POST)
                await self._store.finish(job.id, status=JobStatus.FAILED, error="cannot post in channel")
                return
            await self._store.update_job(job.id, progress={**job.progress, "root_ts": root_ts})
        await self._slack.react(job.channel_id, root_ts)
        await self._say_queued(job, root_ts)
        await self._store.noticed(job.id, thread_ts=root_ts, thread_options=job.options.get("sticky", {}))

    async def sign(self, job: Job) -> None:
        """Only the sign of work, for a message job that starts generating at once (best effort)."""
        try:
            await self._slack.react(job.channel_id, job.message_ts or "")
        except Exception as e:  # noqa: BLE001 - the generation goes on without its hourglass
            log.warning("job %s: no sign of work (%s)", job.id, type(e).__name__)

    async def notice_failed(self, job: Job) -> None:
        """Slack failed us while showing the sign of work (after its retries). A generate job in an existing
        thread still runs (the sign is only a courtesy); a text-only notice, or a command whose thread could
        not be started, ends here, with a private word to the user where that is possible."""
        if job.kind is JobKind.GENERATE and job.source != "command":
            await self._store.noticed(job.id)
            return
        if job.response_url:
            await self._slack.respond(job.response_url, messages.SLACK_POST_FAILED)
        await self._store.finish(job.id, status=JobStatus.FAILED, error="slack: the first message failed")

    async def _say_queued(self, job: Job, thread_ts: str | None) -> None:
        """When every generation slot is taken, or the OpenAI account's rate limit holds requests back, say so,
        with the request's place in the queue."""
        if job.queue_ts or min(self.free_slots(), self._pacing.ready()) > max(1, self._capacity // 10):
            return  # far from full here: it starts at once (near capacity, the database says exactly)
        running, ahead = await self._store.queue_place(job.id)
        starting, paced = self._starting(running)
        position = ahead + 1 - starting
        if position > 0:
            [ts, *_] = await self._slack.post(job.channel_id, thread_ts, self._queued_text(position, paced))
            self.queue_shown = True
            await self._store.update_job(job.id, queue_ts=ts, queue_pos=position)

    def _starting(self, running: int) -> tuple[int, bool]:
        """How many waiting requests start right now (a free generation slot and a token from the pacer each),
        and whether it is the pacer that holds the others back."""
        slots, ready = max(0, self._capacity - running), self._pacing.ready()
        return min(slots, ready), ready < slots

    @staticmethod
    def _queued_text(position: int, paced: bool) -> str:
        return messages.paced(position) if paced else messages.queued(position)

    async def _wait_again(self, run: _Run) -> None:
        """OpenAI answered 429: the job waits for its turn again (the worker hands it back to the queue, where
        its id keeps its place). Its place is told, in the message that said it was its turn, or a new one."""
        job = run.job
        run.progress["paced"] = run.progress.get("paced", 0) + 1
        running, ahead = await self._store.queue_place(job.id)
        position = max(1, ahead + 1 - self._starting(running - 1)[0])  # `running` counts this job
        text, ts = self._queued_text(position, True), job.queue_ts
        try:
            if ts:
                await self._slack.update(job.channel_id, ts, text)
            else:
                [ts, *_] = await self._slack.post(job.channel_id, job.thread_ts, text)
            self.queue_shown = True
        except Exception as e:  # noqa: BLE001 - the job waits all the same; its place is told when it moves
            log.warning("job %s: could not tell its place in the queue: %s", job.id, type(e).__name__)
        await self._store.update_job(job.id, progress=dict(run.progress), queue_ts=ts, queue_pos=position)

    async def refresh_queue(self) -> None:
        """Move the queue messages along: each waiting request shows its current place."""
        running, waiting_ids, shown = await self._store.queue_messages()
        self.queue_shown = bool(shown)
        ready, paced = self._pacing.ready(), self._starting(running)[1]
        for job_id, channel, ts, shown_pos in shown:
            position = max(1, queue_position(job_id, running=running, waiting_ids=waiting_ids,
                                             capacity=self._capacity, ready=ready))
            if position != shown_pos and await self._store.move_queue_message(job_id, position):
                await self._slack.update(channel, ts, self._queued_text(position, paced))

    # -- stage 2: the generation itself -----------------------------------------------------------------------

    async def run(self, job: Job, *, sign: Awaitable[None] | None = None) -> bool:
        """Generate and publish. `sign`, when given, is the sign of work going up meanwhile: it is awaited
        before the sign is taken down. Returns whether the thread's next job is queued (it can run now)."""
        run = _Run(job=job, progress=dict(job.progress), response_id=job.response_id)
        sign_ts = job.message_ts or job.thread_ts or ""
        status, error = JobStatus.DONE, None
        if job.queue_ts:
            await self._slack.update(job.channel_id, job.queue_ts, messages.QUEUE_DONE_WAITING)
        try:
            await self._generate(run)
        except Paced as e:  # nothing was generated: the job waits for its turn again (or, often refused, ends)
            if run.progress.get("paced", 0) < MAX_PACED:
                await self._wait_again(run)
                raise
            status, error = JobStatus.FAILED, f"rate_limit: {e}"
            run.generations.append(dataclasses.replace(self._generation(run, None), status="failed", error=error))
            await self._tell(job, messages.RATE_LIMITED)
        except GenerationError as e:
            status, error = JobStatus.FAILED, f"{e.kind}: {e.detail}"
            run.generations.append(dataclasses.replace(self._generation(run, None), status="failed", error=error))
            await self._tell(job, e.user_message)
        except DownloadError as e:
            status, error = JobStatus.FAILED, f"download: {e}"
            await self._tell(job, messages.attachment_failed(str(e)))
        except SlackUnavailable as e:
            status, error = JobStatus.FAILED, f"slack: {e}"
            await self._tell(job, messages.SLACK_FAILED.format(reason=e))
        except CannotPost as e:
            status, error = JobStatus.FAILED, f"cannot post: {e}"
            if job.response_url:
                await self._slack.respond(job.response_url, messages.CANNOT_POST)
        except Exception as e:  # a bug or an unexpected answer: the user hears, the job ends, the worker lives
            log.exception("job %s failed unexpectedly", job.id)
            status, error = JobStatus.FAILED, f"internal: {type(e).__name__}: {e}"
            await self._tell(job, messages.INTERNAL)
        for leftover in run.prepared.values():  # uploads begun for images the answer did not keep
            leftover.cancel()
        await asyncio.gather(*run.prepared.values(), return_exceptions=True)
        if sign is not None:
            await sign
        await self._slack.unreact(job.channel_id, sign_ts)
        if job.queue_ts:
            await self._slack.delete(job.channel_id, job.queue_ts)
        if status is JobStatus.FAILED:
            await self._slack.react(job.channel_id, sign_ts, messages.FAILED_REACTION)
        later = await self._store.finish(job.id, status=status, error=error, generations=run.generations,
                                         chain=run.chain if status is JobStatus.DONE else None)
        log.info("job %s %s%s", job.id, status.value, f" ({error})" if error else "")
        return later

    async def _tell(self, job: Job, text: str) -> None:
        """Say what happened in the thread; never raises (the job is failing already)."""
        try:
            await self._slack.post(job.channel_id, job.thread_ts, text)
        except Exception as e:  # noqa: BLE001 - nothing more can be done for this job
            log.warning("could not tell job %s's thread about its failure: %s", job.id, type(e).__name__)

    async def _save(self, run: _Run, **changes: Any) -> None:
        run.progress.update(changes)
        await self._store.update_job(run.job.id, progress=dict(run.progress))

    def _stager(self, run: _Run, key: str) -> Callable[[dict[str, str]], Awaitable[None]]:
        """Records an upload's file id in the job's progress (before the upload is completed)."""
        async def stage(record: dict[str, str]) -> None:
            await self._save(run, uploads={**run.progress.get("uploads", {}), key: record})
        return stage

    def _image_arrived(self, run: _Run, image: Image) -> None:
        """An image is in, before the rest of the answer: start its upload (all but the sharing, whose
        message needs the whole answer) while the answer finishes streaming."""
        key = str(len(run.arrived))
        run.arrived.append(image.call_id)
        if key in run.progress.get("files", {}) or key in run.progress.get("uploads", {}):
            return  # begun before a restart: the usual path checks what Slack already has
        run.prepared[image.call_id] = asyncio.create_task(self._slack.prepare(
            data=image.data, filename=_filename(run.job, int(key), image.data), on_stage=self._stager(run, key)))

    async def _inputs(self, job: Job) -> tuple[tuple[str, bytes], ...]:
        inputs = []
        for f in job.files:
            url = f.get("url") or await self._slack.file_url(f["id"])
            inputs.append(await self._slack.download(url))
        return tuple(inputs)

    async def _last_image(self, thread: Thread | None) -> tuple[tuple[str, bytes], ...]:
        """The thread's newest image, to carry into a new chain when OpenAI has forgotten the old one."""
        if thread is None or not thread.last_image_file_id:
            return ()
        try:
            url = await self._slack.file_url(thread.last_image_file_id)
            return (await self._slack.download(url),)
        except Exception as e:  # noqa: BLE001 - starting over without it is still better than failing
            log.warning("could not fetch the thread's last image: %s", e)
            return ()

    async def _generate(self, run: _Run) -> None:
        job = run.job
        assert job.thread_ts is not None, "a generate job runs only once its thread is known"
        began = time.time()
        outcome = await self._ask(run)
        try:
            await self._publish(run, outcome, queued_ms=_ms(began - job.created_at),
                                generation_ms=_ms(time.time() - began))
        finally:
            outcome.release()

    async def _ask(self, run: _Run) -> Outcome:
        """One turn with OpenAI, or the pick-up of the one started before a restart."""
        job = run.job
        assert job.thread_ts is not None
        starts_thread = job.source != "command" and job.message_ts == job.thread_ts
        thread = None if starts_thread else await self._store.thread(
            team_id=job.team_id, channel_id=job.channel_id, thread_ts=job.thread_ts)
        turn = Turn(
            prompt=job.text,
            tool=job.options["tool"],
            force_image=job.force_image,
            images=await self._inputs(job),
            previous_response_id=thread.last_response_id if thread else None,
            metadata={"easel_job": str(job.id)},
        )
        notices = run.progress.setdefault("notices", list(job.options.get("notices", [])))

        async def started(response_id: str) -> None:
            run.response_id = response_id
            await self._store.update_job(job.id, response_id=response_id, progress=dict(run.progress))

        try:
            return await self._images.run(turn, resume_id=job.response_id, on_started=started,
                                          on_image=lambda image: self._image_arrived(run, image))
        except GenerationError as e:
            if e.kind != "chain_expired":
                raise
            log.info("job %s: chain %s expired; starting a new chain", job.id, turn.previous_response_id)
            turn = dataclasses.replace(
                turn, previous_response_id=None, images=turn.images + await self._last_image(thread)
            )
            notices.insert(0, messages.CHAIN_EXPIRED_NOTE)
            return await self._images.run(turn, on_started=started,
                                          on_image=lambda image: self._image_arrived(run, image))

    async def _publish(self, run: _Run, outcome: Outcome, *, queued_ms: int, generation_ms: int) -> None:
        job = run.job
        assert job.thread_ts is not None
        notices = list(run.progress.get("notices", []))
        # The model's words that come with an image go in the image's own message (one message, one upload
        # step, instead of a second message and a record that it was posted); long ones get their own.
        text = outcome.text.strip()
        caption = text if outcome.images and len(text) <= messages.CAPTION_LIMIT else ""
        files: dict[str, str] = dict(run.progress.get("files", {}))
        upload_ms: dict[str, int] = {}
        for i, image in enumerate(outcome.images):
            key = str(i)
            if key in files:  # posted before a restart
                continue
            t0 = time.time()
            files[key] = await self._slack.upload(
                reserved=run.job.progress.get("uploads", {}).get(key),  # from a run before a restart
                on_stage=self._stager(run, key),
                prepared=run.prepared.pop(image.call_id, None),
                channel=job.channel_id,
                thread_ts=job.thread_ts,
                data=image.data,
                filename=_filename(job, i, image.data),
                comment=messages.image_comment(
                    revised_prompt=image.revised_prompt, notices=notices, index=i, count=len(outcome.images),
                    caption=caption,
                ),
            )
            upload_ms[key] = _ms(time.time() - t0)
        if outcome.blocked and outcome.images and not run.progress.get("blocked_posted"):
            await self._slack.post(job.channel_id, job.thread_ts, messages.partial_moderation(outcome.blocked))
            await self._save(run, blocked_posted=True)
        if text and not caption and not run.progress.get("text_posted"):
            text = outcome.text
            if notices and not outcome.images:
                text = "\n".join([*(f":information_source: {n}" for n in notices), text])
            await self._slack.post(job.channel_id, job.thread_ts, text)
            await self._save(run, text_posted=True)
        base = self._generation(run, outcome, queued_ms=queued_ms, generation_ms=generation_ms)
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
        tool = job.options.get("tool", {})
        return Generation(
            job_id=job.id,
            team_id=job.team_id,
            channel_id=job.channel_id,
            thread_ts=job.thread_ts,
            user_id=job.user_id,
            request_text=job.text,
            options=tool,
            model=self._images.model,
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
