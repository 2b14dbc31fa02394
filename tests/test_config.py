"""Configuration: file, environment, overrides, and errors naming the key."""

from __future__ import annotations

import re

import pytest

from ep_server.config import load_settings
from ep_server.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "ep.toml"
    path.write_text(text)
    return path


def test_without_a_file_the_packaged_default_is_used():
    settings = load_settings(environ={})
    assert settings.server.listen == "127.0.0.1:50051"
    assert settings.source == "built-in default config"
    [claim] = settings.plugin["static"]["claims"]
    assert claim["tasktype"] == "uri://docker-container"
    assert claim["servicetype"] == "uri://docker-uws"


def test_defaults_of_a_minimal_file(tmp_path):
    settings = load_settings(write(tmp_path, ""), environ={})
    assert settings.server.max_taskinfo_bytes == 256 * 1024
    assert settings.server.max_receive_message_bytes == 4 * 1024 * 1024
    assert settings.server.max_taskinfo_depth == 32
    assert settings.plugins.deadline == 2.0
    assert settings.plugins.allow is None
    assert settings.plugin == {}


def test_environment_overrides_the_file_and_flags_override_both(tmp_path):
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:1"\n[plugins]\ndeadline = 5\n')
    env = {
        "EP_SERVER__LISTEN": "127.0.0.1:2",
        "EP_PLUGINS__DEADLINE": "0.5",
        "EP_PLUGINS__BLOCK": "static, docker",
        "EP_SERVER__MAX_TASKINFO_BYTES": "128KiB",
        "EP_PLUGIN__DOCKER__MAX_CORES": "4",
        "UNRELATED": "x",
    }
    settings = load_settings(path, environ=env, overrides={"server.listen": "127.0.0.1:3"})
    assert settings.server.listen == "127.0.0.1:3"
    assert settings.plugins.deadline == 0.5
    assert settings.plugins.block == ["static", "docker"]
    assert settings.server.max_taskinfo_bytes == 128 * 1024
    assert settings.plugin == {"docker": {"max_cores": 4}}


def test_ep_config_names_the_file(tmp_path):
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:7"\n')
    assert load_settings(environ={"EP_CONFIG": str(path)}).server.listen == "127.0.0.1:7"


def test_every_bad_key_is_reported(tmp_path):
    path = write(
        tmp_path,
        '[server]\nlisten = "nowhere"\ngrace_period = -1\nlisen = "x"\n[plugins]\ndeadline = 0\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    text = str(info.value)
    for key in ("server.listen", "server.grace_period", "server.lisen", "plugins.deadline"):
        assert f"{key}:" in text


def test_an_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="sever"):
        load_settings(write(tmp_path, "[sever]\nlisten = 1\n"), environ={})


def test_grpc_receive_limit_must_sit_above_the_taskinfo_limit(tmp_path):
    text = "[server]\nmax_receive_message_bytes = '256KiB'\nmax_taskinfo_bytes = '256KiB'\n"
    with pytest.raises(ConfigError, match="max_receive_message_bytes must exceed"):
        load_settings(write(tmp_path, text), environ={})


def test_bad_toml_and_missing_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[server\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "missing.toml", environ={})


@pytest.mark.parametrize(
    ("ledger", "kept"),
    [
        ("postgresql://ep@db.example:5432/ep?options=-csearch_path%3Dsite", True),
        ("postgres://ep@db/ep", True),
        (":memory:", True),
    ],
)
def test_a_postgresql_uri_is_taken_as_it_is(ledger, kept):
    settings = load_settings(environ={}, overrides={"schedule.ledger": ledger})
    assert (settings.schedule.ledger == ledger) is kept
    assert settings.schedule.postgres is ledger.startswith("postgres")


@pytest.mark.parametrize("ledger", ["host=db dbname=ep", "mysql://db/ep", "https://x/y"])
def test_a_ledger_that_is_neither_a_file_nor_a_postgresql_uri_is_refused(ledger):
    with pytest.raises(ConfigError, match=r"schedule\.ledger"):
        load_settings(environ={}, overrides={"schedule.ledger": ledger})


def _reference_blocks() -> list[str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    start = text.index("### Configuration reference")
    section = text[start : text.index("\n### ", start + 1)]
    return re.findall(r"^```toml\n(.*?)^```$", section, re.M | re.S)


def test_every_toml_block_of_the_configuration_reference_loads(tmp_path):
    blocks = _reference_blocks()
    assert len(blocks) >= 3
    for i, block in enumerate(blocks):
        path = tmp_path / f"block{i}.toml"
        path.write_text(block)
        load_settings(path, environ={})  # raises ConfigError naming any bad key


def test_announcements_must_be_retried_well_after_the_plugin_deadline(tmp_path):
    text = "[plugins]\ndeadline = 2.0\n[schedule]\nannounce_retry_after = {}\n"
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text.format(6.5)), environ={})
    message = str(info.value)
    assert "schedule.announce_retry_after (6.5s)" in message
    assert "plugins.deadline (2s)" in message
    settings = load_settings(write(tmp_path, text.format(7.0)), environ={})
    assert settings.schedule.announce_retry_after == 7.0
