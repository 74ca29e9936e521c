"""Config loading: layering, sizes, unknown keys and syntax errors named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from cmcache.core.errors import ConfigError
from cmcache.core.settings.edit import masked, set_value
from cmcache.core.settings.load import load_settings
from cmcache.core.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200G", 200 << 30),
        ("1.5T", int(1.5 * (1 << 40))),
        ("500M", 500 << 20),
        ("4096", 4096),
        ("10KiB", 10240),
        ("1GiB", 1 << 30),
        ("500MB", 500_000_000),
        ("2TB", 2 * 10**12),
        ("6.46GB", 6_460_000_000),
        ("0", 0),
        (1024, 1024),
    ],
)
def test_sizes_follow_the_spec(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "12Q", "-1", "1.2.3G"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_format_size_uses_binary_units() -> None:
    assert format_size(6938078334) == "6.5 GiB"
    assert format_size(12) == "12 B"


def _home(tmp_path: Path, text: str) -> dict[str, str]:
    (tmp_path / "config.toml").write_text(text)
    return {"CMCACHE_HOME": str(tmp_path)}


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMCACHE_HOME", str(tmp_path))
    settings = load_settings(environ={"CMCACHE_HOME": str(tmp_path)})
    assert settings.cache.root == tmp_path / "models"
    assert settings.download.concurrent == 3 and settings.download.split is None
    assert settings.builtin_catalog


def test_flags_beat_env_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _home(tmp_path, '[cache]\nroot = "/from/file"\nmax_size = "200G"\n')
    monkeypatch.setenv("CMCACHE_HOME", str(tmp_path))
    assert load_settings(environ=env).cache.root == Path("/from/file")
    env["CMCACHE_ROOT"] = "/from/env"
    assert load_settings(environ=env).cache.root == Path("/from/env")
    assert load_settings(environ=env, root_flag=Path("/from/flag")).cache.root == Path("/from/flag")
    assert load_settings(environ=env).cache.max_size == 200 << 30


def test_comfyui_manager_aria2_variables_are_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMCACHE_HOME", str(tmp_path))
    env = {
        "CMCACHE_HOME": str(tmp_path),
        "COMFYUI_MANAGER_ARIA2_SERVER": "http://127.0.0.1:6800",
        "COMFYUI_MANAGER_ARIA2_SECRET": "s3",
    }
    download = load_settings(environ=env).download
    assert download.rpc == ("http://127.0.0.1:6800/jsonrpc",) and download.rpc_secret == "s3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cache]\nbudget = 1\n", "unknown key cache.budget"),
        ("[caches]\n", "unknown section [caches]"),
        ('[cache]\nmax_size = "lots"\n', "cache.max_size"),
        ("[download]\nconcurrent = 0\n", "download.concurrent"),
        ("[download]\nsplit = 64\n", "at most 16"),
        ('[download]\nrpc = "ftp://x"\n', "download.rpc"),
        ('[[sources]]\nname = "a"\n', "exactly one of index or url"),
        ('[[sources]]\nname = "a/b"\nurl = "x"\n', "name must match"),
        ('[[sources]]\nname = "a"\nurl = "x"\nformat = "xml"\n', "format must be one of"),
        ('[[sources]]\nname = "a"\nurl = "x"\nextra = 1\n', "unknown key sources.extra"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, message: str) -> None:
    env = _home(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert message in info.value.message + info.value.hint
    assert str(tmp_path / "config.toml") in info.value.message


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    env = _home(tmp_path, "[cache]\nroot = \n")
    with pytest.raises(ConfigError, match=r"config\.toml: TOML syntax error: .*line 2, column 8"):
        load_settings(environ=env)


def test_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"CMCACHE_HOME": str(tmp_path)}, config_flag=tmp_path / "nope.toml")


def test_masking_hides_secrets_but_not_env_references() -> None:
    shown = masked({"download": {"rpc_secret": "s"}, "auth": {"a.com": "tok", "b.com": "env:B"}})
    assert shown["download"]["rpc_secret"] == "********"
    assert shown["auth"] == {"a.com": "********", "b.com": "env:B"}


def test_set_value_reads_toml_values_and_refuses_unknown_keys() -> None:
    assert set_value({}, "download.concurrent", "5") == {"download": {"concurrent": 5}}
    assert set_value({}, "cache.max_size", "200G") == {"cache": {"max_size": "200G"}}
    with pytest.raises(ConfigError, match="unknown key"):
        set_value({}, "cache.nope", "1")


def test_tokens_go_only_to_their_exact_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _home(tmp_path, '[auth]\n"models.example.com" = "env:MY_TOKEN"\n')
    monkeypatch.setenv("MY_TOKEN", "t1")
    monkeypatch.setenv("HF_TOKEN", "hf")
    settings = load_settings(environ=env)
    assert settings.token_for("models.example.com") == "t1"
    assert settings.token_for("huggingface.co") == "hf"
    assert settings.token_for("cdn-lfs.huggingface.co") is None
    assert settings.token_for("example.com") is None


def test_shown_defaults_starter_file_and_built_in_defaults_agree(tmp_path: Path) -> None:
    from cmcache.core.settings.edit import starter_config
    from cmcache.core.settings.load import parse_toml, validate
    from cmcache.core.settings.model import Paths
    from cmcache.core.settings.schema import DEFAULTS

    paths = Paths(tmp_path / "c.toml", tmp_path / "s", tmp_path)
    starter = parse_toml(starter_config(), "starter")
    assert validate(DEFAULTS, "defaults", paths) == validate({}, "none", paths)
    assert validate(starter, "starter", paths) == validate({}, "none", paths)
