"""The model line-up as OpenAI says it is today, kept in the model table of every process.

- The worker reads `GET /v1/models` at start-up and then about daily (`Refresher`), and stores what it says
  (each model's shutdown date) in the database; if the list cannot be read, the built-in table stands and it
  tries again a little later.
- Every process, the one answering Slack included (which never loads the OpenAI SDK), reads that record from
  the database every few minutes (`Lifecycle.read`) and puts it over its table, so a model whose shutdown date
  passes while Easel runs is replaced without a restart.
- What a refusal teaches (a model that turned out not to take a capability, or to be shut down) is recorded
  the same way (`Lifecycle.learned_lack`, `learned_shutdown`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from bot.image_models import ModelTable
from storage.lifecycle import LifecycleStore

log = logging.getLogger(__name__)

READ_EVERY = 300.0  # seconds between reads of the shared record
REFRESH_EVERY = 24 * 3600.0  # seconds between reads of OpenAI's model list
RETRY_EVERY = 600.0  # after a failed read of the list


class Lifecycle:
    """Keeps `table` up to date with the shared record in the database (read at most every `read_every`
    seconds of `now`), and records what is learned."""

    def __init__(
        self,
        *,
        table: ModelTable,
        store: LifecycleStore,
        now: Callable[[], float] = time.monotonic,
        read_every: float = READ_EVERY,
    ):
        self.table = table
        self._store = store
        self._now = now
        self._read_every = read_every
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self._listed: dict[str, str | None] = {}
        self._lacks: dict[str, list[str]] = {}

    async def read(self, *, force: bool = False) -> None:
        """Bring the table up to date with the database, if the last read is older than `read_every` (or
        `force`). A database error leaves the table as it was (and is tried again at the next call)."""
        if not force and self._read_at is not None and self._now() - self._read_at < self._read_every:
            return
        async with self._lock:
            if not force and self._read_at is not None and self._now() - self._read_at < self._read_every:
                return
            try:
                learned = await self._store.read()
            except Exception as e:  # noqa: BLE001 - the table as it stands is still good
                log.warning("could not read the models' lifecycle from the database: %s", type(e).__name__)
                return
            self._listed, self._lacks = dict(learned.shutdowns), dict(learned.lacks)
            self._apply()
            self._read_at = self._now()

    def _apply(self) -> None:
        self.table.learn(listed=self._listed, lacks=self._lacks)

    async def listed(self, listing: dict[str, str | None]) -> None:
        """A fresh read of OpenAI's model list: the models the table knows, with their shutdown dates."""
        known = set(self.table.names())
        mine = {name: date for name, date in listing.items() if name in known}
        try:
            await self._store.save_listing(mine)
        except Exception as e:  # noqa: BLE001 - still used here; stored at the next refresh
            log.warning("could not store OpenAI's model list: %s", type(e).__name__)
            self._listed = {**{k: v for k, v in self._listed.items() if v}, **mine}
            self._apply()
            return
        await self.read(force=True)

    async def learned_lack(self, model: str, capability: str) -> None:
        """OpenAI refused `capability` for `model`: never offered again here, and recorded for the others."""
        self.table.lack(model, capability)
        self._lacks[model] = sorted({*self._lacks.get(model, []), capability})
        log.warning("OpenAI refused %s for %s; recorded", capability, model)
        try:
            await self._store.add_lack(model, capability)
        except Exception as e:  # noqa: BLE001 - known in this process at least
            log.warning("could not record that %s lacks %s: %s", model, capability, type(e).__name__)

    async def learned_shutdown(self, model: str, date: str) -> None:
        """OpenAI refused `model` as shut down on `date`."""
        self._listed[model] = date
        self._apply()
        log.warning("OpenAI says %s was shut down on %s; recorded", model, date)
        try:
            await self._store.save_shutdown(model, date)
        except Exception as e:  # noqa: BLE001 - known in this process at least
            log.warning("could not record %s's shutdown: %s", model, type(e).__name__)


class Refresher:
    """The worker's loop: OpenAI's model list at start-up and every `every` seconds (after a failure, every
    `retry` seconds), and the shared record every `lifecycle`'s read interval in between."""

    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        list_models: Callable[[], Awaitable[dict[str, str | None]]],
        every: float = REFRESH_EVERY,
        retry: float = RETRY_EVERY,
        now: Callable[[], float] = time.monotonic,
    ):
        self._lifecycle = lifecycle
        self._list_models = list_models
        self._every = every
        self._retry = retry
        self._now = now
        self.next_at = 0.0  # when the list is read next (`now`'s clock)
        self.reads = 0  # reads of the list that succeeded
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.changed = asyncio.Event()  # set after every attempt (for whoever waits on one)

    async def refresh(self) -> bool:
        """Read OpenAI's model list once and merge it. False if it could not be read (the table stands)."""
        try:
            listing = await self._list_models()
        except Exception as e:  # noqa: BLE001 - not fatal: the built-in table stands
            self.failures += 1
            self.next_at = self._now() + self._retry
            log.warning("could not read OpenAI's model list (%s); the built-in table stands; trying again in "
                        "%.0f s", type(e).__name__, self._retry)
            self._tell()
            return False
        await self.accept(listing)
        return True

    async def accept(self, listing: dict[str, str | None]) -> None:
        """Merge a model list read elsewhere (the key check at start-up reads it anyway); the next read of
        the list is then due `every` seconds from now."""
        await self._lifecycle.listed(listing)
        self.reads += 1
        self.next_at = self._now() + self._every
        table = self._lifecycle.table
        for name in table.available():
            if table.ending_soon(name):
                log.info("image model %s shuts down on %s", name, table.shutdown_date(name))
        self._tell()

    def _tell(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="easel-models")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            if self._now() >= self.next_at:
                await self.refresh()
            else:
                await self._lifecycle.read()
            wait = max(0.0, min(self.next_at - self._now(), self._lifecycle._read_every))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stopping.wait()
