"""ComfyUI integration against ComfyUI 0.7.0's real folder_paths: the node lists catalog models,
fetches them on first load, records uses, falls back to stock behaviour when cmcache fails;
legacy folder names and extra_model_paths.yaml as ComfyUI reads them."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from comfy import make_comfyui, run_comfyui
from conftest import Cli
from origin import Origin
from pulling import FAST_RETRIES, publish, wait_for

from cmcache.adapters.storage.index import Index

MiB = 1 << 20


@pytest.fixture
def comfy(cli: Cli, tmp_path: Path) -> Path:
    where = make_comfyui(tmp_path / "ComfyUI")
    cli.env["CMCACHE_COMFYUI"] = str(where)
    return where


def comfy_env(cli: Cli) -> dict[str, str]:
    """ComfyUI's own environment: none of cmcache's variables (the node brings its own)."""
    return {k: v for k, v in cli.env.items() if not k.startswith("CMCACHE_")}


def test_install_status_uninstall(cli: Cli, comfy: Path) -> None:
    assert cli("--json", "comfyui", "status").json()["data"]["installed"] is False
    assert cli("comfyui", "install").code == 0
    assert cli("comfyui", "install").code == 0  # idempotent
    status = cli("--json", "comfyui", "status").json()["data"]
    assert status["installed"] and status["current"]
    assert (comfy / "custom_nodes" / "cmcache" / "__init__.py").is_file()
    assert cli("comfyui", "uninstall").code == 0
    assert not (comfy / "custom_nodes" / "cmcache").exists()
    assert cli("comfyui", "status", "--comfyui", str(comfy.parent)).code == 2  # not ComfyUI


def test_root_is_comfyuis_models_folder(cli: Cli, comfy: Path) -> None:
    shown = cli("--json", "show", "sdxl").json()["data"]
    assert shown["path"] == str(comfy / "models" / "checkpoints" / "sd_xl_base_1.0.safetensors")


def test_dropdowns_offer_catalog_models_and_a_load_downloads_them(
    cli: Cli, comfy: Path, origin: Origin
) -> None:
    digests = publish(cli, origin, {"fresh.safetensors": 2 * MiB})
    (comfy / "models" / "checkpoints").mkdir()
    (comfy / "models" / "checkpoints" / "mine.safetensors").write_bytes(b"user file")
    assert cli("comfyui", "install").code == 0
    (listed, path, again), log = run_comfyui(
        comfy,
        [
            ["list", "checkpoints"],
            ["full", "checkpoints", "fresh.safetensors"],
            ["full", "checkpoints", "fresh.safetensors"],
        ],
        comfy_env(cli),
    )
    assert "mine.safetensors" in listed and "fresh.safetensors" in listed
    assert "sd_xl_base_1.0.safetensors" in listed  # the built-in catalog too
    assert path == again == str(comfy / "models" / "checkpoints" / "fresh.safetensors")
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digests["fresh.safetensors"]
    assert "cmcache" not in log  # nothing went wrong


def test_a_present_model_costs_no_subprocess_and_its_use_is_recorded(
    cli: Cli, comfy: Path, origin: Origin, tmp_path: Path
) -> None:
    publish(cli, origin, {"here.safetensors": MiB})
    assert cli("pull", "here.safetensors").code == 0
    assert cli("comfyui", "install").code == 0
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(
        "import runpy, sys\n"
        f"open({str(calls)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "sys.argv = ['cmcache', *sys.argv[1:]]\n"
        "runpy.run_module('cmcache', run_name='__main__')\n"
    )
    record = comfy / "custom_nodes" / "cmcache" / "cmcache.json"
    conf = json.loads(record.read_text())
    conf["command"] = [sys.executable, str(wrapper)]
    record.write_text(json.dumps(conf))
    ops: list[list[Any]] = [
        ["list", "checkpoints"],
        *[["full", "checkpoints", "here.safetensors"]] * 5,
        ["list", "checkpoints"],
        ["sleep", 6],  # room for the background touch on a loaded machine
    ]
    results, _log = run_comfyui(comfy, ops, comfy_env(cli))
    assert results[1] == str(comfy / "models" / "checkpoints" / "here.safetensors")
    made = calls.read_text().splitlines()
    assert [c.split()[-2:] for c in made if "catalog" in c] == [["comfyui", "catalog"]]
    assert [c for c in made if "path" in c.split()] == []  # loads found it on disk
    touches = [c.split() for c in made if "touch" in c.split()]
    assert len(touches) == 1  # uses recorded in one batch, which may prefetch what comes next
    assert "--prefetch" in touches[0]
    index = comfy / "models" / ".cmcache" / "index.sqlite3"

    def uses() -> int:
        with sqlite3.connect(index) as db:
            (count,) = db.execute(
                "SELECT count FROM usage WHERE filename = 'here.safetensors'"
            ).fetchone()
        return int(count)

    # The batch's `touch` may outlive ComfyUI's process by a moment on a busy machine.
    wait_for(lambda: uses() >= 2, timeout=30, what="the loads' use")  # the pull, then the loads


def test_a_broken_cmcache_leaves_comfyui_stock(cli: Cli, comfy: Path) -> None:
    (comfy / "models" / "loras").mkdir()
    (comfy / "models" / "loras" / "a.safetensors").write_bytes(b"a")
    assert cli("comfyui", "install").code == 0
    record = comfy / "custom_nodes" / "cmcache" / "cmcache.json"
    conf = json.loads(record.read_text())
    conf["command"] = [str(comfy / "no-such-cmcache")]
    record.write_text(json.dumps(conf))
    results, log = run_comfyui(
        comfy,
        [
            ["list", "loras"],
            ["full", "loras", "a.safetensors"],
            ["raise", "checkpoints", "sd_xl_base_1.0.safetensors"],
        ],
        comfy_env(cli),
    )
    assert results[0] == ["a.safetensors"]
    assert results[1] == str(comfy / "models" / "loras" / "a.safetensors")
    assert results[2].startswith("FileNotFoundError")
    assert log.count("cmcache:") == 1  # one line, not one per call


def test_a_queued_prompt_starts_its_downloads(cli: Cli, comfy: Path, origin: Origin) -> None:
    digests = publish(cli, origin, {"p1.safetensors": MiB, "p2.safetensors": MiB})
    assert cli("comfyui", "install").code == 0
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "p1.safetensors"}},
        "5": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "p2.safetensors"}},
    }
    (accepted,), _log = run_comfyui(
        comfy, [["prompt", prompt]], {**comfy_env(cli), "FAKE_SERVER": "1"}
    )
    assert accepted
    folder = comfy / "models" / "checkpoints"
    wait_for(lambda: all((folder / n).is_file() for n in digests), timeout=60, what="downloads")


def test_legacy_folder_names(cli: Cli, comfy: Path, origin: Origin) -> None:
    publish(cli, origin, {"u.safetensors": 4096}, folder="unet")  # a manifest's old name
    (comfy / "models" / "unet").mkdir()  # an older ComfyUI layout: unet/ only
    shown = cli("--json", "show", "unet/u.safetensors").json()["data"]
    assert shown["ref"] == "diffusion_models/u.safetensors"
    assert cli("pull", "diffusion_models/u.safetensors").code == 0
    assert (comfy / "models" / "unet" / "u.safetensors").is_file()
    assert not (comfy / "models" / "diffusion_models").exists()


def test_extra_model_paths_count_as_present_and_are_never_managed(
    cli: Cli, comfy: Path, origin: Origin, tmp_path: Path
) -> None:
    publish(cli, origin, {"ext.safetensors": 4096, "two.safetensors": 4096})
    shelf = tmp_path / "shelf"
    (shelf / "ckpts").mkdir(parents=True)
    (shelf / "more").mkdir()
    (shelf / "ckpts" / "ext.safetensors").write_bytes(b"theirs")
    (shelf / "more" / "two.safetensors").write_bytes(b"theirs too")
    (comfy / "extra_model_paths.yaml").write_text(
        f"other:\n  base_path: {shelf}\n  is_default: false\n"
        "  checkpoints: |\n    ckpts\n    more\n"
    )
    rows = cli("--json", "list", "--folder", "checkpoints").json()["data"]["models"]
    states = {r["filename"]: r["state"] for r in rows}
    assert states["ext.safetensors"] == states["two.safetensors"] == "external"
    cached = cli("--json", "list", "--cached").json()["data"]["models"]
    assert {"ext.safetensors", "two.safetensors"} <= {r["filename"] for r in cached}
    pulled = cli("--json", "pull", "ext.safetensors", "two.safetensors").json()["data"]["results"]
    assert [r["path"] for r in pulled] == [
        str(shelf / "ckpts" / "ext.safetensors"),
        str(shelf / "more" / "two.safetensors"),
    ]
    assert origin.requests_for("files/ext.safetensors", "GET") == []
    assert cli("--json", "path", "ext.safetensors").json()["data"]["path"].startswith(str(shelf))
    assert cli("prune", "--keep-days", "0").code == 0
    assert (shelf / "ckpts" / "ext.safetensors").read_bytes() == b"theirs"
    # ComfyUI reads the same file the same way.
    (listed,), _log = run_comfyui(comfy, [["list", "checkpoints"]], comfy_env(cli))
    assert {"ext.safetensors", "two.safetensors"} <= set(listed)


def test_a_prompt_smuggling_declared_urls_fetches_nothing_from_hosts_not_allowed(
    cli: Cli, comfy: Path, origin: Origin
) -> None:
    digests = publish(cli, origin, {"ok.safetensors": MiB})
    origin.add_random("wf/evil.bin", 4096)
    evil = {"name": "evil.ckpt", "url": origin.url("wf/evil.bin"), "directory": "loras"}
    assert cli("comfyui", "install").code == 0
    # What a page (or anyone who can reach /prompt) may post: a UI-format graph in "prompt".
    smuggled = {
        "nodes": [
            {"id": 1, "type": "CheckpointLoaderSimple", "widgets_values": ["ok.safetensors"]},
            {
                "id": 2,
                "type": "LoraLoader",
                "widgets_values": ["evil.ckpt", 1, 1],
                "properties": {"models": [evil]},
            },
        ]
    }
    (accepted,), _log = run_comfyui(
        comfy, [["prompt", smuggled]], {**comfy_env(cli), "FAKE_SERVER": "1"}
    )
    assert accepted
    models = comfy / "models"
    placed = models / "checkpoints" / "ok.safetensors"
    wait_for(placed.is_file, what="the catalog model")
    assert digests
    wait_for(lambda: not pulls_running(str(comfy)), what="the node's pull to end")
    assert not (models / "loras" / "evil.ckpt").exists()
    assert origin.requests_for("wf/evil.bin") == []


def pulls_running(marker: str) -> bool:
    """Whether a `cmcache … pull` whose command line mentions ``marker`` is running."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"cmcache" in args and b"pull" in args and marker.encode() in args:
            return True
    return False


