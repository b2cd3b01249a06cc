"""Attachments: bounded (how many, how large), fetched before a generation slot is taken, at a minimum pace,
and checked with Pillow before anything is sent to OpenAI."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bot import limits, messages
from bot.inputs import InputRefused, check_image
from tests.conftest import Running, wait_until
from tests.fakes.openai_api import PNG_SIGNATURE, default_image_factory


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header claims `width` x `height` (1-bit grey), with one compressed block of zero rows: a
    decompression bomb of a few kilobytes."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * min(height * (1 + (width + 7) // 8), 8_000_000), 9)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def still(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    return out.getvalue()


def animated_gif() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


# -- the checks themselves -----------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mimetype"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"),
                                               ("GIF", "image/gif")])
def test_still_images_pass(tmp_path: Path, fmt: str, mimetype: str) -> None:
    path = tmp_path / "image"
    path.write_bytes(still(fmt))
    checked = check_image(path)
    assert (checked.mimetype, checked.width, checked.height) == (mimetype, 32, 24)


@pytest.mark.parametrize(("data", "why"), [
    (bomb_png(), messages.FAR_TOO_MANY_PIXELS),  # past Pillow's own bomb limit: refused from the header
    (bomb_png(8_000, 6_000), messages.too_many_pixels(8_000, 6_000)),  # 48 MP: past Easel's 40
    (PNG_SIGNATURE + bytes(range(256)) * 40, messages.DAMAGED),  # a PNG's first bytes, then garbage
    (still("PNG", (64, 64))[:-40], messages.DAMAGED),  # cut short
    (still("JPEG", (64, 64))[:300], messages.DAMAGED),
    (animated_gif(), messages.ANIMATED),
    (b"%PDF-1.7 not an image", messages.NOT_AN_IMAGE),
    (b"<!DOCTYPE html><html>Sign in</html>", messages.HTML_INSTEAD),
    (still("BMP"), messages.NOT_AN_IMAGE),  # a real image, in a format OpenAI does not take
])
def test_images_openai_cannot_use_are_refused_with_the_reason(tmp_path: Path, data: bytes, why: str) -> None:
    path = tmp_path / "image"
    path.write_bytes(data)
    with pytest.raises(InputRefused) as refused:
        check_image(path)
    assert str(refused.value) == why


def test_the_bomb_is_small() -> None:
    assert len(bomb_png()) < 120_000


# -- through Easel ---------------------------------------------------------------------------------------


async def _refusal(easel: Running, ts: str, channel: str = "C0001") -> str:
    [job] = [j for j in await easel.jobs_settled() if j.message_ts == ts]
    assert job.status == "failed", job
    texts = [m["text"] for m in easel.slack.thread(channel, ts) if m.get("text")]
    [said] = [t for t in texts if "couldn't use" in t]
    return said


@pytest.mark.parametrize(("data", "why"), [
    (bomb_png(), "decompression bomb"),
    (PNG_SIGNATURE + bytes(range(256)) * 40, "damaged or cut short"),
    (animated_gif(), "animated GIF"),
])
async def test_an_unusable_image_is_explained_and_never_sent(easel: Running, data: bytes, why: str) -> None:
    f = easel.slack.add_file(data, name="suspect.png")
    ts, _ = await easel.sender.mention("edit this", files=[f])
    said = await _refusal(easel, ts)
    assert "`suspect.png`" in said and why in said, said
    assert easel.openai.requests == []


async def test_an_image_is_sent_as_what_it_is_whatever_slack_calls_it(easel: Running) -> None:
    f = easel.slack.add_file(still("JPEG"), name="photo.png", mimetype="image/png")
    await easel.sender.mention("edit this", files=[f])
    await easel.slack.wait_for("files.completeUploadExternal")
    [create] = easel.openai.create_requests()
    [image] = [p for p in create["input"][0]["content"] if p["type"] == "input_image"]
    assert image["image_url"].startswith("data:image/jpeg;base64,")


async def test_more_images_than_openai_takes_are_refused_before_any_download(easel: Running) -> None:
    png = default_image_factory(8, 8, "png", "in")
    files = [easel.slack.add_file(png, name=f"in{i}.png") for i in range(limits.MAX_IMAGES + 1)]
    ts, _ = await easel.sender.mention("combine these", files=files)
    await easel.jobs_settled(1)
    texts = [m["text"] for m in easel.slack.thread("C0001", ts)]
    assert any(f"at most {limits.MAX_IMAGES} images" in t for t in texts), texts
    assert easel.slack.calls_to("download") == [] and easel.openai.requests == []


async def test_a_file_larger_than_slack_said_is_cut_off_at_the_limit(easel: Running) -> None:
    big = still("PNG") + b"\x00" * limits.MAX_IMAGE_BYTES  # more than one attached image may be
    f = easel.slack.add_file(big, name="big.png")
    f["size"] = 1000  # what the event claims
    ts, _ = await easel.sender.mention("edit this", files=[f])
    said = await _refusal(easel, ts)
    assert "larger than 15 MB" in said, said
    assert easel.openai.requests == []


async def test_a_slow_download_holds_no_generation_slot(easel_factory) -> None:
    easel: Running = await easel_factory(MAX_CONCURRENT_GENERATIONS="1")
    slow = easel.slack.add_file(default_image_factory(8, 8, "png", "in"), name="slow.png", rate=2.0)
    slow_ts, _ = await easel.sender.mention("edit this slowly", files=[slow], channel="C0001")
    await easel.slack.wait_for("download")
    await easel.sender.mention("a quick one", channel="C0002")
    # The quick one is drawn and posted while the slow file is still arriving.
    await easel.slack.wait_for("files.completeUploadExternal", timeout=10)
    slow_job = next(j for j in await easel.store.jobs.all() if j.message_ts == slow_ts)
    assert slow_job.status not in ("done", "failed"), slow_job
    said = await _refusal(easel, slow_ts)
    assert "too slowly" in said, said
    assert len(easel.openai.create_requests()) == 1


async def test_attachments_wait_on_disk_until_their_job_runs(easel_factory) -> None:
    easel: Running = await easel_factory(MAX_CONCURRENT_GENERATIONS="1")
    easel.openai.latency = 1.5
    await easel.sender.mention("a long one", channel="C0002")
    await easel.openai.wait_for_creates(1)
    f = easel.slack.add_file(still("WEBP"), name="in.webp", mimetype="image/webp")
    ts, _ = await easel.sender.mention("edit this", files=[f])
    root = easel.easel.attachments.root

    async def waiting() -> bool:
        jobs = [j for j in await easel.store.jobs.all() if j.message_ts == ts]
        return bool(jobs) and jobs[0].status == "queued"

    await wait_until(waiting, what="the job with the attachment to wait in the queue")
    job = next(j for j in await easel.store.jobs.all() if j.message_ts == ts)
    assert (root / str(job.id) / "0").read_bytes() == still("WEBP")  # fetched, checked, waiting on disk
    await easel.slack.wait_for("files.completeUploadExternal", count=2, timeout=20)
    await easel.jobs_settled(2)
    assert not (root / str(job.id)).exists()
    assert len(easel.slack.calls_to("download")) == 1
