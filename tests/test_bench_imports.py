"""The benchmarks (bench/) reach into tests/ only for the fakes, and only for their public names."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_imports_only_the_fakes_public_names_from_tests() -> None:
    problems = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [(alias.name, None) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [(node.module, alias.name) for alias in node.names]
            else:
                continue
            for module, name in modules:
                if module.split(".")[0] != "tests":
                    continue
                if not module.startswith("tests.fakes.") or (name or "").startswith("_"):
                    problems.append(f"{path.name}: {module}{'.' + name if name else ''}")
    assert problems == []
