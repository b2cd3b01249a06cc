"""`python -m bot check`: every start-up check, once each, printed as a checklist; nothing is served.

An operator runs it before sending traffic to a deployment. Each line says what was checked, whether it is
fine, and, when it is not, how to fix it. Exit code 0 when everything is fine, 1 otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

import aiohttp
import sqlalchemy as sa
from slack_sdk.web.async_client import AsyncWebClient

from bot import checks
from bot.config import Settings
from storage import describe_url, open_store


async def run(settings: Settings, out: TextIO = sys.stdout) -> int:
    findings = [checks.Finding("Configuration", True, "every setting reads well")]
    findings.append(await _database(settings))
    if not settings.socket_mode:
        busy = checks.port_in_use(settings.port)
        findings.append(checks.Finding(
            f"Port {settings.port}", not busy, "in use by another program" if busy else "free",
            "stop that program or set PORT to a free port" if busy else ""))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, session=session)
        findings += await _slack(client, settings)
    findings += await _openai(settings)
    for f in findings:
        mark = "ok  " if f.ok else "FAIL"
        line = f"{mark} {f.what}: {f.detail}" if f.detail else f"{mark} {f.what}"
        if f.fix:
            line += f"\n       fix: {f.fix}"
        print(line, file=out)
    failed = sum(not f.ok for f in findings)
    print("Everything is ready." if not failed else f"{failed} problem(s) to fix before serving.", file=out)
    return 0 if not failed else 1


async def _database(settings: Settings) -> checks.Finding:
    what = f"Database {describe_url(settings.database_url)}"
    try:
        store = await open_store(settings.database_url)
    except (OSError, sa.exc.SQLAlchemyError) as e:
        error = str(checks.database_error(settings, e))
        return checks.Finding(what, False, error.split("cannot be used: ", 1)[-1],
                              "start the database, create it, or correct DATABASE_URL")
    await store.close()
    return checks.Finding(what, True, "opened, schema up to date")


async def _attempt(call: Callable[[], Awaitable[object]]) -> tuple[object | None, str | None, bool]:
    """(result, problem, rejected)."""
    try:
        return await call(), None, False
    except checks.StartupError as e:
        return None, str(e), True
    except checks.Unreachable as e:
        return None, str(e), False


async def _slack(client: AsyncWebClient, settings: Settings) -> list[checks.Finding]:
    if settings.oauth:
        return [checks.Finding("Slack", True, "installs through OAuth (GET /slack/install): each workspace's token "
                               "is kept as it installs")]
    identity, problem, rejected = await _attempt(lambda: checks.slack_identity(client))
    if not isinstance(identity, checks.SlackIdentity):
        fix = "" if rejected else "check the network, and SLACK_API_URL if it is set"
        return [checks.Finding("Slack bot token", False, problem or "", fix)]
    found = [checks.Finding("Slack bot token", True, f"workspace {identity.team or identity.team_id}")]
    missing = checks.missing_scopes(identity.scopes)
    found.append(checks.Finding(
        "Slack scopes", not missing,
        "all granted" if not missing else "missing: " + "; ".join(f"{s} ({e})" for s, e in missing.items()),
        "add them in the app's OAuth & Permissions page and reinstall the app" if missing else ""))
    if settings.socket_mode:
        assert settings.slack_app_token is not None
        url, problem, _ = await _attempt(lambda: checks.socket_url(client, settings.slack_app_token or ""))
        found.append(checks.Finding("Socket Mode app token", url is not None, problem or "accepted"))
    return found


async def _openai(settings: Settings) -> list[checks.Finding]:
    from bot.openai_client import openai_client

    client = openai_client(settings)
    try:
        models, problem, rejected = await _attempt(lambda: checks.openai_models(client))
    finally:
        await client.close()
    if not isinstance(models, dict):
        fix = "" if rejected else "check the network, and OPENAI_BASE_URL if it is set"
        return [checks.Finding("OpenAI key", False, problem or "", fix)]
    names = set(models)
    found = [checks.Finding("OpenAI key", True, f"accepted ({len(names)} models available)")]
    for what, name, variable in (("Conversational model", settings.openai_model, "OPENAI_MODEL"),
                                 ("Image model", settings.image_model, "IMAGE_MODEL")):
        listed = name in names
        found.append(checks.Finding(
            f"{what} {name}", listed, "available to this key" if listed else "not among this key's models",
            "" if listed else f"set {variable} to a model the key may use"))
    return found
