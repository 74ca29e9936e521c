"""`cmcache pull` against a real aria2c and a faulty loopback origin."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

from conftest import Cli, aria2c_pids
from origin import Origin
from pulling import file_sha, publish, wait_for

MiB = 1 << 20


def test_pull_places_a_verified_file_and_a_second_pull_needs_no_network(
    cli: Cli, origin: Origin
) -> None:
    digests = publish(cli, origin, {"a.safetensors": 5 * MiB})
    first = cli("--json", "pull", "a.safetensors")
    assert first.code == 0, first.stderr
    result = first.json()["data"]["results"][0]
    final = cli.root / "checkpoints" / "a.safetensors"
    assert result["outcome"] == "downloaded" and result["path"] == str(final)
    assert result["sha256"] == digests["a.safetensors"] == file_sha(final)
    assert list((cli.root / ".cmcache" / "staging").iterdir()) == []
    seen = len(origin.log)
    second = cli("--json", "pull", "a.safetensors")
    assert second.code == 0
    assert second.json()["data"]["results"][0]["outcome"] == "cached"
    assert len(origin.log) == seen  # no request at all
    assert aria2c_pids(str(cli.home)) == []  # no daemon left behind


def test_force_downloads_a_present_model_again(cli: Cli, origin: Origin) -> None:
    digests = publish(cli, origin, {"f.bin": 2 * MiB})
    assert cli("pull", "f.bin").code == 0
    before = origin.bytes_sent("files/f.bin")
    result = cli("--json", "pull", "--force", "f.bin")
    assert result.json()["data"]["results"][0]["outcome"] == "downloaded"
    assert origin.bytes_sent("files/f.bin") >= before + 2 * MiB
    assert file_sha(cli.root / "checkpoints" / "f.bin") == digests["f.bin"]


def test_corrupt_bytes_exit_7_and_nothing_is_placed(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"bad.bin": 3 * MiB})
    origin.fault("files/bad.bin", corrupt=True)
    result = cli("--json", "pull", "bad.bin")
    assert result.code == 7
    error = result.json()["errors"][0]
    assert error["code"] == 7 and "sha256 mismatch" in error["message"]
    assert not (cli.root / "checkpoints" / "bad.bin").exists()
    assert list((cli.root / ".cmcache" / "staging").iterdir()) == []


def test_origin_announced_hash_is_checked_when_the_manifest_has_none(
    cli: Cli, origin: Origin
) -> None:
    publish(cli, origin, {"lfs.bin": 2 * MiB}, sha=False, exact_size=False)
    origin.fault("files/lfs.bin", headers={"X-Linked-Etag": '"' + "0" * 64 + '"'})
    result = cli("pull", "lfs.bin")
    assert result.code == 7 and "expected 000000" in result.stderr


def test_size_mismatch_with_the_manifest_is_an_integrity_failure(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"s.bin": 2 * MiB}, sha=False)
    origin.add_random("files/s.bin", 2 * MiB + 1)
    result = cli("pull", "s.bin")
    assert result.code == 7 and "size mismatch" in result.stderr
    assert not (cli.root / "checkpoints" / "s.bin").exists()


def test_server_errors_are_retried_until_success(cli: Cli, origin: Origin) -> None:
    digests = publish(cli, origin, {"r.bin": 2 * MiB, "r2.bin": 2 * MiB})
    origin.fault("files/r.bin", fail_first=2, fail_status=503, fail_methods=("GET",))
    origin.fault("files/r2.bin", fail_first=1, fail_status=500, fail_methods=("GET",))
    result = cli("pull", "r.bin", "r2.bin")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "checkpoints" / "r.bin") == digests["r.bin"]
    assert file_sha(cli.root / "checkpoints" / "r2.bin") == digests["r2.bin"]


def test_dropped_connections_resume_with_little_waste(cli: Cli, origin: Origin) -> None:
    size = 16 * MiB
    digests = publish(cli, origin, {"d.bin": size})
    origin.fault("files/d.bin", drop_after=3 * MiB, drop_times=4)
    result = cli("pull", "--split", "1", "d.bin")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "checkpoints" / "d.bin") == digests["d.bin"]
    assert origin.bytes_sent("files/d.bin") <= size * 1.1


def test_origin_without_range_starts_over_cleanly(cli: Cli, origin: Origin) -> None:
    digests = publish(cli, origin, {"n.bin": 8 * MiB})
    origin.fault("files/n.bin", no_range=True, drop_after=2 * MiB, drop_times=1)
    result = cli("pull", "--split", "1", "n.bin")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "checkpoints" / "n.bin") == digests["n.bin"]


def test_a_failing_mirror_is_dropped_and_the_download_completes(cli: Cli, origin: Origin) -> None:
    size = 8 * MiB
    sha = origin.add_random("files/m.bin", size)
    origin.add_random("mirror/m.bin", size)
    origin.fault("mirror/m.bin", fail_first=1000, fail_status=404, fail_methods=("GET",))
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(
        json.dumps(
            {
                "schema": 1,
                "models": [
                    {
                        "folder": "vae",
                        "filename": "m.bin",
                        "url": origin.url("files/m.bin"),
                        "mirrors": [origin.url("mirror/m.bin")],
                        "sha256": sha,
                        "size": size,
                    }
                ],
            }
        )
    )
    cli.write_config(f'[[sources]]\nname = "m"\nurl = "{listing}"\n')
    assert cli("sync").code == 0
    result = cli("pull", "--split", "4", "m.bin")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "vae" / "m.bin") == sha
    assert origin.requests_for("mirror/m.bin", "GET")  # the mirror was tried


def test_unknown_ref_exits_4_before_any_download(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB})
    result = cli("--json", "pull", "a.bin", "no-such-model")
    assert result.code == 4
    assert result.json()["errors"][0]["ref"] == "no-such-model"
    assert origin.requests_for("files/a.bin") == []


def test_unreachable_rpc_exits_5(cli: Cli, origin: Origin) -> None:
    publish(
        cli, origin, {"a.bin": MiB}, extra_config='[download]\nrpc = "http://127.0.0.1:9/jsonrpc"\n'
    )
    result = cli("--json", "pull", "a.bin")
    assert result.code == 5
    assert "unreachable" in result.json()["errors"][0]["message"]


def test_wrong_secret_exits_5(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB})
    started = cli("--json", "daemon", "start")
    assert started.code == 0, started.stderr
    cli.env["CMCACHE_ARIA2_RPC"] = started.json()["data"]["url"]
    cli.env["CMCACHE_ARIA2_SECRET"] = "wrong"
    result = cli("pull", "a.bin")
    assert result.code == 5 and "refused the RPC secret" in result.stderr
    del cli.env["CMCACHE_ARIA2_RPC"], cli.env["CMCACHE_ARIA2_SECRET"]


def test_missing_aria2c_exits_5(cli: Cli, origin: Origin) -> None:
    publish(
        cli, origin, {"a.bin": MiB}, extra_config='[download]\naria2c = "/nonexistent/aria2c"\n'
    )
    result = cli("pull", "a.bin")
    assert result.code == 5 and "not an executable" in result.stderr


def test_concurrency_limit_is_never_exceeded(cli: Cli, origin: Origin) -> None:
    names = {f"c{i}.bin": 2 * MiB for i in range(6)}
    publish(cli, origin, names)
    for name in names:
        origin.fault(f"files/{name}", rate=4 * MiB)
    result = cli("pull", "--concurrent", "2", "--split", "2", *names)
    assert result.code == 0, result.stderr
    assert origin.peak_files(grace=0.15) == 2


def test_urls_and_ref_files_with_comments(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB, "b.bin": MiB})
    origin.add_random("adhoc/x.safetensors", MiB)
    refs = cli.home / "refs.txt"
    refs.write_text("# models for the image\na.bin\n\nb.bin  # the second one\n")
    assert cli("pull", "--file", str(refs)).code == 0
    assert (cli.root / "checkpoints" / "b.bin").exists()
    adhoc = cli("pull", "--folder", "loras", origin.url("adhoc/x.safetensors"))
    assert adhoc.code == 0, adhoc.stderr
    assert (cli.root / "loras" / "x.safetensors").exists()
    remembered = cli("pull", origin.url("adhoc/x.safetensors"))  # the local list knows it
    assert remembered.code == 0 and "cached loras/x.safetensors" in remembered.stdout
    no_folder = cli("pull", origin.url("adhoc/y.safetensors"))
    assert no_folder.code == 2 and "--folder" in no_folder.stderr
    stdin = cli("--json", "pull", "--file", "-", input="a.bin\n")
    assert stdin.json()["data"]["results"][0]["outcome"] == "cached"


def test_dry_run_downloads_nothing(cli: Cli, origin: Origin) -> None:
    publish(cli, origin, {"a.bin": MiB})
    result = cli("--json", "pull", "--dry-run", "a.bin")
    assert result.code == 0
    assert result.json()["data"]["results"][0]["outcome"] == "planned"
    assert origin.log == [] and aria2c_pids(str(cli.home)) == []


def test_two_concurrent_pulls_of_one_model_download_it_once(cli: Cli, origin: Origin) -> None:
    size = 8 * MiB
    digests = publish(cli, origin, {"shared.bin": size})
    origin.fault("files/shared.bin", rate=4 * MiB)
    first = cli.popen("pull", "--split", "2", "shared.bin")
    second = cli.popen("pull", "--split", "2", "shared.bin")
    _, err1 = first.communicate(timeout=120)
    _, err2 = second.communicate(timeout=120)
    assert (first.returncode, second.returncode) == (0, 0), err1 + err2
    assert file_sha(cli.root / "checkpoints" / "shared.bin") == digests["shared.bin"]
    assert origin.bytes_sent("files/shared.bin") <= size * 1.05


def test_sigint_exits_130_and_the_next_pull_resumes(cli: Cli, origin: Origin) -> None:
    size = 24 * MiB
    digests = publish(cli, origin, {"big.bin": size})
    origin.fault("files/big.bin", rate=4 * MiB)
    process = cli.popen("pull", "--split", "2", "big.bin")
    wait_for(lambda: origin.sent_so_far("files/big.bin") > 6 * MiB, what="some bytes sent")
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 130
    wait_for(lambda: aria2c_pids(str(cli.home)) == [], what="the daemon to stop")
    assert not (cli.root / "checkpoints" / "big.bin").exists()
    assert origin.sent_so_far("files/big.bin") > 6 * MiB
    origin.fault("files/big.bin")
    result = cli("pull", "big.bin")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "checkpoints" / "big.bin") == digests["big.bin"]
    assert origin.sent_so_far("files/big.bin") <= size * 1.15  # resumed, not restarted


def test_kill_9_of_cmcache_then_rerun_finishes_without_starting_over(
    cli: Cli, origin: Origin
) -> None:
    size = 24 * MiB
    digests = publish(cli, origin, {"k.bin": size})
    origin.fault("files/k.bin", rate=4 * MiB)
    process = cli.popen("pull", "--split", "2", "k.bin")
    wait_for(lambda: origin.sent_so_far("files/k.bin") > 6 * MiB, what="some bytes sent")
    process.kill()
    process.wait(10)
    result = cli("pull", "k.bin")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "checkpoints" / "k.bin") == digests["k.bin"]
    assert origin.bytes_sent("files/k.bin") <= size * 1.15


def test_kill_9_of_the_daemon_is_recovered_and_resumed(cli: Cli, origin: Origin) -> None:
    size = 24 * MiB
    digests = publish(cli, origin, {"dd.bin": size})
    origin.fault("files/dd.bin", rate=4 * MiB)
    process = cli.popen("pull", "--split", "2", "dd.bin")
    wait_for(lambda: origin.sent_so_far("files/dd.bin") > 8 * MiB, what="some bytes sent")
    for pid in aria2c_pids(str(cli.home)):
        os.kill(pid, signal.SIGKILL)
    _out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert file_sha(cli.root / "checkpoints" / "dd.bin") == digests["dd.bin"]
    assert origin.bytes_sent("files/dd.bin") <= size * 1.3


def test_high_priority_overtakes_a_queue_of_low_ones(cli: Cli, origin: Origin) -> None:
    # Each low file takes ~8 s: the urgent pull starts well before the first one ends, even
    # when a loaded machine takes seconds to start a process.
    lows = {f"low{i}.bin": 16 * MiB for i in range(3)}
    publish(cli, origin, {**lows, "urgent.bin": 2 * MiB})
    for name in [*lows, "urgent.bin"]:
        origin.fault(f"files/{name}", rate=2 * MiB)
    background = cli.popen(
        "--no-progress", "pull", "--priority", "low", "--concurrent", "1", "--split", "1", *lows
    )
    wait_for(lambda: origin.sent_so_far("files/low0.bin") > MiB, what="the low queue")
    urgent = cli("pull", "--priority", "high", "--concurrent", "1", "urgent.bin")
    assert urgent.code == 0, urgent.stderr
    urgent_done = max(r.ended for r in origin.requests_for("files/urgent.bin", "GET"))
    urgent_start = min(r.started for r in origin.requests_for("files/urgent.bin", "GET"))
    assert background.wait(120) == 0
    # The active low download was preempted (paused, resumed after), not waited for.
    assert any(r.started > urgent_start for r in origin.requests_for("files/low0.bin", "GET"))
    last_low = max(r.ended for name in lows for r in origin.requests_for(f"files/{name}", "GET"))
    assert urgent_done < last_low
    # The low queue kept its order after the preemption and finished.
    assert all((cli.root / "checkpoints" / name).exists() for name in lows)


def test_token_is_not_sent_to_a_redirect_target_on_another_host(
    cli: Cli, origin: Origin, tmp_path: os.PathLike[str]
) -> None:
    other = Origin(origin.folder, host="127.0.0.2").start()
    try:
        publish(
            cli,
            origin,
            {"t.bin": 2 * MiB},
            extra_config='[auth]\n"127.0.0.1" = "env:SECRET_TOKEN"\n',
        )
        cli.env["SECRET_TOKEN"] = "tok-abc"
        origin.fault("files/t.bin", redirect=other.url("files/t.bin"))
        result = cli("pull", "t.bin")
        assert result.code == 0, result.stderr
        first_hop = origin.requests_for("files/t.bin")[0]
        assert first_hop.headers.get("Authorization") == "Bearer tok-abc"
        assert other.log and all("Authorization" not in r.headers for r in other.log)
    finally:
        other.stop()


def test_token_reaches_its_own_host_and_no_file_keeps_it(cli: Cli, origin: Origin) -> None:
    publish(
        cli, origin, {"g.bin": 2 * MiB}, extra_config='[auth]\n"127.0.0.1" = "env:SECRET_TOKEN"\n'
    )
    cli.env["SECRET_TOKEN"] = "tok-xyz-123"
    origin.fault("files/g.bin", require_token="tok-xyz-123")
    result = cli("pull", "g.bin")
    assert result.code == 0, result.stderr
    assert "tok-xyz-123" not in result.stdout + result.stderr
    for path in cli.home.rglob("*"):
        if path.is_file() and path.suffix not in (".safetensors", ".bin"):
            assert b"tok-xyz-123" not in path.read_bytes(), path


def test_detached_pull_is_queued_and_can_be_paused_resumed_and_cancelled(
    cli: Cli, origin: Origin
) -> None:
    publish(cli, origin, {"q.bin": 16 * MiB})
    origin.fault("files/q.bin", rate=2 * MiB)
    queued = cli("--json", "pull", "--detach", "--split", "1", "q.bin")
    assert queued.code == 0, queued.stderr
    assert queued.json()["data"]["results"][0]["outcome"] == "queued"
    status = cli("--json", "status").json()["data"]
    assert status["daemon"] == "running"
    (job,) = status["downloads"]
    assert job["ref"] == "checkpoints/q.bin" and job["state"] in ("active", "waiting")
    assert cli("pause", job["id"]).code == 0
    wait_for(
        lambda: cli("--json", "status").json()["data"]["downloads"][0]["state"] == "paused",
        what="paused",
    )
    assert cli("resume", "q.bin").code == 0
    assert cli("cancel", "--all").code == 0
    assert cli("--json", "status").json()["data"]["downloads"] == []
    staging = cli.root / ".cmcache" / "staging"
    wait_for(lambda: list(staging.iterdir()) == [], what="the partial to go")


def test_detached_download_is_placed_by_status_once_finished(cli: Cli, origin: Origin) -> None:
    digests = publish(cli, origin, {"det.bin": 4 * MiB})
    assert cli("pull", "--detach", "det.bin").code == 0
    final = cli.root / "checkpoints" / "det.bin"

    def placed() -> bool:
        cli("status")
        return final.exists()

    wait_for(placed, what="status to place the finished download")
    assert file_sha(final) == digests["det.bin"]
    assert cli("--json", "status").json()["data"]["downloads"] == []
    assert cli("--json", "pull", "det.bin").json()["data"]["results"][0]["outcome"] == "cached"


def test_not_enough_space_exits_8_before_downloading(cli: Cli, origin: Origin) -> None:
    free = shutil.disk_usage(cli.home.parent).free
    publish(
        cli, origin, {"huge.bin": MiB}, extra_config=f'[cache]\nmin_free = "{free + (1 << 30)}"\n'
    )
    result = cli("--json", "pull", "huge.bin")
    assert result.code == 8
    assert "not enough space" in result.json()["errors"][0]["message"]
    gets = origin.requests_for("files/huge.bin", "GET")
    downloads = [r for r in gets if r.headers.get("Range") != "bytes=0-0"]
    assert downloads == []  # only the one-byte probe that resolves the URL


def test_disk_full_during_download_exits_8_and_cleans_up(cli: Cli, origin: Origin) -> None:
    mount_point = cli.home.parent / "small"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        import pytest

        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        publish(cli, origin, {"full.bin": 8 * MiB}, exact_size=False, sha=False)
        cli.env["CMCACHE_ROOT"] = str(mount_point)
        result = cli("pull", "full.bin")  # the size is known first: refused before starting
        assert result.code == 8 and "not enough space" in result.stderr
        origin.fault("files/full.bin", head_length=False)  # now only aria2 finds out
        result = cli("pull", "full.bin")
        assert result.code == 8, result.stdout + result.stderr
        assert "disk is full" in result.stderr
        assert not (mount_point / "checkpoints" / "full.bin").exists()
        assert list((mount_point / ".cmcache" / "staging").iterdir()) == []
    finally:
        cli("daemon", "stop")
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_several_rpc_daemons_share_the_downloads(cli: Cli, origin: Origin) -> None:
    from cmcache.adapters.aria2.client import Aria2Engine
    from cmcache.adapters.aria2.daemon import _free_port, find_aria2c
    from cmcache.core.errors import EngineError

    daemons, urls = [], []
    for _ in range(2):
        port = _free_port()
        daemons.append(
            subprocess.Popen(
                [
                    find_aria2c(),
                    "--enable-rpc",
                    "--rpc-listen-all=false",
                    f"--rpc-listen-port={port}",
                    "--rpc-secret=shared-secret",
                    "--no-conf",
                    f"--stop-with-process={os.getpid()}",
                    "--max-concurrent-downloads=1",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        urls.append(f"http://127.0.0.1:{port}/jsonrpc")
    try:
        names = {f"s{i}.bin": 4 * MiB for i in range(4)}
        rpc = ", ".join(f'"{u}"' for u in urls)
        publish(cli, origin, names, extra_config=f"[download]\nrpc = [{rpc}]\nretry_wait = 1\n")
        for name in names:
            origin.fault(f"files/{name}", rate=4 * MiB)
        cli.env["CMCACHE_ARIA2_SECRET"] = "shared-secret"

        def answering() -> bool:
            try:
                return all(Aria2Engine(u, "shared-secret", timeout=1).version() for u in urls)
            except EngineError:
                return False

        wait_for(answering, what="the daemons")
        result = cli("pull", "--split", "1", *names)
        assert result.code == 0, result.stderr
        # Spread over both daemons, one at a time each: about two files' time, not four.
        starts = sorted(
            min(r.started for r in origin.requests_for(f"files/{n}", "GET")) for n in names
        )
        assert starts[1] - starts[0] < 0.5
    finally:
        for daemon in daemons:
            daemon.kill()
            daemon.wait()
