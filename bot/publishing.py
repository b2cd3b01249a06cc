"""The Slack output side: messages, reactions, image uploads, and downloads of files users attach.

The bot token is sent only to the configured Web API (through slack_sdk) and, for downloads, only to Slack's
file host or the Web API's own host. Redirects are followed by hand so the token never leaves those hosts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import messages

log = logging.getLogger(__name__)

SLACK_FILE_HOST = "files.slack.com"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
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


class CannotPost(Exception):
    """Slack will not let Easel post in this conversation."""


class SlackUnavailable(Exception):
    """Slack kept failing after the retries."""


class DownloadError(Exception):
    """An attachment could not be used; str(e) says why, for the user."""


def retry_handlers(*, rate_limit_retries: int = 3) -> list[Any]:
    """What the Web API client retries on its own: connection errors, 429 (after Retry-After), 5xx."""
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
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


class SlackPublisher:
    """Posts into threads through the given `AsyncWebClient`."""

    def __init__(
        self, client: AsyncWebClient, *, session: aiohttp.ClientSession, attempts: int = 2, backoff: float = 0.5
    ):
        self.client = client
        self._session = session  # shared with `client`; closed here
        self._attempts = attempts
        self._backoff = backoff
        # For the one call that shares an image: only 429s are retried (Slack did nothing then). A 5xx or a
        # lost connection may come after Slack committed the share; sent again, it would share it twice.
        self._once = AsyncWebClient(token=client.token, base_url=client.base_url, timeout=client.timeout,
                                    session=session,
                                    retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=3)])
        api = urlsplit(client.base_url)
        self._allowed = {(api.scheme, api.netloc), ("https", SLACK_FILE_HOST)}

    async def close(self) -> None:
        await self._session.close()

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await getattr(self.client, method)(**kwargs)
        except SlackApiError as e:
            error = e.response.get("error") if e.response is not None else None
            if error in _CANNOT_POST:
                raise CannotPost(error) from e
            raise

    async def react(self, channel: str, ts: str, name: str = messages.WORKING_REACTION) -> None:
        """Best effort: a missing reaction must not fail a request."""
        try:
            await self.client.reactions_add(channel=channel, timestamp=ts, name=name)
        except SlackApiError as e:
            if e.response.get("error") != "already_reacted":
                log.warning("reactions.add failed: %s", e.response.get("error"))

    async def unreact(self, channel: str, ts: str, name: str = messages.WORKING_REACTION) -> None:
        try:
            await self.client.reactions_remove(channel=channel, timestamp=ts, name=name)
        except SlackApiError as e:
            if e.response.get("error") != "no_reaction":
                log.warning("reactions.remove failed: %s", e.response.get("error"))

    async def update(self, channel: str, ts: str, text: str) -> None:
        """Best effort: rewrite one of Easel's messages."""
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text)
        except SlackApiError as e:
            log.warning("chat.update failed: %s", e.response.get("error"))

    async def delete(self, channel: str, ts: str) -> None:
        """Best effort: remove one of Easel's messages."""
        try:
            await self.client.chat_delete(channel=channel, ts=ts)
        except SlackApiError as e:
            log.warning("chat.delete failed: %s", e.response.get("error"))

    async def post(self, channel: str, thread_ts: str | None, text: str) -> list[str]:
        """Post `text` (split where Slack needs it) into the thread; returns the message timestamps."""
        stamps = []
        for part in messages.split_for_slack(text):
            response = await self._call(
                "chat_postMessage", channel=channel, thread_ts=thread_ts, text=part, unfurl_links=False
            )
            stamps.append(response["ts"])
        return stamps

    async def prepare(
        self,
        *,
        data: bytes,
        filename: str,
        on_stage: Callable[[dict[str, str]], Awaitable[None]] | None = None,
    ) -> str:
        """Steps 1 and 2 of Slack's upload (a file id, then the bytes), which share nothing yet: they can run
        before it is known what the image's message will say. Returns the file id. Not retried here."""
        ticket = await self._call("files_getUploadURLExternal", filename=filename, length=len(data))
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
                await self._share_once(
                    files=[{"id": file_id, "title": filename}],
                    channel_id=channel,
                    thread_ts=thread_ts,
                    initial_comment=comment,
                )
                return file_id
            except CannotPost:
                raise
            except (SlackApiError, _Transient, aiohttp.ClientError, TimeoutError) as e:
                reason = e.response.get("error") if isinstance(e, SlackApiError) else str(e) or type(e).__name__
                log.warning("upload attempt %d/%d failed: %s", attempt, self._attempts, reason)
                if sharing is not None and await self._shared(sharing, channel):
                    log.info("file %s was shared all the same (the answer to its completion was lost)", sharing)
                    return sharing
                if attempt == self._attempts:
                    raise SlackUnavailable(str(reason)) from e
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _share_once(self, **kwargs: Any) -> None:
        """Step 3 of an upload, which shares the file in the thread: sent once (see `_once`)."""
        try:
            await self._once.files_completeUploadExternal(**kwargs)
        except SlackApiError as e:
            if (e.response.get("error") if e.response is not None else None) in _CANNOT_POST:
                raise CannotPost(e.response.get("error")) from e
            raise

    async def _shared(self, file_id: str, channel: str) -> bool:
        """Whether Slack shows this file shared in `channel` (files.info: its shares and channels). A file that
        Slack knows but shows nowhere yet is looked at again for a few seconds (SHARE_LOOKS): Slack shares a
        completed file asynchronously. Raises SlackUnavailable when Slack cannot say."""
        for wait in SHARE_LOOKS:
            await asyncio.sleep(wait)
            try:
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

    async def respond(self, response_url: str, text: str) -> None:
        """A private answer to a slash command, through its response_url (no token involved)."""
        try:
            await AsyncWebhookClient(response_url, timeout=10).send(text=text, response_type="ephemeral")
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("response_url failed: %s", type(e).__name__)

    # -- downloads ---------------------------------------------------------------------------------------

    def token_may_go_to(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) in self._allowed

    async def file_url(self, file_id: str) -> str:
        """The download URL of a Slack file, from files.info."""
        try:
            info = (await self._call("files_info", file=file_id))["file"]
        except SlackApiError as e:
            raise DownloadError(f"Slack could not find it ({e.response.get('error')}).") from None
        url = info.get("url_private_download") or info.get("url_private")
        if not isinstance(url, str):
            raise DownloadError("Slack gave no address to download it from.")
        return url

    async def download(self, url: str) -> tuple[str, bytes]:
        """Fetch an attachment with the bot token. Returns (mimetype from the bytes, bytes)."""
        for attempt in range(1, self._attempts + 1):
            try:
                return await self._download_once(url)
            except _Transient as e:
                if attempt == self._attempts:
                    raise DownloadError(f"Slack did not deliver the file ({e}).") from None
                await asyncio.sleep(e.retry_after if e.retry_after is not None else self._backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _download_once(self, url: str) -> tuple[str, bytes]:
        for _ in range(4):
            if not self.token_may_go_to(url):
                raise DownloadError("its address is not on Slack's file host, so Easel will not send its token there.")
            headers = {"Authorization": f"Bearer {self.client.token}"}
            try:
                async with self._session.get(url, headers=headers, allow_redirects=False) as r:
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
                    data = await _read_capped(r, MAX_DOWNLOAD_BYTES)
            except (aiohttp.ClientError, TimeoutError) as e:
                raise _Transient(type(e).__name__, None) from e
            mimetype = sniff(data)
            if mimetype is None:
                if data.lstrip()[:1] == b"<":
                    raise DownloadError(messages.HTML_INSTEAD)
                raise DownloadError(messages.NOT_AN_IMAGE)
            return mimetype, data
        raise DownloadError("Slack redirected the download too many times.")


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None):
        super().__init__(reason)
        self.retry_after = retry_after


async def _read_capped(response: aiohttp.ClientResponse, limit: int) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise DownloadError(messages.too_large(limit // (1024 * 1024)))
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise DownloadError(messages.too_large(limit // (1024 * 1024)))
        chunks.append(chunk)
    return b"".join(chunks)
