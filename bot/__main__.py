"""`python -m bot`: start Easel, configured by the environment (see README).

`python -m bot` answers Slack and starts `python -m bot worker`, the process that runs the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys

from bot.config import ConfigError, Settings

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A worker must not outlive the process that started it (a SIGKILLed parent is replaced by a new one,
    whose worker would then share the jobs with this orphan)."""
    parent = os.environ.get("EASEL_PARENT_PID")
    if parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the end of standard input still stops it
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if str(os.getppid()) != parent:
        os._exit(0)  # the parent died before the line above took effect
    # Slack waits at most three seconds for the other process; image work can wait a few milliseconds.
    os.nice(5)


async def _main(settings: Settings, role: str) -> None:
    from bot import app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if role == "worker":
        await app.run_worker(settings, stop=stop, wakeups="EASEL_PARENT_PID" in os.environ)
    else:
        await app.serve(settings, stop=stop)


def main(argv: list[str]) -> int:
    role = argv[1] if len(argv) > 1 else "serve"
    if role not in ("serve", "worker"):
        print("usage: python -m bot [worker]", file=sys.stderr)
        return 2
    if role == "worker":
        _die_with_parent()
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as e:
        print(f"easel: {e}", file=sys.stderr)
        return 2
    from bot import logs

    logs.setup(settings)
    asyncio.run(_main(settings, role))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
