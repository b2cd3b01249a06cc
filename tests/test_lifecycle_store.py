"""The shared record of what OpenAI said about the models (storage/lifecycle.py), on both databases, and the
cached reads of it (bot/lifecycle.py)."""

from __future__ import annotations

import asyncio

from bot.image_models import ModelTable
from bot.lifecycle import Lifecycle
from storage import Store


async def test_listing_shutdowns_and_lacks_are_kept_and_merged(store: Store) -> None:
    record = store.lifecycle
    empty = await record.read()
    assert (empty.shutdowns, empty.lacks, empty.listed_at) == ({}, {}, None)
    await record.save_listing({"gpt-image-2": None, "gpt-image-1.5": "2026-12-01"}, now=100.0)
    await asyncio.gather(record.add_lack("gpt-image-2", "transparent"),
                         record.add_lack("gpt-image-2", "quality:xhigh"),
                         record.add_lack("gpt-image-2", "transparent"))
    await record.save_shutdown("gpt-image-2.5-flare", "2027-01-05")
    learned = await record.read()
    assert learned.shutdowns == {"gpt-image-2": None, "gpt-image-1.5": "2026-12-01",
                                 "gpt-image-2.5-flare": "2027-01-05"}
    assert sorted(learned.lacks["gpt-image-2"]) == ["quality:xhigh", "transparent"]
    assert learned.listed_at == 100.0
    # a later listing wins for what it lists; a model it leaves out keeps what was learned of it
    await record.save_listing({"gpt-image-2": "2027-03-01"}, now=200.0)
    learned = await record.read()
    assert learned.shutdowns == {"gpt-image-2": "2027-03-01", "gpt-image-1.5": "2026-12-01",
                                 "gpt-image-2.5-flare": "2027-01-05"}
    assert sorted(learned.lacks["gpt-image-2"]) == ["quality:xhigh", "transparent"]
    assert learned.listed_at == 200.0


async def test_reads_are_cached_and_put_over_the_table(store: Store) -> None:
    t = [0.0]
    table = ModelTable()
    lifecycle = Lifecycle(table=table, store=store.lifecycle, now=lambda: t[0], read_every=300)
    await lifecycle.read()
    await store.lifecycle.save_listing({"gpt-image-2": "2026-11-01"})
    await store.lifecycle.add_lack("gpt-image-2.5-flare", "transparent")
    t[0] = 299
    await lifecycle.read()
    assert not table.is_shut_down("gpt-image-2") and table.transparent_fallback().name == "gpt-image-2.5-flare"
    t[0] = 300
    await lifecycle.read()
    assert table.is_shut_down("gpt-image-2") and table.transparent_fallback().name == "gpt-image-2.5-sunburst"
    await lifecycle.learned_lack("gpt-image-2.5-sunburst", "transparent")  # here at once, and recorded
    assert table.transparent_fallback().name == "gpt-image-2.6-flare"
    assert sorted((await store.lifecycle.read()).lacks) == ["gpt-image-2.5-flare", "gpt-image-2.5-sunburst"]
