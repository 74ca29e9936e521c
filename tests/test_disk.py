"""Knowing the disk: `du`, `report`, `dedupe` and `prune --partials` on a synthetic library.

The library is built by hand, as users build theirs: catalog models adopted by `scan`, a pinned
one, one in an extra model path outside root, files no catalog knows, the same bytes under
several names, partial downloads with and without a job, and a use history with old and recent
uses. Every number the commands print is checked against what was built.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Cli

from cmcache.adapters.storage.index import Index
from cmcache.adapters.storage.jobs import Job
from cmcache.adapters.storage.locks import FileLock
from cmcache.adapters.storage.model_store import ModelStore

KiB = 1024
DAY = 86400.0
A, B, C, D, E, F, G = 3072 * KiB, 2048 * KiB, 1024 * KiB, 512 * KiB, 768 * KiB, 256 * KiB, 100
NOTES = 10
STALE = (300 * KiB, 1 * KiB)  # a partial nobody will finish, and its aria2 control file
LIVE = 200 * KiB  # a partial whose job the queue still holds
CATALOG = {  # ref → (size, which bytes)
    "checkpoints/base.safetensors": (A, "a"),
    "checkpoints/old.safetensors": (B, "b"),
    "loras/style.safetensors": (C, "c"),
    "text_encoders/clip_l.safetensors": (D, "d"),
    "checkpoints/sd15.safetensors": (E, "e"),  # one model listed under two names
    "checkpoints/v1-5-pruned.safetensors": (E, "e"),
    "vae/ext.safetensors": (F, "f"),  # lives in an extra model path, outside root
}
UNMANAGED = {  # path under root → which bytes
    "checkpoints/mine.ckpt": "g",  # no catalog knows it
    "loras/style-renamed.safetensors": "c",  # a LoRA renamed by hand
    "loras/old/style-v1.safetensors": "c",  # and an older copy of it: three names
    "clip/clip_l.safetensors": "d",  # the same text encoder in the legacy folder
    "notes.txt": "n",  # directly in root
}
SIZES = {"a": A, "b": B, "c": C, "d": D, "e": E, "f": F, "g": G, "n": NOTES}


@dataclass
class Library:
    root: Path
    external: Path
    blobs: dict[str, bytes]
    stale: Path
    live: Path
    workflow: Path

    def digest(self, key: str) -> str:
        return hashlib.sha256(self.blobs[key]).hexdigest()

    def contents(self) -> dict[str, str]:
        """sha256 of every model path under root and outside it."""
        paths = [self.root / r for r in [*CATALOG, *UNMANAGED] if not r.startswith("vae/")]
        out = {str(p.relative_to(self.root)): _sha(p) for p in paths if p.exists()}
        out["external"] = _sha(self.external / "vae" / "ext.safetensors")
        return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(cli: Cli, tmp_path: Path) -> Library:
    rng = random.Random(7)
    blobs = {key: rng.randbytes(size) for key, size in SIZES.items()}
    blobs["n"] = b"my notes\n\n"
    root, external = cli.root, tmp_path / "elsewhere"
    models = [
        {
            "folder": ref.split("/", 1)[0],
            "filename": ref.split("/", 1)[1],
            "url": f"https://models.example/{ref}",
            "sha256": hashlib.sha256(blobs[key]).hexdigest(),
            "size": size,
        }
        for ref, (size, key) in CATALOG.items()
    ]
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"schema": 1, "version": "1", "models": models}))
    (cli.home / "extra.yaml").write_text(f"other:\n  base_path: {external}\n  vae: vae\n")
    workflow = cli.home / "wf" / "flow.json"
    workflow.parent.mkdir()
    workflow.write_text(
        json.dumps(
            {
                "1": {
                    "class_type": "CheckpointLoaderSimple",
                    "inputs": {"ckpt_name": "base.safetensors"},
                },
                "2": {"class_type": "LoraLoader", "inputs": {"lora_name": "missing.safetensors"}},
                "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ext.safetensors"}},
            }
        )
    )
    cli.write_config(
        '[cache]\nmax_size = "64M"\n[catalog]\nbuiltin = false\n'
        f'[comfyui]\nextra_model_paths = ["{cli.home / "extra.yaml"}"]\n'
        '[prefetch]\nworkflows = ["wf/*.json"]\n'
        f'[[sources]]\nname = "test"\nurl = "{listing}"\n'
    )
    assert cli("sync").code == 0
    for ref, (_size, key) in CATALOG.items():
        path = (external if ref.startswith("vae/") else root) / ref
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blobs[key])
    for rel, key in UNMANAGED.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(blobs[key])
    scanned = cli("--json", "scan")
    assert scanned.code == 0, scanned.stderr
    assert len(scanned.json()["data"]["adopted"]) == 6
    now = time.time()
    index = Index(root / ".cmcache" / "index.sqlite3")
    index.pin("text_encoders", "clip_l.safetensors")
    for ref, days in [("base", 1), ("old", 200), ("sd15", 2)]:
        index.record_use("checkpoints", f"{ref}.safetensors", at=now - days * DAY)
    index.record_use("text_encoders", "clip_l.safetensors", at=now - 100 * DAY)
    store = ModelStore(root)
    stale = store.staging_dir / "0123456789abcdef-gone.safetensors.incomplete"
    stale.write_bytes(b"\0" * STALE[0])
    stale.with_name(stale.name + ".aria2").write_bytes(b"\1" * STALE[1])
    for path in (stale, stale.with_name(stale.name + ".aria2")):
        os.utime(path, (now - 3 * DAY, now - 3 * DAY))
    live = store.staging_path("loras", "coming.safetensors")
    live.write_bytes(b"\0" * LIVE)
    index.add_job(
        Job(
            "0000000000000001",
            "http://127.0.0.1:9/jsonrpc",
            "loras",
            "coming.safetensors",
            str(live),
            0,
            1,
            None,
            None,
            owner_pid=os.getpid(),
        )
    )
    index.close()
    return Library(root, external, blobs, stale, live, workflow)


def du(cli: Cli, *args: str) -> dict[str, object]:
    result = cli("--json", "du", *args)
    assert result.code == 0, result.stderr
    data: dict[str, object] = result.json()["data"]
    return data


def verified(cli: Cli) -> int:
    """How many managed files `verify` found intact (it fails on any other)."""
    result = cli("--json", "verify")
    assert result.code == 0, result.stdout + result.stderr
    checked = result.json()["data"]["checked"]
    assert {c["status"] for c in checked} == {"ok"}
    return len(checked)


def test_du_counts_each_file_once_by_state_and_folder(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    data = du(cli)
    states = {
        "managed": A + B + C + 2 * E,
        "pinned": D,
        "external": F,
        "unmanaged": G + 2 * C + D + NOTES,
        "partial": sum(STALE) + LIVE,
    }
    assert data["states"] == states
    assert data["total"] == sum(states.values()) - F
    assert data["folders"] == {
        ".": NOTES,
        "checkpoints": A + B + 2 * E + G,
        "clip": D,
        "loras": 3 * C,
        "text_encoders": D,
    }
    assert data["root"] == str(lib.root) and data["budget"] == 64 << 20
    assert 0 < int(str(data["free"])) <= shutil.disk_usage(lib.root).total
    assert list(data) == ["root", "total", "states", "folders", "budget", "free"]
    # A file with several names counts once, wherever the names are.
    os.link(lib.root / "checkpoints" / "base.safetensors", lib.root / "loras" / "base-link")
    assert du(cli)["states"] == states
    loras = du(cli, "--folder", "loras")
    assert loras["total"] == 3 * C + A + LIVE  # the live partial's job is for loras
    assert loras["states"] == {
        "managed": C + A,
        "pinned": 0,
        "external": 0,
        "unmanaged": 2 * C,
        "partial": LIVE,
    }
    assert loras["folders"] == {"loras": 3 * C + A}
    # ComfyUI reads clip/ as text_encoders/: either name selects both.
    for name in ("text_encoders", "clip"):
        legacy = du(cli, "--folder", name)
        assert legacy["folders"] == {"clip": D, "text_encoders": D}
        assert legacy["states"] == {
            "managed": 0,
            "pinned": D,
            "external": 0,
            "unmanaged": D,
            "partial": 0,
        }
    assert du(cli, "--folder", "vae")["states"] == dict.fromkeys(states, 0) | {"external": F}
    missing = cli("du", "--folder", "nope")
    assert (
        missing.code == 2 and "no such folder" in missing.stderr and "checkpoints" in missing.stderr
    )
    assert cli("du", "--folder", "../etc").code == 2


def test_report_names_what_could_go(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    result = cli("--json", "report")
    assert result.code == 0, result.stderr
    data = result.json()["data"]
    # Unused for 4 times cache.keep_days = 28 days, or never: largest first.
    assert [
        (u["ref"], u["bytes"], u["last_used"] is None, u["pinned"]) for u in data["unused"]
    ] == [
        ("checkpoints/old.safetensors", B, False, False),
        ("loras/style.safetensors", C, True, False),
        ("checkpoints/v1-5-pruned.safetensors", E, True, False),
        ("text_encoders/clip_l.safetensors", D, False, True),
    ]
    # Without hashing, copies of catalog models under other names are not recognised.
    assert data["unknown"] == [
        {"path": "loras/old/style-v1.safetensors", "bytes": C},
        {"path": "loras/style-renamed.safetensors", "bytes": C},
        {"path": "checkpoints/mine.ckpt", "bytes": G},
        {"path": "notes.txt", "bytes": NOTES},
    ]
    both = ["checkpoints/sd15.safetensors", "checkpoints/v1-5-pruned.safetensors"]
    assert data["duplicates"] == [
        {"sha256": lib.digest("e"), "bytes": E, "paths": both, "reclaimable": E}
    ]
    stale = lib.stale.relative_to(lib.root).as_posix()
    assert data["partials"] == [{"path": stale, "bytes": sum(STALE)}]
    assert data["workflows"] == [
        {
            "workflow": str(lib.workflow),
            "references": [
                "checkpoints/base.safetensors",
                "loras/missing.safetensors",
                "vae/ext.safetensors",
            ],
            "missing": ["loras/missing.safetensors"],
        }
    ]
    recent = cli("--json", "report", "--unused-days", "150").json()["data"]["unused"]
    assert [u["ref"] for u in recent] == [
        "checkpoints/old.safetensors",
        "loras/style.safetensors",
        "checkpoints/v1-5-pruned.safetensors",
    ]
    text = cli("report")
    assert text.code == 0 and "loras/missing.safetensors" in text.stdout
    assert "--hash" in text.stderr


def test_report_hash_finds_copies_and_remembers_what_it_hashed(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    hashed = cli("--json", "report", "--hash")
    assert hashed.code == 0, hashed.stderr
    data = hashed.json()["data"]
    assert data["hashed"] == len(UNMANAGED)
    # The renamed LoRA and its old copy are the catalog's bytes: no longer unknown.
    assert data["unknown"] == [
        {"path": "checkpoints/mine.ckpt", "bytes": G},
        {"path": "notes.txt", "bytes": NOTES},
    ]
    assert [(d["sha256"], d["paths"], d["reclaimable"]) for d in data["duplicates"]] == [
        (
            lib.digest("c"),
            [
                "loras/old/style-v1.safetensors",
                "loras/style-renamed.safetensors",
                "loras/style.safetensors",
            ],
            2 * C,
        ),
        (
            lib.digest("e"),
            ["checkpoints/sd15.safetensors", "checkpoints/v1-5-pruned.safetensors"],
            E,
        ),
        (lib.digest("d"), ["clip/clip_l.safetensors", "text_encoders/clip_l.safetensors"], D),
    ]
    assert cli("--json", "report", "--hash").json()["data"]["hashed"] == 0  # remembered
    (lib.root / "checkpoints" / "mine.ckpt").write_bytes(b"changed")
    assert cli("--json", "report", "--hash").json()["data"]["hashed"] == 1


def test_dedupe_frees_exactly_the_duplicate_bytes(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    before = lib.contents()
    total = du(cli)["total"]
    # Only sha256s the index knows, at first: the two names of one catalog model.
    dry = cli("--json", "dedupe", "--dry-run")
    assert dry.code == 0, dry.stderr
    assert dry.json()["data"]["reclaimed"] == E
    assert lib.contents() == before and du(cli)["total"] == total
    assert cli("--json", "report", "--hash").code == 0
    result = cli("--json", "dedupe")
    assert result.code == 0, result.stderr
    data = result.json()["data"]
    assert data["reclaimed"] == 2 * C + E + D
    assert sorted((g["kept"], sorted(g["linked"])) for g in data["linked"]) == [
        ("checkpoints/sd15.safetensors", ["checkpoints/v1-5-pruned.safetensors"]),
        (
            "loras/style.safetensors",
            ["loras/old/style-v1.safetensors", "loras/style-renamed.safetensors"],
        ),
        ("text_encoders/clip_l.safetensors", ["clip/clip_l.safetensors"]),
    ]
    assert lib.contents() == before
    inodes = {os.stat(lib.root / p).st_ino for p in UNMANAGED if UNMANAGED[p] == "c"}
    assert inodes == {os.stat(lib.root / "loras" / "style.safetensors").st_ino}
    after = du(cli)
    assert after["total"] == int(str(total)) - (2 * C + E + D)
    assert after["states"] == {
        "managed": A + B + C + E,
        "pinned": D,
        "external": F,
        "unmanaged": G + NOTES,
        "partial": sum(STALE) + LIVE,
    }
    # The index follows: the linked names stay managed and trusted, and count once.
    status = cli("--json", "status")
    assert status.json()["data"]["cache"]["managed_size"] == A + B + C + E + D
    assert verified(cli) == len(CATALOG) - 1
    pulled = cli("--json", "pull", "checkpoints/v1-5-pruned.safetensors")  # no network: trusted
    assert pulled.json()["data"]["results"][0]["outcome"] == "cached"
    again = cli("--json", "dedupe").json()["data"]
    assert again == {"linked": [], "reclaimed": 0, "dry_run": False}


def test_prune_after_dedupe_keeps_bytes_another_name_needs(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    assert cli("report", "--hash").code == 0
    assert cli("dedupe").code == 0
    before = lib.contents()
    managed = A + B + C + E + D
    # The budget counts each inode once: exactly at budget, nothing has to go.
    fits = cli("--json", "prune", "--max-size", str(managed), "--keep-days", "0")
    assert fits.json()["data"]["removed"] == [] and fits.json()["data"]["managed_size"] == managed
    result = cli("--json", "prune", "--max-size", "0", "--keep-days", "0")
    assert result.code == 0, result.stderr
    data = result.json()["data"]
    assert sorted(r["filename"] for r in data["removed"]) == [
        "base.safetensors",
        "old.safetensors",
        "sd15.safetensors",
        "style.safetensors",
        "v1-5-pruned.safetensors",
    ]
    assert data["freed"] == A + B + C + E and data["managed_size"] == D
    for rel, key in UNMANAGED.items():  # every other name still reads its bytes
        assert _sha(lib.root / rel) == before[rel] == lib.digest(key)
    assert _sha(lib.root / "text_encoders" / "clip_l.safetensors") == lib.digest("d")


def test_prune_keeps_every_name_of_bytes_one_name_protects(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    assert cli("dedupe").code == 0  # sd15 and v1-5-pruned become one inode
    assert cli("touch", "checkpoints/v1-5-pruned.safetensors").code == 0
    # sd15 alone was used 2 days ago; its other name just now: the bytes are in use.
    result = cli("--json", "prune", "--max-size", "0", "--keep-days", "1.5")
    removed = sorted(r["filename"] for r in result.json()["data"]["removed"])
    assert removed == ["old.safetensors"]  # style was adopted just now: recent too
    assert (lib.root / "checkpoints" / "sd15.safetensors").exists()


def _killed_dedupe(cli: Cli, point: str) -> None:
    cli.env["CMCACHE_CRASH_AT"] = point
    try:
        result = cli("dedupe")
    finally:
        del cli.env["CMCACHE_CRASH_AT"]
    assert result.code == -9, (result.code, result.stderr)  # SIGKILL, no cleanup ran


def test_a_kill_between_link_and_replace_leaves_every_path_intact(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    before = lib.contents()
    inodes = {p: os.stat(lib.root / p).st_ino for p in before if p != "external"}
    _killed_dedupe(cli, "dedupe-linked")
    assert lib.contents() == before
    assert {p: os.stat(lib.root / p).st_ino for p in inodes} == inodes
    spares = list((lib.root / "checkpoints").glob(".cmcache-link-*"))
    assert len(spares) == 1 and _sha(spares[0]) == lib.digest("e")
    assert verified(cli) == len(CATALOG) - 1
    assert du(cli)["states"]["managed"] == A + B + C + 2 * E  # type: ignore[index]
    result = cli("--json", "dedupe")
    assert result.code == 0 and result.json()["data"]["reclaimed"] == E
    assert lib.contents() == before
    assert not list((lib.root / "checkpoints").glob(".cmcache-link-*"))


def test_a_kill_before_the_index_is_updated_is_finished_later(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    before = lib.contents()
    _killed_dedupe(cli, "dedupe-replaced")
    assert lib.contents() == before
    linked = lib.root / "checkpoints" / "v1-5-pruned.safetensors"
    kept = lib.root / "checkpoints" / "sd15.safetensors"
    assert os.stat(linked).st_ino == os.stat(kept).st_ino
    index = Index(lib.root / ".cmcache" / "index.sqlite3", readonly=True)
    record = index.get_file("checkpoints", "v1-5-pruned.safetensors")
    index.close()
    assert record is not None and record.inode != os.stat(linked).st_ino
    # The link is other managed bytes with the same sha256: still managed, counted once.
    assert du(cli)["states"]["managed"] == A + B + C + E  # type: ignore[index]
    assert cli("--json", "dedupe").json()["data"]["reclaimed"] == 0
    index = Index(lib.root / ".cmcache" / "index.sqlite3", readonly=True)
    record = index.get_file("checkpoints", "v1-5-pruned.safetensors")
    index.close()
    assert record is not None and record.inode == os.stat(linked).st_ino


def test_prune_treats_an_unrecorded_link_as_managed(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    _killed_dedupe(cli, "dedupe-replaced")
    result = cli("--json", "prune", "--max-size", "0", "--keep-days", "0")
    assert result.code == 0 and "changed since" not in result.stderr
    removed = {r["filename"] for r in result.json()["data"]["removed"]}
    assert {"sd15.safetensors", "v1-5-pruned.safetensors"} <= removed
    assert result.json()["data"]["freed"] == A + B + C + E
    assert not (lib.root / "checkpoints" / "v1-5-pruned.safetensors").exists()


def test_prune_partials_removes_only_what_no_live_job_will_finish(cli: Cli, tmp_path: Path) -> None:
    lib = build(cli, tmp_path)
    store = ModelStore(lib.root)
    busy = store.staging_path("loras", "busy.safetensors")
    busy.write_bytes(b"\0" * 1000)
    lock = FileLock(store.lock_path("loras", "busy.safetensors"))  # a pull holds it
    assert lock.try_acquire()
    try:
        stale = lib.stale.relative_to(lib.root).as_posix()
        dry = cli("--json", "prune", "--partials", "--dry-run")
        assert dry.code == 0, dry.stderr
        assert dry.json()["data"]["partials"] == [{"path": stale, "bytes": sum(STALE)}]
        assert lib.stale.exists()
        young = cli("--json", "prune", "--partials", "--older-than", "5")
        assert young.json()["data"]["partials"] == [] and lib.stale.exists()
        result = cli("--json", "prune", "--partials", "--older-than", "2")
        assert result.code == 0, result.stderr
        assert result.json()["data"]["freed"] == sum(STALE)
        assert (
            not lib.stale.exists() and not lib.stale.with_name(lib.stale.name + ".aria2").exists()
        )
        assert lib.live.exists() and busy.exists()
        assert all((lib.root / p).exists() for p in CATALOG if not p.startswith("vae/"))
    finally:
        lock.release()
    assert cli("--json", "prune", "--partials").json()["data"]["partials"] == [
        {"path": busy.relative_to(lib.root).as_posix(), "bytes": 1000}
    ]
    assert lib.live.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--older-than", "3"], "--older-than goes with --partials"),
        (["--partials", "--max-size", "1G"], "only partial downloads"),
    ],
)
def test_prune_partials_usage_errors(cli: Cli, args: list[str], says: str) -> None:
    result = cli("prune", *args)
    assert result.code == 2 and says in result.stderr


def test_a_whole_repository_is_one_managed_model(cli: Cli) -> None:
    from cmcache.adapters.storage.hashing import fingerprint
    from cmcache.adapters.storage.index import FileRecord
    from cmcache.services.download.placement import hash_file

    repo = cli.root / "LLM" / "Janus-Pro"
    (repo / "sub").mkdir(parents=True)
    (repo / "model.safetensors").write_bytes(b"m" * 3000)
    (repo / "sub" / "config.json").write_bytes(b"{}" * 500)
    copy = cli.root / "LLM" / "model-copy.safetensors"
    copy.write_bytes(b"m" * 3000)
    digest, size = hash_file(repo)  # as a pull of hf:OWNER/REPO records it
    index = Index(cli.root / ".cmcache" / "index.sqlite3")
    index.record_file(FileRecord("LLM", "Janus-Pro", size, digest, *fingerprint(repo)[1:]))
    index.close()
    data = du(cli)
    assert data["states"]["managed"] == 4000 and data["states"]["unmanaged"] == 3000  # type: ignore[index]
    report = cli("--json", "report", "--hash", "--unused-days", "0").json()["data"]
    assert report["unused"] == [
        {"ref": "LLM/Janus-Pro", "bytes": 4000, "last_used": None, "pinned": False}
    ]
    assert report["unknown"] == [{"path": "LLM/model-copy.safetensors", "bytes": 3000}]
    assert report["hashed"] == 1 and report["duplicates"] == []
    # Its files' hashes are the folder's business: dedupe never relinks them.
    assert cli("--json", "dedupe").json()["data"]["linked"] == []
    (repo / "notes.txt").write_text("added by hand")
    assert du(cli)["states"]["managed"] == 0  # type: ignore[index]
