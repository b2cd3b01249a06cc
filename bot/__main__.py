"""`python -m bot` (or `easel`): start Easel, configured by the environment (see README).

`python -m bot` answers Slack and starts `python -m bot worker`, the process that runs the jobs.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile

from bot.config import ConfigError, Settings

_PR_SET_PDEATHSIG = 1
USAGE = """usage: python -m bot [COMMAND]   (or: easel [COMMAND])

Commands:
  serve     answer Slack and run the jobs (the default): HTTP mode on PORT, or Socket Mode with SLACK_APP_TOKEN
  console   try Easel in this terminal with only OPENAI_API_KEY: each line is a request, the next line edits
            the last image; images go to ./easel-out/ (--out DIR). `console "a red kite" --quality low` draws
            once and exits
  check     check the configuration, the database, the port, the Slack token and the OpenAI key, and print a
            checklist with the fix for each problem, without serving
  worker    the job runner alone (started by serve; run it yourself only for a separate worker process)

Configuration is the environment (.env.example lists every setting); see README.md.
"""


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
    from bot import processes

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if role == "worker":
        await processes.run_worker(settings, stop=stop, wakeups="EASEL_PARENT_PID" in os.environ)
    else:
        await processes.serve(settings, stop=stop)


def main(argv: list[str]) -> int:
    args = argv[1:]
    role = args[0] if args and not args[0].startswith("-") else "serve"
    if args and args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if role not in ("serve", "worker", "console", "check"):
        print(f"easel: no command {role!r}.\n{USAGE}", end="", file=sys.stderr)
        return 2
    if role == "worker":
        _die_with_parent()
    try:
        settings = Settings.from_env(os.environ, console=role == "console")
    except ConfigError as e:
        print(f"easel: {e}", file=sys.stderr)
        return 2
    if role == "serve":
        _count_across_processes()
    from bot import logs
    from bot.checks import StartupError

    logs.setup(settings)
    try:
        if role == "console":
            from bot import console

            return asyncio.run(console.run(settings, args[1:]))
        if role == "check":
            from bot import checklist

            return asyncio.run(checklist.run(settings))
        asyncio.run(_main(settings, role))
    except StartupError as e:
        if str(e):
            print(f"easel: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _count_across_processes() -> None:
    """The serving process and its worker count into one folder (prometheus-client's multiprocess mode, chosen
    by its environment variable before the library is first imported); /metrics reads both. A folder of this
    run's own unless the operator set one (which they should empty between runs)."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="easel-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder  # the worker process inherits it
        atexit.register(shutil.rmtree, folder, ignore_errors=True)


def run() -> None:
    """The `easel` console script."""
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
