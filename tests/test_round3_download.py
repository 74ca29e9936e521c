"""A pull that fails fast, a full disk, a read-only root, whole-command errors, files of
unproven identity and help text: each test fails without its fix. Real aria2c, the loopback
origin, the CLI as a user runs it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli, aria2c_pids
from origin import Origin
from pulling import publish, wait_for
from test_bundles import serve_bundle, zip_bytes

MiB = 1 << 20


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------- one daemon, never orphaned


def test_a_pull_that_fails_fast_leaves_no_aria2c(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"gone.bin": MiB})
    for status in (404, 401):  # the command used to end before the daemon was recorded
        origin.fault("files/gone.bin", fail_first=100, fail_status=status)
        result = cli("pull", "gone.bin")
        assert result.code == 6, result.stderr
        assert aria2c_pids(str(cli.home)) == [], "an aria2c outlived the pull"
        assert "not running" in cli("daemon", "status").stdout


def test_a_second_daemon_is_never_started_beside_a_living_one(cli: Cli) -> None:
    assert cli("daemon", "start").code == 0
    (first,) = aria2c_pids(str(cli.home))
    (cli.home / "state" / "daemon" / "daemon.json").unlink()  # what a kill -9 mid-start left
    assert cli("daemon", "start").code == 0
    assert len(aria2c_pids(str(cli.home))) == 1, "two aria2c share one session"
    status = cli("--json", "daemon", "status").json()["data"]
    assert status["running"]
    assert cli("daemon", "stop").code == 0
    wait_for(lambda: aria2c_pids(str(cli.home)) == [], 10, "the daemon to stop")
    assert not Path(f"/proc/{first}").exists() or first not in aria2c_pids(str(cli.home))


# ---------------------------------------------------------------- a full disk


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``, unmounted afterwards whatever happens."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write to ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, bytes(64 << 10))
    except OSError:
        pass
    try:
        while True:  # the last pages
            os.write(fd, bytes(512))
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_disk_filling_up_while_placing_leaves_nothing_half_done(cli: Cli, origin: Origin) -> None:
    with small_disk(cli.home.parent / "small", "16m") as disk:
        digests = publish(cli, origin, {"m.bin": 8 * MiB})
        origin.fault("files/m.bin", rate=4 * MiB)
        cli.env["CMCACHE_ROOT"] = str(disk)
        pull = cli.popen("pull", "m.bin")
        staging = disk / ".cmcache" / "staging"
        wait_for(lambda: any(staging.glob("*.incomplete")), 30, "the download to start")
        fill(disk / "filler")  # aria2 writes into the space it reserved; the index cannot grow
        _, err = pull.communicate(timeout=60)
        assert pull.returncode == 8, err
        assert "disk is full" in err
        final = disk / "checkpoints" / "m.bin"
        assert not final.exists(), "placed although the index could not record it"
        assert list(staging.iterdir()) == []
        assert aria2c_pids(str(cli.home)) == []
        (disk / "filler").unlink()
        jobs = cli("--json", "status").json()["data"]
        assert jobs["downloads"] == [], "a ghost job"
        assert cli("pull", "m.bin").code == 0
        assert hashlib.sha256(final.read_bytes()).hexdigest() == digests["m.bin"]


def test_a_full_disk_during_unpacking_fails_only_the_member_that_did_not_fit(
    cli: Cli, origin: Origin
) -> None:
    members = {
        "loras/a.bin": random_bytes(3 * MiB, 1),
        "loras/b.bin": random_bytes(3 * MiB, 2),
    }
    archive = zip_bytes([(ref, data, 0o644) for ref, data in members.items()])
    with small_disk(cli.home.parent / "small", "10m") as disk:
        cli.env["CMCACHE_ROOT"] = str(disk)
        serve_bundle(cli, origin, archive, "zip", members)
        result = cli("--json", "pull", "pack")
        assert result.code == 8, result.stderr
        outcomes = {r["ref"]: r["outcome"] for r in result.json()["data"]["results"]}
        assert outcomes == {"loras/a.bin": "downloaded", "loras/b.bin": "failed"}
        (error,) = result.json()["errors"]
        assert error["ref"] == "loras/b.bin" and error["code"] == 8
        assert "disk is full" in error["message"]
        assert (disk / "loras" / "a.bin").read_bytes() == members["loras/a.bin"]
        assert not (disk / "loras" / "b.bin").exists()
        assert list((disk / ".cmcache" / "staging").iterdir()) == []  # no leftover
        assert list((disk / ".cmcache" / "bundles").iterdir()) == []  # the archive went


def test_an_index_on_a_full_disk_is_called_full_not_unusable(cli: Cli, origin: Origin) -> None:
    with small_disk(cli.home.parent / "small", "4m") as disk:
        publish(cli, origin, {"have.bin": MiB, "want.bin": MiB})
        cli.env["CMCACHE_ROOT"] = str(disk)
        assert cli("pull", "have.bin").code == 0
        fill(disk / "filler")
        pulled = cli("pull", "want.bin")
        assert pulled.code == 8, pulled.stderr
        assert "disk is full" in pulled.stderr
        assert ".recover" not in pulled.stderr and "unusable" not in pulled.stderr
        assert not (disk / "checkpoints" / "want.bin").exists()
        for args in (("path", "have.bin"), ("--json", "pull", "have.bin"), ("status",)):
            answered = cli(*args)  # what is present still answers
            assert answered.code == 0, (args, answered.stderr)


# ---------------------------------------------------------------- a read-only root


@contextlib.contextmanager
def read_only_view(cli: Cli) -> Iterator[Path]:
    """The same root bind-mounted read-only (even root cannot write there)."""
    view = cli.home.parent / "ro-view"
    view.mkdir()
    bound = subprocess.run(["mount", "--bind", str(cli.root), str(view)], check=False)
    if bound.returncode != 0:
        pytest.skip("this machine does not allow bind mounts")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_every_form_of_path_and_a_present_pull_work_on_a_read_only_root(
    cli: Cli, origin: Origin
) -> None:
    publish(cli, origin, {"ro.bin": MiB, "absent.bin": MiB})
    assert cli("pull", "ro.bin").code == 0
    with read_only_view(cli) as view:
        cli.env["CMCACHE_ROOT"] = str(view)
        final = str(view / "checkpoints" / "ro.bin")
        assert cli("-v", "path", "ro.bin").stdout.strip() == final
        as_json = cli("--json", "path", "ro.bin")
        assert as_json.code == 0, as_json.stderr
        assert as_json.json()["data"]["path"] == final
        pulled = cli("--json", "pull", "ro.bin")
        assert pulled.code == 0, pulled.stderr
        assert pulled.json()["data"]["results"][0]["outcome"] == "cached"
        absent = cli("--json", "pull", "absent.bin")
        assert absent.code == 8
        (error,) = absent.json()["errors"]
        assert error["ref"] == "checkpoints/absent.bin" and "read-only" in error["message"]


# ---------------------------------------------------------------- errors of the whole command


def test_an_error_of_the_whole_command_names_no_ref(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"one.bin": MiB})
    for args, code in ((("pull",), 2), (("pull", "--priority", "urgent", "one.bin"), 2)):
        result = cli("--json", *args)
        assert result.code == code, result.stderr
        (error,) = result.json()["errors"]
        assert error["ref"] is None, error
        assert '"ref": ""' not in result.stdout
    unknown = cli("--json", "pull", "no-such-model")
    assert unknown.code == 4
    assert unknown.json()["errors"][0]["ref"] == "no-such-model"


# ---------------------------------------------------------------- files of unproven identity


def test_a_file_cmcache_has_not_verified_is_listed_as_unverified(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"good.bin": 4096, "bad.bin": 4096, "mine.bin": 4096})
    assert cli("pull", "good.bin").code == 0
    folder = cli.root / "checkpoints"
    (folder / "bad.bin").write_bytes(b"not the model")  # fails its identity check
    (origin.folder / "files" / "mine.bin").replace(folder / "mine.bin")  # the right bytes
    states = {
        m["filename"]: m["state"]
        for m in cli("--json", "list", "--source", "test").json()["data"]["models"]
    }
    assert states == {"good.bin": "cached", "bad.bin": "unverified", "mine.bin": "unverified"}
    cached = cli("--json", "list", "--cached").json()["data"]["models"]
    assert [m["filename"] for m in cached] == ["good.bin"]
    missing = cli("--json", "list", "--missing", "--source", "test").json()["data"]
    assert {m["filename"] for m in missing["models"]} == {"bad.bin", "mine.bin"}
    shown = cli("show", "bad.bin")
    assert "state:   unverified" in shown.stdout and "cached" not in shown.stdout
    assert "verified by the origin" not in shown.stdout
    assert cli("pull", "bad.bin").code == 7  # what list says, pull agrees with
    assert cli("scan").code == 0  # hashes mine.bin, finds it right and adopts it
    assert cli("--json", "show", "mine.bin").json()["data"]["state"] == "cached"


def test_a_present_file_of_a_model_without_hash_or_size_is_unverified(
    cli: Cli, origin: Origin
) -> None:
    publish(cli, origin, {"loose.bin": 4096}, sha=False, exact_size=False)
    target = cli.root / "checkpoints" / "loose.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"whatever is here")
    shown = cli("show", "loose.bin")
    assert "unverified" in shown.stdout
    assert "verified by the origin" not in shown.stdout


# ---------------------------------------------------------------- help text


def _subcommands(help_text: str) -> list[str]:
    """The names under "Commands:" in one help page."""
    names, inside = [], False
    for line in help_text.splitlines():
        if line.startswith("Commands:"):
            inside = True
        elif inside and line.startswith("  ") and line.strip():
            names.append(line.split()[0])
        elif inside and line.strip():
            inside = False
    return names


# Typer's own value names: a Python type in angle brackets, or a required argument in braces.
PROGRAMMER_METAVAR = re.compile(
    r"<(?:list\[[^>]*\]|str|int|float|bool|path|file|directory|text|integer|uuid|datetime"
    r"|[a-z]+ range)>|\{[^}]*\}"
)


def test_every_help_page_names_values_the_way_a_person_reads_them(cli: Cli) -> None:
    # In one process: some forty help pages, one interpreter start each, would cost a minute.
    from typer.testing import CliRunner

    from cmcache.cli import _build

    app, runner = _build(), CliRunner()

    def walk(path: list[str]) -> Iterator[tuple[list[str], str]]:
        shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, (path, shown.output)
        yield path, shown.output
        for name in _subcommands(shown.output):
            yield from walk([*path, name])

    pages = {" ".join(path): text for path, text in walk([])}
    for group in ("daemon start", "config set", "comfyui install", "cluster status", "pull"):
        assert group in pages, sorted(pages)
    problems = [
        f"cmcache {name} --help: {line.strip()}"
        for name, text in pages.items()
        for line in text.splitlines()
        if PROGRAMMER_METAVAR.search(line)
    ]
    assert problems == []
    shown = cli("pull", "--help").stdout  # and as the installed command prints it
    assert "[OPTIONS] [REF…]" in shown and "--workflow FILE" in shown and "--split N" in shown
    assert not PROGRAMMER_METAVAR.search(shown)
