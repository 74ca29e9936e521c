"""`pull --workflow` on ComfyUI's real workflow templates (comfyui-workflow-templates-json),
with their model URLs moved onto the loopback origin."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import comfyui_workflow_templates_json
from conftest import Cli
from origin import Origin
from pulling import FAST_RETRIES, publish

TEMPLATES = Path(comfyui_workflow_templates_json.__file__).parent / "templates"


def declared_models(doc: Any) -> list[dict[str, Any]]:
    """Every `models` entry anywhere in a workflow (root, nodes, subgraphs)."""
    found: list[dict[str, Any]] = []
    if isinstance(doc, dict):
        if isinstance(doc.get("models"), list):
            found += [m for m in doc["models"] if isinstance(m, dict) and "url" in m]
        for value in doc.values():
            found += declared_models(value)
    elif isinstance(doc, list):
        for value in doc:
            found += declared_models(value)
    return found


def templates_with_models() -> list[Path]:
    chosen = []
    for path in sorted(TEMPLATES.glob("*.json")):
        doc = json.loads(path.read_text())
        if isinstance(doc, dict) and "nodes" in doc and declared_models(doc):
            chosen.append(path)
    return chosen


def move_to_origin(doc: Any, origin: Origin, size: int = 64 * 1024) -> dict[str, str]:
    """Point every declared model at the origin (random bytes); hashes follow the new bytes.

    Returns folder/name → sha256.
    """
    served: dict[str, str] = {}
    for model in declared_models(doc):
        key = f"{model['directory']}/{model['name']}"
        path = "wf/" + hashlib.sha256(key.encode()).hexdigest()[:16]
        if key not in served:
            served[key] = origin.add_random(path, size, seed=len(served))
        model["url"] = origin.url(path)
        if model.get("hash"):
            model["hash"], model["hash_type"] = served[key], "SHA256"
    return served


def test_dry_run_resolves_every_declared_model_of_every_template(cli: Cli) -> None:
    templates = templates_with_models()
    assert len(templates) >= 250  # 261 in 0.1.123
    args = [arg for path in templates for arg in ("--workflow", str(path))]
    result = cli("--json", "pull", "--dry-run", *args, timeout=300)
    rows = result.json()["data"]["results"]
    declared = {
        f"{m['directory']}/{m['name']}".replace("unet/", "diffusion_models/", 1)
        for path in templates
        for m in declared_models(json.loads(path.read_text()))
    }
    resolved = {r["ref"] for r in rows if r["outcome"] == "planned"}
    unresolved = sorted(
        d for d in declared if d.replace("clip/", "text_encoders/", 1) not in resolved
    )
    assert not unresolved, unresolved[:10]
    assert len(declared) > 300  # 354 distinct models behind 999 declarations in 0.1.123


def test_whole_templates_are_pulled_including_models_inside_subgraphs(
    cli: Cli, origin: Origin, tmp_path: Path
) -> None:
    in_subgraphs = [
        p
        for p in templates_with_models()
        if declared_models(json.loads(p.read_text()).get("definitions", {}))
    ]
    hashed = [p for p in templates_with_models() if '"hash"' in p.read_text()]
    chosen = [*in_subgraphs[:2], *hashed[:1]]
    # The built-in catalog lists some of these (it would win over a workflow's declaration).
    cli.write_config(FAST_RETRIES + "[catalog]\nbuiltin = false\n")
    expected: dict[str, str] = {}
    files = []
    for path in chosen:
        doc = json.loads(path.read_text())
        expected |= move_to_origin(doc, origin)
        local = tmp_path / path.name
        local.write_text(json.dumps(doc))
        files += ["--workflow", str(local)]
    result = cli("--json", "pull", *files, timeout=300)
    rows = result.json()["data"]["results"]
    pulled = {r["ref"]: r for r in rows if r["outcome"] == "downloaded"}
    for key, sha in expected.items():
        ref = key.replace("unet/", "diffusion_models/", 1).replace("clip/", "text_encoders/", 1)
        assert ref in pulled, (ref, result.stderr[-500:])
        assert pulled[ref]["sha256"] == sha
        assert Path(pulled[ref]["path"]).is_file()
    # Loader widgets may name files nothing supplies: reported unknown, exit 4, the rest arrived.
    assert result.code in (0, 4)
    assert all(r["outcome"] in ("downloaded", "unknown") for r in rows)


def test_unknown_models_are_reported_while_the_rest_arrive(cli: Cli, origin: Origin) -> None:
    digests = publish(cli, origin, {"style.safetensors": 4096}, folder="loras")
    api = {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "nowhere.safetensors"},
        },
        "2": {
            "class_type": "LoraLoader",
            "inputs": {"lora_name": "style.safetensors", "model": ["1", 0]},
        },
        "3": {"class_type": "KSampler", "inputs": {"seed": 5}},
    }
    result = cli("--json", "pull", "--workflow", "-", input=json.dumps(api))
    assert result.code == 4
    outcomes = {r["ref"]: r["outcome"] for r in result.json()["data"]["results"]}
    assert outcomes == {
        "loras/style.safetensors": "downloaded",
        "checkpoints/nowhere.safetensors": "unknown",
    }
    assert (cli.root / "loras" / "style.safetensors").is_file()
    assert digests


def test_a_declared_sha256_is_enforced(cli: Cli, origin: Origin) -> None:
    origin.add_random("wf/m.bin", 4096)
    ui = {
        "nodes": [
            {
                "id": 1,
                "type": "VAELoader",
                "widgets_values": ["m.safetensors"],
                "properties": {
                    "models": [
                        {
                            "name": "m.safetensors",
                            "url": origin.url("wf/m.bin"),
                            "directory": "vae",
                            "hash": "ab" * 32,
                            "hash_type": "SHA256",
                        }
                    ]
                },
            }
        ],
    }
    cli.write_config(FAST_RETRIES)
    result = cli("pull", "--workflow", "-", input=json.dumps(ui))
    assert result.code == 7, result.stderr
    assert not (cli.root / "vae" / "m.safetensors").exists()


def test_prefetch_keeps_the_models_of_listed_workflows_present(
    cli: Cli, origin: Origin, tmp_path: Path
) -> None:
    sha = origin.add_random("wf/keep.bin", 8192)
    ui = {
        "nodes": [{"id": 1, "type": "LoraLoader", "widgets_values": ["keep.safetensors", 1, 1]}],
        "models": [
            {
                "name": "keep.safetensors",
                "url": origin.url("wf/keep.bin"),
                "directory": "loras",
                "hash": sha,
                "hash_type": "SHA256",
            }
        ],
    }
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "a.json").write_text(json.dumps(ui))
    cli.write_config(f'{FAST_RETRIES}[prefetch]\nworkflows = ["{flows}/*.json"]\n')
    result = cli("prefetch")
    assert result.code == 0, result.stderr
    assert "downloaded 1" in result.stdout
    assert (cli.root / "loras" / "keep.safetensors").is_file()
