"""The benchmark's floor, in a process of its own: decode one image's base64 and upload its bytes to the fake
Slack once, with nothing else.

    python -m bench.floor API_URL TOKEN IMAGE_FILE TRIES

Prints one JSON document. It runs in a separate process so that its CPU time is its own (the fake answers in
the benchmark's process) and so that it allocates like the app's worker does (the benchmark starts it with the
worker's malloc settings, `bot.processes.WORKER_MALLOC`): in the benchmark's own, long-lived process, the time of
the standard library's decode alone depended on whether its output buffer came from a fresh mapping.

The decode is the standard library's (`base64.b64decode`), a fixed yardstick; the app decodes with pybase64,
whose time for the same image is reported next to it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pybase64
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_api import next_ts

CHANNEL = "CFLOOR0000"


async def measure(api_url: str, token: str, image: bytes, tries: int) -> dict[str, Any]:
    encoded = base64.b64encode(image).decode("ascii")
    client = AsyncWebClient(token=token, base_url=api_url)
    walls, cpus, decode_walls, decode_cpus, fast = [], [], [], [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for i in range(tries + 1):  # the first try warms connections and imports up; not counted
            w0, c0 = time.perf_counter(), time.process_time()
            data = base64.b64decode(encoded)
            w1, c1 = time.perf_counter(), time.process_time()
            name = f"floor-{i}.png"
            ticket = await client.files_getUploadURLExternal(filename=name, length=len(data))
            async with session.post(
                ticket["upload_url"], data=data, headers={"Content-Type": "application/octet-stream"}
            ) as r:
                await r.read()
                assert r.status == 200, r.status
            await client.files_completeUploadExternal(
                files=[{"id": ticket["file_id"], "title": name}],
                channel_id=CHANNEL,
                thread_ts=next_ts(),
                initial_comment="the floor",
            )
            if i:
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
                decode_walls.append(w1 - w0)
                decode_cpus.append(c1 - c0)
                f0 = time.perf_counter()
                pybase64.b64decode(encoded, validate=True)
                fast.append(time.perf_counter() - f0)
    return {
        "what": "base64 decode (standard library) + files.getUploadURLExternal + POST bytes + "
        "files.completeUploadExternal (slack_sdk AsyncWebClient + aiohttp, one at a time, against FakeSlack)",
        "tries": tries,
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "decode_wall_s": statistics.median(decode_walls),
        "decode_cpu_s": statistics.median(decode_cpus),
        "decode_pybase64_wall_s": statistics.median(fast),
        "wall_s_all": walls,
        "cpu_s_all": cpus,
    }


def main(argv: list[str]) -> int:
    api_url, token, image_file, tries = argv[1], argv[2], argv[3], int(argv[4])
    result = asyncio.run(measure(api_url, token, Path(image_file).read_bytes(), tries))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
