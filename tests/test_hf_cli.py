"""Hugging Face files and whole repositories, against a loopback Hub and its CDN."""

from __future__ import annotations

import hashlib
import json

from conftest import Cli
from hubs import CivitaiFile, CivitaiHub, HfHub
from origin import Origin, random_bytes
from pulling import FAST_RETRIES, file_sha

REPO = "org/Janus Pro"[:3] + "/janus-pro"  # org/janus-pro


def test_an_hf_file_is_verified_by_its_announced_hash_and_the_token_stays_on_the_hub(
    cli: Cli, hf: HfHub, storage: Origin
) -> None:
    path = "split files/ünet é.safetensors"
    sha = hf.add(REPO, path, random_bytes(250_000, seed=1))
    cli.env["HF_TOKEN"] = hf.token
    first = cli("--json", "pull", "--folder", "diffusion_models", f"hf:{REPO}/{path}")
    assert first.code == 0, first.stderr
    placed = cli.root / "diffusion_models" / "ünet é.safetensors"
    assert file_sha(placed) == first.json()["data"]["results"][0]["sha256"] == sha
    heads = [r for r in hf.api.log if r.method == "HEAD"]
    assert heads and all(r.headers.get("Authorization") == f"Bearer {hf.token}" for r in heads)
    assert storage.log and all("Authorization" not in r.headers for r in storage.log)
    seen = len(hf.api.log) + len(storage.log)
    blob = f"https://huggingface.co/{REPO}/blob/main/split%20files/%C3%BCnet%20%C3%A9.safetensors"
    again = cli("--json", "pull", "--folder", "diffusion_models", blob)  # another form, remembered
    assert again.json()["data"]["results"][0]["outcome"] == "cached"
    assert len(hf.api.log) + len(storage.log) == seen


def test_bytes_other_than_the_announced_hash_are_refused(
    cli: Cli, hf: HfHub, storage: Origin
) -> None:
    sha = hf.add(REPO, "v.safetensors", random_bytes(100_000, seed=2))
    storage.add(f"lfs/{sha}", random_bytes(100_000, seed=3))  # the CDN serves other bytes
    result = cli("--json", "pull", "--folder", "vae", f"hf:{REPO}/v.safetensors")
    assert result.code == 7 and "sha256 mismatch" in result.json()["errors"][0]["message"]
    assert not (cli.root / "vae" / "v.safetensors").exists()


def test_a_gated_repository_says_what_to_do(cli: Cli, hf: HfHub) -> None:
    hf.add("org/gated", "g.safetensors", random_bytes(10_000, seed=4))
    hf.gate("org/gated")
    denied = cli("pull", "--folder", "loras", "hf:org/gated/g.safetensors")
    assert denied.code == 6
    assert f"gated or private: accept its license at {hf.endpoint}/org/gated" in denied.stderr
    assert "set HF_TOKEN" in denied.stderr
    cli.env["HF_TOKEN"] = "not-the-token"
    refused = cli("pull", "--folder", "loras", "hf:org/gated/g.safetensors")
    assert refused.code == 6 and "HF_TOKEN has no access yet" in refused.stderr
    assert "not-the-token" not in refused.stderr
    cli.env["HF_TOKEN"] = hf.token
    assert cli("pull", "--folder", "loras", "hf:org/gated/g.safetensors").code == 0


def _publish_repo(hf: HfHub) -> dict[str, str]:
    files = {
        "model 1.safetensors": (random_bytes(200_000, seed=5), True),
        "config.json": (b'{"model_type": "janus"}', False),
        "tokenizer/vocab é.json": (b'{"a": 1}' * 50, False),
        "tokenizer/merges.safetensors": (random_bytes(60_000, seed=6), True),
    }
    return {p: hf.add(REPO, p, data, lfs=lfs) for p, (data, lfs) in files.items()}


def test_a_whole_repository_is_pulled_verified_and_managed_as_one_model(
    cli: Cli, hf: HfHub, storage: Origin
) -> None:
    cli.write_config(FAST_RETRIES)
    shas = _publish_repo(hf)
    result = cli("--json", "pull", "--folder", "diffusers", f"hf:{REPO}")
    assert result.code == 0, result.stderr
    (row,) = result.json()["data"]["results"]
    assert (row["ref"], row["outcome"]) == ("diffusers/janus-pro", "downloaded")
    folder = cli.root / "diffusers" / "janus-pro"
    assert {p: file_sha(folder / p) for p in shas} == shas
    assert not list((cli.root / ".cmcache" / "staging").iterdir())
    models = cli("--json", "list", "--source", "local").json()["data"]["models"]
    assert [(m["ref"], m["state"]) for m in models] == [("diffusers/janus-pro", "cached")]
    seen = len(hf.api.log) + len(storage.log)
    assert cli("pull", "--folder", "diffusers", f"hf:{REPO}").code == 0
    assert len(hf.api.log) + len(storage.log) == seen  # present: no network
    assert cli("--json", "verify", "diffusers/janus-pro").json()["data"]["checked"][0][
        "status"
    ] == "ok"
    with (folder / "config.json").open("a") as changed:  # edited by hand: fetched again
        changed.write(" ")
    lfs_before = sum(r.sent for r in storage.log)
    assert cli("pull", "--folder", "diffusers", f"hf:{REPO}").code == 0
    assert sum(r.sent for r in storage.log) == lfs_before  # unchanged files were linked
    assert file_sha(folder / "config.json") == shas["config.json"]
    assert cli("pin", "diffusers/janus-pro").code == 0
    assert cli("prune", "--max-size", "0", "--keep-days", "0").code == 0
    assert folder.is_dir()
    assert cli("unpin", "diffusers/janus-pro").code == 0
    pruned = cli("--json", "prune", "--max-size", "0", "--keep-days", "0")
    assert [r["filename"] for r in pruned.json()["data"]["removed"]] == ["janus-pro"]
    assert not folder.exists()


