"""Hashing while aria2 downloads: the finished prefix it reports, and the hash that follows it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from conftest import Cli
from origin import Origin
from pulling import file_sha, publish, wait_for

from cmcache.adapters.aria2.client import Aria2Engine
from cmcache.adapters.storage.hashing import GrowingHash

MiB = 1 << 20


def test_a_growing_hash_equals_the_whole_file_hash(tmp_path: Path) -> None:
    data = os.urandom(3 * MiB + 123)
    path = tmp_path / "f.bin"
    path.write_bytes(data[: 2 * MiB] + bytes(len(data) - 2 * MiB))  # preallocated, half written
    growing = GrowingHash(path)
    growing.advance(MiB)
    growing.advance(MiB // 2)  # never backwards
    growing.advance(2 * MiB)
    assert growing.hashed == 2 * MiB
    with path.open("r+b") as handle:  # aria2 writes the rest in place
        handle.seek(2 * MiB)
        handle.write(data[2 * MiB :])
    assert growing.finish() == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_growing_hash_of_a_replaced_or_shortened_file_starts_over(tmp_path: Path) -> None:
    first, second = os.urandom(2 * MiB), os.urandom(2 * MiB)
    path = tmp_path / "f.bin"
    path.write_bytes(first)
    replaced = GrowingHash(path)
    replaced.advance(MiB)
    with path.open("rb"):  # held open, its inode cannot be reused by the new file
        path.unlink()  # a download started over: a new file under the same name
        path.write_bytes(second)
        replaced.advance(2 * MiB)  # refuses to mix the two files
        assert replaced.hashed == MiB
        assert replaced.finish() == (hashlib.sha256(second).hexdigest(), len(second))
    path.write_bytes(first)
    shortened = GrowingHash(path)
    shortened.advance(2 * MiB)
    path.write_bytes(first[:MiB])  # truncated in place
    assert shortened.finish() == (hashlib.sha256(first[:MiB]).hexdigest(), MiB)


def test_aria2_reports_a_finished_prefix_that_is_on_disk(cli: Cli, origin: Origin) -> None:
    # One connection fills the file from its start: the prefix grows with it.
    size = 6 * MiB
    digests = publish(cli, origin, {"p.bin": size})
    origin.fault("files/p.bin", rate=2 * MiB)
    process = cli.popen("pull", "--split", "1", "p.bin")
    info = cli.home / "state" / "daemon" / "daemon.json"
    wait_for(lambda: origin.sent_so_far("files/p.bin") > 3 * MiB, what="half of it sent")
    daemon = json.loads(info.read_text())
    engine = Aria2Engine(f"http://127.0.0.1:{daemon['port']}/jsonrpc", daemon["secret"])
    transfer = next(t for t in engine.transfers() if t.path.endswith("p.bin.incomplete"))
    assert MiB <= transfer.final_prefix <= transfer.completed < size
    assert transfer.final_prefix % MiB == 0  # whole pieces only
    expected = (origin.folder / "files" / "p.bin").read_bytes()[: transfer.final_prefix]
    assert Path(transfer.path).read_bytes()[: transfer.final_prefix] == expected
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert file_sha(cli.root / "checkpoints" / "p.bin") == digests["p.bin"]
