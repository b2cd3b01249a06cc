"""The processes the benchmarks start and read: `python -m bot` (its CPU and memory from /proc), its database,
and the floor (`bench.floor`); and the environment the app runs with against the fakes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.timing import PAGE_KB, now, pid_alive, stat_cpu, threads_cpu

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SIGNING_SECRET = "bench-signing-secret-0123456789"
API_KEY = "sk-bench-0123456789abcdef"
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def app_env(slack: Any, openai: Any, database_url: str, port: int, home: Path, **settings: str) -> dict[str, str]:
    """The environment of `python -m bot` in HTTP mode against the fakes; `settings` add to it."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(home)),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "OPENAI_API_KEY": API_KEY,
        "OPENAI_BASE_URL": openai.base_url,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        **settings,
    }


def git_state(root: Path = ROOT) -> dict[str, Any]:
    """The commit, whether product code differs from it, and a digest of the product code as it is now."""
    import hashlib
    import subprocess

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    digest = hashlib.sha256()
    for path in sorted(p for d in ("bot", "handlers", "storage") for p in (root / d).rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return {
        "app_dir": str(root),
        "head": git("rev-parse", "--short", "HEAD") if (root / ".git").exists() else None,
        "product_changes": git("status", "--porcelain", "--", "bot", "handlers", "storage").splitlines()
        if (root / ".git").exists()
        else [],
        "product_sha256": digest.hexdigest()[:16],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class App:
    """`python -m bot` as a subprocess; its log in a file; CPU and memory read from /proc."""

    def __init__(self, env: dict[str, str], log: Path, app_dir: Path = ROOT):
        self.env, self.log, self.app_dir = env, log, app_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.port = int(env["PORT"])
        self._last_cpu = 0.0
        self.leftovers: list[int] = []  # descendants that outlived the app after SIGTERM

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, within: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=self.app_dir, env=self.env, stdout=out, stderr=out
            )
        deadline = now() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"python -m bot exited with {self.proc.returncode}:\n{self.tail(40)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(f"http://127.0.0.1:{self.port}/healthz") as r:
                        if r.status == 200:
                            return
                if now() > deadline:
                    raise RuntimeError(f"python -m bot not healthy within {within:.0f} s:\n{self.tail(40)}")
                await asyncio.sleep(0.1)

    def tree(self) -> list[int]:
        """The app process and its descendants alive now (`python -m bot` may start worker processes)."""
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                with contextlib.suppress(OSError, ValueError):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        return found

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds of each process of the tree, by role: "serve" (`python -m bot`, which answers Slack)
        and "worker" (`python -m bot worker`). Summed from each thread's /proc schedstat, in nanoseconds: the
        utime/stime of /proc/<pid>/stat count in 10 ms ticks, too coarse for the CPU of a few images.
        (A thread that ended takes its time with it; `ticks_by_role` has it, and the report compares.)"""
        out: dict[str, float] = collections.defaultdict(float)
        for pid, role in self._roles():
            with contextlib.suppress(OSError):
                out[role] += threads_cpu(pid)
        return dict(out)

    def ticks_by_role(self) -> dict[str, float]:
        """As `cpu_by_role`, from /proc/<pid>/stat (10 ms ticks; includes threads that have ended)."""
        out: dict[str, float] = collections.defaultdict(float)
        for pid, role in self._roles():
            with contextlib.suppress(OSError):
                out[role] += stat_cpu(pid)[0]
        return dict(out)

    def _roles(self) -> list[tuple[int, str]]:
        found = []
        for pid in self.tree():
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                found.append((pid, "worker" if b"worker" in cmd else "serve"))
        return found

    def cpu_seconds(self) -> float:
        """CPU seconds of the app's process tree: each live process's threads (ns, from schedstat) and the
        children each has reaped (ticks)."""
        total, seen = 0.0, False
        for pid in self.tree():
            try:
                total += threads_cpu(pid) + stat_cpu(pid)[1]
            except OSError:
                continue
            seen = True
        if seen:  # once the app has exited, the last reading stands
            self._last_cpu = total
        return self._last_cpu

    def processes(self) -> list[dict[str, Any]]:
        """Each process of the tree: pid, command line, VmRSS and VmHWM (kB), threads."""
        out = []
        for pid in self.tree():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            info: dict[str, Any] = {"pid": pid, "cmd": cmd.strip()[:120]}
            for line in text.splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    info[key] = int(value.split()[0])
            out.append(info)
        return out

    def rss_kb(self) -> int:
        """VmRSS summed over the process tree, from /proc/<pid>/statm (cheap to read)."""
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
        return total

    async def stop(self, within: float = 45.0) -> int | None:
        """SIGTERM to `python -m bot`; SIGKILL after `within` s. Descendants still alive 10 s after it has
        exited are killed by pid and listed in `self.leftovers`."""
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        family = [pid for pid in self.tree() if pid != self.pid]
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = await asyncio.wait_for(self.proc.wait(), within)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            code = None
        deadline = now() + 10
        while (alive := [pid for pid in family if pid_alive(pid)]) and now() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # nothing to wait on: these are not our children
        for pid in alive:
            self.leftovers.append(pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return code

    def tail(self, n: int) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# --------------------------------------------------------------------------- databases


async def make_database(kind: str, tmp: Path) -> tuple[str, Callable[[], Any]]:
    """A fresh database URL and an async function that drops it."""
    if kind == "sqlite":

        async def nothing() -> None:
            return None

        return f"sqlite:///{tmp / 'easel-bench.db'}", nothing
    import asyncpg

    name = f"easel_bench_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("postgresql://", "postgres://", 1)
    conn = await asyncpg.connect(admin, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(admin, timeout=10)
        try:
            await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await c.close()

    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, drop


# --------------------------------------------------------------------------- the floor


async def measure_floor(api_url: str, token: str, image_file: Path, tries: int) -> dict[str, Any]:
    """`bench.floor` in a process of its own, allocating like the app's worker (see that module)."""
    from bot.processes import WORKER_MALLOC

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.floor", api_url, token, str(image_file), str(tries), cwd=ROOT,
        env={**os.environ, **WORKER_MALLOC}, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.floor exited with {proc.returncode}")
    return dict(json.loads(out))


def combine_floors(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One floor from the measurements before and after the run: medians over all their tries."""
    walls, cpus = before["wall_s_all"] + after["wall_s_all"], before["cpu_s_all"] + after["cpu_s_all"]
    return {
        **before,
        "tries": len(walls),
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "decode_wall_s": statistics.median([before["decode_wall_s"], after["decode_wall_s"]]),
        "decode_cpu_s": statistics.median([before["decode_cpu_s"], after["decode_cpu_s"]]),
        "decode_pybase64_wall_s": statistics.median([before["decode_pybase64_wall_s"],
                                                     after["decode_pybase64_wall_s"]]),
        "wall_s_all": walls,
        "cpu_s_all": cpus,
        "before": {"wall_s": before["wall_s"], "cpu_s": before["cpu_s"]},
        "after": {"wall_s": after["wall_s"], "cpu_s": after["cpu_s"]},
    }
