"""docker-compose.yml: PostgreSQL and two Easel replicas behind one port, as the README describes it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", value)
    assert m, value
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_two_replicas_share_postgresql_behind_one_port() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    replicas = {name: s for name, s in services.items() if s.get("build") == "."}
    assert len(replicas) == 2
    grace = Settings.model_fields["shutdown_grace_seconds"].default
    urls = set()
    for service in replicas.values():
        assert _seconds(service["stop_grace_period"]) > grace  # running jobs may finish on `docker compose stop`
        url = service["environment"]["DATABASE_URL"]
        assert url.startswith("postgresql://") and "@db:" in url
        urls.add(url)
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        assert "ports" not in service  # only the proxy is published
    assert len(urls) == 1
    db = services["db"]
    assert any(v.split(":")[0] in compose["volumes"] for v in db["volumes"])  # the database outlives containers
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    [published] = services["proxy"]["ports"]
    assert published == "3000:3000"
    upstreams = re.findall(r"server (\S+):3000", (ROOT / "deploy" / "nginx.conf").read_text())
    assert sorted(upstreams) == sorted(replicas)


def test_compose_validates_where_a_compose_tool_is_installed(tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    command = [tool] if tool else ["docker", "compose"]
    if not tool and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        return  # no compose tool on this machine: the structure is checked above
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    result = subprocess.run([*command, "--project-directory", str(tmp_path), "-f", str(ROOT / "docker-compose.yml"),
                             "config", "--quiet"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
