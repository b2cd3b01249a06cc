"""`python -m bot console`: the whole job path in a terminal, against the fake OpenAI, with only a key."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from PIL import Image

from tests.fakes.openai_api import FakeOpenAI
from tests.procs import ROOT


async def _console(fake: FakeOpenAI, cwd: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url,
           "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "console", *args, cwd=cwd, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg", ".webp"))


async def test_piped_lines_draw_then_edit_the_same_chain(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    code, out, err = await _console(fake_openai, tmp_path, stdin="a red kite\nmake it blue --format webp\n")
    assert code == 0, err
    folder = tmp_path / "easel-out"
    images = _images(folder)
    assert [p.name for p in images] == ["easel-1-1.png", "easel-2-1.webp"], out
    creates = fake_openai.create_requests()
    assert len(creates) == 2
    first_id = next(iter(fake_openai.responses))
    assert "previous_response_id" not in creates[0]
    assert creates[1]["previous_response_id"] == first_id  # the second line edits the first image
    for path in images:  # the files are the decoded images, with the prompt used beside each
        with Image.open(path) as im:
            im.verify()
        note = path.with_suffix(path.suffix + ".txt").read_text()
        assert "Prompt used:" in note and "A detailed rendering of" in note
        assert f"saved easel-out/{path.name}" in out
    assert "Traceback" not in err


async def test_one_request_from_the_arguments_and_out_dir(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    code, out, err = await _console(fake_openai, tmp_path, "a red kite", "--quality", "low", "--out", "pics")
    assert code == 0, err
    [image] = _images(tmp_path / "pics")
    assert fake_openai.create_requests()[0]["tools"][0]["quality"] == "low"
    assert image.read_bytes().startswith(b"\x89PNG")
    assert "drawing..." in out  # progress, as a line when not on a terminal


async def test_bad_flags_are_explained_and_nothing_is_sent(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    code, out, _ = await _console(fake_openai, tmp_path, stdin="a kite --quality ultra\n")
    assert code == 0
    assert "--quality ultra" in out and "not allowed" in out
    assert fake_openai.create_requests() == []


async def test_a_failed_one_shot_request_exits_1_with_the_reason(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    code, out, _ = await _console(fake_openai, tmp_path, "a kite [[moderation]]")
    assert code == 1
    assert "safety" in out.lower() or "moderation" in out.lower()


async def test_console_needs_only_the_key(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "console", "x", cwd=tmp_path, env={"PATH": os.environ.get("PATH", ""),
                                                                       "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 2
    assert err.decode().strip() == "easel: Set OPENAI_API_KEY: it is required."

