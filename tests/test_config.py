"""Settings.from_env: required and malformed variables, defaults, secrets; `python -m bot` failing early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings

REPO_ROOT = Path(__file__).resolve().parent.parent

BOT_TOKEN = "xoxb-1111-2222-bottokensecret"
SIGNING_SECRET = "signing-secret-abcdef0123456789"
APP_TOKEN = "xapp-1-A111-appsecret"
OPENAI_KEY = "sk-test-openaisecret0123456789"

HTTP_MODE = {
    "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET, "OPENAI_API_KEY": OPENAI_KEY
}
SOCKET_MODE = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN, "OPENAI_API_KEY": OPENAI_KEY}


def _settings(**changes: str | None) -> Settings:
    env = {**HTTP_MODE, **changes}
    return Settings.from_env({k: v for k, v in env.items() if v is not None})


def _error(base: dict[str, str] | None = None, **changes: str | None) -> str:
    env = {**(HTTP_MODE if base is None else base), **changes}
    with pytest.raises(ConfigError) as info:
        Settings.from_env({k: v for k, v in env.items() if v is not None})
    message = str(info.value)
    assert message.strip(), "a ConfigError must say something"
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# -- required variables ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SLACK_BOT_TOKEN", "OPENAI_API_KEY", "SLACK_SIGNING_SECRET"])
def test_each_required_variable_missing_is_named(name: str) -> None:
    assert name in _error(**{name: None})


@pytest.mark.parametrize("name", ["SLACK_BOT_TOKEN", "OPENAI_API_KEY", "SLACK_SIGNING_SECRET"])
def test_an_empty_required_variable_counts_as_missing(name: str) -> None:
    assert name in _error(**{name: ""})


@pytest.mark.parametrize("name", ["SLACK_BOT_TOKEN", "OPENAI_API_KEY"])
def test_required_in_socket_mode_too(name: str) -> None:
    assert name in _error(SOCKET_MODE, **{name: None})


def test_empty_environment_names_a_required_variable() -> None:
    message = _error({})
    assert "SLACK_BOT_TOKEN" in message


def test_socket_mode_does_not_need_the_signing_secret() -> None:
    s = Settings.from_env(SOCKET_MODE)
    assert s.socket_mode
    assert s.slack_signing_secret is None
    assert s.slack_app_token == APP_TOKEN


def test_http_mode() -> None:
    s = _settings()
    assert not s.socket_mode
    assert s.slack_signing_secret == SIGNING_SECRET


def test_unrelated_variables_are_ignored() -> None:
    s = Settings.from_env({**HTTP_MODE, "HOME": "/root", "SOMETHING_ELSE": "x"})
    assert s.slack_bot_token == BOT_TOKEN


def test_every_problem_is_reported_at_once() -> None:
    message = _error({}, PORT="nope", LOG_LEVEL="LOUD", DATABASE_URL="mysql://x")
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY", "PORT", "LOG_LEVEL", "DATABASE_URL"):
        assert name in message, message
    assert message.count("OPENAI_API_KEY") == 1, message  # each problem once


def test_console_mode_needs_only_the_openai_key() -> None:
    s = Settings.from_env({"OPENAI_API_KEY": OPENAI_KEY}, console=True)
    assert s.slack_bot_token is None and s.openai_api_key == OPENAI_KEY
    with pytest.raises(ConfigError) as info:
        Settings.from_env({}, console=True)
    assert str(info.value) == "Set OPENAI_API_KEY: it is required."


@pytest.mark.parametrize("name", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY"])
@pytest.mark.parametrize("dirt", ["\r", "\n", " ", "\t", "\x00"])
@pytest.mark.parametrize("where", ["end", "start", "middle"])
def test_secrets_with_whitespace_or_control_characters_are_refused(name: str, dirt: str, where: str) -> None:
    clean = HTTP_MODE[name]
    value = {"end": clean + dirt, "start": dirt + clean, "middle": clean[:6] + dirt + clean[6:]}[where]
    message = _error(**{name: value})
    assert name in message and "control characters" in message
    assert clean not in message


def test_app_token_with_a_crlf_is_refused() -> None:
    assert "SLACK_APP_TOKEN" in _error(SOCKET_MODE, SLACK_APP_TOKEN=APP_TOKEN + "\r\n")


@pytest.mark.parametrize(("value", "expected"), [("json", "json"), ("TEXT", "text")])
def test_log_format(value: str, expected: str) -> None:
    assert _settings(LOG_FORMAT=value).log_format == expected
    assert _settings().log_format == "text"


def test_bad_log_format() -> None:
    assert "LOG_FORMAT" in _error(LOG_FORMAT="xml")


# -- malformed values ------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["abc", "0", "65536", "-1", "30.5", "80 80"])
def test_malformed_port(port: str) -> None:
    assert "PORT" in _error(PORT=port)


@pytest.mark.parametrize("token", ["xoxp-123", "xapp-123", "bottoken", "XOXB-123"])
def test_bot_token_must_be_xoxb(token: str) -> None:
    message = _error(SLACK_BOT_TOKEN=token)
    assert "SLACK_BOT_TOKEN" in message and "xoxb-" in message
    assert token not in message  # the (wrong) secret is not echoed


@pytest.mark.parametrize("token", ["xoxb-123", "xoxp-1", "apptoken"])
def test_app_token_must_be_xapp(token: str) -> None:
    message = _error(SOCKET_MODE, SLACK_APP_TOKEN=token)
    assert "SLACK_APP_TOKEN" in message and "xapp-" in message
    assert token not in message


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "sqlite://relative.db", "sqlite:///", "postgresql+asyncpg://u@h/db", "easel.db"]
)
def test_database_url_of_an_unsupported_form(url: str) -> None:
    assert "DATABASE_URL" in _error(DATABASE_URL=url)


@pytest.mark.parametrize("name", ["SLACK_API_URL", "OPENAI_BASE_URL"])
@pytest.mark.parametrize("url", ["ftp://example.com/", "example.com", "http://", "localhost:8080", "https:///path"])
def test_bad_urls(name: str, url: str) -> None:
    assert name in _error(**{name: url})


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_max_concurrent_generations_must_be_positive(value: str) -> None:
    assert "MAX_CONCURRENT_GENERATIONS" in _error(MAX_CONCURRENT_GENERATIONS=value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("OPENAI_TIMEOUT", "0"), ("OPENAI_TIMEOUT", "soon"), ("IMAGE_COMPRESSION", "101"),
     ("MAX_QUEUED_PER_USER", "0"), ("JOB_LEASE_SECONDS", "0"), ("LOG_LEVEL", "LOUD")],
)
def test_other_malformed_values_name_their_variable(name: str, value: str) -> None:
    assert name in _error(**{name: value})


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"IMAGE_BACKGROUND": "transparent", "IMAGE_FORMAT": "jpeg"}, ["IMAGE_FORMAT", "IMAGE_BACKGROUND"]),
        ({"IMAGE_QUALITY": "xhigh"}, ["IMAGE_QUALITY", "IMAGE_MODEL"]),  # gpt-image-2 takes no xhigh
        ({"IMAGE_SIZE": "1000x1000"}, ["IMAGE_SIZE"]),
        ({"IMAGE_MODEL": "dall-e-3"}, ["IMAGE_MODEL"]),
        ({"IMAGE_QUALITY": "ultra"}, ["IMAGE_QUALITY"]),
        ({"IMAGE_FORMAT": "gif"}, ["IMAGE_FORMAT"]),
        ({"IMAGE_BACKGROUND": "clear"}, ["IMAGE_BACKGROUND"]),
        ({"IMAGE_SIZE": "square"}, ["IMAGE_SIZE"]),  # not canonical
    ],
)
def test_incoherent_image_defaults(changes: dict[str, str], names: list[str]) -> None:
    message = _error(**changes)
    for name in names:
        assert name in message


def test_image_format_jpg_is_accepted_as_the_flag_is() -> None:
    assert _settings(IMAGE_FORMAT="jpg").image_format == "jpeg"
    assert _settings(IMAGE_FORMAT="JPG").image_defaults().format == "jpeg"


def test_incoherent_defaults_message_says_what_is_wrong() -> None:
    assert "it takes low, medium, high, auto" in _error(IMAGE_QUALITY="max")
    assert "jpeg" in _error(IMAGE_BACKGROUND="transparent", IMAGE_FORMAT="jpeg")


def test_coherent_image_defaults_are_accepted() -> None:
    s = _settings(IMAGE_MODEL="gpt-image-2.5-flare", IMAGE_SIZE="1024x1536", IMAGE_QUALITY="xhigh",
                  IMAGE_FORMAT="webp", IMAGE_BACKGROUND="transparent", IMAGE_COMPRESSION="80")
    d = s.image_defaults()
    assert (d.model, d.size, d.quality, d.format, d.background, d.compression) == (
        "gpt-image-2.5-flare", "1024x1536", "xhigh", "webp", "transparent", 80
    )


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest"])
def test_a_shut_down_image_model_is_not_a_start_up_error(model: str) -> None:
    """Easel uses its replacement (and says so): a deployment configured last month keeps working."""
    assert _settings(IMAGE_MODEL=model).image_model == model


def test_moderation_tools_and_safety_key() -> None:
    s = _settings()
    assert s.image_moderation == "auto" and s.openai_tools == ("image_generation",)
    assert s.image_defaults().moderation == "auto" and s.image_defaults().web is False
    s = _settings(IMAGE_MODERATION="low", OPENAI_TOOLS="image_generation, web_search")
    assert s.image_defaults().moderation == "low" and s.image_defaults().web is True
    assert s.openai_tools == ("image_generation", "web_search")
    assert "IMAGE_MODERATION" in _error(IMAGE_MODERATION="high")
    assert "OPENAI_TOOLS" in _error(OPENAI_TOOLS="image_generation,code_interpreter")
    assert "image_generation" in _error(OPENAI_TOOLS="web_search")
    # the safety key: set, or derived (stably) from a secret; never the secret itself, never in repr
    derived = _settings().safety_secret()
    assert derived == _settings().safety_secret() and SIGNING_SECRET.encode() not in derived
    assert _settings(SLACK_SIGNING_SECRET="another-secret-0123456789").safety_secret() != derived
    assert Settings.from_env(SOCKET_MODE).safety_secret() != derived
    s = _settings(EASEL_SAFETY_KEY="k" * 32)
    assert s.safety_secret() == b"k" * 32 and "k" * 32 not in repr(s)
    assert "EASEL_SAFETY_KEY" in _error(EASEL_SAFETY_KEY="short")


def test_transparent_default_on_gpt_image_2_is_allowed_because_it_falls_back() -> None:
    assert _settings(IMAGE_BACKGROUND="transparent").image_background == "transparent"


@pytest.mark.parametrize("raw", ["{nope", "{'gpt-image-3': {}}", '{"gpt-image-3": {"transparent": true}'])
def test_extra_image_models_bad_json(raw: str) -> None:
    assert "EXTRA_IMAGE_MODELS" in _error(EXTRA_IMAGE_MODELS=raw)


@pytest.mark.parametrize(
    "raw",
    ['["gpt-image-3"]', '{"gpt-image-3": true}', '{"gpt-image-3": {"sparkles": true}}',
     '{"gpt-image-3": {"name": "other"}}'],
)
def test_extra_image_models_wrong_shape(raw: str) -> None:
    assert "EXTRA_IMAGE_MODELS" in _error(EXTRA_IMAGE_MODELS=raw)


@pytest.mark.parametrize(
    "raw",
    [
        '{"gpt-image-3": {"flexible_sizes": true, "max_edge": "big"}}',
        '{"gpt-image-3": {"transparent": "no"}}',
        '{"gpt-image-3": {"max_pixels": [1, 2]}}',
        '{"gpt-image-3": {"retired": 2027}}',
        '{"gpt-image-3": {"shutdown_date": "next year"}}',
        '{"gpt-image-3": {"qualities": ["ultra"]}}',
        '{"gpt-image-3": {"complexity": "yes"}}',
    ],
)
def test_extra_image_models_capability_of_the_wrong_type_is_a_config_error(raw: str) -> None:
    """A capability value of the wrong type is a malformed setting: refused at start-up with a one-line
    ConfigError naming the variable, not accepted (to break the first request that uses the model)."""
    assert "EXTRA_IMAGE_MODELS" in _error(EXTRA_IMAGE_MODELS=raw)


def test_extra_image_model_of_the_wrong_type_as_default_is_a_config_error_not_a_crash() -> None:
    message = _error(
        EXTRA_IMAGE_MODELS='{"gpt-image-3": {"flexible_sizes": true, "max_edge": "big"}}',
        IMAGE_MODEL="gpt-image-3",
        IMAGE_SIZE="2048x2048",
    )
    assert "EXTRA_IMAGE_MODELS" in message


def test_extra_image_models_are_merged_into_the_table() -> None:
    s = _settings(EXTRA_IMAGE_MODELS='{"gpt-image-3": {"transparent": true, "flexible_sizes": true}}',
                  IMAGE_MODEL="gpt-image-3", IMAGE_SIZE="2048x2048")
    table = s.model_table()
    assert "gpt-image-3" in table.available()
    assert table.get("gpt-image-3").flexible_sizes
    assert s.image_defaults().model == "gpt-image-3"
    s = _settings(EXTRA_IMAGE_MODELS='{"gpt-image-3": {"qualities": ["low", "max", "auto"], "complexity": true, '
                                     '"shutdown_date": "2031-01-01", "replacement": "gpt-image-2"}}',
                  IMAGE_MODEL="gpt-image-3", IMAGE_QUALITY="max")
    m = s.model_table().get("gpt-image-3")
    assert m.qualities == ("low", "max", "auto") and m.complexity == ("low", "medium", "high")
    assert m.shutdown_date == "2031-01-01" and m.replacement == "gpt-image-2"


def test_empty_extra_image_models_is_no_extra() -> None:
    assert _settings(EXTRA_IMAGE_MODELS="  ").extra_image_models == {}


def test_prices_are_read_exactly() -> None:
    from bot.prices import Prices

    s = _settings(PRICES='{"gpt-5.4": {"text_in": 2.5, "cached_in": "0.25", "text_out": 15}}')
    row = Prices({k: v.model_dump() for k, v in s.prices.items()}).row("gpt-5.4", image=False)[0]
    assert str(row.cached_in) == "0.25" and str(row.text_in) == "2.5"


@pytest.mark.parametrize("raw", ['{"gpt-5.4": {"text_in": -1, "cached_in": 0, "text_out": 1}}',
                                 '{"gpt-5.4": {"text_in": "cheap", "cached_in": 0, "text_out": 1}}',
                                 '{"gpt-5.4": {"text_in": 1}}', '{"gpt-5.4": {"text_in": 1, "cached_in": 0, '
                                 '"text_out": 1, "per_image": 1}}', "[1, 2]", "{nope"])
def test_bad_prices(raw: str) -> None:
    assert "PRICES" in _error(PRICES=raw)


# -- defaults --------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = _settings()
    assert s.openai_model == "gpt-5.4"
    assert s.image_model == "gpt-image-2"
    assert s.port == 3000
    assert s.max_concurrent_generations == 50
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.openai_base_url is None
    assert s.database_url.startswith("sqlite:///")
    path = s.database_url.removeprefix("sqlite:///")
    assert os.path.isabs(path), s.database_url
    assert s.database_url.startswith("sqlite:////")
    d = s.image_defaults()
    assert (d.model, d.size, d.quality, d.format, d.background, d.compression) == (
        "gpt-image-2", "auto", "auto", "png", "auto", None
    )


def test_values_are_read() -> None:
    s = _settings(PORT="8080", OPENAI_MODEL="gpt-6", MAX_CONCURRENT_GENERATIONS="7",
                  SLACK_API_URL="http://127.0.0.1:9999/api", OPENAI_BASE_URL="http://127.0.0.1:9998/v1",
                  DATABASE_URL="postgresql://postgres@127.0.0.1:5432/easel")
    assert s.port == 8080
    assert s.openai_model == "gpt-6"
    assert s.max_concurrent_generations == 7
    assert s.slack_api_url == "http://127.0.0.1:9999/api/"  # a trailing slash is added
    assert s.openai_base_url == "http://127.0.0.1:9998/v1"
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/easel"


def test_settings_are_frozen() -> None:
    s = _settings()
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError for a frozen model
        s.port = 1  # type: ignore[misc]
    assert s.port == 3000


# -- secrets ---------------------------------------------------------------------------------------


def test_secrets_are_not_in_repr() -> None:
    for s in (_settings(), Settings.from_env({**SOCKET_MODE, "SLACK_SIGNING_SECRET": SIGNING_SECRET})):
        text = repr(s) + str(s)
        for secret in (BOT_TOKEN, SIGNING_SECRET, APP_TOKEN, OPENAI_KEY):
            assert secret not in text
    assert "port=3000" in repr(_settings())  # the repr is still useful


def test_database_password_is_not_in_repr() -> None:
    s = _settings(DATABASE_URL="postgresql://easel:db-password-1234@127.0.0.1:5432/easel")
    assert s.database_url.endswith("/easel")
    assert "db-password-1234" not in repr(s)


def test_env_example_lists_every_setting_with_its_default() -> None:
    listed = {}
    for line in (REPO_ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            listed[name] = value
    names = {f.alias for f in Settings.model_fields.values() if f.alias}
    assert set(listed) == names
    defaults = Settings.from_env(HTTP_MODE)
    for field_name, field in Settings.model_fields.items():
        value = listed[field.alias]
        if value:  # an empty line in the example means "unset" (or required)
            assert str(Settings.from_env({**HTTP_MODE, field.alias: value}).model_dump()[field_name]) == str(
                defaults.model_dump()[field_name]), field.alias


# -- python -m bot ---------------------------------------------------------------------------------


def _run_bot(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "bot"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_python_m_bot_without_configuration_exits_2_with_one_line() -> None:
    result = _run_bot({})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "SLACK_BOT_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr


def test_python_m_bot_names_every_problem_in_one_line() -> None:
    result = _run_bot({"SLACK_BOT_TOKEN": BOT_TOKEN + "\r", "PORT": "x"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "OPENAI_API_KEY", "PORT"):
        assert name in lines[0]
    assert BOT_TOKEN not in result.stderr


def test_python_m_bot_with_a_bad_port_names_port() -> None:
    result = _run_bot({**HTTP_MODE, "PORT": "not-a-port"})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0]
    for secret in HTTP_MODE.values():
        assert secret not in result.stderr


def test_images_per_minute_is_optional_and_read() -> None:
    assert _settings().openai_images_per_minute is None
    assert _settings(OPENAI_IMAGES_PER_MINUTE="").openai_images_per_minute is None
    assert _settings(OPENAI_IMAGES_PER_MINUTE="50").openai_images_per_minute == 50


@pytest.mark.parametrize("value", ["0", "-5", "fast", "2.5", "1000001"])
def test_images_per_minute_must_be_a_whole_positive_number(value: str) -> None:
    assert "OPENAI_IMAGES_PER_MINUTE" in _error(OPENAI_IMAGES_PER_MINUTE=value)
