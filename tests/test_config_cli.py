"""`cmcache config`: init, show with secrets masked, set atomically, errors named."""

from __future__ import annotations

import stat

from conftest import Cli


def test_init_writes_a_commented_starter_once(cli: Cli) -> None:
    result = cli("config", "init")
    assert result.code == 0 and cli.config.exists()
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert "[download]" in cli.config.read_text()
    again = cli("config", "init")
    assert again.code == 3 and "already exists" in again.stderr
    assert cli("config", "init", "--force").code == 0


def test_show_masks_secrets_and_literal_tokens(cli: Cli) -> None:
    cli.write_config(
        '[download]\nrpc_secret = "hunter2"\n[auth]\n"a.example" = "tok-123"\n'
        '"b.example" = "env:B_TOKEN"\n'
    )
    cli.env["CMCACHE_ARIA2_SECRET"] = "from-env-secret"
    result = cli("config", "show")
    assert result.code == 0, result.stderr
    assert "hunter2" not in result.stdout and "tok-123" not in result.stdout
    assert "from-env-secret" not in result.stdout
    assert "env:B_TOKEN" in result.stdout and "********" in result.stdout
    as_json = cli("--json", "config", "show")
    assert "hunter2" not in as_json.stdout and "from-env-secret" not in as_json.stdout


def test_set_validates_before_writing(cli: Cli) -> None:
    assert cli("config", "set", "cache.max_size", "200G").code == 0
    assert cli("config", "set", "download.concurrent", "4").code == 0
    text = cli.config.read_text()
    assert 'max_size = "200G"' in text and "concurrent = 4" in text
    bad = cli("config", "set", "download.concurrent", "0")
    assert bad.code == 3 and "download.concurrent" in bad.stderr
    unknown = cli("config", "set", "cache.budget", "1")
    assert unknown.code == 3 and "unknown key 'cache.budget'" in unknown.stderr
    assert cli.config.read_text() == text


def test_bad_config_file_is_exit_3_naming_file_and_key(cli: Cli) -> None:
    cli.write_config("[cache]\nbudgett = 1\n")
    result = cli("list")
    assert result.code == 3
    assert "unknown key cache.budgett" in result.stderr and str(cli.config) in result.stderr
    cli.write_config("[cache\n")
    result = cli("--json", "list")
    assert result.code == 3 and "line 1" in result.json()["errors"][0]["message"]


def test_path_follows_cmcache_config(cli: Cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cli.env["CMCACHE_CONFIG"] = str(tmp_path / "elsewhere.toml")
    assert cli("config", "path").stdout.strip() == str(tmp_path / "elsewhere.toml")
    missing = cli("list")
    assert missing.code == 3 and "does not exist" in missing.stderr
