"""Memory with attachments at their limits: the real `python -m bot` against the fakes, `--messages` messages
at once, each with the most a message may carry (`limits.MAX_IMAGES` images, `limits.MAX_TOTAL_BYTES` in all,
of noise that does not compress). Prints the worker process's peak resident memory (VmHWM) and the time
until every message's image is posted, as JSON.

    python -m bench.attachments [--messages 3] [--latency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.processes import API_KEY, SIGNING_SECRET, App, app_env, free_port
from bot import limits
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender


def noise_png(size: int) -> bytes:
    """A PNG of random pixels just under `size` bytes (it does not compress)."""
    side = int((size / 3) ** 0.5) - 8
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG", compress_level=0)
    return out.getvalue()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def main(messages: int, latency: float) -> dict[str, object]:
    image = noise_png(limits.MAX_TOTAL_BYTES // limits.MAX_IMAGES - 1000)
    async with FakeSlack() as slack, FakeOpenAI(api_key=API_KEY, latency=latency) as openai_fake:
        port = free_port()
        with tempfile.TemporaryDirectory() as tmp:
            bot = App(app_env(slack, openai_fake, f"sqlite:///{tmp}/easel.db", port, Path(tmp)), Path(tmp) / "bot.log")
            try:
                await bot.start()
                [worker] = _children(bot.pid)
                before = _hwm_kb(worker)
                started = time.monotonic()
                async with SlackSender(url=f"http://127.0.0.1:{port}/slack/events",
                                       signing_secret=SIGNING_SECRET) as sender:
                    for m in range(messages):
                        files = [slack.add_file(image, name=f"in{i}.png") for i in range(limits.MAX_IMAGES)]
                        await sender.mention(f"combine these {m}", files=files, channel=f"C{m:04d}", user=f"U{m:04d}")
                await slack.wait_for("files.completeUploadExternal", count=messages, timeout=600)
                posted = time.monotonic() - started
                peak = _hwm_kb(worker)
            finally:
                await bot.stop(within=10)
    sent = [len(json.dumps(body)) for body in openai_fake.create_requests()]
    return {"messages": messages, "images_per_message": limits.MAX_IMAGES,
            "bytes_per_message": len(image) * limits.MAX_IMAGES, "request_bytes": sent,
            "worker_rss_mb_idle": round(before / 1024), "worker_rss_mb_peak": round(peak / 1024),
            "seconds_to_post": round(posted, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3)
    parser.add_argument("--latency", type=float, default=2.0)
    args = parser.parse_args()
    json.dump(asyncio.run(main(args.messages, args.latency)), sys.stdout)
    print()
