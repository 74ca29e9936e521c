"""Start-up stays light: help and no-op answers never load the engine or the network stack."""

from __future__ import annotations

import subprocess
import sys

from conftest import Cli
from origin import Origin
from pulling import publish

HEAVY = ("aria2p", "requests", "sqlite3")


def _imported(cli: Cli, *args: str) -> tuple[set[str], str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cmcache", *args],
        env=cli.env,
        capture_output=True,
        text=True,
        check=False,
    )
    modules = {
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    return modules, done.stdout


def test_help_imports_no_engine_network_or_database(cli: Cli) -> None:
    modules, out = _imported(cli, "--help")
    assert "pull" in out
    assert not modules & set(HEAVY)


def test_no_op_pull_and_path_skip_the_cli_framework_and_the_engine(
    cli: Cli, origin: Origin
) -> None:
    publish(cli, origin, {"a.bin": 1024})
    assert cli("pull", "a.bin").code == 0
    seen = len(origin.log)
    refs = cli.home / "refs.txt"
    refs.write_text("# batch\na.bin\n")
    for args in (
        ("pull", "a.bin"),
        ("--no-progress", "path", "a.bin"),
        ("pull", "--file", str(refs)),
    ):
        modules, out = _imported(cli, *args)
        assert out.strip() in ("cached checkpoints/a.bin", str(cli.root / "checkpoints/a.bin"))
        assert not modules & {"typer", "rich", "aria2p", "requests"}, args
    assert len(origin.log) == seen


def test_fast_path_falls_back_to_the_full_cli_when_something_is_missing(
    cli: Cli, origin: Origin
) -> None:
    publish(cli, origin, {"a.bin": 1024})
    assert cli("pull", "a.bin").code == 0
    (cli.root / "checkpoints" / "a.bin").write_bytes(b"changed")
    result = cli("--json", "path", "--no-download", "a.bin")
    assert result.code == 6
    unknown = cli("path", "nope")
    assert unknown.code == 4 and "no model matches" in unknown.stderr
