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
    """The TOML blocks of the configuration, bookings and security docs."""
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    found = []
    for name in ("configuration.md", "bookings.md", "security.md"):
        text = (docs / name).read_text(encoding="utf-8")
        found += re.findall(r"^```toml\n(.*?)^```$", text, re.M | re.S)
    return found


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
    assert "  schedule.announce_retry_after: 6.5s must exceed plugins.deadline (2s" in message
    settings = load_settings(write(tmp_path, text.format(7.0)), environ={})
    assert settings.schedule.announce_retry_after == 7.0


def test_a_deadline_too_long_for_the_announcements_names_its_variable(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"EP_PLUGINS__DEADLINE": "100"})
    assert "plugins.deadline (100s, from $EP_PLUGINS__DEADLINE)" in str(info.value)


def test_a_deadline_too_long_is_reported_with_the_other_problems(tmp_path):
    path = write(tmp_path, "[server]\nlisen = 3\n[plugins]\ndeadline = 100\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    lines = str(info.value).splitlines()
    assert any(line.startswith("  server.lisen: unknown key") for line in lines)
    assert any(line.startswith("  schedule.announce_retry_after: 90s must") for line in lines)


def test_problems_are_in_plain_words_with_their_file(tmp_path):
    text = '[server]\nlisen = "x"\nlisten = "nowhere"\n[plugins]\ndeadline = "soon"\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    lines = str(info.value).splitlines()
    assert lines == [
        "invalid configuration:",
        f"  server.listen: expected HOST:PORT, for example 127.0.0.1:50051 or [::1]:0 (in {path})",
        f"  server.lisen: unknown key (did you mean listen?) (in {path})",
        f"  plugins.deadline: expected a number, got 'soon' (in {path})",
    ]


def test_a_bad_environment_variable_is_named_not_the_file(tmp_path):
    path = write(tmp_path, "[plugins]\ndeadline = 1.0\n")
    environ = {"EP_PLUGINS__DEADLINE": "abc", "EP_SERVER__GRACE_PERIOD": "-1"}
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=environ)
    text = str(info.value)
    assert "  plugins.deadline: expected a number, got 'abc' (set by $EP_PLUGINS__DEADLINE)" in text
    assert "  server.grace_period: must be at least 0.0 (set by $EP_SERVER__GRACE_PERIOD)" in text
    assert str(path) not in text


def test_an_unknown_key_far_from_any_known_one_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown key; known here: format, access_log"):
        load_settings(write(tmp_path, "[logging]\ncolour = true\n"), environ={})


def test_the_command_reports_core_and_plugin_keys_at_once(tmp_path, capsys):
    from ep_server.cli import main

    text = '[server]\nlisen = "x"\n[plugin.static]\nclams = []\n'
    path = write(tmp_path, text)
    assert main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"  server.lisen: unknown key (did you mean listen?) (in {path})" in err
    assert f"  plugin.static.clams: unknown key (in {path})" in err
    assert "Extra inputs" not in err


def test_a_table_wide_problem_names_the_variables_that_set_its_keys():
    environ = {"EP_AUTH__JWT_ISSUER": "https://login.example.org"}
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert "  auth: jwt_issuer and jwks_file must be given together" in str(info.value)
    assert str(info.value).endswith("(set by $EP_AUTH__JWT_ISSUER)")
