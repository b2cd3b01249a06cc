"""The Slack side of the benchmark: signed Events API requests, built here and sent by `bench.sender`, a
process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.processes import ROOT, SIGNING_SECRET
from bench.timing import now
from tests.fakes.slack_api import next_ts
from tests.fakes.slack_requests import SlackSender


@dataclass
class Request:
    key: str
    phase: str
    channel: str
    user: str
    ts: str
    thread_ts: str  # the thread the image goes to (== ts for a mention)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    sent: float | None = None
    acked: float | None = None
    status: int | None = None
    error: str | None = None


class Sender:
    """Builds and signs Slack event requests; `bench.sender`, a process of its own, sends them and stamps the
    acknowledgements (so this process's event-loop lag, from running the fakes, is not in those figures)."""

    def __init__(self, url: str, team_id: str, bot_user_id: str):
        self.url = url
        self.shape = SlackSender(
            url=url, signing_secret=SIGNING_SECRET, team_id=team_id, bot_user_id=bot_user_id
        )
        self.team_id, self.bot_user_id = team_id, bot_user_id
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sender", self.url, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024,
        )

    async def close(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(b"\n")
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def _sign(self, req: Request, event: dict[str, Any]) -> Request:
        req.body = json.dumps(self.shape.envelope(event)).encode()
        req.headers = {"Content-Type": "application/json", **self.shape.sign(req.body, int(time.time()))}
        return req

    def mention(self, key: str, phase: str, channel: str, user: str, prompt: str) -> Request:
        ts = next_ts()
        text = f"{prompt} benchtag-{key}"
        event = {
            "type": "app_mention",
            "user": user,
            "text": f"<@{self.bot_user_id}> {text}",
            "ts": ts,
            "client_msg_id": str(uuid.uuid4()),
            "team": self.team_id,
            "channel": channel,
            "event_ts": ts,
            "blocks": self.shape.rich_text(
                [{"type": "user", "user_id": self.bot_user_id}, {"type": "text", "text": f" {text}"}]
            ),
        }
        return self._sign(Request(key, phase, channel, user, ts, ts), event)

    def reply(self, key: str, phase: str, root: Request, prompt: str) -> Request:
        ts = next_ts()
        text = f"{prompt} benchtag-{key}"
        event = {
            "type": "message",
            "user": root.user,
            "text": text,
            "ts": ts,
            "team": self.team_id,
            "blocks": self.shape.rich_text([{"type": "text", "text": text}]),
            "channel": root.channel,
            "event_ts": ts,
            "channel_type": "channel",
            "client_msg_id": str(uuid.uuid4()),
            "thread_ts": root.ts,
        }
        return self._sign(Request(key, phase, root.channel, root.user, ts, root.ts), event)

    async def send(
        self, reqs: list[Request], start: float | None = None, spread: float = 0.0
    ) -> list[float]:
        """Send `reqs`, the i-th at `start + spread * i / len(reqs)` (at once when `start` is None), and wait
        for every answer. Returns the sender process's event-loop lag samples meanwhile."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        t0 = now() if start is None else start
        batch = [
            {
                "key": r.key,
                "at": t0 + spread * i / len(reqs),
                "body": r.body.decode(),
                "headers": r.headers,
            }
            for i, r in enumerate(reqs)
        ]
        self.proc.stdin.write(json.dumps({"requests": batch}).encode() + b"\n")
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.sender exited ({await self.proc.wait()})")
        answer = json.loads(line)
        by_key = {r.key: r for r in reqs}
        for got in answer["results"]:
            req = by_key[got["key"]]
            req.sent, req.acked, req.status, req.error = got["sent"], got["acked"], got["status"], got["error"]
        return list(answer["lag"])
