"""Publishing an answer in its thread: each image uploaded and shared once (its file id recorded before it is
shared), the model's words and the web pages it cited, the cost, and the generations the job's final
transaction records. A run of a job is `Run`: its progress (owned by the run) and what it will record."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot import buttons, messages, prices
from bot.answers import Image, Outcome
from bot.holding import Hold
from bot.metrics import Metrics
from bot.posts import Posts, ran_before
from bot.prices import Prices
from bot.progress import Drawing, JobPreviews
from bot.slack import EXTENSIONS, SlackAdapter, sniff
from storage.models import ChainStep, Generation, Job, JobProgress

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
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
    parent: str | None = None  # the response the turn chained on
    cost_micros: int | None = None  # what the turn cost, once OpenAI has said (for the job's budget)
    drawing: Drawing | None = None  # its status message while it draws (None: it has none)
    previews: JobPreviews | None = None  # what shows the turn's partial images in it

    def saved(self, **changes: Any) -> JobProgress:
        """The progress with `changes` (and the notices as they are now), as it is to be recorded."""
        if self.notices is not None:
            changes["notices"] = tuple(self.notices)
        self.progress = dataclasses.replace(self.progress, **changes)
        return self.progress



class Publisher:
    def __init__(self, *, slack: SlackAdapter, posts: Posts, prices: Prices, metrics: Metrics, chat_model: str,
                 buttons: bool = True):
        self._slack = slack
        self._posts = posts
        self._buttons = buttons  # the images' buttons follow them (not in a terminal: nothing could click them)
        self._prices = prices
        self._metrics = metrics
        self._chat_model = chat_model  # the configured conversational model (a run may have used another)

    async def save(self, run: Run, **changes: Any) -> None:
        await run.hold.update(progress=run.saved(**changes))

    def _stager(self, run: Run, key: str) -> Callable[[dict[str, str]], Awaitable[None]]:
        """Records an upload's file id in the job's progress (before the upload is completed)."""
        async def stage(record: dict[str, str]) -> None:
            await self.save(run, uploads={**run.progress.uploads, key: record})
        return stage

    def image_arrived(self, run: Run, image: Image) -> None:
        """An image is in, before the rest of the answer: start its upload (all but the sharing, whose
        message needs the whole answer) while the answer finishes streaming."""
        key = str(len(run.arrived))
        run.arrived.append(image.call_id)
        if key in run.progress.uploads:
            return  # begun before a restart: the usual path checks what Slack already has
        run.prepared[image.call_id] = asyncio.create_task(self._slack.prepare(
            data=image.data, filename=_filename(run.job, int(key), image.data), on_stage=self._stager(run, key)))

    async def publish(self, run: Run, outcome: Outcome, *, queued_ms: int, generation_ms: int) -> None:
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
        cost = self._prices.cost(chat_model=run.chat_model or self._chat_model, image_model=sent.get("model"),
                                 usage=outcome.usage, tool_usage=outcome.tool_usage)
        run.cost_micros = cost.micros
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
                    cost=prices.shown(cost.micros) if job.options.show_cost else "",
                ),
            )
            upload_ms[key] = elapsed_ms(time.time() - t0)
        if self._buttons and outcome.images and not run.progress.buttons_posted:
            await run.hold.confirm()
            await self._posts.once(job, job.thread_ts, buttons.FALLBACK_TEXT, what="buttons",
                                   resumed=ran_before(job) or run.publications > 1,
                                   blocks=buttons.blocks([files[str(i)] for i in range(len(outcome.images))]))
            await self.save(run, buttons_posted=True)
        if outcome.blocked and outcome.images and not run.progress.blocked_posted:
            await run.hold.confirm()
            await self._posts.once(job, job.thread_ts, messages.partial_moderation(outcome.blocked), what="blocked",
                                   resumed=ran_before(job))
            await self.save(run, blocked_posted=True)
        if text and not caption and not run.progress.text_posted:
            text = "\n".join(part for part in (messages.escape(outcome.text).rstrip(), links) if part)
            if notices and not outcome.images:
                text = "\n".join([*(f":information_source: {n}" for n in notices), text])
            await run.hold.confirm()
            await self._posts.once(job, job.thread_ts, text, what="text", resumed=ran_before(job))
            await self.save(run, text_posted=True)
        base = dataclasses.replace(self.generation(run, outcome, queued_ms=queued_ms, generation_ms=generation_ms),
                                   cost_micros=cost.micros, cost_unpriced=bool(cost.unpriced))
        if cost.unpriced:
            log.info("job %s: no price for %s in the table (PRICES); counted at a stand-in rate", job.id,
                     ", ".join(cost.unpriced))
        self._metrics.generation_seconds.labels(image_model, quality).observe(generation_ms / 1000)
        self._metrics.cost_dollars.labels(image_model).inc(cost.micros / 1_000_000)
        if outcome.images:
            self._metrics.images_posted.labels(image_model).inc(len(outcome.images))
        for i, image in enumerate(outcome.images):
            width, height = buttons.dimensions(image.data)
            run.generations.append(dataclasses.replace(
                base,
                status="posted",
                width=width,
                height=height,
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

    def failure(self, run: Run, error: str, *, usage: dict[str, Any] | None = None,
                tool_usage: dict[str, Any] | None = None) -> Generation:
        """The record of a turn that produced no answer; with what OpenAI billed for it, if it said (a
        moderation block is billed)."""
        failed = dataclasses.replace(self.generation(run, None), status="failed", error=error)
        if usage is None and tool_usage is None:
            return failed
        sent = run.tool or run.job.options.tool
        cost = self._prices.cost(chat_model=run.chat_model or self._chat_model, image_model=sent.get("model"),
                                 usage=usage, tool_usage=tool_usage)
        self._metrics.cost_dollars.labels(str(sent.get("model") or "unknown")).inc(cost.micros / 1_000_000)
        run.cost_micros = cost.micros
        return dataclasses.replace(failed, usage=usage, tool_usage=tool_usage, cost_micros=cost.micros,
                                   cost_unpriced=bool(cost.unpriced))

    def generation(self, run: Run, outcome: Outcome | None, **timings: Any) -> Generation:
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
            model=run.chat_model or self._chat_model,
            image_model=tool.get("model"),
            response_id=outcome.response_id if outcome else run.response_id,
            parent_response_id=run.parent,
            usage=outcome.usage if outcome else None,
            tool_usage=outcome.tool_usage if outcome else None,
            status="failed",
            **timings,
        )



def _filename(job: Job, index: int, data: bytes) -> str:
    return f"easel-{job.id}-{index + 1}.{EXTENSIONS.get(sniff(data) or '', 'png')}"


def elapsed_ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))
