"""The load benchmark's figures: from what was stamped during a run (`bench.timing`) to one result document
with its targets judged; and, across repeated runs, each target's median and worst."""

from __future__ import annotations

import collections
import math
import os
import platform
import statistics
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bench.processes import App, git_state
from bench.timing import Sampler
from tests.fakes.slack_api import RATE_LIMITS

if TYPE_CHECKING:
    from bench.driver import Bench, Phase
    from bench.events import Request

FLOOR_CHANNEL = "CFLOOR0000"  # where bench.floor shares its uploads: no request's thread
UPLOAD_METHOD = "files.completeUploadExternal"  # the upload method whose tier bounds a burst's posting time
POSTING_TARGET = 1.2  # the burst's posting time at most this many times what that tier allows


# --------------------------------------------------------------------------- statistics


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p99 of 200 values is the 198th smallest)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: Iterable[float | None]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"n": 0, "p50": None, "p99": None, "max": None, "mean": None}
    return {
        "n": len(vals),
        "p50": pct(vals, 50),
        "p99": pct(vals, 99),
        "max": max(vals),
        "mean": statistics.fmean(vals),
    }


# --------------------------------------------------------------------------- one request


def timeline(bench: Bench, req: Request) -> dict[str, Any]:
    """Everything measured about one request, in seconds from its send."""
    s, o = bench.slack_times, bench.openai_times
    shares = [x for x in s.shares if x["tag"] == req.key]
    posted = shares[0]["t"] if shares else None
    runs = [g for g in o.generations.get(req.key, []) if g["end"] is not None]
    run = next((g for g in reversed(runs) if g["status"] == "completed"), runs[-1] if runs else None)
    # A reply's sign may be a post in its thread (its status message) after it was sent.
    in_thread = None if req.thread_ts == req.ts or req.sent is None else next(
        (t for t in s.posts_in.get((req.channel, req.thread_ts), []) if t >= req.sent), None)
    signs = [
        t
        for t in (s.reacted.get((req.channel, req.ts)), s.posted_in.get((req.channel, req.ts)), in_thread, posted)
        if t is not None
    ]
    creates = o.creates.get(req.key, [])
    out: dict[str, Any] = {
        "key": req.key,
        "status": req.status,
        "error": req.error,
        "images": len(shares),
        "generations_started": len(runs),
        "creates": len(creates),
    }
    if req.sent is None:
        return out

    def rel(t: float | None) -> float | None:
        return None if t is None else t - req.sent  # type: ignore[operator]

    out.update(
        ack=rel(req.acked) if req.status == 200 else None,
        sign=rel(min(signs)) if signs else None,
        create=rel(creates[0]) if creates else None,
        e2e=rel(posted),
    )
    if run is not None:
        out["gen"] = run["end"] - run["start"]
        out["gen_start"] = rel(run["start"])
    if run is not None and posted is not None:
        out["overhead"] = posted - req.sent - out["gen"]
        out["after_gen"] = posted - run["end"]
        file_id = shares[0]["file_id"]
        ticket, b0, b1 = s.tickets.get(file_id), s.bytes_started.get(file_id), s.bytes_done.get(file_id)
        written = bench.openai.final_written_at.get(run["id"])
        if None not in (ticket, b0, b1, written):
            out["split"] = {
                "gen_end_to_fake_wrote_final_event": written - run["end"],
                "fake_wrote_to_upload_ticket": ticket - written,
                "ticket_to_bytes": b0 - ticket,
                "bytes": b1 - b0,
                "bytes_to_complete": posted - b1,
            }
    return out


# --------------------------------------------------------------------------- one phase


