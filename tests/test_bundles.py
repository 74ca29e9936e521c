"""Bundles: one archive, several models, each verified and managed on its own; archives that
try to escape root or smuggle files are refused whole."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from origin import Origin
from pulling import FAST_RETRIES

MEMBERS = {
    "loras/pack/a.safetensors": b"A" * 30_000,
    "loras/pack/b.safetensors": b"B" * 20_000,
    "loras/pack/c.safetensors": b"C" * 10_000,
}


def node(tmp_path: Path, name: str, index_url: str) -> Cli:
    cli = Cli(tmp_path / name)
    cli.write_config(
        f"{FAST_RETRIES}[catalog]\nbuiltin = false\n"
        f'[[sources]]\nname = "team"\nindex = "{index_url}"\n'
    )
    assert cli("sync").code == 0
    return cli


def test_publish_a_bundle_then_pull_it_by_name_or_by_member(
    cli: Cli, origin: Origin, tmp_path: Path
) -> None:
    folder = origin.folder / "pub"
    for rel, data in {**MEMBERS, "checkpoints/x.safetensors": b"X" * 5000}.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    published = cli(
        "--json",
        "publish",
        str(folder),
        "--base-url",
        origin.url("pub"),
        "--bundle",
        "lorapack=loras/pack/*",
    )
    assert published.code == 0, published.stderr
    lists = {i["name"]: i["models"] for i in published.json()["data"]["lists"]}
    assert lists == {"bundles": 3, "checkpoints": 1}
    index_url = origin.url("pub/model_versions.json")
    first = node(tmp_path, "n1", index_url)
    result = first("--json", "pull", "lorapack")
    assert result.code == 0, result.stderr
    assert sorted(r["ref"] for r in result.json()["data"]["results"]) == sorted(MEMBERS)
    for rel, data in MEMBERS.items():
        assert (first.root / rel).read_bytes() == data
    assert list((first.root / ".cmcache" / "bundles").iterdir()) == []  # archive deleted
    served = sum(r.sent for r in origin.requests_for("pub/bundles/lorapack.zip", "GET"))
    zip_size = (folder / "bundles" / "lorapack.zip").stat().st_size
    assert served <= zip_size + 1  # the archive travelled once (+ the 1-byte probe)
    # Any member brings the whole bundle; members are then managed and pruned one by one.
    second = node(tmp_path, "n2", index_url)
    assert second("pull", "loras/pack/b.safetensors").code == 0
    assert all((second.root / rel).is_file() for rel in MEMBERS)
    second("touch", "loras/pack/a.safetensors", "loras/pack/b.safetensors")
    pruned = second("--json", "prune", "--max-size", "55000", "--keep-days", "0")
    assert [r["filename"] for r in pruned.json()["data"]["removed"]] == ["pack/c.safetensors"]


def zip_bytes(entries: list[tuple[str, bytes, int]]) -> bytes:
    """A zip whose entries are (name, data, unix mode); mode 0o120777 makes a symlink."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buffer.getvalue()


def tar_bytes(entries: list[tarfile.TarInfo]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        for info in entries:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def serve_bundle(
    cli: Cli, origin: Origin, archive: bytes, fmt: str, members: dict[str, bytes]
) -> None:
    origin.add(f"b/pack.{fmt}", archive)
    entry: dict[str, Any] = {
        "bundle": "pack",
        "url": origin.url(f"b/pack.{fmt}"),
        "format": fmt,
        "sha256": hashlib.sha256(archive).hexdigest(),
        "size": len(archive),
        "members": [
            {
                "folder": r.split("/", 1)[0],
                "filename": r.split("/", 1)[1],
                "sha256": hashlib.sha256(d).hexdigest(),
                "size": len(d),
            }
            for r, d in members.items()
        ],
    }
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"schema": 1, "models": [entry]}))
    cli.write_config(f'{FAST_RETRIES}[[sources]]\nname = "t"\nurl = "{listing}"\n')
    assert cli("sync").code == 0


GOOD = {"loras/a.safetensors": b"a" * 100}


@pytest.mark.parametrize(
    ("archive", "fmt", "why"),
    [
        (
            zip_bytes([("loras/a.safetensors", b"a" * 100, 0o644), ("../evil.sh", b"x", 0o644)]),
            "zip",
            "leaves the model root",
        ),
        (
            zip_bytes([("loras/a.safetensors", b"a" * 100, 0o644), ("/etc/evil", b"x", 0o644)]),
            "zip",
            "leaves the model root",
        ),
        (zip_bytes([("loras/a.safetensors", b"/etc/passwd", 0o120777)]), "zip", "symbolic link"),
        (
            zip_bytes(
                [("loras/a.safetensors", b"a" * 100, 0o644), ("loras/extra.bin", b"x", 0o644)]
            ),
            "zip",
            "not in the bundle's member list",
        ),
    ],
)
def test_hostile_archives_are_refused_whole(
    cli: Cli, origin: Origin, tmp_path: Path, archive: bytes, fmt: str, why: str
) -> None:
    serve_bundle(cli, origin, archive, fmt, GOOD)
    result = cli("pull", "pack")
    assert result.code == 7, result.stderr
    assert why in result.stderr
    assert not (cli.root / "loras" / "a.safetensors").exists()
    assert not (cli.root.parent / "evil.sh").exists()


def test_a_tar_with_a_link_is_refused_and_a_clean_tar_is_unpacked(cli: Cli, origin: Origin) -> None:
    link = tarfile.TarInfo("loras/a.safetensors")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    serve_bundle(cli, origin, tar_bytes([link]), "tar", GOOD)
    result = cli("pull", "pack")
    assert result.code == 7 and "link" in result.stderr
    good = tarfile.TarInfo("loras/a.safetensors")
    good.size = 100
    serve_bundle(cli, origin, tar_bytes([good]), "tar", {"loras/a.safetensors": b"x" * 100})
    assert cli("pull", "pack").code == 0
    assert (cli.root / "loras" / "a.safetensors").read_bytes() == b"x" * 100


def test_a_member_with_other_bytes_fails_alone(cli: Cli, origin: Origin) -> None:
    archive = zip_bytes(
        [("loras/a.safetensors", b"a" * 100, 0o644), ("loras/b.safetensors", b"tampered", 0o644)]
    )
    serve_bundle(
        cli,
        origin,
        archive,
        "zip",
        {"loras/a.safetensors": b"a" * 100, "loras/b.safetensors": b"original"},
    )
    result = cli("--json", "pull", "pack")
    assert result.code == 7
    outcomes = {r["ref"]: r["outcome"] for r in result.json()["data"]["results"]}
    assert outcomes == {"loras/a.safetensors": "downloaded", "loras/b.safetensors": "failed"}
    assert not (cli.root / "loras" / "b.safetensors").exists()
