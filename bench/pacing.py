"""Pacing benchmark: the real `python -m bot` (as `bench.run` runs it) against a fake OpenAI account with an
image limit, measured from the outside.

    .venv/bin/python -m bench.pacing [--database sqlite|postgresql] [--requests 60] [--per-minute 30]
                                     [--known] [--latency 5] [--concurrency 50] [--app-dir DIR]

`--requests` mentions, each in its own channel from its own user, are sent within one second to an Easel with
`MAX_CONCURRENT_GENERATIONS=--concurrency`, whose OpenAI account allows `--per-minute` images a minute: the fake
(tests/fakes/openai_limits.py) answers 429 with Retry-After beyond it, enforced as OpenAI says it may be (a
per-minute limit over shorter periods: here one image every 2 s). Easel is not told the limit unless `--known`
(then OPENAI_IMAGES_PER_MINUTE is set to it). Targets:

- drain, from the first request sent to the last image posted: at most 1.3 x the ideal (requests / limit:
  2 minutes for 60 at 30 a minute);
- 429s the fake answered: at most 3;
- lost (a request without its image) and failed (a job that ended failed, or a :warning: mark): 0;
- every request that waited (its generation began more than one interval of the limit, 2 s, after Slack had
  its answer) was told its place: a queue message in its thread before its generation began.

Also shown: how honest the places were (for each place shown, N against 1 + the requests that started between
the message and this request's own start), the rate Easel paced at, and what it learned. Times are
`time.monotonic()` in this process (the fakes run here). Results: a table on stdout, and the same as JSON in
`bench/results/<timestamp>-pacing-<database>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.events import Sender
from bench.processes import API_KEY, RESULTS, ROOT, App, app_env, free_port, git_state, make_database
from bench.timing import OpenAITimes, SlackTimes, now
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.openai_limits import AccountLimits
from tests.fakes.slack_api import FakeSlack

PLACE = re.compile(r"(you're next|you're number (\d+) in the queue)")


class PacingTimes(SlackTimes):
    """SlackTimes that also stamps each place a request is told (queue messages posted and updated)."""

    def __init__(self) -> None:
        super().__init__()
        self.threads_of: dict[tuple[str, str], str] = {}  # (channel, message ts) -> its thread
        self.places: dict[tuple[str, str], list[tuple[float, int]]] = collections.defaultdict(list)

    def _told(self, channel: str, thread: str | None, text: str) -> None:
        found = PLACE.search(text)
        if found and thread:
            self.places[(channel, thread)].append((now(), 1 if found.group(2) is None else int(found.group(2))))

    def handled(self, method: str, args: Mapping[str, Any], answer: Mapping[str, Any]) -> None:
        super().handled(method, args, answer)
        channel = str(args.get("channel"))
        if method == "chat.postMessage":
            thread = args.get("thread_ts")
            if answer.get("ok") and thread:
                self.threads_of[(channel, answer["ts"])] = str(thread)
                self._told(channel, str(thread), str(args.get("text", "")))
        elif method == "chat.update":
            self._told(channel, self.threads_of.get((channel, str(args.get("ts")))), str(args.get("text", "")))


async def _database_state(url: str) -> dict[str, Any]:
    """Job statuses and the pacer's bucket, read from Easel's database after the run."""
    from storage import open_store
    from storage.limits import Limits

    store = await open_store(url)
    try:
        jobs = await store.jobs.all()
        bucket = await Limits(store.db).bucket("openai-images")
    finally:
        await store.close()
    return {
        "statuses": dict(collections.Counter(str(j.status) for j in jobs)),
        "paced_again": sum(j.progress.paced for j in jobs),
        "bucket": None if bucket is None else {
            "rate_per_minute": bucket.rate, "stated": bucket.stated, "probing": bucket.probing,
            "taken": bucket.taken, "rejected": bucket.rejected,
        },
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    limits = AccountLimits(images_per_minute=args.per_minute)
    times, openai_times = PacingTimes(), OpenAITimes()
    slack = FakeSlack(observer=times)
    openai = FakeOpenAI(api_key=API_KEY, latency=args.latency, limits=limits, observer=openai_times)
    tmp = Path(tempfile.mkdtemp(prefix="easel-pacing-"))
    started = dt.datetime.now()
    app: App | None = None
    sender: Sender | None = None
    drop = None
    await slack.start()
    await openai.start()
    try:
        database_url, drop = await make_database(args.database, tmp)
        port = free_port()
        env = app_env(
            slack,
            openai,
            database_url,
            port,
            tmp,
            MAX_CONCURRENT_GENERATIONS=str(args.concurrency),
            SHUTDOWN_GRACE_SECONDS="5",
            LOG_LEVEL="WARNING",
            **({"OPENAI_IMAGES_PER_MINUTE": str(args.per_minute)} if args.known else {}),
        )
        git = git_state(args.app_dir)
        app = App(env, tmp / "bot.log", args.app_dir)
        print(f"starting python -m bot on :{port} ({args.database}); {args.requests} requests against "
              f"{args.per_minute} images a minute ({'known' if args.known else 'not told'}) ...", flush=True)
        await app.start()
        sender = Sender(f"http://127.0.0.1:{port}/slack/events", slack.team_id, slack.bot_user_id)
        await sender.start()
        await asyncio.sleep(2.0)  # let the worker process come up before the burst
        reqs = [sender.mention(f"p{i}", "pacing", f"CP{i:05d}", f"UP{i:05d}", f"a lighthouse at dusk no {i}")
                for i in range(args.requests)]
        ideal = args.requests / args.per_minute * 60.0
        start = now() + 0.1
        await sender.send(reqs, start, 1.0)
        deadline = start + 2 * ideal + args.latency + 60
        while now() < deadline and any(times.shared_tags[r.key] == 0 for r in reqs):
            if app.proc is not None and app.proc.returncode is not None:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the last messages and marks
        await sender.close()
        sender = None
        code = await app.stop()
        state = await _database_state(database_url)
        return report(args, reqs, times, openai_times, slack, limits, state, ideal=ideal, git=git, started=started,
                      exit_code=code, log=app.log)
    finally:
        if sender is not None:
            await sender.close()
        if app is not None:
            await app.stop(within=10)
        await openai.close()
        await slack.close()
        if drop is not None:
            try:
                await drop()
            except Exception as e:  # noqa: BLE001 - report, do not mask the run's own outcome
                print(f"warning: could not drop the benchmark database: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, reqs: list[Any], times: PacingTimes, openai: OpenAITimes, slack: FakeSlack,
           limits: AccountLimits, state: dict[str, Any], **info: Any) -> dict[str, Any]:
    interval = 60.0 / args.per_minute
    posted = {x["tag"]: x["t"] for x in times.shares}
    begun = {tag: min(run["start"] for run in runs) for tag, runs in openai.generations.items() if runs}
    lines = []
    for r in reqs:
        told = times.places.get((r.channel, r.ts), [])
        gen = begun.get(r.key)
        waited = gen is not None and r.acked is not None and gen - r.acked > interval
        lines.append({
            "key": r.key, "ack_status": r.status, "sent": r.sent, "acked": r.acked, "generation_began": gen,
            "posted": posted.get(r.key), "creates": len(openai.creates.get(r.key, [])), "places": told,
            "waited": waited, "told": any(t <= gen for t, _ in told) if gen is not None else bool(told),
        })
    starts = sorted(g for g in begun.values())
    errors = []  # shown place minus the true one, for every place shown
    for line in lines:
        own = line["generation_began"]
        for t, place in line["places"]:
            if own is not None and t <= own:
                errors.append(place - (1 + sum(1 for s in starts if t < s < own)))
    sent = [r.sent for r in reqs if r.sent is not None]
    last = max(posted.get(r.key, float("nan")) for r in reqs) if all(r.key in posted for r in reqs) else None
    drain = None if last is None or not sent else last - min(sent)
    lost = [r.key for r in reqs if r.key not in posted]
    statuses = state["statuses"]
    failed = max(statuses.get("failed", 0), sum(1 for names in slack.reactions.values() if "warning" in names))
    waited = [line for line in lines if line["waited"]]
    untold = [line["key"] for line in waited if not line["told"]]
    admitted = sorted(limits.admitted_images)
    steady = admitted[len(admitted) // 2:]
    targets = []

    def target(name: str, value: float | None, limit: float, rule: str) -> None:
        targets.append({"target": name, "value": value, "limit": limit, "rule": rule,
                        "pass": value is not None and value <= limit})

    target("drain / ideal", None if drain is None else drain / info["ideal"], 1.3, "<= 1.3x")
    target("429s answered", float(len(limits.rejected)), 3.0, "<= 3")
    target("lost", float(len(lost)), 0.0, "0")
    target("failed", float(failed), 0.0, "0")
    target("waiting requests not told their place", float(len(untold)), 0.0, "0")
    log = info["log"].read_text(errors="replace").splitlines() if info["log"].exists() else []
    return {
        "started": info["started"].isoformat(timespec="seconds"),
        "command": "python -m bench.pacing " + " ".join(sys.argv[1:]),
        "config": {"database": args.database, "requests": args.requests, "per_minute": args.per_minute,
                   "known": args.known, "latency_s": args.latency, "concurrency": args.concurrency},
        "git": info["git"],
        "ideal_s": info["ideal"],
        "drain_s": drain,
        "rejected": [(t - min(sent), kind) for t, kind in limits.rejected] if sent else [],
        "requests_answered_429": sum(1 for line in lines if line["creates"] > 1),
        "first_admissions_s": [round(t - min(sent), 2) for t in admitted[:8]] if sent else [],
        "steady_rate_per_minute": (len(steady) - 1) / (steady[-1] - steady[0]) * 60 if len(steady) > 1 else None,
        "waited": len(waited),
        "told": sum(1 for line in waited if line["told"]),
        "untold": untold,
        "place_errors": dict(sorted(collections.Counter(errors).items())),
        "place_error_abs_mean": statistics.fmean(abs(e) for e in errors) if errors else None,
        "database": state,
        "exit_code": info["exit_code"],
        "log_problems": [line for line in log if " ERROR " in line or "Traceback" in line][:20],
        "per_request": lines,
        "targets": targets,
    }


def render(r: dict[str, Any]) -> str:
    c, db = r["config"], r["database"]
    bucket = db["bucket"] or {}
    head = (f"commit {r['git']['head']}" if r["git"]["head"] else f"app from {r['git']['app_dir']}") + (
        " + uncommitted product changes" if r["git"]["product_changes"] else "")
    out = [
        "",
        f"Easel pacing benchmark - {r['started']} - database {c['database']} - {head}",
        f"  {c['requests']} requests within 1 s, fake account limited to {c['per_minute']} images a minute "
        f"({'OPENAI_IMAGES_PER_MINUTE set' if c['known'] else 'Easel not told'}), fake latency {c['latency_s']} s, "
        f"MAX_CONCURRENT_GENERATIONS {c['concurrency']}",
        f"  drain {r['drain_s'] or float('nan'):.1f} s (ideal {r['ideal_s']:.0f} s); {len(r['rejected'])} 429s "
        f"(to {r['requests_answered_429']} requests) at {[round(t, 1) for t, _ in r['rejected'][:10]]}"
        f"{' ...' if len(r['rejected']) > 10 else ''} s; first images admitted at {r['first_admissions_s']} s; "
        f"second half paced at {r['steady_rate_per_minute'] or float('nan'):.1f} a minute",
        f"  Easel's bucket afterwards: {bucket.get('rate_per_minute')} a minute, stated limit {bucket.get('stated')}, "
        f"429s seen {bucket.get('rejected')}; jobs {db['statuses']}, sent back to wait {db['paced_again']}",
        f"  waited > one interval: {r['waited']}, told their place: {r['told']}; place shown minus true place "
        f"(count): {r['place_errors']}",
        "",
        f"  {'target':<42}{'value':>10}  {'rule':<10} result",
    ]
    for t in r["targets"]:
        v = t["value"]
        shown = "-" if v is None else f"{v:.2f}x" if "ideal" in t["target"] else f"{v:.0f}"
        out.append(f"  {t['target']:<42}{shown:>10}  {t['rule']:<10} {'PASS' if t['pass'] else 'FAIL'}")
    out += [f"  log: {line[:200]}" for line in r["log_problems"][:5]]
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.pacing", description=__doc__.split("\n\n")[0])
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--requests", type=int, default=60)
    p.add_argument("--per-minute", type=int, default=30, help="the fake account's image limit (default 30)")
    p.add_argument("--known", action="store_true", help="tell Easel the limit (OPENAI_IMAGES_PER_MINUTE)")
    p.add_argument("--latency", type=float, default=5.0, help="fake generation seconds per image (default 5)")
    p.add_argument("--concurrency", type=int, default=50, help="MAX_CONCURRENT_GENERATIONS (default 50)")
    p.add_argument("--app-dir", type=lambda v: Path(v).resolve(), default=ROOT,
                   help="run `python -m bot` from this checkout (e.g. a `git archive` of another commit)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if Path.cwd().resolve() != ROOT:
        print("run from the repository root: .venv/bin/python -m bench.pacing", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(args))
    print(render(result))
    out = RESULTS / f"{dt.datetime.now():%Y%m%d-%H%M%S}-pacing-{args.database}{'-known' if args.known else ''}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\n  written: {out.relative_to(ROOT)}")
    return 0 if all(t["pass"] for t in result["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
