"""Load benchmark: the real `python -m bot` (HTTP mode, a subprocess) against FakeSlack and FakeOpenAI
(in this process), measured from the outside.

    .venv/bin/python -m bench.run [--burst 200] [--replies 50] [--latency 5] [--image-mb 1.5]
                                  [--database sqlite|postgresql] [--low 5] [--repeat N] [--profile [low|burst]]
                                  [--slack-limits [on|off|both]] [--previews N]

Run it from the repository root. Phases:

0. warm-up: one mention, waiting for its image. The first request after a start pays one-time costs
   (connections, the SDKs' lazily built parts); it is shown on its own and is in none of the targets;
1. low load: `--low` mentions one after another, each waiting for its image;
2. burst: `--burst` mentions, each in its own channel from its own user, sent concurrently and spread
   evenly over one second; once their images are in, one threaded reply in each of `--replies` of those
   threads (also sent within one second), waiting for all of those images too.

Every request carries a unique tag in its prompt (`benchtag-<key>`); the fake echoes the prompt into the
revised prompt, which the app puts in the image's `initial_comment`, so each image is matched to its request.

Where the times come from (all `time.monotonic()` in this process):
- sent/acked: around the signed POST to /slack/events (body read included), stamped by `bench.sender`, a
  process that does nothing else (the same monotonic clock);
- first visible sign: when FakeSlack handles the first `reactions.add` on the message (or a
  `chat.postMessage` in the thread rooted at it, or, for a reply, one in its thread after it was sent, or the
  image itself, whichever is first);
- generation start/finish: when FakeOpenAI's generation task for the response starts and ends (it sleeps
  `--latency` seconds per image); the request is matched by the tag in its input text;
- posted: when FakeSlack handles the `files.completeUploadExternal` that shares the image.
Since the fakes run in this process, a busy bench event loop delays those stamps: the loop's lag is sampled
every 50 ms and reported next to the figures, as is the bench's own CPU.

The floor (same run, before the app starts and again after the last phase, while the app is idle):
`bench.floor`, a process of its own started with the app worker's malloc settings, base64-decodes the image
with the standard library, then does `files.getUploadURLExternal` + POST the bytes to the upload URL +
`files.completeUploadExternal` with a plain slack_sdk AsyncWebClient / aiohttp session against FakeSlack.
Its wall and CPU times are the medians of the 20 tries. The app decodes with pybase64, much faster than the
standard library: the floor's decode is the standard one, as a fixed yardstick, and pybase64's time for the
same image is printed next to it.

The app's CPU is read from /proc: each thread's schedstat, in nanoseconds, summed over both processes (the
10 ms ticks of /proc/<pid>/stat are too coarse for a few images, and are shown only as a cross-check). The
machine is a shared VM whose speed drifts from run to run; `--repeat N` runs everything N times and judges
each target by its median, showing the worst run too.

Modules: `bench.driver` runs the phases, `bench.timing` holds the clocks (what the fakes tell, /proc, the
event-loop lag), `bench.report` turns them into figures and `bench.render` into the table; `bench.processes`
starts and reads the app, its database and the floor, `bench.events` builds the Slack requests.

Slack's rate limits: `--slack-limits` makes FakeSlack apply Slack's published tiers per workspace (429
`ratelimited` with Retry-After beyond them; tests/fakes/slack_limits.py); `--slack-limits both` runs everything
twice, limits off then on, and prints the two side by side. For the burst the report gives the 429s met per
method, whether every image was posted exactly once, and the time from its first image posted to its last against
the least that files.completeUploadExternal's tier (Tier 4, 100 a minute) allows: N images need
max(0, N - 100) / 100 minutes after the first 100 (with the limits on, a target: at most 1.2 times that).
`--previews N` starts the app with PREVIEW_IMAGES=N (partial images; the fake sends what the request asks for);
without it the app has its own default. A completed upload that is not the fake's final image (its size differs)
is a preview, shared or not: counted apart, never as the request's image.

Results: a table on stdout, and the same as JSON in `bench/results/<timestamp>-<database>[-limits|-both][-xN].json`
(with `both`: `{"modes": {"off": ..., "on": ...}}`, each what one mode alone writes).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from bench.driver import Bench
from bench.processes import RESULTS, ROOT
from bench.render import render, render_modes, render_summary
from bench.report import summarize


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--burst", type=int, default=200, help="mentions sent within one second (default 200)")
    p.add_argument("--replies", type=int, default=50, help="threaded replies after the burst (default 50)")
    p.add_argument("--latency", type=float, default=5.0, help="fake generation seconds per image (default 5)")
    p.add_argument("--image-mb", type=float, default=1.5, help="size of the noise PNG in MiB (default 1.5)")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--low", type=int, default=5, help="mentions one at a time before the burst (default 5)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole benchmark N times and judge each target by its median (default 1)",
    )
    p.add_argument(
        "--app-dir",
        type=lambda v: Path(v).resolve(),
        default=ROOT,
        help="run `python -m bot` from this checkout (e.g. a `git archive` of another commit), to compare",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        const="burst",
        choices=("low", "burst"),
        help="py-spy record the app from this phase on (default: the burst; slows the app: figures are then "
        "not comparable)",
    )
    p.add_argument("--profile-rate", type=int, default=100, help="with --profile: samples per second")
    p.add_argument("--profile-seconds", type=int, default=0, help="with --profile: stop recording after N s")
    p.add_argument("--profile-out", help="with --profile: also keep py-spy's raw (collapsed) output here")
    p.add_argument(
        "--slack-limits",
        nargs="?",
        const="on",
        default="off",
        choices=("off", "on", "both"),
        help="FakeSlack applies Slack's published rate-limit tiers (on); `both` runs with them off, then on, "
        "and compares (default off)",
    )
    p.add_argument(
        "--previews",
        type=int,
        choices=range(0, 4),
        metavar="N",
        help="start the app with PREVIEW_IMAGES=N (0-3 partial images per image; default: not set, the app's own)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (ROOT / "bot").is_dir() or Path.cwd().resolve() != ROOT:
        print("run from the repository root: .venv/bin/python -m bench.run", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    modes = {"off": ("off",), "on": ("on",), "both": ("off", "on")}[args.slack_limits]
    by_mode: dict[str, list[dict[str, Any]]] = {}
    documents: dict[str, dict[str, Any]] = {}
    ok = True
    for mode in modes:
        if len(modes) > 1:
            print(f"\n##### Slack rate limits {mode} #####", flush=True)
        results = by_mode[mode] = []
        for run in range(args.repeat):
            if args.repeat > 1:
                print(f"\n=== run {run + 1} of {args.repeat} ===", flush=True)
            result = asyncio.run(Bench(args, slack_limits=mode == "on").run())
            text = render(result)
            print(text)
            results.append({**result, "table": text.splitlines()})
        if args.repeat == 1:
            documents[mode] = results[0]
            ok = ok and all(t["pass"] for t in results[0]["targets"])
            continue
        summary = summarize(results)
        text = render_summary(summary)
        print(text)
        documents[mode] = {"summary": summary, "summary_table": text.splitlines(), "runs": results}
        ok = ok and all(t["pass"] for t in summary["targets"])
    suffix = {"off": "", "on": "-limits", "both": "-both"}[args.slack_limits]
    suffix += f"-x{args.repeat}" if args.repeat > 1 else ""
    out = RESULTS / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{args.database}{suffix}.json"
    if len(modes) == 1:
        document = documents[modes[0]]
    else:
        text = render_modes(by_mode)
        print(text)
        document = {"modes": documents, "comparison_table": text.splitlines()}
    out.write_text(json.dumps(document, indent=2, default=str))
    print(f"\n  written: {out.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
