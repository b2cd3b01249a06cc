"""`python -m bot`: start Easel, configured by the environment (see README)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from bot.config import ConfigError, Settings


async def _main(settings: Settings) -> None:
    from bot import app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.serve(settings, stop=stop)


def main() -> int:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as e:
        print(f"easel: {e}", file=sys.stderr)
        return 2
    from bot import logs

    logs.setup(settings)
    asyncio.run(_main(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
