"""The benchmark's clocks: what the fakes tell it as they handle the app's calls (stamped with
`time.monotonic()`, which is the same clock in every process on the machine), CPU and memory from /proc, and
this process's own event-loop lag.

The fakes run in the benchmark's process, so a busy event loop there delays their stamps: `Sampler` measures
that lag, and the report shows it next to the figures.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.fakes.openai_api import FakeResponse, OpenAIObserver, Recorded, user_text
from tests.fakes.slack_api import SlackObserver

TAG = re.compile(r"benchtag-([A-Za-z0-9]+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

now = time.monotonic


def tag_of(text: Any) -> str | None:
    """The request key in `benchtag-<key>`, which every benchmark prompt carries (and the image's comment,
    through the revised prompt the fake echoes)."""
    found = TAG.search(text) if isinstance(text, str) else None
    return found.group(1) if found else None


# --------------------------------------------------------------------------- what the fakes tell


class SlackTimes(SlackObserver):
    """Stamps the calls the benchmark cares about when FakeSlack handles them. Given `final_size` (the bytes of
    the image the fake OpenAI makes), a shared file of another size is a preview (a partial image the app
    posted): it goes to `preview_shares`, not `shares`, and does not count as the request's image."""

    def __init__(self, final_size: int | None = None) -> None:
        self.final_size = final_size
        self.preview_shares: list[dict[str, Any]] = []  # as `shares`, for the files that are not the final image
        self.limited: list[tuple[float, str, int]] = []  # (t, method, Retry-After) of each 429 ratelimited
        self.reacted: dict[tuple[str, str], float] = {}  # (channel, message ts) -> first reactions.add
        self.posted_in: dict[tuple[str, str], float] = {}  # (channel, thread_ts) -> first chat.postMessage
        self.posts_in: collections.defaultdict[tuple[str, str], list[float]] = collections.defaultdict(list)  # all
        self.shares: list[dict[str, Any]] = []  # one per shared file: t, channel, thread_ts, tag, file_id
        self.shared_tags: collections.Counter[str] = collections.Counter()
        self.tickets: dict[str, float] = {}  # file_id -> files.getUploadURLExternal handled
        self.bytes_started: dict[str, float] = {}  # file_id -> upload POST arrived (before its body was read)
        self.bytes_done: dict[str, float] = {}  # file_id -> upload POST handled
        self.last_activity = now()

    def handled(self, method: str, args: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        if method == "reactions.add":
            t = self.last_activity = now()
            self.reacted.setdefault((str(args.get("channel")), str(args.get("timestamp"))), t)
        elif method == "chat.postMessage":
            t = self.last_activity = now()
            if args.get("thread_ts"):
                self.posted_in.setdefault((str(args.get("channel")), str(args["thread_ts"])), t)
                self.posts_in[(str(args.get("channel")), str(args["thread_ts"]))].append(t)
        elif method == "files.getUploadURLExternal":
            t = self.last_activity = now()
            if answer.get("ok"):
                self.tickets[str(answer["file_id"])] = t
        elif method == "files.completeUploadExternal":
            t = self.last_activity = now()
            if answer.get("ok"):
                self._shared(t, args, answer)

    def _shared(self, t: float, args: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        tag = tag_of(args.get("initial_comment"))
        for f in answer["files"]:
            share = {
                "t": t,
                "channel": str(args["channel_id"]) if args.get("channel_id") else None,
                "thread_ts": str(args["thread_ts"]) if args.get("thread_ts") else None,
                "tag": tag,
                "file_id": f["id"],
            }
            if self.final_size is not None and f.get("size") != self.final_size:
                self.preview_shares.append(share)
                continue
            self.shares.append(share)
            if tag:
                self.shared_tags[tag] += 1

    def rate_limited(self, method: str, args: Mapping[str, Any], retry_after: int) -> None:
        self.limited.append((now(), method, retry_after))

    def upload_arrived(self, file_id: str) -> None:
        self.bytes_started.setdefault(file_id, now())

    def upload_handled(self, file_id: str) -> None:
        self.bytes_done[file_id] = self.last_activity = now()


class OpenAITimes(OpenAIObserver):
    """Stamps each create request and each generation's start and end, by request tag. (FakeOpenAI itself
    stamps when each response's final event was written: `final_written_at`.)"""

    def __init__(self) -> None:
        self.generations: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)  # tag -> runs
        self.creates: dict[str, list[float]] = collections.defaultdict(list)  # tag -> POST /v1/responses times
        self._running: dict[str, dict[str, Any]] = {}  # response id -> its run, while it generates

    def received(self, request: Recorded) -> None:
        if request.method == "POST" and request.path == "/v1/responses" and isinstance(request.json, dict):
            tag = tag_of(user_text(request.json.get("input")))
            if tag:
                self.creates[tag].append(now())

    def generation_started(self, response: FakeResponse) -> None:
        run = self._running[response.id] = {"id": response.id, "start": now(), "end": None, "status": None}
        tag = tag_of(response.text)
        if tag:
            self.generations[tag].append(run)

    def generation_ended(self, response: FakeResponse) -> None:
        run = self._running.pop(response.id)
        run["end"], run["status"] = now(), response.status


# --------------------------------------------------------------------------- /proc


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] != "Z"


def threads_cpu(pid: int) -> float:
    """CPU seconds the live threads of `pid` have run, from /proc/<pid>/task/*/schedstat (nanoseconds)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
    return total / 1e9


def stat_cpu(pid: int) -> tuple[float, float]:
    """(utime + stime of `pid`, cutime + cstime of its reaped children), in seconds, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = [int(v) for v in stat[stat.rindex(")") + 2 :].split()[11:15]]
    return (fields[0] + fields[1]) / CLK_TCK, (fields[2] + fields[3]) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds all processes have used since boot (from /proc/stat: everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


# --------------------------------------------------------------------------- sampling


class Sampler:
    """Every 50 ms: the app's VmRSS (`app.rss_kb()`), and how late this event loop woke up (its lag)."""

    def __init__(self, app: Any, period: float = 0.05):
        self.app, self.period = app, period
        self.rss: list[tuple[float, int]] = []
        self.lag: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            t0 = now()
            with contextlib.suppress(OSError, ValueError):
                self.rss.append((t0, self.app.rss_kb()))
            await asyncio.sleep(self.period)
            self.lag.append((t0, max(0.0, now() - t0 - self.period)))

    def peak_rss_kb(self, t0: float = -math.inf, t1: float = math.inf) -> int | None:
        inside = [kb for t, kb in self.rss if t0 <= t <= t1]
        return max(inside) if inside else None

    def lag_in(self, t0: float, t1: float) -> list[float]:
        return [lag for t, lag in self.lag if t0 <= t <= t1]
