"""The load benchmark's run: the fakes, `python -m bot` and the Slack-side sender started, the phases driven
one after another, the floor measured before and after, and everything torn down again. What is measured is
stamped by `bench.timing`; `bench.report` turns it into figures."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import profiling
from bench.events import Request, Sender
from bench.processes import API_KEY, App, app_env, combine_floors, free_port, git_state, make_database, measure_floor
from bench.report import report
from bench.timing import OpenAITimes, Sampler, SlackTimes, machine_busy, now
from tests.fakes.openai_api import FakeOpenAI, encode_png
from tests.fakes.slack_api import FakeSlack


def noise_image(mb: float, width: int = 1024, height: int = 1024) -> tuple[bytes, int, int]:
    """A `width` x `height` PNG of about `mb` MiB that does not compress: as many rows of random pixels as
    make `mb` MiB, and the rest of the rows black (which deflate reduces to almost nothing). A 1024x1024 image
    of noise alone would be 3 MiB; this keeps the size a real answer has, and its bytes still do not shrink."""
    noisy = min(height, max(1, round(mb * 1024 * 1024 / (width * 3 + 1))))
    raw = b"".join(b"\x00" + os.urandom(width * 3) for _ in range(noisy))
    raw += (b"\x00" + bytes(width * 3)) * (height - noisy)
    return encode_png(width, height, raw, level=6), width, height



@dataclass
class Phase:
    name: str
    requests: list[Request]
    t0: float = 0.0
    t1: float = 0.0
    cpu0: float = 0.0
    cpu1: float = 0.0
    roles0: dict[str, float] = field(default_factory=dict)
    roles1: dict[str, float] = field(default_factory=dict)
    ticks0: dict[str, float] = field(default_factory=dict)  # the same from /proc/<pid>/stat, in ticks
    ticks1: dict[str, float] = field(default_factory=dict)
    bench_cpu: float = 0.0
    machine_busy: float = 0.0  # CPU seconds used by every process on the machine during the phase
    missing: list[str] = field(default_factory=list)
    timed_out: bool = False
    sender_lag: list[float] = field(default_factory=list)  # the sender process's loop lag while sending


class Bench:
    """One run of the load benchmark with `args` (as `bench.run` parses them): `await Bench(args).run()`.
    `slack_limits`: FakeSlack applies Slack's published rate-limit tiers (default: as `args.slack_limits` says,
    "on"); `args.previews` (if set) starts the app with PREVIEW_IMAGES=N."""

    def __init__(self, args: argparse.Namespace, *, slack_limits: bool | None = None):
        self.args = args
        self.slack_limits = getattr(args, "slack_limits", "off") == "on" if slack_limits is None else slack_limits
        self.previews: int | None = getattr(args, "previews", None)
        self.image, self.width, self.height = noise_image(args.image_mb)
        # the fake's partial images are small flat-colour ones: a shared file of the final image's size is the image
        self.slack_times, self.openai_times = SlackTimes(final_size=len(self.image)), OpenAITimes()
        self.slack = FakeSlack(observer=self.slack_times, rate_limits=self.slack_limits)
        self.openai = FakeOpenAI(
            api_key=API_KEY, latency=args.latency, image_factory=self._factory, observer=self.openai_times
        )
        self.phases: list[Phase] = []
        self.app: App | None = None
        self.git_at_start: dict[str, Any] = {}
        self.notes: list[str] = []

    def _factory(self, width: int, height: int, fmt: str, prompt: str) -> bytes:
        return self.image

    async def measure_floor(self, image_file: Path) -> dict[str, Any]:
        """The floor, with FakeSlack's rate limits off while it is measured: it is the yardstick of one upload,
        not a tenant of the workspace, so it neither meets 429s nor uses up the app's buckets (which start full
        again afterwards)."""
        self.slack.set_rate_limits(False)
        try:
            return await measure_floor(self.slack.api_url, self.slack.bot_token, image_file, 10)
        finally:
            self.slack.set_rate_limits(self.slack_limits)

    def seed(self, reqs: list[Request]) -> None:
        """Put each request's message in FakeSlack's history before its event is sent, as in Slack, where the
        message exists before its event arrives (conversations.replies on the thread then finds its root)."""
        for req in reqs:
            event = json.loads(req.body)["event"]
            extra = {"blocks": event["blocks"]} if event.get("blocks") else {}
            self.slack.add_message(event["channel"], event["text"], user=event["user"], ts=event["ts"],
                                   thread_ts=event.get("thread_ts"), **extra)

    # ---- waiting

    async def wait_images(self, reqs: list[Request], deadline: float) -> list[str]:
        """Wait until each request in `reqs` has its image or the deadline passes; returns those missing."""
        while True:
            missing = [r.key for r in reqs if self.slack_times.shared_tags[r.key] == 0]
            if not missing or now() >= deadline:
                return missing
            if self.app is not None and self.app.proc is not None and self.app.proc.returncode is not None:
                self.notes.append(
                    f"the app exited ({self.app.proc.returncode}) with {len(missing)} image(s) due"
                )
                return missing
            await asyncio.sleep(0.05)

    async def settle(self, quiet: float = 2.0, limit: float = 30.0) -> None:
        """Until nothing is generating and Slack has been quiet for `quiet` s (at most `limit` s)."""
        end = now() + limit
        while now() < end:
            if self.openai.in_flight == 0 and now() - self.slack_times.last_activity >= quiet:
                return
            await asyncio.sleep(0.1)
        self.notes.append(
            f"still busy {limit:.0f} s after the last phase (in flight: {self.openai.in_flight})"
        )

    # ---- phases

    async def phase_low(self, app: App, sender: Sender, name: str = "low", count: int | None = None) -> Phase:
        ph = Phase(name, [])
        ph.t0, ph.cpu0, b0, m0 = now(), app.cpu_seconds(), time.process_time(), machine_busy()
        ph.roles0, ph.ticks0 = app.cpu_by_role(), app.ticks_by_role()
        for i in range(self.args.low if count is None else count):
            req = sender.mention(
                f"{name[0]}{i}", name, f"C{name[0].upper()}{i:05d}", "ULOW0001", f"a quiet harbour at dawn number {i}"
            )
            ph.requests.append(req)
            self.seed([req])
            ph.sender_lag += await sender.send([req])
            missing = await self.wait_images([req], now() + self.args.latency + 60)
            if missing:
                ph.missing += missing
                ph.timed_out = True
        ph.t1, ph.cpu1, ph.bench_cpu = now(), app.cpu_seconds(), time.process_time() - b0
        ph.roles1, ph.ticks1 = app.cpu_by_role(), app.ticks_by_role()
        ph.machine_busy = machine_busy() - m0
        return ph

    async def phase_concurrent(
        self, name: str, app: App, sender: Sender, reqs: list[Request], spread: float = 1.0
    ) -> Phase:
        ph = Phase(name, reqs)
        ph.t0, ph.cpu0, b0, m0 = now(), app.cpu_seconds(), time.process_time(), machine_busy()
        ph.roles0, ph.ticks0 = app.cpu_by_role(), app.ticks_by_role()
        start = now() + 0.1
        self.seed(reqs)
        ph.sender_lag = await sender.send(reqs, start, spread)
        ph.missing = await self.wait_images(reqs, start + self.args.latency + 120)
        ph.timed_out = bool(ph.missing)
        ph.t1, ph.cpu1, ph.bench_cpu = now(), app.cpu_seconds(), time.process_time() - b0
        ph.roles1, ph.ticks1 = app.cpu_by_role(), app.ticks_by_role()
        ph.machine_busy = machine_busy() - m0
        return ph

    # ---- the whole run

    async def run(self) -> dict[str, Any]:
        args = self.args
        tmp = Path(tempfile.mkdtemp(prefix="easel-bench-"))
        started = dt.datetime.now()
        result: dict[str, Any] = {}
        drop: Callable[[], Any] | None = None
        app: App | None = None
        sampler: Sampler | None = None
        sender: Sender | None = None
        profiler: asyncio.subprocess.Process | None = None
        await self.slack.start()
        await self.openai.start()
        try:
            print(
                f"image: {self.width}x{self.height} noise PNG, {len(self.image) / 2**20:.2f} MiB; "
                f"measuring the floor ...",
                flush=True,
            )
            image_file = tmp / "image.png"
            image_file.write_bytes(self.image)
            floor = await self.measure_floor(image_file)
            database_url, drop = await make_database(args.database, tmp)
            port = free_port()
            env = app_env(
                self.slack,
                self.openai,
                database_url,
                port,
                tmp,
                MAX_CONCURRENT_GENERATIONS=str(max(1, args.burst)),
                OPENAI_IMAGES_PER_MINUTE="1000000",  # the fake account has no image limit (see bench.pacing)
                MAX_QUEUED_PER_USER=str(args.low + args.burst + args.replies + 10),
                SHUTDOWN_GRACE_SECONDS="5",
                LOG_LEVEL="WARNING",
                **({} if self.previews is None else {"PREVIEW_IMAGES": str(self.previews)}),
            )
            self.git_at_start = git_state(args.app_dir)  # the code the app is about to import
            app = self.app = App(env, tmp / "bot.log", args.app_dir)
            print(f"starting python -m bot on :{port} ({args.database}; Slack rate limits "
                  f"{'on' if self.slack_limits else 'off'}"
                  + ("" if self.previews is None else f"; PREVIEW_IMAGES={self.previews}") + ") ...", flush=True)
            await app.start()
            sampler = Sampler(app)
            sampler.start()
            sender = Sender(
                f"http://127.0.0.1:{port}/slack/events", self.slack.team_id, self.slack.bot_user_id
            )
            await sender.start()

            # Healthy is not yet idle (a worker process may still be starting): wait for quiet, then measure.
            quiet_by, quiet_for = now() + 30, 0
            while now() < quiet_by:
                c0 = app.cpu_seconds()
                await asyncio.sleep(0.5)
                quiet_for = quiet_for + 1 if app.cpu_seconds() - c0 <= 0.02 else 0
                if quiet_for >= 4:  # two seconds without work: the worker process has started too
                    break
            else:
                self.notes.append("the app never went quiet after start-up (idle CPU includes start-up)")
            idle_t0, idle_c0 = now(), app.cpu_seconds()
            await asyncio.sleep(12.0)  # longer than the worker's poll interval (10 s), so it holds one look
            idle_rate = (app.cpu_seconds() - idle_c0) / (now() - idle_t0)

            if args.profile == "low":
                profiler = await profiling.start(args, app, tmp)
            # The first request after a start pays one-time costs (connections, the SDKs' lazily built parts):
            # measured and shown on its own, outside the targets, which are about a running app.
            print("warm-up: 1 mention (shown, not in the targets) ...", flush=True)
            self.phases.append(await self.phase_low(app, sender, "warm-up", 1))
            print(f"phase 1: {args.low} mention(s) one after another ...", flush=True)
            self.phases.append(await self.phase_low(app, sender))

            print(f"phase 2: burst of {args.burst} mentions within 1 s ...", flush=True)
            if args.profile == "burst":  # from the burst on (optionally for --profile-seconds only)
                profiler = await profiling.start(args, app, tmp)
            burst = [
                sender.mention(
                    f"b{i}", "burst", f"CB{i:05d}", f"UB{i:05d}", f"a lighthouse in a storm no {i}"
                )
                for i in range(args.burst)
            ]
            self.phases.append(await self.phase_concurrent("burst", app, sender, burst))

            done = [r for r in burst if self.slack_times.shared_tags[r.key] > 0]
            step = max(1, len(done) // max(1, args.replies))
            roots = done[::step][: args.replies]
            if len(roots) < args.replies:
                self.notes.append(
                    f"only {len(roots)} burst threads had their image: {len(roots)} replies sent"
                )
            print(f"phase 3: {len(roots)} threaded replies within 1 s ...", flush=True)
            replies = [
                sender.reply(f"r{i}", "replies", root, f"now make it blue {i}")
                for i, root in enumerate(roots)
            ]
            if replies:
                self.phases.append(await self.phase_concurrent("replies", app, sender, replies))

            await self.settle()
            end_cpu = app.cpu_seconds()
            status = app.processes()
            # The floor again, now that the run is over: this machine's speed drifts over minutes, and the
            # ratios are to the median of both measurements.
            print("measuring the floor again ...", flush=True)
            floor = combine_floors(
                floor,
                await self.measure_floor(image_file),
            )
            if profiler is not None:
                result["profile"] = await profiling.stop(args, profiler, tmp)
            await sampler.stop()
            await sender.close()
            sender = None
            code = await app.stop()
            result.update(
                report(
                    self,
                    floor=floor,
                    idle_rate=idle_rate,
                    status=status,
                    end_cpu=end_cpu,
                    sampler=sampler,
                    app=app,
                    exit_code=code,
                    started=started,
                )
            )
            return result
        finally:
            if sender is not None:
                await sender.close()
            if sampler is not None:
                await sampler.stop()
            if profiler is not None and profiler.returncode is None:
                profiler.kill()
                await profiler.wait()
            if app is not None:
                await app.stop(within=10)
            await self.openai.close()
            await self.slack.close()
            if drop is not None:
                try:
                    await drop()
                except Exception as e:  # noqa: BLE001 - report, do not mask the run's own outcome
                    print(f"warning: could not drop the benchmark database: {e}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)
