"""Bundles: one archive, several models, each verified and managed on its own; archives that
try to escape root or smuggle files are refused whole."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import warnings
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


# Set the limit, then become cmcache (a preexec_fn is unsafe beside the origin's threads).
CAPPED = (
    "import os, resource, sys; limit = int(sys.argv[1]);"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit));"
    "os.execv(sys.executable, [sys.executable, '-m', 'cmcache', *sys.argv[2:]])"
)


def run_with_file_limit(cli: Cli, limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Run cmcache as a process that may write at most ``limit`` bytes to any one file (a
    write past it kills the process), so writing a bomb's contents fails loudly."""
    return subprocess.run(
        [sys.executable, "-c", CAPPED, str(limit), *args],
        env=cli.env,
        cwd=cli.home.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


BOMB = 32 << 20  # what the archive's member unpacks to; the list says 1,024 bytes


def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("loras/a.safetensors", bytes(BOMB))
    return buffer.getvalue()


def tgz_bomb() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        info = tarfile.TarInfo("loras/a.safetensors")
        info.size = BOMB
        tf.addfile(info, io.BytesIO(bytes(BOMB)))
    return buffer.getvalue()


@pytest.mark.parametrize(("make", "fmt"), [(zip_bomb, "zip"), (tgz_bomb, "tar")])
def test_an_archive_bomb_writes_no_more_than_the_listed_size(
    cli: Cli, origin: Origin, make: Any, fmt: str
) -> None:
    archive = make()
    assert len(archive) < 200_000
    serve_bundle(cli, origin, archive, fmt, {"loras/a.safetensors": b"a" * 1024})
    done = run_with_file_limit(cli, 4 << 20, "--json", "pull", "pack")
    assert done.returncode == 7, done.stderr[-500:]
    (row,) = json.loads(done.stdout)["data"]["results"]
    assert row["outcome"] == "failed"
    assert "File too large" not in done.stderr  # nothing tried to write past the cap
    assert "1024" in done.stderr and str(BOMB) in done.stderr
    assert not (cli.root / "loras" / "a.safetensors").exists()
    assert [p for p in (cli.root / ".cmcache" / "staging").rglob("*") if p.is_file()] == []


def test_an_archive_naming_a_member_twice_is_refused_before_anything_is_placed(
    cli: Cli, origin: Origin
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        archive = zip_bytes(
            [("loras/a.safetensors", b"a" * 100, 0o644), ("loras/a.safetensors", b"b" * 100, 0o644)]
        )
    serve_bundle(cli, origin, archive, "zip", GOOD)
    result = cli("pull", "pack")
    assert result.code == 7
    assert "appears twice" in result.stderr
    assert not (cli.root / "loras" / "a.safetensors").exists()


def patched(archive: bytes, field: str, value: int) -> bytes:
    """Rewrite the general-purpose flags or the compression method of the (only) member in
    both of its headers (zipfile itself would not write such a member)."""
    local, central = {"flags": (6, 8), "method": (8, 10)}[field]
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", local), (b"PK\x01\x02", central)):
        at = data.index(signature) + offset
        data[at : at + 2] = value.to_bytes(2, "little")
    return bytes(data)


PLAIN = zip_bytes([("loras/a.safetensors", b"a" * 100, 0o644)])


def damaged_deflate() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("loras/a.safetensors", b"a" * 100)
    data = bytearray(buffer.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start] = 0xFF  # deflate block type 3: does not exist
    return bytes(data)


@pytest.mark.parametrize(
    ("archive", "why"),
    [
        (patched(PLAIN, "flags", 0x1), "'loras/a.safetensors' is encrypted"),
        (patched(PLAIN, "method", 99), "method 99"),
        (damaged_deflate(), "loras/a.safetensors (in bundle pack): the archive's data is damaged"),
    ],
    ids=["encrypted", "unknown-method", "damaged"],
)
def test_unreadable_members_are_integrity_failures_that_name_the_member(
    cli: Cli, origin: Origin, archive: bytes, why: str
) -> None:
    serve_bundle(cli, origin, archive, "zip", GOOD)
    result = cli("pull", "pack")
    assert result.code == 7, result.stderr
    assert why in result.stderr
    assert not (cli.root / "loras" / "a.safetensors").exists()


def test_a_bundle_of_thousands_is_stored_once(cli: Cli, tmp_path: Path) -> None:
    count = 2000
    members = [
        {
            "folder": "loras",
            "filename": f"pack/m{i:05d}.safetensors",
            "sha256": hashlib.sha256(str(i).encode()).hexdigest(),
            "size": 1000 + i,
        }
        for i in range(count)
    ]
    entry = {
        "bundle": "big",
        "url": "https://models.example/big.zip",
        "format": "zip",
        "sha256": "a" * 64,
        "size": 10**7,
        "members": members,
    }
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps({"schema": 1, "models": [entry]}))
    cli.write_config(f'[catalog]\nbuiltin = false\n[[sources]]\nname = "t"\nurl = "{listing}"\n')
    assert cli("sync").code == 0
    (cache,) = (cli.home / "state" / "manifests" / "t").glob("*.entries")
    # Each member once, and the bundle once: about the list's own size (a copy of the member
    # list per member made this 129 MB).
    assert cache.stat().st_size < 3 * listing.stat().st_size
    rows = cli("--json", "list").json()["data"]["models"]
    assert len(rows) == count
    looked = cli("path", "--no-download", "loras/pack/m00007.safetensors")
    assert looked.code == 6 and looked.stdout == ""
    planned = cli("--json", "pull", "--dry-run", "big").json()["data"]["results"]
    assert len(planned) == count and {r["outcome"] for r in planned} == {"planned"}
