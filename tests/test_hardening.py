"""Defects found by trying cmcache as a new user and as an attacker would: each test fails
without its fix. Real aria2c, a real loopback origin, the CLI as a user runs it."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, aria2c_pids
from origin import Origin
from pulling import FAST_RETRIES, file_sha, publish, wait_for

MiB = 1 << 20


def write_list(cli: Cli, models: list[dict[str, Any]], extra_config: str = "") -> None:
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"schema": 1, "version": "1", "models": models}))
    cli.write_config(
        f'{FAST_RETRIES}{extra_config}\n[[sources]]\nname = "test"\nurl = "{listing}"\n'
    )


# ---------------------------------------------------------------- security and data


def test_control_characters_in_names_are_refused_at_sync(cli: Cli, origin: Origin) -> None:
    origin.add("files/x.bin", b"x" * 100)
    write_list(
        cli,
        [
            {
                "folder": "loras",
                "filename": "lora.safetensors\n dir=.\n out=.bashrc",
                "url": origin.url("files/x.bin"),
            },
            {
                "folder": "loras",
                "filename": "ok.safetensors",
                "url": origin.url("files/x.bin") + "\n out=.bashrc",
            },
            {"folder": "loras", "filename": "fine.safetensors", "url": origin.url("files/x.bin")},
        ],
    )
    result = cli("sync")
    assert result.code == 0
    assert result.stderr.count("control character") == 2
    listed = [m["ref"] for m in cli("--json", "list", "--source", "test").json()["data"]["models"]]
    assert listed == ["loras/fine.safetensors"]


def test_a_token_never_goes_to_a_host_the_get_redirects_to(cli: Cli, origin: Origin) -> None:
    other = Origin(origin.folder, host="127.0.0.2").start()
    try:
        publish(cli, origin, {"r.bin": MiB}, extra_config='[auth]\n"127.0.0.1" = "env:TOK"\n')
        cli.env["TOK"] = "tok-secret-1"
        # HEAD says 200 here; only the GET aria2 would send is redirected.
        origin.fault("files/r.bin", redirect=other.url("files/r.bin"), redirect_methods=("GET",))
        result = cli("pull", "r.bin")
        assert result.code == 0, result.stderr
        assert other.log
        assert all("Authorization" not in r.headers for r in other.log)
    finally:
        other.stop()


def test_urls_with_credentials_are_not_stored_or_printed(cli: Cli, origin: Origin) -> None:
    origin.add("files/c.bin", b"c" * 1000)
    url = origin.url("files/c.bin") + "?token=hunter2"
    cli.write_config(
        '[download]\nrpc = "http://user:pw-secret@127.0.0.1:1/jsonrpc"\n'
        '[[sources]]\nname = "s"\nurl = "https://example.invalid/l.json?sig=sig-secret"\n'
    )
    shown = cli("config", "show").stdout + cli("--json", "config", "show").stdout
    assert "pw-secret" not in shown and "sig-secret" not in shown
    cli.write_config("")
    result = cli("pull", "--folder", "loras", url)
    assert result.code == 0, result.stderr
    index = cli.root / ".cmcache" / "index.sqlite3"
    assert b"hunter2" not in index.read_bytes()
    assert index.stat().st_mode & 0o077 == 0
    failing = cli("pull", "--folder", "loras", origin.url("files/none.bin") + "?token=hunter2")
    assert failing.code == 6 and "hunter2" not in failing.stdout + failing.stderr


def test_a_resume_after_the_origin_changed_starts_over(cli: Cli, origin: Origin) -> None:
    size = 16 * MiB
    publish(cli, origin, {"v.bin": size}, sha=False)  # exact size only, like most catalogs
    origin.fault("files/v.bin", rate=2 * MiB)
    process = cli.popen("pull", "--split", "1", "v.bin")
    wait_for(lambda: origin.sent_so_far("files/v.bin") > 3 * MiB, what="some bytes sent")
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 130
    time.sleep(0.05)  # a new mtime: new ETag and Last-Modified
    new_sha = origin.add_random("files/v.bin", size, seed=99)
    origin.fault("files/v.bin")
    result = cli("pull", "v.bin")
    assert result.code == 0, result.stderr
    assert "origin changed" in result.stderr
    assert file_sha(cli.root / "checkpoints" / "v.bin") == new_sha


def test_a_file_of_unproven_identity_is_not_taken_for_the_model(cli: Cli, origin: Origin) -> None:
    origin.add("files/ae.safetensors", b"real model bytes" * 1000)
    origin.fault("files/ae.safetensors", head_length=False)  # the origin will not tell its size
    write_list(
        cli,
        [
            {
                "folder": "vae",
                "filename": "ae.safetensors",
                "url": origin.url("files/ae.safetensors"),
            }
        ],
    )
    assert cli("sync").code == 0
    junk = cli.root / "vae" / "ae.safetensors"
    junk.parent.mkdir(parents=True)
    junk.write_text("not a model\n")
    scanned = cli("--json", "scan").json()["data"]
    assert scanned["adopted"] == [] and "unverified" in scanned["skipped"][0]["reason"]
    pulled = cli("pull", "ae.safetensors")
    assert pulled.code == 7 and "unverified" in pulled.stderr and "--force" in pulled.stderr
    assert junk.read_text() == "not a model\n"
    # When the origin does announce the size, a matching file is adopted after one request.
    origin.fault("files/ae.safetensors")
    junk.write_bytes(b"real model bytes" * 1000)
    assert cli("--json", "scan").json()["data"]["adopted"] == ["vae/ae.safetensors"]


def test_an_origin_sending_more_than_the_manifest_says_is_refused(cli: Cli, origin: Origin) -> None:
    origin.add_random("files/long.bin", 4 * MiB)
    write_list(
        cli,
        [
            {
                "folder": "loras",
                "filename": "long.bin",
                "size": MiB,
                "url": origin.url("files/long.bin"),
            }
        ],
    )
    assert cli("sync").code == 0
    result = cli("pull", "long.bin")
    assert result.code == 7, result.stderr
    assert "the manifest says 1048576" in result.stderr
    assert origin.sent_so_far("files/long.bin") <= 1  # refused before the body was asked for
    assert not (cli.root / "loras" / "long.bin").exists()


def test_a_dripping_origin_fails_within_a_bounded_time(cli: Cli, origin: Origin) -> None:
    publish(
        cli,
        origin,
        {"drip.bin": MiB},
        extra_config="[download]\nretry_wait = 1\nmax_tries = 2\ntimeout = 2\n",
    )
    origin.fault("files/drip.bin", rate=200)  # bytes per second
    started = time.monotonic()
    result = cli("pull", "--split", "1", "drip.bin", timeout=60)
    assert result.code == 6, result.stderr
    # cmcache's watchdog or aria2's own timeout, whichever notices first, says so plainly.
    assert "stalled" in result.stderr or "timed out" in result.stderr
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------- signals, races, lifecycle


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_a_pull_resumably(
    cli: Cli, origin: Origin, sig: signal.Signals, code: int
) -> None:
    size = 16 * MiB
    digests = publish(cli, origin, {"t.bin": size})
    origin.fault("files/t.bin", rate=2 * MiB)
    process = cli.popen("pull", "--split", "2", "t.bin")
    wait_for(lambda: origin.sent_so_far("files/t.bin") > 3 * MiB, what="some bytes sent")
    process.send_signal(sig)
    assert process.wait(30) == code
    assert "interrupted" in (process.stderr.read() if process.stderr else "")
    wait_for(lambda: aria2c_pids(str(cli.home)) == [], timeout=10, what="the daemon to stop")
    origin.fault("files/t.bin")
    result = cli("pull", "t.bin")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "checkpoints" / "t.bin") == digests["t.bin"]
    assert origin.sent_so_far("files/t.bin") <= size * 1.2


def test_prune_keeps_a_model_used_after_its_plan_was_made(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"p1.bin": MiB, "p2.bin": MiB})
    assert cli("pull", "p1.bin", "p2.bin").code == 0
    index = cli.root / ".cmcache" / "index.sqlite3"
    with sqlite3.connect(index) as db:  # both unused for 30 days
        db.execute("UPDATE usage SET last_used = last_used - 30 * 86400")
        db.execute("UPDATE files SET added = added - 30 * 86400")
    # Hold p2's lock so prune waits on it; `path` uses p2 meanwhile (a use, no lock needed).
    from cmcache.adapters.storage.locks import FileLock
    from cmcache.adapters.storage.model_store import ModelStore

    lock = FileLock(ModelStore(cli.root).lock_path("checkpoints", "p2.bin"))
    assert lock.try_acquire()
    try:
        assert cli("path", "p2.bin").code == 0
    finally:
        lock.release()
    result = cli("--json", "prune", "--keep-days", "7")
    removed = [r["filename"] for r in result.json()["data"]["removed"]]
    assert removed == ["p1.bin"]
    assert (cli.root / "checkpoints" / "p2.bin").exists()


def test_cancel_from_another_shell_ends_the_foreground_pull(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"k.bin": 16 * MiB})
    origin.fault("files/k.bin", rate=MiB)
    process = cli.popen("--json", "pull", "--split", "1", "k.bin")
    wait_for(lambda: origin.sent_so_far("files/k.bin") > MiB, what="the download to start")
    assert cli("cancel", "--all").code == 0
    out, _err = process.communicate(timeout=30)
    assert process.returncode == 6
    (result,) = json.loads(out)["data"]["results"]
    assert result["outcome"] == "failed"
    assert "cancelled" in json.loads(out)["errors"][0]["message"]
    assert origin.sent_so_far("files/k.bin") < 16 * MiB  # not downloaded again from zero


def test_a_symlinked_model_folder_is_skipped_not_fatal(
    cli: Cli, origin: Origin, tmp_path: Path
) -> None:
    publish(cli, origin, {"s1.bin": MiB, "s2.bin": MiB})
    assert cli("pull", "s1.bin").code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "s2.bin").write_bytes(b"x")
    (cli.root / "loras").symlink_to(elsewhere)
    with sqlite3.connect(cli.root / ".cmcache" / "index.sqlite3") as db:
        db.execute(
            "INSERT INTO files SELECT 'loras', 's2.bin', 1, sha256, mtime_ns, inode, source, url, "
            "added, 0 FROM files WHERE filename = 's1.bin'"
        )
    verify = cli("verify")
    assert verify.code == 0, verify.stderr
    assert "loras/s2.bin" in verify.stderr and "skipped" in verify.stderr
    prune = cli("prune", "--keep-days", "0")
    assert prune.code == 0, prune.stderr
    assert (elsewhere / "s2.bin").exists()
    assert cli("path", "s1.bin").code in (0, 6)  # other models still answer


def test_read_only_commands_work_on_a_read_only_root(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"ro.bin": MiB})
    assert cli("pull", "ro.bin").code == 0
    view = cli.home.parent / "ro-view"  # the same root, mounted read-only (even root can't write)
    view.mkdir()
    bound = subprocess.run(["mount", "--bind", str(cli.root), str(view)], check=False)
    if bound.returncode != 0:
        pytest.skip("this machine does not allow bind mounts")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        cli.env["CMCACHE_ROOT"] = str(view)
        for args in (("list",), ("show", "ro.bin"), ("status",), ("path", "ro.bin")):
            result = cli(*args)
            assert result.code == 0, (args, result.stderr)
        assert cli("path", "ro.bin").stdout.strip() == str(view / "checkpoints" / "ro.bin")
        pulled = cli("pull", "--force", "ro.bin")
        assert pulled.code == 8 and "read-only" in pulled.stderr
        assert "scan rebuilds" not in pulled.stderr
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


# ---------------------------------------------------------------- wrong answers to bad input


def test_the_source_listed_first_wins_for_every_kind_of_ref(cli: Cli, origin: Origin) -> None:
    origin.add("files/sd.safetensors", b"team copy")
    write_list(
        cli,
        [
            {
                "folder": "checkpoints",
                "filename": "sd_xl_base_1.0.safetensors",
                "url": origin.url("files/sd.safetensors"),
            }
        ],
    )
    assert cli("sync").code == 0
    for ref in ("checkpoints/sd_xl_base_1.0.safetensors", "sdxl", "sd_xl_base_1.0.safetensors"):
        assert cli("--json", "show", ref).json()["data"]["source"] == "test", ref


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("pull", "--priority", "99999999999999999999", "sdxl"), 2),
        (("pull", "--folder", "loras", "http://[::1/x.bin"), 2),
        (("config", "set", "cache.max_size", "-5"), 3),
        (("config", "set", "cache.keep_days", "nan"), 3),
        (("config", "set", "cache.root", '""'), 3),
    ],
)
def test_bad_input_gets_its_own_exit_code(cli: Cli, args: tuple[str, ...], code: int) -> None:
    result = cli(*args)
    assert result.code == code, result.stderr
    assert "unexpected" not in result.stderr


def test_a_deeply_nested_list_and_overlong_names_fail_cleanly(cli: Cli, origin: Origin) -> None:
    deep = cli.home / "deep.json"
    deep.parent.mkdir(parents=True, exist_ok=True)
    deep.write_text("[" * 100_000)
    cli.write_config(f'[[sources]]\nname = "deep"\nurl = "{deep}"\n')
    result = cli("sync")
    assert result.code == 4 and "nested too deeply" in result.stdout
    origin.add("files/n.bin", b"n" * 10)
    long_names = [
        {"folder": "loras", "filename": "a" * n + ".bin", "url": origin.url("files/n.bin")}
        for n in (240, 260)
    ]
    write_list(cli, long_names)
    assert cli("sync").code == 0
    assert cli("pull", "a" * 240 + ".bin").code == 0  # 244 bytes: stored; lock names hashed
    assert cli("show", "a" * 260 + ".bin").code == 4  # 264 bytes: refused at sync


def test_a_remote_index_may_not_point_at_local_files(cli: Cli, origin: Origin) -> None:
    origin.add(
        "idx/model_versions.json",
        json.dumps(
            {"evil": {"url": "file:///etc/passwd", "md5": "0" * 32, "version": "1"}}
        ).encode(),
    )
    cli.write_config(
        f'[[sources]]\nname = "r"\nindex = "{origin.url("idx/model_versions.json")}"\n'
    )
    result = cli("sync")
    assert result.code == 4
    assert "only http URLs" in result.stdout + result.stderr
    assert not list((cli.home / "state" / "manifests").rglob("evil.json"))


# ---------------------------------------------------------------- what a new user hit


def test_global_options_work_after_the_command(cli: Cli, tmp_path: Path) -> None:
    listed = cli("list", "--json")
    assert listed.code == 0 and listed.json()["command"] == "list"
    shown = cli("show", "sdxl", "--root", str(tmp_path / "r"), "--json")
    assert shown.json()["data"]["path"].startswith(str(tmp_path / "r"))


def test_search_takes_several_words_and_suggestions_find_prefixes(cli: Cli) -> None:
    result = cli("--json", "search", "flux", "vae")
    assert result.code == 0 and result.json()["data"]["models"]
    missing = cli("show", "sd_xl_ba")
    assert missing.code == 4 and "sd_xl_base_1.0.safetensors" in missing.stderr


def test_a_different_file_in_the_way_is_explained_on_stderr(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"w.bin": MiB})
    target = cli.root / "checkpoints" / "w.bin"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"something else")
    result = cli("pull", "w.bin")
    assert result.code == 7
    assert "differs" in result.stderr and "--force" in result.stderr


def test_offline_pull_names_the_cause_and_shows_retries(cli: Cli) -> None:
    cli.write_config("[download]\nretry_wait = 0\n")
    result = cli("pull", "--folder", "loras", "http://no-such-host.invalid/x.bin", timeout=60)
    assert result.code == 6
    assert "cannot resolve the host name" in result.stderr
    assert "retrying" in result.stderr


def test_off_a_terminal_a_long_pull_prints_plain_progress_lines(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"slow.bin": 8 * MiB})
    origin.fault("files/slow.bin", rate=2 * MiB)
    cli.env["CMCACHE_PROGRESS_INTERVAL"] = "1"
    result = cli("pull", "--split", "1", "slow.bin")
    assert result.code == 0, result.stderr
    assert result.stderr.count("downloading 1 file:") >= 2
    quiet = cli("-q", "pull", "--force", "--split", "1", "slow.bin")
    assert "downloading" not in quiet.stderr


def test_cmcache_alone_prints_help_and_succeeds(cli: Cli) -> None:
    result = cli()
    assert result.code == 0 and "pull" in result.stdout and "error" not in result.stderr


def test_status_counts_in_good_english(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"one.bin": MiB})
    assert cli("pull", "one.bin").code == 0
    assert "1 managed file," in cli("status").stderr


def test_the_table_never_cuts_the_ref(cli: Cli) -> None:
    script = "import pty, sys; pty.spawn(sys.argv[1:])"
    done = subprocess.run(
        ["python3", "-c", script, "python3", "-m", "cmcache", "list", "--folder", "checkpoints"],
        env={**cli.env, "COLUMNS": "60"},
        capture_output=True,
        text=True,
        check=False,
        cwd=cli.home.parent,
    )
    assert "sd_xl_base_1.0.safetensors" in done.stdout