def test_a_workflow_starting_fetches_its_next_step_in_the_background(
    cli: Cli, comfy: Path, origin: Origin
) -> None:
    digests = publish(
        cli,
        origin,
        {"base.safetensors": MiB, "refiner.safetensors": MiB},
        extra_config=FAST_RETRIES + "[prefetch]\npredict = true\n",
    )
    assert cli("pull", "base.safetensors").code == 0  # the workflow's first load fetches it
    index = Index(comfy / "models" / ".cmcache" / "index.sqlite3")
    now = time.time()
    for week in range(1, 5):  # on this weekday: the base at work for half an hour, then its
        day = now - 7 * week * 86400  # refiner ten minutes on
        for minute in range(0, 30, 3):
            index.record_use("checkpoints", "base.safetensors", at=day - 3600 + minute * 60)
        index.record_use("checkpoints", "refiner.safetensors", at=day - 3600 + 40 * 60)
    index.close()
    assert cli("comfyui", "install").code == 0
    ops: list[list[Any]] = [["full", "checkpoints", "base.safetensors"], ["sleep", 6]]
    results, log = run_comfyui(comfy, ops, comfy_env(cli))
    assert results[0] == str(comfy / "models" / "checkpoints" / "base.safetensors")
    refiner = comfy / "models" / "checkpoints" / "refiner.safetensors"
    wait_for(refiner.exists, timeout=60, what="the refiner, fetched ahead")
    assert hashlib.sha256(refiner.read_bytes()).hexdigest() == digests["refiner.safetensors"]
    assert "cmcache" not in log