def phase_figures(ph: Phase, lines: list[dict[str, Any]], sampler: Sampler) -> dict[str, Any]:
    """The figures of one phase, from its requests' timelines (`lines`)."""
    images = sum(line["images"] for line in lines)
    cpu = ph.cpu1 - ph.cpu0
    split = collections.defaultdict(list)
    for line in lines:
        for k, v in line.get("split", {}).items():
            split[k].append(v)
    lag = sampler.lag_in(ph.t0, ph.t1)
    for line, req in zip(lines, ph.requests, strict=True):
        line["sent_at"] = None if req.sent is None else req.sent - ph.t0
    return {
        "per_request": lines,
        "requests": len(ph.requests),
        "images": images,
        "missing": ph.missing,
        "timed_out": ph.timed_out,
        "seconds": ph.t1 - ph.t0,
        "non_200": [(line["key"], line["status"], line["error"]) for line in lines if line["status"] != 200],
        "ack_s": summary(line.get("ack") for line in lines),
        "first_sign_s": summary(line.get("sign") for line in lines),
        "to_generation_start_s": summary(line.get("gen_start") for line in lines),
        "e2e_s": summary(line.get("e2e") for line in lines),
        "generation_s": summary(line.get("gen") for line in lines),
        "overhead_s": summary(line.get("overhead") for line in lines),
        "posted_after_generation_s": summary(line.get("after_gen") for line in lines),
        "after_generation_split_s": {k: summary(v) for k, v in split.items()},
        "app_cpu_s": cpu,
        "app_cpu_per_image_s": cpu / images if images else None,
        "app_cpu_per_image_by_process_s": {
            role: (ph.roles1.get(role, 0.0) - ph.roles0.get(role, 0.0)) / images if images else None
            for role in sorted(set(ph.roles0) | set(ph.roles1))
        },
        # the same from 10 ms ticks: more than the above only if threads ended during the phase
        "app_cpu_ticks_s": sum(ph.ticks1.values()) - sum(ph.ticks0.values()),
        "app_peak_rss_mb": (sampler.peak_rss_kb(ph.t0, ph.t1) or 0) / 1024,
        "app_rss_mb_every_half_second": [
            round(kb / 1024)
            for t, kb in sampler.rss
            if ph.t0 <= t <= ph.t1 and round((t - ph.t0) * 20) % 10 == 0
        ],
        "bench_cpu_s": ph.bench_cpu,
        "other_processes_cpu_s": max(0.0, ph.machine_busy - cpu - ph.bench_cpu),
        "bench_loop_lag_s": summary(lag),
        "sender_loop_lag_s": summary(ph.sender_lag),
    }


def ended_threads_notes(phases: dict[str, Any]) -> list[str]:
    """A note for each phase whose CPU by /proc ticks exceeds that of its live threads: threads that ended
    during it took their time with them, and its CPU figures are too low."""
    notes = []
    for name, ph in phases.items():
        by_ticks = ph["app_cpu_ticks_s"]
        by_threads = sum(ph["app_cpu_per_image_by_process_s"].values()) * (ph["images"] or 0)
        if by_ticks - by_threads > 0.03 + 0.1 * by_threads:
            notes.append(f"{name}: threads that ended took CPU with them: {by_ticks:.2f} s by /proc ticks, "
                         f"{by_threads:.2f} s by live threads (the CPU figures are then too low)")
    return notes


# --------------------------------------------------------------------------- exactly once


def delivery(bench: Bench) -> dict[str, Any]:
    """Exactly-once, from what FakeSlack shared (every share, matched by tag and by thread)."""
    keys = {r.key for ph in bench.phases for r in ph.requests}
    per_tag, shares = bench.slack_times.shared_tags, bench.slack_times.shares
    lost = sorted(k for k in keys if per_tag[k] == 0)
    expected_per_thread = collections.Counter((r.channel, r.thread_ts) for ph in bench.phases for r in ph.requests)
    per_thread = collections.Counter((x["channel"], x["thread_ts"]) for x in shares if x["channel"] != FLOOR_CHANNEL)
    reactions = bench.slack.reactions.values()
    return {
        "requests": len(keys),
        "images": sum(per_tag[k] for k in keys),
        "lost": len(lost),
        "lost_keys": lost[:50],
        "duplicated": sum(per_tag[k] - 1 for k in keys if per_tag[k] > 1),
        "threads_over_expected": sum(1 for t, c in per_thread.items() if c > expected_per_thread.get(t, 0)),
        "stray_images": sum(1 for x in shares if x["channel"] != FLOOR_CHANNEL and x["tag"] not in keys),
        "generations_created": sum(len(v) for k, v in bench.openai_times.creates.items() if k in keys),
        "signs_of_work_left": sum(1 for names in reactions if "hourglass_flowing_sand" in names),
        "failed_marks": sum(1 for names in reactions if "warning" in names),
        "previews_posted": len(bench.slack_times.preview_shares),
    }


# --------------------------------------------------------------------------- Slack's rate limits


