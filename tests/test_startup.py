"""Start-up that tells the truth: `python -m bot` against a Slack that rejects the token, lacks a scope or does
not answer; a database or a port that cannot be used; a rejected OpenAI key; `--help` and `check`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import SIGNING_SECRET, wait_until
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.procs import ROOT, free_port


def _env(slack: FakeSlack | None, openai: FakeOpenAI, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SLACK_BOT_TOKEN": slack.bot_token if slack else "xoxb-1-unreachable",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url if slack else f"http://127.0.0.1:{free_port()}/api/",
        "OPENAI_API_KEY": openai.api_key,
        "OPENAI_BASE_URL": openai.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'easel.db'}",
        "PORT": str(free_port()),
    }
    env.update(extra)
    return env


async def _start(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _ends(proc: asyncio.subprocess.Process, timeout: float = 60) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _problem_lines(err: str) -> list[str]:
    """The lines an operator reads as the reason (Easel's own `easel: ...` line), and no traceback."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("easel: ")]


async def _health(port: str) -> tuple[int, dict[str, Any]] | None:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
            return r.status, await r.json()
    except aiohttp.ClientError:
        return None


async def test_a_rejected_bot_token_stops_start_up_with_one_line(fake_slack, fake_openai, tmp_path) -> None:
    fake_slack.add_fault("auth.test", status=200, retry_after=None, error="invalid_auth", times=5)
    code, _, err = await _ends(await _start(_env(fake_slack, fake_openai, tmp_path)))
    assert code == 2, err
    [line] = _problem_lines(err)
    assert "SLACK_BOT_TOKEN" in line and "invalid_auth" in line
    assert fake_slack.bot_token not in err
    assert not fake_slack.calls_to("chat.postMessage")


async def test_a_missing_scope_is_named_with_what_stops_working(fake_slack, fake_openai, tmp_path) -> None:
    fake_slack.scopes = [s for s in fake_slack.scopes if s != "reactions:write"] + ["chat:write.public"]
    env = _env(fake_slack, fake_openai, tmp_path)
    proc = await _start(env)
    try:
        await wait_until(lambda: _health(env["PORT"]), timeout=30, what="the health endpoint")

        async def ready() -> bool:
            answer = await _health(env["PORT"])
            return answer is not None and answer[0] == 200

        await wait_until(ready, timeout=30, what="Easel to be ready")
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = await _ends(proc)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "lacks scopes" in line]
    assert len(warnings) == 1, err
    assert "reactions:write (the hourglass while Easel works)" in warnings[0]
    assert "chat:write " not in warnings[0].replace("chat:write.public", "")


async def test_an_unreachable_slack_is_retried_while_healthz_says_why(fake_openai, tmp_path) -> None:
    env = _env(None, fake_openai, tmp_path)
    proc = await _start(env)
    try:
        async def told() -> tuple[int, dict[str, Any]] | None:
            answer = await _health(env["PORT"])
            return answer if answer is not None and "could not be reached" in str(answer[1].get("error")) else None

        status, body = await wait_until(told, timeout=30, what="/healthz to give the reason")
        assert status == 503
        assert body["error"].startswith("Slack: Slack could not be reached")
        assert proc.returncode is None  # still trying, not crashed
    finally:
        proc.send_signal(signal.SIGTERM)
        code, _, err = await _ends(proc)
    assert code == 0
    assert "Traceback" not in err
    assert "trying again" in err


async def test_an_unreachable_slack_that_comes_back_is_served(fake_openai, tmp_path) -> None:
    port = free_port()
    slack = FakeSlack()
    env = _env(None, fake_openai, tmp_path, SLACK_API_URL=f"http://127.0.0.1:{port}/api/",
               SLACK_BOT_TOKEN=slack.bot_token)
    proc = await _start(env)
    try:
        await wait_until(lambda: _health(env["PORT"]), timeout=30, what="the health endpoint")
        await slack.start(port=port)

        async def ready() -> bool:
            answer = await _health(env["PORT"])
            return answer is not None and answer[0] == 200

        await wait_until(ready, timeout=60, what="Easel to become ready once Slack answers")
        assert slack.calls_to("auth.test")
    finally:
        proc.send_signal(signal.SIGTERM)
        await _ends(proc)
        await slack.close()


async def test_a_rejected_openai_key_stops_start_up_with_one_line(fake_slack, tmp_path) -> None:
    async with FakeOpenAI(api_key="sk-the-right-one") as openai:
        env = _env(fake_slack, openai, tmp_path, OPENAI_API_KEY="sk-a-wrong-key-0123456789")
        code, _, err = await _ends(await _start(env))
    assert code == 2, err
    [line] = _problem_lines(err)
    assert "OPENAI_API_KEY" in line and "rejected" in line
    assert "sk-a-wrong-key-0123456789" not in err


@pytest.mark.parametrize("case", ["postgres down", "no such database", "no such folder"])
async def test_a_database_that_cannot_be_used_is_one_line(case, fake_slack, fake_openai, tmp_path) -> None:
    url = {
        "postgres down": f"postgresql://postgres:hunter2secret@127.0.0.1:{free_port()}/test",
        "no such database": "postgresql://postgres:hunter2secret@127.0.0.1:5432/easel_no_such_database",
        "no such folder": f"sqlite:///{tmp_path / 'missing' / 'easel.db'}",
    }[case]
    code, _, err = await _ends(await _start(_env(fake_slack, fake_openai, tmp_path, DATABASE_URL=url)))
    assert code == 2, err
    [line] = _problem_lines(err)
    assert "DATABASE_URL" in line
    assert "hunter2secret" not in err
    if case == "no such folder":
        assert "does not exist" in line


async def test_a_port_in_use_is_one_line(fake_slack, fake_openai, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, _, err = await _ends(await _start(_env(fake_slack, fake_openai, tmp_path, PORT=port)))
    assert code == 2, err
    [line] = _problem_lines(err)
    assert f"PORT {port}" in line and "in use" in line


async def test_help_lists_the_commands(tmp_path) -> None:
    for flag in ("--help", "-h"):
        code, out, err = await _ends(await _start({"PATH": os.environ.get("PATH", "")}, flag))
        assert code == 0, err
        for command in ("serve", "worker", "console", "check", "README"):
            assert command in out
    code, _, err = await _ends(await _start({"PATH": os.environ.get("PATH", "")}, "paint"))
    assert code == 2 and "no command 'paint'" in err


async def test_check_prints_a_checklist(fake_slack, fake_openai, tmp_path) -> None:
    fake_slack.scopes = [s for s in fake_slack.scopes if s != "files:write"]
    code, out, err = await _ends(await _start(_env(fake_slack, fake_openai, tmp_path), "check"))
    assert code == 1, out + err  # a scope is missing
    assert "ok   Configuration" in out
    assert "ok   Database" in out
    assert "ok   Slack bot token: workspace" in out
    assert "FAIL Slack scopes: missing: " in out and "files:write (posting the images)" in out
    assert "fix:" in out
    assert "ok   OpenAI key" in out
    assert not fake_slack.calls_to("chat.postMessage")  # nothing is served or posted


async def test_check_names_a_rejected_token(fake_slack, fake_openai, tmp_path) -> None:
    fake_slack.add_fault("auth.test", status=200, retry_after=None, error="invalid_auth")
    code, out, _ = await _ends(await _start(_env(fake_slack, fake_openai, tmp_path), "check"))
    assert code == 1
    assert "FAIL Slack bot token: SLACK_BOT_TOKEN was rejected by Slack (invalid_auth)" in out
