"""Budget benchmark: many requests at once against one user limit, over two replicas on one database.

    .venv/bin/python -m bench.budgets [--database postgresql|sqlite] [--users 10] [--per-user 10] [--fits 3]

Two real `python -m bot` processes (HTTP mode) share one database, the fake Slack and the fake OpenAI (in this
process). `--users` people each send `--per-user` mentions, all at once, half to each replica, under
BUDGET_USER_DAILY_USD set to fit `--fits` requests at their worst case (and half of one more). The fake OpenAI
holds every generation until each request has been either sent or refused, so the figures do not depend on how
fast answers settle. Printed: overruns (a user's counter above the limit, while held and at the end), drawn
(per user: exactly `--fits`), refused and told (a "Not drawn" message in the request's thread naming the limit),
and the time from the first request to the last decision and to the last image.

`hammer` is the scenario itself; tests/test_budgets.py runs it over two in-process Easels.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.fakes.slack_requests import SlackSender

NOT_DRAWN = "Not drawn"


@dataclasses.dataclass
class Figures:
    requests: int
    fits_per_user: int
    drawn: int = 0
    drawn_per_user: dict[str, int] = dataclasses.field(default_factory=dict)
    refused_and_told: int = 0
    refused_untold: int = 0  # neither drawn nor told why
    told_and_drawn: int = 0  # told "not drawn" and drawn all the same
    creates: int = 0  # requests that reached OpenAI
    overruns_held: int = 0  # users whose spent + reserved exceeded the limit while the answers were held
    overruns_final: int = 0
    decided_s: float = 0.0  # first request sent -> every request sent or refused
    finished_s: float = 0.0  # first request sent -> every image posted

    @property
    def exact(self) -> bool:
        return all(n == self.fits_per_user for n in self.drawn_per_user.values())

    def lines(self) -> list[str]:
        return [
            f"requests              {self.requests} ({len(self.drawn_per_user)} users)",
            f"limit overruns        {self.overruns_held} while held, {self.overruns_final} at the end",
            f"drawn                 {self.drawn} (per user: {sorted(set(self.drawn_per_user.values()))}, "
            f"fits {self.fits_per_user} each; exact: {'yes' if self.exact else 'NO'})",
            f"sent to OpenAI        {self.creates}",
            f"refused and told      {self.refused_and_told} (untold: {self.refused_untold}, "
            f"told but drawn: {self.told_and_drawn})",
            f"time                  {self.decided_s:.2f} s to decide every request, "
            f"{self.finished_s:.2f} s to the last image",
        ]


Counters = Callable[[Sequence[str]], Awaitable[dict[str, int]]]  # user ids -> spent + reserved today


async def hammer(*, senders: Sequence[SlackSender], slack: FakeSlack, openai: FakeOpenAI, counters: Counters,
                 limit_micros: int, users: int = 10, per_user: int = 10, fits: int = 3,
                 timeout: float = 180.0) -> Figures:  # noqa: ASYNC109 - the scenario's deadline
    people = [f"U9{n:03d}" for n in range(users)]
    figures = Figures(requests=users * per_user, fits_per_user=fits)
    openai.gate.clear()  # generations are held until every request is decided
    t0 = time.monotonic()
    order = [(i, u) for i in range(per_user) for u in range(users)]  # each person's requests interleaved
    sent = await asyncio.gather(*(
        senders[(u * per_user + i) % len(senders)].mention(f"budget hammer {u}-{i}", user=people[u])
        for i, u in order))
    owner = {}
    for (ts, result), (_, u) in zip(sent, order, strict=True):
        assert result.status == 200, result.body_text
        owner[ts] = people[u]

    def told() -> set[str]:
        return {m["thread_ts"] for m in slack.messages
                if NOT_DRAWN in str(m.get("text", "")) and "your daily limit" in str(m.get("text", ""))
                and m.get("thread_ts") in owner}

    refused = users * (per_user - fits)
    await slack.wait_until(lambda: len(told()) >= refused, timeout=timeout, what=f"{refused} refusals told")
    await openai.wait_until(lambda: len(openai.create_requests()) >= users * fits, timeout=timeout)
    figures.decided_s = time.monotonic() - t0
    held = await counters(people)
    figures.overruns_held = sum(1 for used in held.values() if used > limit_micros)
    openai.gate.set()
    drawn_expected = figures.requests - len(told())
    await slack.wait_until(lambda: len([f for f in slack.shared_files if f.get("thread_ts") in owner])
                           >= drawn_expected, timeout=timeout, what=f"{drawn_expected} images")
    figures.finished_s = time.monotonic() - t0
    final = await counters(people)
    figures.overruns_final = sum(1 for used in final.values() if used > limit_micros)
    drawn_threads = {f["thread_ts"] for f in slack.shared_files if f.get("thread_ts") in owner}
    told_threads = told()
    per = collections.Counter(owner[t] for t in drawn_threads)
    figures.drawn_per_user = {p: per.get(p, 0) for p in people}
    figures.drawn = len(drawn_threads)
    figures.creates = len(openai.create_requests())
    figures.refused_and_told = len(told_threads - drawn_threads)
    figures.told_and_drawn = len(told_threads & drawn_threads)
    figures.refused_untold = len(set(owner) - drawn_threads - told_threads)
    return figures


async def _main(args: argparse.Namespace) -> int:
    from bench.processes import API_KEY, SIGNING_SECRET, App, app_env, free_port, make_database
    from bot.prices import Prices
    from storage import open_store
    from storage.spend import Spend, scopes

    worst = Prices().worst_case(chat_model="gpt-5.4", image_model="gpt-image-2", quality="auto", size="auto")
    limit = args.fits * worst + worst // 2
    tmp = Path(tempfile.mkdtemp(prefix="easel-bench-budgets-"))
    url, drop = await make_database(args.database, tmp)
    apps: list[App] = []
    try:
        async with FakeSlack() as slack, FakeOpenAI(api_key=API_KEY) as openai:
            settings = {"BUDGET_USER_DAILY_USD": f"{limit / 1_000_000:.6f}", "MAX_QUEUED_PER_USER": "100",
                        "OPENAI_IMAGES_PER_MINUTE": "60000", "LOG_LEVEL": "WARNING", "WORKER_POLL_SECONDS": "1"}
            for n in range(2):
                port = free_port()
                apps.append(App(app_env(slack, openai, url, port, tmp, **settings), tmp / f"app{n}.log"))
            for app in apps:
                await app.start()
            senders = [SlackSender(url=f"http://127.0.0.1:{app.port}/slack/events", signing_secret=SIGNING_SECRET,
                                   team_id=slack.team_id, bot_user_id=slack.bot_user_id) for app in apps]
            store = await open_store(url)
            spend = Spend(store.db)

            async def counters(people: Sequence[str]) -> dict[str, int]:
                day = time.strftime("%Y-%m-%d", time.gmtime())
                keys = [(scopes(slack.team_id, "C0001", p)[0], day) for p in people]
                found = await spend.tallies(keys)
                return {p: found[k].used_micros for p, k in zip(people, keys, strict=True)}

            try:
                figures = await hammer(senders=senders, slack=slack, openai=openai, counters=counters,
                                       limit_micros=limit, users=args.users, per_user=args.per_user, fits=args.fits)
            finally:
                for sender in senders:
                    await sender.close()
                await store.close()
        print(f"budget benchmark: {args.database}, 2 replicas (python -m bot), user limit "
              f"${limit / 1_000_000:.2f} = {args.fits} x worst case ${worst / 1_000_000:.4f} + half of one")
        for line in figures.lines():
            print("  " + line)
        ok = (figures.overruns_held == figures.overruns_final == 0 and figures.exact
              and figures.refused_untold == 0 and figures.told_and_drawn == 0)
        return 0 if ok else 1
    finally:
        for app in apps:
            if app.proc is not None:
                await app.stop()
        await drop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--fits", type=int, default=3)
    sys.exit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