def tier_allows_s(images: int, method: str = UPLOAD_METHOD) -> float:
    """The least time from a burst's first image posted to its last that `method`'s tier allows: its bucket
    (full at the start) posts the first `burst` at once, then one every 60/per_minute s (Tier 4: N images need
    max(0, N - 100) / 100 minutes after the first 100)."""
    limit = RATE_LIMITS[method]
    return max(0.0, images - limit.capacity) * 60.0 / limit.per_minute


def rate_limits(bench: Bench, ph: Phase | None) -> dict[str, Any]:
    """For a phase (the burst): the 429s it met per method, whether each request's image was posted exactly
    once (and how many previews were), and its posting time against what the upload tier allows."""
    s = bench.slack_times
    every = dict(collections.Counter(method for _, method, _ in s.limited))
    out: dict[str, Any] = {"on": bench.slack_limits, "previews": bench.previews, "run_429s_per_method": every}
    if ph is None:
        return out
    keys = {r.key for r in ph.requests}
    per_request = [s.shared_tags[r.key] for r in ph.requests]
    posted = sorted(x["t"] for x in s.shares if x["tag"] in keys)
    # previews may be uploaded unshared (shown in a message by file id): all of those the phase saw
    previews = [x for x in s.preview_shares if ph.t0 <= x["t"] <= ph.t1]
    allowed = tier_allows_s(len(ph.requests))
    span = posted[-1] - posted[0] if posted else None
    out.update(
        requests=len(ph.requests),
        phase_429s_per_method=dict(collections.Counter(m for t, m, _ in s.limited if ph.t0 <= t <= ph.t1)),
        posted_exactly_once=all(n == 1 for n in per_request),
        lost=sum(1 for n in per_request if n == 0),
        duplicated=sum(n - 1 for n in per_request if n > 1),
        previews_posted=len(previews),
        first_posted_s=posted[0] - ph.t0 if posted else None,
        last_posted_s=posted[-1] - ph.t0 if posted else None,
        posting_span_s=span,
        tier_method=UPLOAD_METHOD,
        tier_allows_s=allowed,
        posting_vs_tier=None if span is None or allowed <= 0 else span / allowed,
    )
    return out


# --------------------------------------------------------------------------- targets


