"""The benchmark's Slack side of the HTTP exchange, in a process of its own.

    python -m bench.sender URL

Slack's servers are not on the app's machine, and the benchmark's own process is busy running the fakes (it
streams hundreds of multi-megabyte answers in a burst): an acknowledgement stamped there would carry that
process's event-loop lag. This process does nothing but send signed requests and stamp their answers.

Protocol, one JSON document per line: stdin gets `{"requests": [{"key", "at", "body", "headers"}, ...]}`
(`at` is a `time.monotonic()` instant, which is the same clock in every process on the machine; `body` is the
request body as text); once every request of the batch is answered, stdout gets
`{"results": [{"key", "sent", "acked", "status", "error"}, ...], "lag": [...]}` where `lag` holds how late
this process's event loop woke up during the batch (sampled every 10 ms). An empty line ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import aiohttp

now = time.monotonic


async def _send(session: aiohttp.ClientSession, url: str, req: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(max(0.0, req["at"] - now()))
    out: dict[str, Any] = {"key": req["key"], "sent": now(), "status": None, "error": None}
    try:
        async with session.post(url, data=req["body"].encode(), headers=req["headers"]) as r:
            await r.read()
            out["status"] = r.status
    except (aiohttp.ClientError, TimeoutError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["acked"] = now()
    return out


async def _watch_lag(lag: list[float], period: float = 0.01) -> None:
    while True:
        t0 = now()
        await asyncio.sleep(period)
        lag.append(max(0.0, now() - t0 - period))


async def main(url: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        while line := (await reader.readline()).strip():
            batch = json.loads(line)["requests"]
            lag: list[float] = []
            watcher = asyncio.create_task(_watch_lag(lag))
            results = await asyncio.gather(*(_send(session, url, req) for req in batch))
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            sys.stdout.write(json.dumps({"results": results, "lag": lag}) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