def test_an_interrupted_repository_keeps_its_verified_files_for_the_next_pull(
    cli: Cli, hf: HfHub, storage: Origin
) -> None:
    cli.write_config("[download]\nretry_wait = 1\nmax_tries = 1\ntimeout = 10\n")
    shas = _publish_repo(hf)
    broken = f"lfs/{shas['tokenizer/merges.safetensors']}"
    storage.fault(broken, fail_first=50, fail_status=404)
    failed = cli("pull", "--folder", "diffusers", f"hf:{REPO}")
    assert failed.code == 6 and "1 of 4 files failed" in failed.stderr
    assert not (cli.root / "diffusers" / "janus-pro").exists()
    big = f"lfs/{shas['model 1.safetensors']}"
    fetched = storage.bytes_sent(big)
    storage.fault(broken)
    assert cli("pull", "--folder", "diffusers", f"hf:{REPO}").code == 0
    assert storage.bytes_sent(big) == fetched  # verified before: not fetched again
    assert file_sha(cli.root / "diffusers" / "janus-pro" / "tokenizer/merges.safetensors") == (
        shas["tokenizer/merges.safetensors"]
    )


def test_a_manager_repository_entry_and_source_refs_in_a_manifest_are_pulled(
    cli: Cli, hf: HfHub, civitai: CivitaiHub
) -> None:
    _publish_repo(hf)
    single = hf.add("org/single", "one.safetensors", random_bytes(30_000, seed=9))
    negative = random_bytes(3_000, seed=12)
    civitai.add(7, 70, [CivitaiFile("neg.pt", negative, primary=True, format="PickleTensor")],
                model_type="TextualInversion")
    manager = {
        "models": [
            {"name": "org/janus-pro", "type": "Janus-Pro", "base": "Janus-Pro",
             "save_path": "Janus-Pro", "description": "", "reference": "",
             "filename": "<huggingface>", "url": REPO, "size": "1GB"},
        ]
    }
    own = {"schema": 1, "models": [
        {"folder": "loras", "filename": "one.safetensors", "url": "hf:org/single/one.safetensors"},
        {"folder": "embeddings", "filename": "neg.pt", "url": "urn:air:sd1:embedding:civitai:7@70"},
    ]}
    (cli.home / "manager.json").parent.mkdir(parents=True, exist_ok=True)
    (cli.home / "manager.json").write_text(json.dumps(manager))
    (cli.home / "own.json").write_text(json.dumps(own))
    cli.write_config(
        f'{FAST_RETRIES}[catalog]\nmanager = true\nmanager_url = "{cli.home / "manager.json"}"\n'
        f'[[sources]]\nname = "own"\nurl = "{cli.home / "own.json"}"\n'
    )
    synced = cli("sync")
    assert synced.code == 0, synced.stderr
    result = cli("--json", "pull", "org/janus-pro", "loras/one.safetensors", "neg.pt")
    assert result.code == 0, result.stderr
    assert (cli.root / "Janus-Pro" / "janus-pro" / "config.json").is_file()
    assert file_sha(cli.root / "loras" / "one.safetensors") == single
    sha = {r["ref"]: r["sha256"] for r in result.json()["data"]["results"]}["embeddings/neg.pt"]
    assert sha == file_sha(cli.root / "embeddings" / "neg.pt")
    assert sha == hashlib.sha256(negative).hexdigest()


def test_a_tree_naming_paths_outside_the_repository_is_refused_whole(
    cli: Cli, hf: HfHub
) -> None:
    hf.add("org/evil", "ok.safetensors", random_bytes(1000, seed=10))
    hf.add("org/evil", "../../escaped.safetensors", random_bytes(1000, seed=11))
    result = cli("pull", "--folder", "loras", "hf:org/evil")
    assert result.code == 4 and "refusing hf:org/evil" in result.stderr
    assert not list(cli.home.rglob("escaped*")) and not (cli.root / "loras" / "evil").exists()
