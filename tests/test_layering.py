"""Import layering of bot/, handlers/ and storage/, checked on the source with an AST walk.

- storage imports nothing from bot, handlers, slack_bolt, slack_sdk or openai;
- only the OpenAI side (bot/imaging.py, bot/answers.py, bot/openai_client.py), the composition root
  (bot/assembly.py, for a type) and bot/checks.py (the key check at start-up) import openai;
- within bot/, only the Slack side (bot/slack.py), the composition root, the web side, bot/installs.py and the
  start-up checks import slack_sdk, and only the composition root, the web side (Bolt's middleware), the
  processes (Socket Mode) and bot/installs.py (Bolt's authorisation from stored installs) import slack_bolt;
- handlers import no openai, and of storage only storage.models (no Store, no engine, no SQL);
- nothing outside the composition roots (bot/assembly.py, bot/console.py), the web side (bot/web.py: the
  shape check in front of Bolt) and handlers itself imports handlers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "storage")

OPENAI_ALLOWED = {"bot/imaging.py", "bot/answers.py", "bot/openai_client.py", "bot/assembly.py", "bot/checks.py"}
SLACK_SDK_ALLOWED_IN_BOT = {"bot/slack.py", "bot/assembly.py", "bot/web.py", "bot/checks.py", "bot/checklist.py",
                            "bot/installs.py"}
SLACK_BOLT_ALLOWED_IN_BOT = {"bot/assembly.py", "bot/web.py", "bot/processes.py", "bot/installs.py"}
HANDLERS_IMPORTERS = {"bot/assembly.py", "bot/web.py", "bot/console.py"}
STORAGE_FORBIDDEN = {"bot", "handlers", "slack_bolt", "slack_sdk", "openai"}
DATABASE_LIBRARIES = {"sqlalchemy", "alembic", "asyncpg", "aiosqlite"}


def _module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: str, source: str) -> set[str]:
    """Every module a file imports, anywhere in it (functions, TYPE_CHECKING blocks, importlib calls).

    `from a.b import c` yields `a.b.c` (c may be a submodule); relative imports are resolved."""
    tree = ast.parse(source, filename=path)
    package = _module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(module if alias.name == "*" else f"{module}.{alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = getattr(func, "attr", None) or getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value)
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


def violations(files: dict[str, str]) -> list[str]:
    """The layering rules broken by `files` (repository-relative path -> source)."""
    problems: list[str] = []
    for path, source in sorted(files.items()):
        package = path.split("/")[0]
        for module in sorted(imports_of(path, source)):
            top = _top(module)
            if package == "storage" and top in STORAGE_FORBIDDEN:
                problems.append(f"{path}: storage must not import {module}")
            if top == "openai" and path not in OPENAI_ALLOWED:
                problems.append(f"{path}: only {sorted(OPENAI_ALLOWED)} may import openai ({module})")
            if package == "bot" and top == "slack_sdk" and path not in SLACK_SDK_ALLOWED_IN_BOT:
                problems.append(f"{path}: only {sorted(SLACK_SDK_ALLOWED_IN_BOT)} may import slack_sdk "
                                f"({module})")
            if package == "bot" and top == "slack_bolt" and path not in SLACK_BOLT_ALLOWED_IN_BOT:
                problems.append(f"{path}: only {sorted(SLACK_BOLT_ALLOWED_IN_BOT)} may import slack_bolt "
                                f"({module})")
            if package == "handlers":
                models_only = module == "storage.models" or module.startswith("storage.models.")
                if top == "storage" and not models_only:
                    problems.append(f"{path}: handlers may import only storage.models, not {module}")
                if top in DATABASE_LIBRARIES:
                    problems.append(f"{path}: handlers must not talk to the database ({module})")
            if package != "handlers" and top == "handlers" and path not in HANDLERS_IMPORTERS:
                problems.append(f"{path}: only {sorted(HANDLERS_IMPORTERS)} may import handlers ({module})")
    return problems


def _real_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            files[file.relative_to(ROOT).as_posix()] = file.read_text(encoding="utf-8")
    return files


REAL = _real_files()


def test_the_walk_sees_the_packages_and_their_known_imports() -> None:
    for path in ("bot/assembly.py", "bot/imaging.py", "bot/slack.py", "handlers/payloads.py",
                 "storage/store.py", "storage/migrations/env.py"):
        assert path in REAL, path
    assert "openai" in imports_of("bot/imaging.py", REAL["bot/imaging.py"])
    assert any(m.startswith("slack_sdk.") for m in imports_of("bot/slack.py", REAL["bot/slack.py"]))
    assert "storage.models.NewJob" in imports_of("handlers/payloads.py", REAL["handlers/payloads.py"])
    assert "handlers.register_handlers" in imports_of("bot/assembly.py", REAL["bot/assembly.py"])
    # an import inside a function counts too
    assert "bot.processes" in imports_of("bot/__main__.py", REAL["bot/__main__.py"])


def test_the_code_keeps_its_layers() -> None:
    problems = violations(REAL)
    assert not problems, "layering broken:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("storage/store.py", "from bot import messages\n", "storage must not import bot.messages"),
        ("storage/extra.py", "def f():\n    import slack_sdk\n", "storage must not import slack_sdk"),
        ("storage/migrations/env.py", "import openai\n", "storage must not import openai"),
        ("storage/store.py", "from handlers.payloads import Context\n", "storage must not import handlers"),
        ("storage/x.py", "import importlib\nimportlib.import_module('slack_bolt')\n",
         "storage must not import slack_bolt"),
        ("bot/jobs.py", "from openai import AsyncOpenAI\n", "may import openai"),
        ("handlers/events.py", "import openai.types\n", "may import openai"),
        ("bot/jobs.py", "from slack_sdk.web.async_client import AsyncWebClient\n",
         "may import slack_sdk"),
        ("bot/intake.py", "from slack_bolt.async_app import AsyncApp\n", "may import slack_bolt"),
        ("handlers/payloads.py", "from storage import Store\n", "only storage.models, not storage.Store"),
        ("handlers/events.py", "from storage.store import Store\n", "only storage.models"),
        ("handlers/events.py", "import storage\n", "only storage.models, not storage"),
        ("handlers/events.py", "import sqlalchemy as sa\n", "must not talk to the database"),
        ("bot/worker.py", "from handlers import payloads\n", "may import handlers"),
        ("bot/processes.py", "from handlers import register_handlers\n", "may import handlers"),
        ("bot/jobs.py", "from slack_bolt.async_app import AsyncApp\n", "may import slack_bolt"),
        ("bot/jobs.py", "def f():\n    from handlers.payloads import Routed\n", "may import handlers"),
        ("storage/store.py", "from handlers import payloads\n", "may import handlers"),
    ],
)
def test_the_rules_catch_violations(path: str, source: str, expected: str) -> None:
    problems = violations({path: source})
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("bot/assembly.py", "import openai\nfrom slack_sdk import WebClient\nfrom slack_bolt import App\n"
                       "from handlers import register_handlers\n"),
        ("bot/imaging.py", "import openai\n"),
        ("bot/slack.py", "from slack_sdk.errors import SlackApiError\n"),
        ("bot/web.py", "from handlers import shapes\nfrom slack_bolt.response import BoltResponse\n"),
        ("handlers/events.py", "from slack_bolt.async_app import AsyncApp\nfrom handlers import payloads\n"),
        ("handlers/payloads.py", "from storage.models import NewJob\nfrom storage import models\n"),
        ("storage/store.py", "import sqlalchemy as sa\nfrom storage import models\n"),
    ],
)
def test_the_rules_allow_what_is_allowed(path: str, source: str) -> None:
    assert violations({path: source}) == []


def test_relative_imports_are_resolved() -> None:
    assert imports_of("bot/jobs.py", "from . import messages\n") == {"bot.messages"}
    assert imports_of("bot/__init__.py", "from .options import parse\n") == {"bot.options.parse"}
    found = imports_of("storage/migrations/env.py", "from ..schema import metadata\n")
    assert found == {"storage.schema.metadata"}
    found = imports_of("storage/migrations/versions/0002_x.py", "from ...store import Store\n")
    assert found == {"storage.store.Store"}


def test_the_process_that_answers_slack_does_not_load_the_openai_side() -> None:
    """`python -m bot` builds only the intake (`bot.assembly.build_intake`); the OpenAI SDK, the largest import,
    is loaded by the worker process alone. Checked in a fresh interpreter, on what is really imported."""
    import subprocess
    import sys

    code = (
        "import sys, bot.__main__, bot.processes, handlers, storage\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'httpx2') "
        "or m in ('bot.imaging', 'bot.answers', 'bot.jobs', 'bot.noticing', 'bot.publication', 'bot.worker', "
        "'bot.sse'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
