"""What Easel checks before it serves: the database, the port, the Slack token and its scopes, the OpenAI key.

Each check answers with a `Finding` (fine or not, what to do about it). A rejection (a token Slack refuses, a
key OpenAI refuses, a database that cannot be opened) is final: start-up stops with one line. Something that
cannot be reached yet (Slack or OpenAI down, a network hiccup) is not: start-up waits and tries again, and
`/healthz` says why it is not ready meanwhile. `python -m bot check` runs all of them and prints a checklist.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings

if TYPE_CHECKING:
    import openai

log = logging.getLogger(__name__)

# Every scope the manifest asks for, and what stops working without it.
NEEDED_SCOPES = {
    "app_mentions:read": "mentions of @Easel in channels",
    "channels:history": "replies in Easel's threads in public channels",
    "groups:history": "replies in Easel's threads in private channels",
    "im:history": "direct messages to Easel",
    "mpim:history": "group direct messages",
    "chat:write": "every answer Easel posts",
    "chat:write.public": "/imagine in public channels Easel has not joined",
    "commands": "/imagine",
    "files:read": "images people attach",
    "files:write": "posting the images",
    "reactions:write": "the hourglass while Easel works",
    "users:read": "workspace admins' rights (forgetting another person's thread)",
    "usergroups:read": "channels open only to a Slack user group (its members are refused too)",
}
# Slack's answers that mean the token itself is no good (not that Slack is having a bad moment).
REJECTED = frozenset({
    "invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "no_permission",
    "missing_scope", "not_allowed_token_type", "invalid_token", "team_access_not_granted", "ekm_access_denied",
})


class StartupError(Exception):
    """Start-up cannot go on; str(e) is the one line to show (exit code 2)."""


class Unreachable(Exception):
    """A service did not answer (yet); str(e) says how."""


@dataclasses.dataclass(frozen=True)
class Finding:
    what: str
    ok: bool
    detail: str = ""
    fix: str = ""


@dataclasses.dataclass(frozen=True)
class SlackIdentity:
    team: str
    team_id: str
    bot_user_id: str
    scopes: frozenset[str] | None  # None when Slack did not say


def missing_scopes(granted: frozenset[str] | None) -> dict[str, str]:
    """The needed scopes the token lacks, with what stops working (nothing when Slack did not list them)."""
    if granted is None:
        return {}
    return {scope: effect for scope, effect in NEEDED_SCOPES.items() if scope not in granted}


def scope_warning(missing: dict[str, str]) -> str:
    lacking = "; ".join(f"{scope} ({effect})" for scope, effect in missing.items())
    return (f"the bot token lacks scopes, so these will not work: {lacking}. Add them in the app's OAuth & "
            "Permissions page (or from slack-manifest.yml) and reinstall the app.")


async def slack_identity(client: AsyncWebClient) -> SlackIdentity:
    """`auth.test` with the bot token. Raises StartupError if Slack rejects it, Unreachable if Slack does not
    answer."""
    try:
        response = await client.auth_test()
    except SlackApiError as e:
        error = str(e.response.get("error") or "") if e.response is not None else ""
        status = e.response.status_code if e.response is not None else 0
        if error in REJECTED or status in (401, 403):
            raise StartupError(f"SLACK_BOT_TOKEN was rejected by Slack ({error or status}): copy the Bot User OAuth "
                               "Token (xoxb-...) of the installed app again.") from None
        raise Unreachable(f"Slack answered auth.test with {error or f'HTTP {status}'}") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise Unreachable(f"Slack could not be reached ({type(e).__name__})") from None
    header = response.headers.get("x-oauth-scopes") or response.headers.get("X-OAuth-Scopes")
    scopes = frozenset(s.strip() for s in str(header).split(",") if s.strip()) if header is not None else None
    return SlackIdentity(team=str(response.get("team") or ""), team_id=str(response.get("team_id") or ""),
                         bot_user_id=str(response.get("user_id") or ""), scopes=scopes)


async def socket_url(client: AsyncWebClient, app_token: str) -> str:
    """A Socket Mode address (`apps.connections.open` with the app-level token). Raises StartupError if Slack
    rejects the token, Unreachable otherwise."""
    try:
        response = await client.apps_connections_open(app_token=app_token)
    except SlackApiError as e:
        error = str(e.response.get("error") or "") if e.response is not None else ""
        if error in REJECTED:
            raise StartupError(f"SLACK_APP_TOKEN was rejected by Slack ({error}): create an app-level token with "
                               "the connections:write scope under Basic Information and copy it (xapp-...).") \
                from None
        raise Unreachable(f"Slack answered apps.connections.open with {error or 'an error'}") from None
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise Unreachable(f"Slack could not be reached ({type(e).__name__})") from None
    return str(response["url"])


async def openai_models(client: openai.AsyncOpenAI) -> dict[str, str | None]:
    """`GET /v1/models` with the key: the models it may use, with their shutdown dates. Raises StartupError if
    OpenAI rejects the key, Unreachable if OpenAI does not answer."""
    import openai

    from bot.imaging import list_models

    try:
        return await list_models(client)
    except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
        code = getattr(e, "code", None) or e.status_code
        raise StartupError(f"OPENAI_API_KEY was rejected by OpenAI ({code}): create a key at "
                           "https://platform.openai.com/api-keys and set it again.") from None
    except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as e:
        raise Unreachable(f"OpenAI could not be reached ({type(e).__name__})") from None
    except openai.APIStatusError as e:
        raise Unreachable(f"OpenAI answered GET /models with HTTP {e.status_code}") from None


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def port_error(port: int) -> StartupError:
    return StartupError(f"PORT {port} is already in use by another program: stop it or set PORT to a free port.")


def database_error(settings: Settings, e: BaseException) -> StartupError:
    """A database that cannot be reached or opened, as one line (without its password)."""
    import os

    from storage import describe_url

    reason = _reason(e)
    if settings.database_url.startswith("sqlite:///"):
        folder = os.path.dirname(settings.database_url.removeprefix("sqlite:///"))
        if not os.path.isdir(folder):
            reason = f"the folder {folder} does not exist (create it, or point DATABASE_URL elsewhere)"
        elif not os.access(folder, os.W_OK):
            reason = f"the folder {folder} is not writable by this user ({reason})"
    return StartupError(f"DATABASE_URL ({describe_url(settings.database_url)}) cannot be used: {reason}.")


def _reason(e: BaseException) -> str:
    seen: BaseException | None = e
    text = ""
    while seen is not None:  # the innermost cause says most (the driver's own words)
        text = " ".join(str(seen).split()) or type(seen).__name__
        seen = seen.__cause__ or (seen.orig if hasattr(seen, "orig") else None)  # type: ignore[attr-defined]
    return text.split("(Background on this error")[0].strip().rstrip(".")


async def with_backoff(
    attempt: Callable[[], Awaitable[Any]],
    *,
    what: str,
    stop: asyncio.Event,
    on_wait: Callable[[str], None] = lambda _: None,
    first: float = 1.0,
    cap: float = 60.0,
) -> Any:
    """Call `attempt` until it answers. Unreachable: log one line, wait (doubling up to `cap`, with jitter),
    try again. StartupError passes through. Returns None if `stop` is set meanwhile."""
    delay = first
    while not stop.is_set():
        try:
            return await attempt()
        except Unreachable as e:
            wait = random.uniform(delay / 2, delay)
            log.warning("%s: %s; trying again in %.0f s", what, e, wait)
            on_wait(f"{what}: {e}")
            with_stop = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({with_stop}, timeout=wait)
            finally:
                with_stop.cancel()
            delay = min(cap, delay * 2)
    return None
