"""What Easel echoes cannot notify anyone, and the bot token goes only to Slack's file paths."""

from __future__ import annotations

import re

from tests.conftest import Running

# What Slack sends for `/imagine <!channel> <!here> <!subteam^S0TEAM|@team> <@U0OTHER> a fox`: the user's < and >
# arrive escaped, as in any text Slack sends.
ESCAPED_WIRE_TEXT = "&lt;!channel&gt; &lt;!here&gt; &lt;!subteam^S0TEAM|@team&gt; &lt;@U0OTHER&gt; a fox"
LIVE = re.compile(r"<[!@#]")  # a mention, a special mention, a channel link: what Slack acts on


async def test_imagine_echoes_mentions_as_text(easel: Running) -> None:
    result = await easel.sender.command(ESCAPED_WIRE_TEXT)
    assert result.status == 200
    assert not LIVE.search(result.body_text), result.body_text
    await easel.slack.wait_for("files.completeUploadExternal")
    await easel.jobs_settled(1)
    [root] = [m for m in easel.slack.messages if "asked for" in m["text"]]
    asked = root["text"].split("asked for:", 1)[1]
    assert not LIVE.search(asked), root["text"]
    assert "&lt;!channel&gt;" in asked and "&lt;@U0OTHER&gt;" in asked and "&lt;!subteam^S0TEAM|@team&gt;" in asked
    assert root["text"].startswith("<@U0001> asked for:")  # Easel's own mention of the requester stays live
    [shared] = easel.slack.shared_files
    assert not LIVE.search(shared["initial_comment"]), shared["initial_comment"]


async def test_a_mention_whose_revised_prompt_repeats_a_mention_does_not_notify(easel: Running) -> None:
    await easel.sender.mention("draw <!channel> and <@U0OTHER> as & cats")  # what Slack sends for @channel
    await easel.slack.wait_for("files.completeUploadExternal")
    [job] = await easel.jobs_settled(1)
    assert job.text == "draw <!channel> and <@U0OTHER> as & cats"  # OpenAI gets what the person wrote
    [shared] = easel.slack.shared_files
    comment = shared["initial_comment"]
    assert not LIVE.search(comment), comment
    assert "draw &lt;!channel&gt; and &lt;@U0OTHER&gt; as &amp; cats" in comment


async def test_a_bad_option_echo_does_not_notify(easel: Running) -> None:
    result = await easel.sender.command("a fox --quality <!here>")
    assert "--quality" in result.body_text and not LIVE.search(result.body_text), result.body_text
