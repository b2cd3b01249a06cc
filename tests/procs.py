"""`python -m bot` as a subprocess for the tests that need the real process (signals, restarts, logs)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import SIGNING_SECRET, wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_env(slack: Any, openai: Any, tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of `python -m bot` in HTTP mode against the fakes, on a SQLite file in `tmp_path`."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "OPENAI_API_KEY": openai.api_key,
        "OPENAI_BASE_URL": openai.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'easel.db'}",
        "PORT": str(port),
        **extra,
    }


class BotProcess:
    """`python -m bot` as a subprocess, its log in a file."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=ROOT, env=self.env, stdout=out, stderr=out
            )
        port = self.env["PORT"]
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                assert self.proc is not None and self.proc.returncode is None, self.log.read_text()[-3000:]
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(healthy, timeout=30, what="python -m bot to start")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 60)

    def worker_pid(self) -> int:
        """The pid of this process's worker (`python -m bot worker`, its child)."""
        assert self.proc is not None
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        [worker] = [int(c) for c in children
                    if Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[-3:-1] == [b"bot", b"worker"]]
        return worker

    async def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
