"""What Easel echoes cannot notify anyone, and the bot token goes only to Slack's file paths."""

from __future__ import annotations

import re

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import ConfigError, Settings
from bot.slack import SlackAdapter
from tests.conftest import Running

ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "OPENAI_API_KEY": "sk-1"}

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


# -- the bot token and the file host -------------------------------------------------------------------

FILE = "https://files.slack.com/files-pri/T0001-F0001/cat.png"


@pytest.mark.parametrize(("url", "allowed"), [
    (FILE, True),
    ("https://files.slack.com/files-pri/T0001-F0001/download/cat.png", True),
    ("https://files.slack.com/files-tmb/T0001-F0001-ab12/cat_360.png", True),
    ("https://slack.com/api/auth.revoke", False),
    ("https://slack.com/files-pri/T0001-F0001/cat.png", False),  # Slack's Web API host is not its file host
    ("https://files.slack.com/api/auth.revoke", False),
    ("https://files.slack.com/files-pri/../api/auth.revoke", False),
    ("https://files.slack.com/files-pri/%2e%2e/api/auth.revoke", False),
    ("https://files.slack.com/files-pri/T0001-F0001/..%2f..%2fapi", False),
    ("https://files.slack.com/files-pri\\..\\api/auth.revoke", False),
    ("http://files.slack.com/files-pri/T0001-F0001/cat.png", False),
    ("https://user:pw@files.slack.com/files-pri/T0001-F0001/cat.png", False),
    ("https://files.slack.com.evil.example/files-pri/T0001-F0001/cat.png", False),
    ("https://evil.example/files-pri/T0001-F0001/cat.png", False),
])
async def test_the_token_goes_only_to_slacks_file_paths(url: str, allowed: bool) -> None:
    session = aiohttp.ClientSession()
    publisher = SlackAdapter(AsyncWebClient(token="xoxb-t", base_url="https://slack.com/api/", session=session),
                               session=session)
    try:
        assert publisher.token_may_go_to(url) is allowed
    finally:
        await publisher.close()


async def test_a_local_slack_allows_its_own_file_paths_only() -> None:
    session = aiohttp.ClientSession()
    publisher = SlackAdapter(AsyncWebClient(token="xoxb-t", base_url="http://127.0.0.1:8/api/", session=session),
                               session=session)
    try:
        assert publisher.token_may_go_to("http://127.0.0.1:8/files-pri/T1-F1/a.png")
        assert publisher.token_may_go_to(FILE)
        assert not publisher.token_may_go_to("http://127.0.0.1:8/api/auth.revoke")
        assert not publisher.token_may_go_to("http://127.0.0.1:9/files-pri/T1-F1/a.png")
    finally:
        await publisher.close()


async def test_an_attachment_pointing_at_the_web_api_is_not_fetched_with_the_token(easel: Running) -> None:
    f = easel.slack.add_file(b"\x89PNG\r\n\x1a\n", name="cat.png")
    f["url_private_download"] = f["url_private"] = easel.slack.api_url + "auth.revoke"
    ts, _ = await easel.sender.mention("edit this", files=[f])
    [job] = await easel.jobs_settled(1)
    assert job.status == "failed"
    assert easel.slack.calls_to("auth.revoke") == []
    texts = [m["text"] for m in easel.slack.thread("C0001", ts)]
    assert any("Slack's file host" in t for t in texts), texts
    assert easel.openai.requests == []


@pytest.mark.parametrize("url", ["http://slack.example.com/api/", "http://10.0.0.5/api/", "http://files.slack.com/"])
def test_slack_api_url_over_http_must_be_loopback(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**ENV, "SLACK_API_URL": url})
    assert "SLACK_API_URL" in str(info.value) and "https" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/api/", "http://localhost:9/api/", "http://[::1]:9/api/",
                                 "https://slack.example.com/api/"])
def test_slack_api_url_over_http_on_loopback_or_https_is_accepted(url: str) -> None:
    assert Settings.from_env({**ENV, "SLACK_API_URL": url}).slack_api_url == url
