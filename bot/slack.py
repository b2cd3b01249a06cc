"""The Slack output side: messages, reactions, image uploads, and downloads of files users attach.

The bot token is sent only to the configured Web API (through slack_sdk) and, for downloads, only to the file
paths of Slack's file host (`https://files.slack.com/files-pri/...`, `/files-tmb/...`), or of the configured
Web API's host when that is not Slack's own (a local Slack in tests). Redirects are followed by hand so the
token never goes anywhere else.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import limits, messages
from bot.slack_budget import CURRENT_TEAM, Budget, Priority, Unlimited

log = logging.getLogger(__name__)

SLACK_FILE_HOST = "files.slack.com"
SLACK_API_HOST = "slack.com"
FILE_PATHS = ("/files-pri/", "/files-tmb/")  # a file's own bytes and its thumbnails; nothing else gets the token
# After a completion whose answer was lost: how long to wait before each look at the file (Slack shares a
# completed file asynchronously, so a share can show a few seconds after the completion went through).
SHARE_LOOKS = (0.0, 1.0, 2.0, 4.0)
_CANNOT_POST = ("not_in_channel", "channel_not_found", "is_archived", "restricted_action")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


POST_EVENT = "easel_post"  # the event_type of the metadata on Easel's posts


@dataclasses.dataclass(frozen=True)
class PostTag:
    """What a post is: the job it answers and which of its posts (`what`: "root", "text", "notice", ...). Carried
    by each part of the message as Slack message metadata, so that a job taken again after a crash can find
    what it posted before its progress recorded it."""

    job_id: int
    what: str

    def metadata(self, part: int) -> dict[str, Any]:
        return {"event_type": POST_EVENT, "event_payload": {"job": self.job_id, "post": self.what, "part": part}}

    def part_of(self, metadata: Any) -> int | None:
        """The part number, if `metadata` is this post's."""
        if not isinstance(metadata, dict) or metadata.get("event_type") != POST_EVENT:
            return None
        payload = metadata.get("event_payload") or {}
        if str(payload.get("job")) != str(self.job_id) or payload.get("post") != self.what:
            return None
        try:
            return int(payload.get("part", 0))
        except (TypeError, ValueError):
            return None


class CannotPost(Exception):
    """Slack will not let Easel post in this conversation."""


class NotInstalled(Exception):
    """Easel is not installed in this workspace (any more): nothing can be posted there."""


class SlackUnavailable(Exception):
    """Slack kept failing after the retries."""


class DownloadError(Exception):
    """An attachment could not be used; str(e) says why, for the user."""


def slack_error(e: SlackApiError) -> str:
    """Slack's error code from a failed call, whatever came back: Slack's JSON, or a page or text from
    something in front of it (a 414 for a URL too long, a proxy's 502), which has no code of its own."""
    data = getattr(e.response, "data", None)
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    status = getattr(e.response, "status_code", None) or getattr(e.response, "status", None)
    return f"http_{status}" if status else "unreadable_answer"


class TellingRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's retry of a 429 (after its Retry-After), which first tells the budget (`limited`), so that
    the other calls to that method wait too."""

    def __init__(self, budget: Budget, *, max_retry_count: int = 3):
        super().__init__(max_retry_count=max_retry_count)
        self._budget = budget

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        if response is not None and response.status_code == 429:
            method = request.url.rsplit("/", 1)[-1].split("?", 1)[0]
            headers = {k.lower(): v for k, v in (response.headers or {}).items()}
            value = headers.get("retry-after")
            value = value[0] if isinstance(value, list) and value else value
            try:
                seconds = float(value) if value is not None else 1.0
            except (TypeError, ValueError):
                seconds = 1.0
            try:
                await self._budget.limited(CURRENT_TEAM.get(), method, seconds)
            except Exception as e:  # noqa: BLE001 - the retry goes ahead all the same
                log.warning("could not record Slack's rate limit on %s: %s", method, type(e).__name__)
        await super().prepare_for_next_attempt_async(state=state, request=request, response=response, error=error)


def retry_handlers(*, rate_limit_retries: int = 3, budget: Budget | None = None) -> list[Any]:
    """What the Web API client retries on its own: connection errors, 429 (after Retry-After, telling
    `budget` first), 5xx."""
    limited = TellingRateLimitHandler(budget, max_retry_count=rate_limit_retries) if budget is not None \
        else AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries)
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        limited,
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]


def sniff(data: bytes) -> str | None:
    """The image type from the bytes themselves."""
    for magic, mimetype in _MAGIC:
        if data.startswith(magic):
            return mimetype
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


class SlackAdapter:
    """Posts into threads through the given `AsyncWebClient`, or, with installs in many workspaces (`tokens`),
    through a client with the token of the workspace whose job is running (`use_team`). Every call made for a
    job first takes its tokens from the workspace's `budget` (`bot.slack_budget`), at the call's priority: a
    result waits for them; a cosmetic call that finds none is not made (the methods say which return False)."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        session: aiohttp.ClientSession,
        attempts: int = 2,
        backoff: float = 0.5,
        tokens: Callable[[str], Awaitable[str | None]] | None = None,
        budget: Budget | None = None,
    ):
        self._client = client
        self._budget: Budget = budget or Unlimited()
        self._session = session  # shared with `client`; closed here
        self._tokens = tokens
        # this task's (one job's) clients with its workspace's token: (client, once)
        self._team: contextvars.ContextVar[tuple[AsyncWebClient, AsyncWebClient] | None] = contextvars.ContextVar(
            f"easel-slack-clients-{id(self)}", default=None)
        self._attempts = attempts
        self._backoff = backoff
        self._once = self._sends_once(client.token)
        api = urlsplit(client.base_url)
        self._allowed = {("https", SLACK_FILE_HOST)}
        if api.hostname != SLACK_API_HOST:  # a Slack of its own (tests): its file paths, on its host
            self._allowed.add((api.scheme, api.netloc))

    def _sends_once(self, token: str | None) -> AsyncWebClient:
        """For the one call that shares an image: only 429s are retried (Slack did nothing then). A 5xx or a
        lost connection may come after Slack committed the share; sent again, it would share it twice."""
        base = self._client
        limited = [h for h in base.retry_handlers if isinstance(h, AsyncRateLimitErrorRetryHandler)]
        return AsyncWebClient(token=token, base_url=base.base_url, timeout=base.timeout, session=self._session,
                              retry_handlers=limited or [AsyncRateLimitErrorRetryHandler(max_retry_count=3)])

    @property
    def client(self) -> AsyncWebClient:
        team = self._team.get()
        return team[0] if team is not None else self._client

    @property
    def once(self) -> AsyncWebClient:
        team = self._team.get()
        return team[1] if team is not None else self._once

    async def use_team(self, team_id: str) -> None:
        """Make the calls of this task (one job's) with `team_id`'s token. Raises NotInstalled if Easel has no
        token for that workspace (any more). With one token, only the budgets are that workspace's."""
        CURRENT_TEAM.set(team_id)
        if self._tokens is None:
            return
        token = await self._tokens(team_id)
        if token is None:
            raise NotInstalled(team_id)
        base = self._client
        self._team.set((AsyncWebClient(token=token, base_url=base.base_url, retry_handlers=base.retry_handlers,
                                       session=self._session, timeout=base.timeout), self._sends_once(token)))

    async def close(self) -> None:
        await self._session.close()

    async def admit(self, method: str, priority: Priority, *, channel: str | None = None, wait: bool = True) -> bool:
        """Take the tokens of one call to `method` (dotted, as Slack names it) from this task's workspace's
        budget; False when the call is to go without (only below RESULT priority, or with `wait=False`)."""
        return await self._budget.admit(CURRENT_TEAM.get(), method, priority, channel=channel, wait=wait)

    async def give_back(self, method: str) -> None:
        """Return one call's tokens to this task's workspace's budget (taken, then not used)."""
        await self._budget.give_back(CURRENT_TEAM.get(), method)

    async def _call(self, method: str, *, priority: Priority = Priority.RESULT, admitted: bool = False,
                    **kwargs: Any) -> Any:
        """A Web API call (the client's method name), after its tokens (unless `admitted` took them already)."""
        if not admitted:
            await self.admit(method.replace("_", "."), priority, channel=kwargs.get("channel"))
        try:
            return await getattr(self.client, method)(**kwargs)
        except SlackApiError as e:
            error = slack_error(e)
            if error in _CANNOT_POST:
                raise CannotPost(error) from e
            raise

    async def permalink(self, channel: str, ts: str) -> str | None:
        """A link to a message, for a person looking (so it does not wait for its budget); None when there is
        no budget for it now or Slack gives none."""
        if not await self.admit("chat.getPermalink", Priority.RESULT, wait=False):
            return None
        try:
            found = await self.client.chat_getPermalink(channel=channel, message_ts=ts)
        except SlackApiError as e:
            log.info("no permalink for %s/%s: %s", channel, ts, slack_error(e))
            return None
        link = found.get("permalink")
        return link if isinstance(link, str) else None

    async def publish_home(self, user_id: str, view: dict[str, Any]) -> bool:
        """Publish a person's Home tab (`views.publish`); False if Slack refused it."""
        try:
            await self._call("views_publish", user_id=user_id, view=view)
        except SlackApiError as e:
            log.warning("views.publish failed: %s", slack_error(e))
            return False
        return True

    async def is_workspace_admin(self, user_id: str) -> bool:
        """Is this person an admin or owner of the workspace (`users.info`)? False when Slack will not say."""
        try:
            await self.admit("users.info", Priority.RESULT)
            user = (await self.client.users_info(user=user_id)).get("user") or {}
        except SlackApiError as e:
            log.warning("users.info failed: %s", slack_error(e))
            return False
        return bool(user.get("is_admin") or user.get("is_owner") or user.get("is_primary_owner"))

    async def usergroups(self) -> list[dict[str, Any]] | str:
        """The workspace's enabled user groups (`usergroups.list`), or Slack's error code."""
        try:
            await self.admit("usergroups.list", Priority.RESULT)
            found = await self.client.usergroups_list()
        except SlackApiError as e:
            return slack_error(e)
        return [g for g in found.get("usergroups") or [] if isinstance(g, dict)]

    async def usergroup_members(self, usergroup: str) -> frozenset[str] | str:
        """The members of a user group (`usergroups.users.list`), or Slack's error code (`no_such_subteam`)."""
        try:
            await self.admit("usergroups.users.list", Priority.RESULT)
            found = await self.client.usergroups_users_list(usergroup=usergroup)
        except SlackApiError as e:
            return slack_error(e)
        return frozenset(u for u in found.get("users") or [] if isinstance(u, str))

    async def ephemeral(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> None:
        """A message only `user` sees (best effort: a refusal that cannot be said changes nothing)."""
        try:
            await self.admit("chat.postEphemeral", Priority.RESULT, channel=channel)
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError as e:
            log.warning("chat.postEphemeral failed: %s", slack_error(e))

    async def react(self, channel: str, ts: str, name: str = messages.WORKING_REACTION, *,
                    priority: Priority = Priority.SIGN) -> bool:
        """Best effort: a missing reaction must not fail a request. False if it was not added (no budget left
        for it, or Slack refused)."""
        if not await self.admit("reactions.add", priority):
            return False
        try:
            await self.client.reactions_add(channel=channel, timestamp=ts, name=name)
        except SlackApiError as e:
            if slack_error(e) != "already_reacted":
                log.warning("reactions.add failed: %s", slack_error(e))
                return False
        return True

    async def unreact(self, channel: str, ts: str, name: str = messages.WORKING_REACTION, *,
                      wait: bool = True) -> bool:
        """Best effort: take a reaction down. False if it was not (with `wait=False`: no token for it now)."""
        if not await self.admit("reactions.remove", Priority.CLEANUP, wait=wait):
            return False
        try:
            await self.client.reactions_remove(channel=channel, timestamp=ts, name=name)
        except SlackApiError as e:
            if slack_error(e) != "no_reaction":
                log.warning("reactions.remove failed: %s", slack_error(e))
        return True

    async def update(self, channel: str, ts: str, text: str, *, blocks: list[dict[str, Any]] | None = None,
                     priority: Priority = Priority.COSMETIC) -> bool:
        """Best effort: rewrite one of Easel's messages (with `blocks`, those). False if it was not (no budget
        left for a cosmetic update, or Slack refused)."""
        if not await self.admit("chat.update", priority):
            return False
        extra = {"blocks": blocks} if blocks is not None else {}
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text, **extra)
        except SlackApiError as e:
            log.warning("chat.update failed: %s", slack_error(e))
            return False
        return True

    async def delete(self, channel: str, ts: str, *, wait: bool = True) -> bool:
        """Best effort: remove one of Easel's messages. False if it was not (with `wait=False`: no token for it
        now); a message already gone, or one Slack refused to delete, counts as done."""
        if not await self.admit("chat.delete", Priority.CLEANUP, wait=wait):
            return False
        try:
            await self.client.chat_delete(channel=channel, ts=ts)
        except SlackApiError as e:
            if slack_error(e) != "message_not_found":
                log.warning("chat.delete failed: %s", slack_error(e))
        return True

    async def delete_file(self, file_id: str, *, wait: bool = True) -> bool:
        """Best effort: remove a file Easel uploaded (a preview). False if it was not (with `wait=False`: no
        token for it now)."""
        if not await self.admit("files.delete", Priority.CLEANUP, wait=wait):
            return False
        try:
            await self.client.files_delete(file=file_id)
        except SlackApiError as e:
            if slack_error(e) not in ("file_not_found", "file_deleted"):
                log.warning("files.delete failed: %s", slack_error(e))
        return True

    async def post(self, channel: str, thread_ts: str | None, text: str, *, tag: PostTag | None = None,
                   posted: dict[int, str] | None = None, priority: Priority = Priority.RESULT,
                   blocks: list[dict[str, Any]] | None = None) -> list[str]:
        """Post `text` (split where Slack needs it) into the thread; returns the message timestamps. With `tag`,
        each part carries message metadata naming the job, the post and the part (`tagged` finds them again);
        parts in `posted` (part -> ts, found so) are not posted again. Below RESULT `priority`, a post that
        finds no budget left is not made: nothing is returned. `blocks` go with a text of one part."""
        if priority > Priority.RESULT and not posted and \
                not await self.admit("chat.postMessage", priority, channel=channel):
            return []
        admitted = priority > Priority.RESULT  # (the first part's tokens were taken above)
        stamps = []
        for i, part in enumerate(messages.split_for_slack(text)):
            if posted and i in posted:
                stamps.append(posted[i])
                continue
            extra: dict[str, Any] = {"metadata": tag.metadata(i)} if tag is not None else {}
            if blocks is not None:
                extra["blocks"] = blocks
            response = await self._call("chat_postMessage", admitted=admitted, channel=channel, thread_ts=thread_ts,
                                        text=part, unfurl_links=False, **extra)
            admitted = False
            stamps.append(response["ts"])
        return stamps

    async def tagged(self, channel: str, thread_ts: str | None, tag: PostTag, *, since: float) -> dict[int, str]:
        """The parts of the post `tag` names that are in Slack already (part -> ts): in the thread
        (conversations.replies), or for a post that starts a thread, among the channel's messages since `since`
        (conversations.history), read with their metadata. Empty when Slack will not show them (Easel not in
        the channel, a rate limit): the post is then made as if none were there."""
        found: dict[int, str] = {}
        args: dict[str, Any] = {"channel": channel, "include_all_metadata": True, "limit": 200}
        if thread_ts:
            method, args["ts"] = "conversations_replies", thread_ts
        else:
            method, args["oldest"] = "conversations_history", f"{max(0.0, since - 60):.6f}"
        try:
            for _ in range(10):  # pages: a thread or an hour of a channel is rarely more than one
                await self.admit(method.replace("_", "."), Priority.RESULT)
                page = await getattr(self.client, method)(**args)
                for message in page.get("messages") or []:
                    part = tag.part_of(message.get("metadata"))
                    if part is not None:
                        found.setdefault(part, str(message["ts"]))
                cursor = (page.get("response_metadata") or {}).get("next_cursor")
                if not cursor or not page.get("has_more", True):
                    break
                args["cursor"] = cursor
        except SlackApiError as e:
            log.warning("could not look for an earlier post (%s): %s", method, slack_error(e))
        return found

    async def prepare(
        self,
        *,
        data: bytes,
        filename: str,
        on_stage: Callable[[dict[str, str]], Awaitable[None]] | None = None,
        priority: Priority = Priority.RESULT,
    ) -> str:
        """Steps 1 and 2 of Slack's upload (a file id, then the bytes), which share nothing yet: they can run
        before it is known what the image's message will say. Returns the file id. Not retried here."""
        ticket = await self._call("files_getUploadURLExternal", filename=filename, length=len(data),
                                  priority=priority)
        file_id = str(ticket["file_id"])
        # The file id is recorded while the bytes go up (it must be recorded before the upload is completed,
        # not before the bytes are sent: Slack shows no file that is not completed).
        staged = asyncio.ensure_future(on_stage({"file_id": file_id, "stage": "completing"})) \
            if on_stage is not None else None
        try:
            await self._put_bytes(ticket["upload_url"], data)
        finally:
            if staged is not None:
                await staged
        return file_id

    async def upload_preview(self, *, data: bytes, filename: str) -> str | None:
        """Upload a preview privately (completed, shared nowhere: it shows only in a status message's image
        block); its file id, or None when the workspace's budget has nothing to spare for it or Slack failed.
        Never retried: a preview is worth one try."""
        if not await self.admit("files.getUploadURLExternal", Priority.PREVIEW):
            return None
        if not await self.admit("files.completeUploadExternal", Priority.PREVIEW):
            await self.give_back("files.getUploadURLExternal")  # the first step's token, not used
            return None
        try:
            ticket = await self.client.files_getUploadURLExternal(filename=filename, length=len(data))
            file_id = str(ticket["file_id"])
            await self._put_bytes(ticket["upload_url"], data)
            await self.client.api_call("files.completeUploadExternal", data={
                "files": json.dumps([{"id": file_id, "title": "Preview"}])})
        except (SlackApiError, _Transient, aiohttp.ClientError, TimeoutError) as e:
            log.info("a preview was not uploaded: %s", slack_error(e) if isinstance(e, SlackApiError) else
                     type(e).__name__)
            return None
        return file_id

    async def upload(
        self,
        *,
        channel: str,
        thread_ts: str,
        data: bytes,
        filename: str,
        comment: str,
        reserved: dict[str, str] | None = None,
        on_stage: Callable[[dict[str, str]], Awaitable[None]] | None = None,
        prepared: Awaitable[str] | None = None,
        before_sharing: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """Upload one image into the thread with its comment; returns the Slack file id.

        The three steps of Slack's upload are done here (not by `files_upload_v2`) so that the file id can be
        recorded before sharing (`on_stage`). Given that record again after a restart (`reserved`), an upload
        that was already completed is recognised instead of posted twice. `prepared` is `prepare()` of these
        bytes already under way (started before the comment was known). Retried as a whole when a step fails;
        when the step that shares the file fails, Slack is asked whether the share went through all the same
        (its answer lost) before anything is done again. `before_sharing` runs right before the step that
        makes the file visible (and may raise to stop it). Raises SlackUnavailable when Slack keeps failing,
        or cannot say whether the image is shared already.
        """
        if reserved and reserved.get("stage") == "completing" and await self._shared(reserved["file_id"], channel):
            return reserved["file_id"]
        for attempt in range(1, self._attempts + 1):
            sharing: str | None = None
            try:
                if prepared is not None:
                    step, prepared = prepared, None
                    file_id = await step
                else:
                    file_id = await self.prepare(data=data, filename=filename, on_stage=on_stage)
                if before_sharing is not None:
                    await before_sharing()
                sharing = file_id
                await self._share_once(file_id=file_id, title=filename, channel=channel, thread_ts=thread_ts,
                                       comment=comment)
                return file_id
            except CannotPost:
                raise
            except (SlackApiError, _Transient, aiohttp.ClientError, TimeoutError) as e:
                reason = slack_error(e) if isinstance(e, SlackApiError) else str(e) or type(e).__name__
                log.warning("upload attempt %d/%d failed: %s", attempt, self._attempts, reason)
                if sharing is not None and await self._shared(sharing, channel):
                    log.info("file %s was shared all the same (the answer to its completion was lost)", sharing)
                    return sharing
                if attempt == self._attempts:
                    raise SlackUnavailable(str(reason)) from e
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _share_once(self, *, file_id: str, title: str, channel: str, thread_ts: str, comment: str) -> None:
        """Step 3 of an upload, which shares the file in the thread with its message: sent once (see `_once`).
        The arguments go in the form body: slack_sdk's `files_completeUploadExternal` puts them in the URL,
        where a long or non-ASCII message (percent-encoded, up to nine characters for one) passes the 8 KB
        Slack accepts in a request line."""
        await self.admit("files.completeUploadExternal", Priority.RESULT)
        try:
            await self.once.api_call("files.completeUploadExternal", data={
                "files": json.dumps([{"id": file_id, "title": title}]),
                "channel_id": channel,
                "thread_ts": thread_ts,
                "initial_comment": comment,
            })
        except SlackApiError as e:
            if slack_error(e) in _CANNOT_POST:
                raise CannotPost(slack_error(e)) from e
            raise

    async def _shared(self, file_id: str, channel: str) -> bool:
        """Whether Slack shows this file shared in `channel` (files.info: its shares and channels). A file that
        Slack knows but shows nowhere yet is looked at again for a few seconds (SHARE_LOOKS): Slack shares a
        completed file asynchronously. Raises SlackUnavailable when Slack cannot say."""
        for wait in SHARE_LOOKS:
            await asyncio.sleep(wait)
            try:
                await self.admit("files.info", Priority.RESULT)
                info = (await self.client.files_info(file=file_id))["file"]
            except SlackApiError as e:
                error = e.response.get("error") if e.response is not None else None
                if error in ("file_not_found", "file_deleted"):
                    return False
                raise SlackUnavailable(f"files.info answered {error}") from e
            except (aiohttp.ClientError, TimeoutError) as e:
                raise SlackUnavailable(f"files.info failed: {type(e).__name__}") from e
            shares = info.get("shares") or {}
            if any(channel in (shares.get(kind) or {}) for kind in ("public", "private")) or any(
                channel in (info.get(kind) or []) for kind in ("channels", "groups", "ims")
            ):
                return True
        log.warning("file %s is known to Slack but shows no share in %s after %.0f s", file_id, channel,
                    sum(SHARE_LOOKS))
        return False

    async def _put_bytes(self, url: str, data: bytes) -> None:
        """Step 2 of an upload: the raw bytes, with no token (the URL itself is the credential)."""
        async with self._session.post(url, data=data, headers={"Content-Type": "application/octet-stream"}) as r:
            if r.status == 429 or r.status >= 500:
                raise _Transient(f"upload answered HTTP {r.status}", None)
            if r.status != 200:
                raise SlackApiError(f"upload answered HTTP {r.status}", {"ok": False, "error": f"http_{r.status}"})

    async def respond(self, response_url: str, text: str, *, replace_original: bool | None = None) -> None:
        """A private answer to a slash command, through its response_url (no token involved); for a button,
        `replace_original` replaces the message the button was on."""
        try:
            await AsyncWebhookClient(response_url, timeout=10).send(
                text=text, response_type="ephemeral", replace_original=replace_original)
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("response_url failed: %s", type(e).__name__)

    # -- downloads ---------------------------------------------------------------------------------------

    def token_may_go_to(self, url: str) -> bool:
        """Only a file's path on Slack's file host: not the Web API's methods (`/api/auth.revoke`), not a path
        that climbs out of the file paths, not a URL with credentials of its own."""
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) not in self._allowed or parts.username or parts.password:
            return False
        path = unquote(parts.path)
        return path.startswith(FILE_PATHS) and "\\" not in path and \
            not any(segment in (".", "..") for segment in path.split("/"))

    async def file_url(self, file_id: str) -> str:
        """The download URL of a Slack file, from files.info."""
        try:
            info = (await self._call("files_info", file=file_id))["file"]
        except SlackApiError as e:
            raise DownloadError(f"Slack could not find it ({slack_error(e)}).") from None
        url = info.get("url_private_download") or info.get("url_private")
        if not isinstance(url, str):
            raise DownloadError("Slack gave no address to download it from.")
        return url

    async def download(self, url: str, dest: Path, *, limit: int, pace: limits.Pace = limits.PACE) -> int:
        """Fetch an attachment with the bot token into the file `dest`, streamed (never held in memory whole),
        at most `limit` bytes, at `pace`. Returns its size. Raises DownloadError, saying why for the user."""
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._download_once(url, dest, limit=limit, pace=pace)
            except _Transient as e:
                if attempt == self._attempts:
                    raise DownloadError(f"Slack did not deliver the file ({e}).") from None
                await asyncio.sleep(e.retry_after if e.retry_after is not None else self._backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _download_once(self, url: str, dest: Path, *, limit: int, pace: limits.Pace) -> int:
        try:
            async with asyncio.timeout(pace.deadline):
                return await self._fetch(url, dest, limit=limit, pace=pace)
        except aiohttp.ServerTimeoutError as e:  # `read_gap` seconds without a byte (a TimeoutError too)
            raise _Transient("Slack stopped sending it", None) from e
        except TimeoutError:
            raise DownloadError(messages.download_too_long(pace.deadline)) from None
        except aiohttp.ClientError as e:
            raise _Transient(type(e).__name__, None) from e

    async def _fetch(self, url: str, dest: Path, *, limit: int, pace: limits.Pace) -> int:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=pace.read_gap)
        for _ in range(4):
            if not self.token_may_go_to(url):
                raise DownloadError("its address is not on Slack's file host, so Easel will not send its token there.")
            headers = {"Authorization": f"Bearer {self.client.token}"}
            async with self._session.get(url, headers=headers, allow_redirects=False, timeout=timeout) as r:
                if r.status in (301, 302, 303, 307, 308) and "Location" in r.headers:
                    url = urljoin(url, r.headers["Location"])
                    continue
                if r.status == 429 or r.status >= 500:
                    retry = r.headers.get("Retry-After")
                    raise _Transient(f"HTTP {r.status}", float(retry) if retry and retry.isdigit() else None)
                if r.status != 200:
                    raise DownloadError(f"Slack answered HTTP {r.status}.")
                if r.content_type == "text/html":
                    raise DownloadError(messages.HTML_INSTEAD)
                return await _save(r, dest, limit=limit, pace=pace)
        raise DownloadError("Slack redirected the download too many times.")


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None):
        super().__init__(reason)
        self.retry_after = retry_after


async def _save(response: aiohttp.ClientResponse, dest: Path, *, limit: int, pace: limits.Pace) -> int:
    """Stream the body into `dest`, refusing it as soon as it is larger than `limit` or slower than `pace`."""
    if response.content_length is not None and response.content_length > limit:
        raise DownloadError(messages.too_large(limit))
    started = time.monotonic()
    size = 0
    with dest.open("wb") as out:
        async for chunk in response.content.iter_chunked(256 * 1024):
            size += len(chunk)
            if size > limit:
                raise DownloadError(messages.too_large(limit))
            out.write(chunk)
            elapsed = time.monotonic() - started
            if elapsed > pace.grace and size < pace.min_rate * (elapsed - pace.grace):
                raise DownloadError(messages.download_too_slow(pace.min_rate))
    return size
