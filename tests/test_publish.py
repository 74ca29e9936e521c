"""`cmcache publish`: a model folder becomes lists and a versions index that other nodes sync,
served here by the loopback origin, and only changed lists travel."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from conftest import Cli
from origin import Origin

FILES = {
    "checkpoints/base.safetensors": 300_000,
    "checkpoints/SDXL/refined.safetensors": 200_000,
    "loras/a.safetensors": 50_000,
    "loras/b.safetensors": 60_000,
    "vae/v.safetensors": 70_000,
}


def make_folder(top: Path) -> dict[str, str]:
    digests = {}
    for i, (rel, size) in enumerate(FILES.items()):
        path = top / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = hashlib.sha256(rel.encode()).digest() * (size // 32 + 1)
        path.write_bytes(data[:size])
        digests[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        os.utime(path, ns=(10**18 + i, 10**18 + i))
    return digests


def list_gets(origin: Origin) -> list[str]:
    return [r.path for r in origin.log if r.method == "GET" and r.path.endswith(".json")]


def test_publish_sync_pull_round_trip_and_only_the_changed_list_travels(
    cli: Cli, origin: Origin, tmp_path: Path
) -> None:
    folder = origin.folder / "pub"
    digests = make_folder(folder)
    published = cli("--json", "publish", str(folder), "--base-url", origin.url("pub"))
    assert published.code == 0, published.stderr
    data = published.json()["data"]
    assert {i["name"]: i["status"] for i in data["lists"]} == {
        "checkpoints": "added",
        "loras": "added",
        "vae": "added",
    }
    assert data["hashed"] == 5 and data["reused"] == 0
    # A second node syncs the index and pulls everything.
    node = Cli(tmp_path / "node2")
    node.write_config(
        f'[catalog]\nbuiltin = false\n[[sources]]\nname = "team"\n'
        f'index = "{origin.url("pub/model_versions.json")}"\n'
    )
    assert node("sync").code == 0
    refs = [m["ref"] for m in node("--json", "list").json()["data"]["models"]]
    assert sorted(refs) == sorted(FILES)
    pulled = node("pull", *refs)
    assert pulled.code == 0, pulled.stderr
    for rel, sha in digests.items():
        assert hashlib.sha256((node.root / rel).read_bytes()).hexdigest() == sha
    # One file changes: one list gets a new version, and sync downloads exactly that list.
    (folder / "loras" / "a.safetensors").write_bytes(b"a new lora")
    again = cli("--json", "publish", str(folder), "--base-url", origin.url("pub")).json()["data"]
    assert {i["name"]: i["status"] for i in again["lists"]} == {
        "checkpoints": "unchanged",
        "loras": "updated",
        "vae": "unchanged",
    }
    assert again["hashed"] == 1 and again["reused"] == 4
    before = len(list_gets(origin))
    synced = node("--json", "sync").json()["data"]["lists"]
    assert {r["list"]: r["status"] for r in synced} == {
        "checkpoints": "unchanged",
        "loras": "updated",
        "vae": "unchanged",
    }
    fetched = list_gets(origin)[before:]
    assert sorted(fetched) == ["/pub/loras.json", "/pub/model_versions.json"]


def test_one_list_a_dry_run_and_bad_input(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    make_folder(folder)
    out = tmp_path / "out"
    args = [
        "publish",
        str(folder),
        "--base-url",
        "https://m.example/x",
        "--out",
        str(out),
        "--list-by",
        "one",
        "--name",
        "all",
    ]
    dry = cli("--json", *args, "--dry-run")
    assert dry.code == 0 and dry.json()["data"]["lists"][0]["name"] == "all"
    assert not out.exists()
    assert cli("publish", str(folder), "--base-url", "ftp://nope/x").code == 2
    assert cli("publish", str(tmp_path / "none"), "--base-url", "https://m.example").code == 2
    wrote = cli(*args)
    assert wrote.code == 0
    listing = json.loads((out / "all.json").read_text())
    assert len(listing["models"]) == 5
    assert listing["models"][0]["url"].startswith("https://m.example/x/")
    index = json.loads((out / "model_versions.json").read_text())
    assert index["all"]["md5"] == hashlib.md5((out / "all.json").read_bytes()).hexdigest()


def test_links_leaving_the_folder_are_skipped_with_a_warning(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    make_folder(folder)
    outside = tmp_path / "elsewhere"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("AWS_SECRET=abc123")
    (outside / "deep" / "x.safetensors").write_bytes(b"not ours")
    (folder / "loras" / "passwd.safetensors").symlink_to("/etc/passwd")
    (folder / "loras" / "secret.safetensors").symlink_to(outside / "secret.txt")
    (folder / "loras" / "deep").symlink_to(outside / "deep")
    (folder / "stolen").symlink_to(outside)
    (folder / "loras" / "alias.safetensors").symlink_to(folder / "loras" / "a.safetensors")
    result = cli(
        "--json",
        "publish",
        str(folder),
        "--base-url",
        "https://m.example/x",
        "--bundle",
        "pack=loras/*",
    )
    assert result.code == 0, result.stderr
    warned = result.json()["data"]["warnings"]
    for name in ("loras/passwd.safetensors", "loras/secret.safetensors", "loras/deep", "stolen"):
        assert any(str(folder / name) in w for w in warned), (name, warned)
        assert str(folder / name) in result.stderr
    listed = json.loads((folder / "bundles.json").read_text())["models"]
    members = {m["filename"] for m in listed[0]["members"]}
    assert members == {"a.safetensors", "b.safetensors", "alias.safetensors"}  # inside: kept
    with zipfile.ZipFile(folder / "bundles" / "pack.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"loras/{m}" for m in members)
    every = "".join(p.read_text() for p in folder.glob("*.json"))
    assert "stolen" not in every and "passwd" not in every and "secret" not in every


def test_lists_written_inside_the_folder_are_never_published(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    make_folder(folder)
    out = folder / "loras" / "published"
    args = ["--json", "publish", str(folder), "--base-url", "https://m.example/x"]
    first = cli(*args, "--out", str(out), "--bundle", "pack=vae/*")
    assert first.code == 0, first.stderr
    again = cli(*args, "--out", str(out), "--bundle", "pack=vae/*")
    assert {i["name"]: i["status"] for i in again.json()["data"]["lists"]} == {
        "bundles": "unchanged",
        "checkpoints": "unchanged",
        "loras": "unchanged",
    }
    loras = json.loads((out / "loras.json").read_text())["models"]
    assert sorted(m["filename"] for m in loras) == ["a.safetensors", "b.safetensors"]


def test_an_unwritable_out_is_a_disk_error_naming_it(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    make_folder(folder)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out in ("/proc/x", str(a_file / "lists")):
        result = cli("publish", str(folder), "--base-url", "https://m.example/x", "--out", out)
        assert result.code == 8, result.stderr
        assert out in result.stderr
        assert "unexpected" not in result.stderr
