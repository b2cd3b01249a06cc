"""`--profile`: py-spy records the app (it must be installed in the virtualenv), and the result keeps the
frames that took the most samples."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from bench.processes import App


async def start(args: argparse.Namespace, app: App, tmp: Path) -> asyncio.subprocess.Process:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    limit = ["--duration", str(args.profile_seconds)] if args.profile_seconds else []
    proc = await asyncio.create_subprocess_exec(
        exe,
        "record",
        "--subprocesses",
        "--pid",
        str(app.pid),
        "--rate",
        str(args.profile_rate),
        "--format",
        "raw",
        "--threads",
        *limit,
        "--output",
        str(tmp / "profile.txt"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)  # let py-spy attach before the burst
    return proc

async def stop(args: argparse.Namespace, proc: asyncio.subprocess.Process, tmp: Path) -> dict[str, Any]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 30)
    path = tmp / "profile.txt"
    if not path.exists():
        return {"error": "py-spy wrote no profile"}
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if args.profile_out:
        shutil.copy(path, args.profile_out)
    return {
        "samples": total,
        "self_top": [[f, n] for f, n in own.most_common(40)],
        "inclusive_top": [[f, n] for f, n in inclusive.most_common(60)],
    }
