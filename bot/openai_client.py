"""The OpenAI client every OpenAI call goes through (the worker's, the console's, the start-up check's)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import aiohttp

if TYPE_CHECKING:
    import openai

    from bot.config import Settings

log = logging.getLogger(__name__)


def openai_client(settings: Settings) -> openai.AsyncOpenAI:
    """Image turns take minutes: the read time-out is the gap allowed between two stream events.

    The SDK's aiohttp transport (its `aiohttp` extra) reads the multi-megabyte event streams with aiohttp's
    C parser, for less CPU per image than the default transport. Its session is given a small read buffer:
    when hundreds of answers arrive at once, each stream holds at most a few tens of kilobytes until it is
    read, instead of a quarter of a megabyte."""
    import openai

    from bot.pacing import no_sdk_retry_on_429

    timeout = openai.Timeout(settings.openai_timeout, connect=10.0)
    return openai.AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        timeout=timeout,
        max_retries=settings.openai_max_retries,
        http_client=openai.DefaultAioHttpClient(timeout=timeout, event_hooks={"response": [no_sdk_retry_on_429]},
                                                **_small_buffer_transport()),
    )


def _small_buffer_transport() -> dict[str, Any]:
    """The SDK's own aiohttp transport over a session with a 16 KB read buffer (the transport reads in 16 KB
    pieces anyway), and no connection cap of its own (MAX_CONCURRENT_GENERATIONS is the cap). The transport
    class lives in the SDK's vendored package: if a later SDK moves it, its default session is used."""
    try:
        from openai._vendor.httpx_aiohttp.transport import AiohttpTransport
    except ImportError:  # pragma: no cover - depends on the SDK's layout
        log.warning("the openai SDK's aiohttp transport moved; using its default read buffer")
        return {}

    def session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), read_bufsize=16 * 1024)

    return {"transport": AiohttpTransport(client=session)}
