"""Posts that are not images (a `/imagine` thread's first message, text answers, an image's buttons, notices,
failures told) made once, even across a crash: each carries Slack message metadata naming its job and which
post it is, and a job taken again (its earlier run may have posted and died before its progress said so) looks
for it in Slack before posting again. A first run looks for nothing: it costs no call."""

from __future__ import annotations

from typing import Any

from bot.slack import PostTag, SlackAdapter
from bot.slack_budget import Priority
from storage.models import Job


class Posts:
    def __init__(self, slack: SlackAdapter):
        self._slack = slack

    async def once(self, job: Job, thread_ts: str | None, text: str, *, what: str, resumed: bool,
                   priority: Priority = Priority.RESULT, blocks: list[dict[str, Any]] | None = None) -> list[str]:
        """Post `text` (with `blocks`, if any) for `job` into `thread_ts` (None: a new message in the channel),
        unless a run before this one (`resumed`) posted it already. Returns the message timestamps, found or
        new (none when a post below RESULT `priority` found no budget left for it)."""
        tag = PostTag(job.id, what)
        posted = await self._slack.tagged(job.channel_id, thread_ts, tag, since=job.created_at) if resumed else {}
        return await self._slack.post(job.channel_id, thread_ts, text, tag=tag, posted=posted, priority=priority,
                                      blocks=blocks)


def noticed_before(job: Job) -> bool:
    """The job was claimed for its sign of work before this claim (whose run may have posted, then died)."""
    return job.lease_no > 1


def ran_before(job: Job) -> bool:
    """The job was claimed to run before this claim."""
    return job.attempts > 1
