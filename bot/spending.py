"""A job's budget, as its run meets it: the worst case reserved right before the turn is sent (or the request
kept back, and why said), and the reservation settled to what the run cost once the job ends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.budgets import AwaitsConfirmation, Budgets, NotSent, OverBudget
from bot.imaging import Turn
from bot.posts import Posts, ran_before
from bot.publication import Run
from bot.slack import SlackAdapter
from storage.models import JobStatus


class Spending:
    def __init__(self, *, budgets: Budgets, slack: SlackAdapter, posts: Posts):
        self._budgets = budgets
        self._slack = slack
        self._posts = posts

    async def before_send(self, run: Run, turn: Turn, *, retry: bool = False) -> None:
        """Reserve the turn's worst case (a thread's chain may bring its last image back: counted as an input),
        or raise NotSent. A job that reserved in an earlier run finds its reservation; a turn tried once more
        (`retry`: on another model, say) raises it to its own worst case first, if that is dearer; a retry is
        never held back to be confirmed (the request was let through already)."""
        job = run.job
        await run.hold.persist(lambda: self._budgets.before_send(
            job, tool=turn.tool, chat_model=turn.model, confirmed=retry or job.options.confirmed_from is not None,
            input_images=len(turn.images) + (1 if turn.previous_response_id else 0)))

    async def not_sent(self, run: Run, e: NotSent,
                       tell: Callable[[Run, str], Awaitable[None]]) -> tuple[JobStatus, str]:
        """Over a limit: the requester is told (privately for a slash command) and the job fails. Awaiting
        the requester's confirmation: a button in the thread, and the job ends here (a click starts its copy)."""
        job = run.job
        if isinstance(e, AwaitsConfirmation):
            await run.hold.confirm()
            # (a run before this one may have asked already, and died before it said so: found, not asked again)
            [ts, *_] = await self._posts.once(job, job.thread_ts, e.text, what="confirm", resumed=ran_before(job),
                                             blocks=e.blocks or [])
            await run.hold.update(progress=run.saved(confirm_ts=ts))
            return JobStatus.DONE, "awaits confirmation"
        assert isinstance(e, OverBudget)
        if job.response_url:
            await run.hold.confirm()
            await self._slack.respond(job.response_url, e.text)
        else:
            await tell(run, e.text)
        return JobStatus.FAILED, f"budget: {e.refused.counter.scope.split(':', 1)[0]} limit"

    async def settle(self, run: Run, status: JobStatus) -> None:
        """What the run cost (nothing, if OpenAI billed nothing); a failed job's reservation is released."""
        await run.hold.persist(lambda: self._budgets.settle(run.job.id, cost_micros=run.cost_micros,
                                                            failed=status is JobStatus.FAILED))
