"""The load benchmark's result document as the table it prints."""

from __future__ import annotations

from typing import Any


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"


def _ratio(name: str) -> bool:
    """Whether a target's value is a ratio (shown as "1.23x")."""
    return "/ floor" in name or name.endswith("/ upload tier")


def _per_method(counts: dict[str, int]) -> str:
    return ", ".join(f"{m} {n}" for m, n in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def render_limits(lim: dict[str, Any]) -> list[str]:
    """The lines about Slack's rate limits: the burst's 429s, its images posted once, its posting time."""
    head = (f"  Slack rate limits {'ON (published tiers)' if lim['on'] else 'off'}"
            + ("" if lim.get("previews") is None else f", PREVIEW_IMAGES={lim['previews']}"))
    if "requests" not in lim:
        return [head + f"; 429s in the run: {_per_method(lim['run_429s_per_method'])}"]
    ratio = lim["posting_vs_tier"]
    return [
        head + f"; burst 429s per method: {_per_method(lim['phase_429s_per_method'])} "
        f"(whole run: {sum(lim['run_429s_per_method'].values())})",
        f"    burst images posted exactly once: {'yes' if lim['posted_exactly_once'] else 'NO'} "
        f"(lost {lim['lost']}, duplicated {lim['duplicated']}; previews posted {lim['previews_posted']})",
        f"    burst posting: first {_ms(lim['first_posted_s'])}, last {_ms(lim['last_posted_s'])} after the burst "
        f"began; first -> last {_ms(lim['posting_span_s'])}, {lim['tier_method']}'s tier allows "
        f"{_ms(lim['tier_allows_s'])} for {lim['requests']} images"
        + ("" if ratio is None else f": {ratio:.2f}x"),
    ]


def _s3(d: dict[str, Any]) -> str:
    return f"{_ms(d.get('p50')):>9} {_ms(d.get('p99')):>9} {_ms(d.get('max')):>9}"


def render(r: dict[str, Any]) -> str:
    c, f = r["config"], r["floor"]
    out = [
        "",
        f"Easel load benchmark - {r['started']} - database {c['database']} - "
        + (f"commit {r['git']['head']}" if r["git"]["head"] else f"app from {r['git']['app_dir']}")
        + (" + uncommitted product changes" if r["git"]["product_changes"] else "")
        + f" (product code {r['git']['product_sha256']})"
        + (" - WARNING: product code changed during the run" if r["code_changed_during_run"] else ""),
        f"  burst {c['burst']}, replies {c['replies']}, low {c['low']}, "
        f"fake latency {c['latency_s']} s/image, "
        f"image {c['image_px']} PNG {c['image_bytes'] / 2**20:.2f} MiB, MAX_CONCURRENT_GENERATIONS "
        f"{c['max_concurrent_generations']}, {r['machine']['cpus']} CPUs, Slack rate limits "
        f"{'on' if c.get('slack_limits') else 'off'}"
        + ("" if c.get("previews") is None else f", PREVIEW_IMAGES={c['previews']}"),
        f"  floor (decode + upload, median of {f['tries']}, before and after the run): {_ms(f['wall_s'])} wall, "
        f"{f['cpu_s'] * 1000:.1f} ms CPU (before {f['before']['cpu_s'] * 1000:.1f}, after "
        f"{f['after']['cpu_s'] * 1000:.1f}; a process of its own); standard-library decode alone "
        f"{f['decode_cpu_s'] * 1000:.1f} ms CPU (pybase64, which the app uses: "
        f"{f['decode_pybase64_wall_s'] * 1000:.2f} ms)",
        f"  app idle CPU: {r['app_idle_cpu_per_s'] * 1000:.2f} ms/s",
        "",
        f"  {'per phase':<38}{'p50':>9} {'p99':>9} {'max':>9}",
    ]
    rows = [
        ("ack (send -> HTTP 200)", "ack_s"),
        ("first visible sign", "first_sign_s"),
        ("send -> generation starts", "to_generation_start_s"),
        ("send -> image posted", "e2e_s"),
        ("generation (fake)", "generation_s"),
        ("overhead = e2e - generation", "overhead_s"),
        ("generation end -> posted", "posted_after_generation_s"),
    ]
    for name, ph in r["phases"].items():
        out.append(
            f"  [{name}] {ph['requests']} requests, {ph['images']} images, {ph['seconds']:.1f} s, "
            f"app CPU {ph['app_cpu_s']:.2f} s = "
            f"{(ph['app_cpu_per_image_s'] or 0) * 1000:.1f} ms/image ("
            + " + ".join(f"{role} {(v or 0) * 1000:.1f}" for role, v in ph["app_cpu_per_image_by_process_s"].items())
            + f"), peak RSS {ph['app_peak_rss_mb']:.0f} MB"
            + (f", MISSING {len(ph['missing'])}" if ph["missing"] else "")
        )
        for label, key in rows:
            out.append(f"    {label:<36}{_s3(ph[key])}")
        for k, v in ph["after_generation_split_s"].items():
            out.append(f"      {k:<34}{_s3(v)}")
        lag, slag = ph["bench_loop_lag_s"], ph["sender_loop_lag_s"]
        out.append(
            f"    (bench with the fakes: CPU {ph['bench_cpu_s']:.2f} s, event-loop lag p99 {_ms(lag['p99'])}, "
            f"max {_ms(lag['max'])}; sender's event-loop lag p99 {_ms(slag['p99'])}, max {_ms(slag['max'])}; "
            f"other processes: CPU {ph['other_processes_cpu_s']:.2f} s)"
        )
        if ph["non_200"]:
            out.append(f"    non-200 acks: {len(ph['non_200'])}, e.g. {ph['non_200'][:3]}")
    a, d = r["app"], r["delivery"]
    hwms = " + ".join(str(p.get("VmHWM", 0) // 1024) for p in a["processes"])
    out += [
        f"  pooled ack {_s3(r['pooled']['ack_s'])}   first sign {_s3(r['pooled']['first_sign_s'])}",
        f"  app ({len(a['processes'])} process(es)): peak RSS {a['peak_rss_mb_sampled']:.0f} MB sampled "
        f"(sum over processes), VmHWM {hwms} MB; "
        f"CPU {a['cpu_s_all_phases']:.1f} s for all phases = "
        f"{(a['cpu_per_image_all_phases_s'] or 0) * 1000:.1f} "
        f"ms/image; exit code {a['exit_code']}; {a['log_problem_lines']} warning/error log lines",
        f"  delivery: {d['requests']} requests, {d['images']} images, lost {d['lost']}, duplicated "
        f"{d['duplicated']} (threads over expected {d['threads_over_expected']}), stray {d['stray_images']}, "
        f"generations created {d['generations_created']}, signs of work left {d['signs_of_work_left']}, "
        f"failed marks {d['failed_marks']}, previews posted {d.get('previews_posted', 0)}",
    ]
    if r.get("slack_rate_limits"):
        out += render_limits(r["slack_rate_limits"])
    for note in r["notes"]:
        out.append(f"  note: {note}")
    out += ["", f"  {'target':<44}{'value':>12}  {'rule':<12} result"]
    for t in r["targets"]:
        v = t["value"]
        if v is None:
            shown = "-"
        elif _ratio(t["target"]):
            shown = f"{v:.2f}x"
        elif "RSS" in t["target"]:
            shown = f"{v:.0f} MB"
        elif t["target"] in ("lost", "duplicated"):
            shown = f"{v:.0f}"
        else:
            shown = _ms(v)
        out.append(f"  {t['target']:<44}{shown:>12}  {t['rule']:<12} {'PASS' if t['pass'] else 'FAIL'}")
    if a["log_problems_sample"]:
        out += ["", "  first warning/error lines of the app log:"]
        out += [f"    {line[:200]}" for line in a["log_problems_sample"][:8]]
    prof = r.get("profile")
    if prof and "self_top" in prof:
        out += ["", f"  py-spy: {prof['samples']} samples; top self time:"]
        out += [f"    {n:>6}  {frame[:150]}" for frame, n in prof["self_top"][:25]]
    return "\n".join(out)


def render_summary(summary: dict[str, Any]) -> str:
    def shown(name: str, v: float | None) -> str:
        if v is None:
            return "-"
        if _ratio(name):
            return f"{v:.2f}x"
        if "RSS" in name:
            return f"{v:.0f} MB"
        if name in ("lost", "duplicated"):
            return f"{v:.0f}"
        return _ms(v)

    out = ["", f"  over {summary['runs']} runs: {'target':<44}{'median':>10}{'worst':>10}  {'rule':<12}runs ok  result"]
    for t in summary["targets"]:
        out.append(
            f"  {'':<12}{t['target']:<44}{shown(t['target'], t['median']):>10}{shown(t['target'], t['worst']):>10}  "
            f"{t['rule']:<12}{t['passed_runs']}/{t['runs']}     {'PASS' if t['pass'] else 'FAIL'}"
        )
    return "\n".join(out)


def render_modes(by_mode: dict[str, list[dict[str, Any]]]) -> str:
    """Side by side, the runs with Slack's rate limits off and on: per run, the burst's 429s, its images posted
    once, its posting time against the upload tier, and the targets met."""
    out = ["", "  Slack rate limits off vs on (per run):",
           f"    {'mode':<6}{'run':>4}  {'burst 429s':>10}  {'posted once':<12}{'posting':>10}{'tier allows':>13}"
           f"{'ratio':>8}  targets met   429s per method"]
    for mode, runs in by_mode.items():
        for n, r in enumerate(runs, 1):
            lim = r.get("slack_rate_limits") or {}
            met = sum(1 for t in r["targets"] if t["pass"])
            ratio = lim.get("posting_vs_tier")
            counts = lim.get("phase_429s_per_method") or {}
            once = lim.get("posted_exactly_once")
            out.append(
                f"    {mode:<6}{n:>4}  {sum(counts.values()):>10}  "
                f"{'-' if once is None else 'yes' if once else 'NO':<12}{_ms(lim.get('posting_span_s')):>10}"
                f"{_ms(lim.get('tier_allows_s')):>13}{'-' if ratio is None else f'{ratio:.2f}x':>8}  "
                f"{met}/{len(r['targets']):<10}  {_per_method(counts)}"
            )
    return "\n".join(out)