def judge(phases: dict[str, Any], pooled: dict[str, Any], floor: dict[str, Any], peak_rss_mb: float,
          lost: int, duplicated: int, limits: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each target with its value and whether it is met."""
    low, burst = phases.get("low", {}), phases.get("burst", {})
    targets: list[dict[str, Any]] = []

    def target(name: str, value: float | None, limit: float, text: str, *, strict: bool = False) -> None:
        ok = value is not None and (value < limit if strict else value <= limit)
        targets.append({"target": name, "value": value, "limit": limit, "rule": text, "pass": ok})

    target("ack p99 (all requests)", pooled["ack_s"]["p99"], 0.100, "<= 100 ms")
    target("ack max (all requests)", pooled["ack_s"]["max"], 1.0, "< 1 s", strict=True)
    target("first visible sign p99 (all requests)", pooled["first_sign_s"]["p99"], 1.0, "<= 1 s")
    low_over = low.get("overhead_s", {}).get("p50")
    target(
        "low-load overhead p50 / floor",
        None if low_over is None else low_over / floor["wall_s"],
        3.0,
        "<= 3x floor",
    )
    for name, ph in phases.items():
        if name == "warm-up":
            continue
        per = ph["app_cpu_per_image_s"]
        target(f"CPU per image ({name}) / floor", None if per is None else per / floor["cpu_s"], 3.0, "<= 3x floor")
    target(
        "burst: posted after generation p99",
        burst.get("posted_after_generation_s", {}).get("p99"),
        10.0,
        "<= 10 s",
    )
    if limits and limits["on"] and limits.get("tier_allows_s"):  # Slack's tiers on, and they bound the burst
        target("burst posting / upload tier", limits["posting_vs_tier"], POSTING_TARGET,
               f"<= {POSTING_TARGET}x")
    target("peak RSS (MB)", peak_rss_mb, 300.0, "<= 300 MB")
    target("lost", float(lost), 0.0, "0")
    target("duplicated", float(duplicated), 0.0, "0")
    return targets


# --------------------------------------------------------------------------- the whole run


def report(
    bench: Bench,
    *,
    floor: dict[str, Any],
    idle_rate: float,
    status: list[dict[str, Any]],
    end_cpu: float,
    sampler: Sampler,
    app: App,
    exit_code: int | None,
    started: Any,
) -> dict[str, Any]:
    """The result document of one run (what `bench.render` prints and `bench.run` writes as JSON)."""
    args = bench.args
    phases: dict[str, Any] = {}
    everyone: list[dict[str, Any]] = []
    for ph in bench.phases:
        lines = [timeline(bench, r) for r in ph.requests]
        if ph.name != "warm-up":
            everyone += lines
        phases[ph.name] = phase_figures(ph, lines, sampler)
    sent = delivery(bench)

    rss_peak_sampled = (sampler.peak_rss_kb() or 0) / 1024
    hwm = max((p.get("VmHWM", 0) for p in status), default=0) / 1024  # of the largest process
    hwm_sum = sum(p.get("VmHWM", 0) for p in status) / 1024  # an upper bound for the tree's peak
    total_images = sum(p["images"] for name, p in phases.items() if name != "warm-up")
    measured = [ph for ph in bench.phases if ph.name != "warm-up"]
    first_cpu = measured[0].cpu0 if measured else end_cpu
    log = app.log.read_text(errors="replace").splitlines() if app.log.exists() else []
    problems = [line for line in log if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    pooled = {
        "ack_s": summary(line.get("ack") for line in everyone),
        "first_sign_s": summary(line.get("sign") for line in everyone),
    }
    limits = rate_limits(bench, next((ph for ph in bench.phases if ph.name == "burst"), None))
    targets = judge(phases, pooled, floor, max(rss_peak_sampled, hwm), sent["lost"],
                    sent["duplicated"] + sent["threads_over_expected"], limits)
    bench.notes += ended_threads_notes(phases)
    if app.leftovers:
        bench.notes.append(f"processes still alive 10 s after the app exited (killed): {app.leftovers}")

    return {
        "started": started.isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "config": {
            "burst": args.burst,
            "replies": args.replies,
            "latency_s": args.latency,
            "image_mb": args.image_mb,
            "image_bytes": len(bench.image),
            "image_px": f"{bench.width}x{bench.height}",
            "database": args.database,
            "low": args.low,
            "max_concurrent_generations": max(1, args.burst),
            "slack_limits": bench.slack_limits,
            "previews": bench.previews,
        },
        "git": bench.git_at_start,
        "code_changed_during_run": bench.git_at_start != git_state(args.app_dir),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "floor": floor,
        "app_idle_cpu_per_s": idle_rate,
        "phases": phases,
        "pooled": pooled,
        "app": {
            "peak_rss_mb_sampled": rss_peak_sampled,
            "vm_hwm_mb": hwm,
            "vm_hwm_sum_mb": hwm_sum,
            "processes": status,
            "leftover_processes": app.leftovers,
            "cpu_s_all_phases": end_cpu - first_cpu,
            "cpu_per_image_all_phases_s": (end_cpu - first_cpu) / total_images if total_images else None,
            "exit_code": exit_code,
            "log_problem_lines": len(problems),
            "log_problems_sample": problems[:20],
            "log_tail": log[-20:],
        },
        "delivery": sent,
        "slack_rate_limits": limits,
        "notes": bench.notes,
        "targets": targets,
    }


# --------------------------------------------------------------------------- repeated runs


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Across repeated runs: each target's median and worst value, and in how many runs it passed. A target
    counts as met when its median meets it (this machine's speed drifts from run to run)."""
    rows = []
    for i, first in enumerate(results[0]["targets"]):
        runs = [r["targets"][i] for r in results]
        values = [t["value"] for t in runs if t["value"] is not None]
        median = statistics.median(values) if values else None
        worst = max(values) if values else None  # every target here is an upper bound
        strict = first["rule"].startswith("<") and not first["rule"].startswith("<=")
        ok = median is not None and (median < first["limit"] if strict else median <= first["limit"])
        rows.append({
            "target": first["target"], "rule": first["rule"], "limit": first["limit"], "median": median,
            "worst": worst, "passed_runs": sum(1 for t in runs if t["pass"]), "runs": len(runs), "pass": ok,
        })
    return {"runs": len(results), "targets": rows}
