"""What the node asks of cmcache for ComfyUI's page, driven through the CLI: base-directory
layouts, ComfyUI Desktop's yaml, `comfyui workflow` (states and the list `workflow`), the
download-host allow-list, `status --watch` and the queue log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from hubs import HfHub
from origin import Origin, random_bytes
from pulling import FAST_RETRIES, wait_for

MiB = 1 << 20


@pytest.fixture
def far(tmp_path: Path) -> Iterator[Origin]:
    """An origin on another loopback address: a host outside download_hosts."""
    server = Origin(tmp_path / "far", host="127.0.0.2").start()
    yield server
    server.stop()


def allow_loopback(cli: Cli, extra: str = "") -> None:
    cli.write_config(f'{FAST_RETRIES}[comfyui]\ndownload_hosts = ["127.0.0.1"]\n{extra}')


def ui_workflow(models: list[dict[str, Any]], loaders: list[tuple[str, str]]) -> dict[str, Any]:
    """A UI-format workflow: loader nodes naming files, and the models it declares."""
    nodes = [
        {"id": i, "type": kind, "widgets_values": [name]}
        for i, (kind, name) in enumerate(loaders, start=1)
    ]
    return {"nodes": nodes, "links": [], "models": models}


def test_a_base_directory_is_a_comfyui_install(cli: Cli, tmp_path: Path) -> None:
    base = tmp_path / "base"  # what --base-directory, Desktop or a models volume points at
    (base / "models").mkdir(parents=True)
    assert cli("comfyui", "install", "--comfyui", str(base)).code == 0
    node = base / "custom_nodes" / "cmcache"
    assert (node / "__init__.py").is_file()
    assert (node / "web" / "cmcache.js").is_file() and (node / "web" / "panel.js").is_file()
    status = cli("--json", "comfyui", "status", "--comfyui", str(base)).json()["data"]
    assert status["installed"] and status["current"]
    shown = cli("--json", "--comfyui", str(base), "show", "sdxl").json()["data"]
    assert shown["path"] == str(base / "models" / "checkpoints" / "sd_xl_base_1.0.safetensors")
    (node / "web" / "panel.js").write_text("changed")
    assert not cli("--json", "comfyui", "status", "--comfyui", str(base)).json()["data"]["current"]
    (node / "web" / "stale.js").write_text("from an older node")
    assert cli("comfyui", "install", "--comfyui", str(base)).code == 0
    assert not (node / "web" / "stale.js").exists()  # the page would load it otherwise
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = cli("comfyui", "install", "--comfyui", str(empty))
    assert refused.code == 2
    assert "nor a base directory" in refused.stderr
    assert not (empty / "custom_nodes").exists()


def test_desktop_yaml_is_read_and_download_model_base_is_root(cli: Cli, tmp_path: Path) -> None:
    desktop = tmp_path / "Documents" / "ComfyUI"
    shelf = tmp_path / "shelf"
    (shelf / "ckpts").mkdir(parents=True)
    (shelf / "ckpts" / "sd_xl_refiner_1.0.safetensors").write_bytes(b"someone else's")
    config = tmp_path / "xdg" / "ComfyUI"
    config.mkdir(parents=True)
    (config / "extra_models_config.yaml").write_text(
        "comfyui_desktop:\n"
        "  is_default: true\n"
        f"  base_path: {desktop}\n"
        "  custom_nodes: custom_nodes/\n"
        "  download_model_base: models\n"
        "  checkpoints: models/checkpoints/\n"
        "elsewhere:\n"
        f"  base_path: {shelf}\n"
        "  checkpoints: ckpts\n"
    )
    cli.env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    shown = cli("--json", "show", "sdxl").json()["data"]
    assert shown["path"] == str(desktop / "models" / "checkpoints" / "sd_xl_base_1.0.safetensors")
    rows = cli("--json", "list", "--folder", "checkpoints").json()["data"]["models"]
    states = {r["filename"]: r["state"] for r in rows}
    assert states["sd_xl_refiner_1.0.safetensors"] == "external"
    assert "download_model_base" not in {r["folder"] for r in rows}
    cli.env["CMCACHE_ROOT"] = str(tmp_path / "mine")  # an explicit root still wins
    shown = cli("--json", "show", "sdxl").json()["data"]
    assert shown["path"].startswith(str(tmp_path / "mine"))


def test_workflow_models_get_states_and_allowed_declarations_become_on_demand(
    cli: Cli, origin: Origin, far: Origin
) -> None:
    sha = origin.add_random("wf/near.bin", 64 * 1024)
    far.add_random("wf/far.bin", 4096)
    allow_loopback(cli)
    (cli.root / "vae").mkdir(parents=True)
    (cli.root / "vae" / "mine.safetensors").write_bytes(b"the user's own")
    declared = [
        {"name": "near.safetensors", "url": origin.url("wf/near.bin"), "directory": "loras",
         "hash": sha, "hash_type": "SHA256"},
        {"name": "far.safetensors", "url": far.url("wf/far.bin"), "directory": "loras"},
        {"name": "../evil.safetensors", "url": origin.url("wf/near.bin"), "directory": "loras"},
    ]
    flow = ui_workflow(
        declared,
        [
            ("LoraLoader", "near.safetensors"),
            ("CheckpointLoaderSimple", "sd_xl_base_1.0.safetensors"),
            ("VAELoader", "mine.safetensors"),
            ("UpscaleModelLoader", "nowhere.pth"),
        ],
    )
    result = cli("--json", "comfyui", "workflow", "-", input=json.dumps(flow))
    assert result.code == 4, result.stderr  # some cannot be supplied
    doc = result.json()
    models = {m["ref"]: m for m in doc["data"]["models"]}
    assert {ref: m["state"] for ref, m in models.items()} == {
        "loras/near.safetensors": "on-demand",
        "loras/far.safetensors": "refused",
        "loras/../evil.safetensors": "refused",
        "checkpoints/sd_xl_base_1.0.safetensors": "on-demand",
        "vae/mine.safetensors": "present",
        "upscale_models/nowhere.pth": "unknown",
    }
    assert "refused: 127.0.0.2 is a loopback address" in models["loras/far.safetensors"]["reason"]
    assert "'..'" in models["loras/../evil.safetensors"]["reason"]
    assert models["loras/near.safetensors"]["source"] == "workflow"
    assert doc["data"]["registered"] == 1
    assert {e["ref"] for e in doc["errors"]} == {
        "loras/far.safetensors", "loras/../evil.safetensors", "upscale_models/nowhere.pth"
    }
    # The declaration is now a catalog entry: listed, and fetched (verified) by ref.
    listed = cli("--json", "list", "--source", "workflow").json()["data"]["models"]
    assert [m["ref"] for m in listed] == ["loras/near.safetensors"]
    assert cli("path", "near.safetensors").code == 0
    assert (cli.root / "loras" / "near.safetensors").is_file()
    again = cli("--json", "comfyui", "workflow", "-", input=json.dumps(flow)).json()["data"]
    assert again["registered"] == 0
    assert {m["ref"]: m["state"] for m in again["models"]}["loras/near.safetensors"] == "present"
    assert far.log == []  # nothing was ever asked of the host outside the allow-list


def test_a_host_removed_from_the_allow_list_loses_its_workflow_entries(
    cli: Cli, origin: Origin
) -> None:
    origin.add_random("wf/x.bin", 4096)
    allow_loopback(cli)
    flow = ui_workflow(
        [{"name": "x.safetensors", "url": origin.url("wf/x.bin"), "directory": "loras"}], []
    )
    assert cli("comfyui", "workflow", "-", input=json.dumps(flow)).code == 0
    assert cli("show", "loras/x.safetensors").code == 0
    cli.write_config(FAST_RETRIES)  # back to the default hosts
    assert cli("show", "loras/x.safetensors").code == 4
    assert cli("path", "loras/x.safetensors").code == 4
    assert origin.requests_for("wf/x.bin") == []


def test_a_prompt_body_is_read_and_pull_brings_what_it_needs(cli: Cli, origin: Origin) -> None:
    sha = origin.add_random("wf/p.bin", 128 * 1024)
    allow_loopback(cli)
    ui = ui_workflow(
        [{"name": "p.safetensors", "url": origin.url("wf/p.bin"), "directory": "vae",
          "hash": sha, "hash_type": "SHA256"}],
        [("VAELoader", "p.safetensors")],
    )
    body = {
        "prompt": {"1": {"class_type": "VAELoader", "inputs": {"vae_name": "p.safetensors"}}},
        "extra_data": {"extra_pnginfo": {"workflow": ui}},
        "client_id": "x",
    }
    result = cli("--json", "comfyui", "workflow", "--pull", "-", input=json.dumps(body))
    assert result.code == 0, result.stderr
    data = result.json()["data"]
    assert [(m["ref"], m["state"]) for m in data["models"]] == [("vae/p.safetensors", "on-demand")]
    assert [(r["ref"], r["outcome"]) for r in data["results"]] == [
        ("vae/p.safetensors", "downloaded")
    ]
    assert data["results"][0]["sha256"] == sha
    bad = cli("--json", "comfyui", "workflow", "-", input='{"nodes": 3}')
    assert bad.code == 4 and "not a ComfyUI workflow" in bad.json()["errors"][0]["message"]
    assert cli("comfyui", "workflow", "-", "-", input="{}").code == 2


def log_events(cli: Cli) -> list[dict[str, Any]]:
    path = cli.root / ".cmcache" / "queue.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_queue_log_says_when_downloads_begin_and_end_and_why(
    cli: Cli, origin: Origin
) -> None:
    good = origin.add_random("files/good.bin", 64 * 1024)
    origin.add_random("files/bad.bin", 64 * 1024)
    slow = origin.add_random("files/slow.bin", 8 * MiB)
    origin.fault("files/slow.bin", rate=MiB)
    models = [
        {"folder": "loras", "filename": "good.safetensors", "url": origin.url("files/good.bin"),
         "sha256": good},
        {"folder": "loras", "filename": "bad.safetensors", "url": origin.url("files/bad.bin"),
         "sha256": "ab" * 32},
        {"folder": "loras", "filename": "slow.safetensors", "url": origin.url("files/slow.bin"),
         "sha256": slow},
    ]
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"schema": 1, "version": "1", "models": models}))
    cli.write_config(f'{FAST_RETRIES}[[sources]]\nname = "t"\nurl = "{listing}"\n')
    assert cli("sync").code == 0
    assert cli("pull", "good.safetensors").code == 0
    assert cli("pull", "bad.safetensors").code == 7
    pulling = cli.popen("pull", "slow.safetensors")
    try:
        wait_for(lambda: ("loras/slow.safetensors", "queued") in events(cli), what="the start")
        assert cli("cancel", "slow.safetensors").code == 0
    finally:
        assert pulling.wait(timeout=60) == 6
    assert events(cli)[:4] == [
        ("loras/good.safetensors", "queued"),
        ("loras/good.safetensors", "placed"),
        ("loras/bad.safetensors", "queued"),
        ("loras/bad.safetensors", "failed"),
    ]
    assert "sha256" in log_events(cli)[3]["reason"]
    # Cancelled, by the cancel and then by the pull that owned it: never "failed".
    assert set(events(cli)[4:]) == {
        ("loras/slow.safetensors", "queued"), ("loras/slow.safetensors", "cancelled")
    }


def events(cli: Cli) -> list[tuple[str, str]]:
    try:
        return [(e["ref"], e["event"]) for e in log_events(cli)]
    except FileNotFoundError:
        return []


def test_status_watch_prints_the_queue_while_it_moves_then_ends(
    cli: Cli, origin: Origin
) -> None:
    size = 4 * MiB
    sha = origin.add_random("files/slow.bin", size)
    origin.fault("files/slow.bin", rate=MiB // 2)
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    model = {"folder": "loras", "filename": "slow.safetensors", "url": origin.url("files/slow.bin"),
             "sha256": sha, "size": size}
    listing.write_text(json.dumps({"schema": 1, "version": "1", "models": [model]}))
    cli.write_config(f'{FAST_RETRIES}split = 1\n[[sources]]\nname = "t"\nurl = "{listing}"\n')
    assert cli("sync").code == 0
    pulling = cli.popen("pull", "slow.safetensors")
    try:
        started = time.monotonic()
        watch = cli("--json", "status", "--watch", timeout=90)
        took = time.monotonic() - started
    finally:
        pulling.wait(timeout=90)
    assert watch.code == 0, watch.stderr
    lines = [json.loads(line) for line in watch.stdout.splitlines()]
    assert len(lines) >= 2 and took >= 5  # it lingers once nothing moves
    assert all(line["command"] == "status" and line["exit_code"] == 0 for line in lines)
    moving = [d for line in lines for d in line["data"]["downloads"] if d["state"] == "active"]
    assert moving and moving[0]["ref"] == "loras/slow.safetensors" and moving[0]["total"] == size
    done = [d["done"] for d in moving]
    assert done == sorted(done)  # progress only goes forward
    assert not any(d["state"] == "active" for d in lines[-1]["data"]["downloads"])
    assert pulling.returncode == 0


def test_by_default_hugging_face_declarations_pass_and_others_are_refused(
    cli: Cli, hf: HfHub, storage: Origin
) -> None:
    sha = hf.add("org/flows", "m.safetensors", random_bytes(50_000, seed=7))
    storage.add("wf/else.bin", random_bytes(4096, seed=8))
    flow = ui_workflow(
        [
            {"name": "m.safetensors", "directory": "loras", "hash": sha, "hash_type": "SHA256",
             "url": "https://huggingface.co/org/flows/resolve/main/m.safetensors"},
            {"name": "else.safetensors", "directory": "loras", "url": storage.url("wf/else.bin")},
        ],
        [],
    )
    result = cli("--json", "comfyui", "workflow", "--pull", "-", input=json.dumps(flow))
    assert result.code == 4, result.stderr
    data = result.json()["data"]
    states = {m["ref"]: (m["state"], m["url"]) for m in data["models"]}
    assert states["loras/m.safetensors"][0] == "on-demand"  # huggingface.co: a default host
    assert states["loras/else.safetensors"][0] == "refused"
    assert [(r["ref"], r["outcome"], r["sha256"]) for r in data["results"]] == [
        ("loras/m.safetensors", "downloaded", sha)
    ]
    assert storage.requests_for("wf/else.bin") == []
