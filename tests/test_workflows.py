"""`pull --workflow` on ComfyUI's real workflow templates (comfyui-workflow-templates-json),
with their model URLs moved onto the loopback origin."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import comfyui_workflow_templates_json
import pytest
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
    result = cli("--json", "pull", "--allow-host", "127.0.0.1", *files, timeout=300)
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
    result = cli("pull", "--allow-host", "127.0.0.1", "--workflow", "-", input=json.dumps(ui))
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
    cli.write_config(
        f'{FAST_RETRIES}[prefetch]\nworkflows = ["{flows}/*.json"]\n'
        '[comfyui]\ndownload_hosts = ["127.0.0.1"]\n'
    )
    result = cli("prefetch")
    assert result.code == 0, result.stderr
    assert "downloaded 1" in result.stdout
    assert (cli.root / "loras" / "keep.safetensors").is_file()


def declaring(*models: dict[str, Any]) -> str:
    """A UI-format workflow whose LoRA loaders use ``models``, each declared on its node."""
    nodes = [
        {
            "id": number,
            "type": "LoraLoader",
            "widgets_values": [model["name"], 1, 1],
            "properties": {"models": [model]},
        }
        for number, model in enumerate(models, start=1)
    ]
    return json.dumps({"nodes": nodes})


def lora(name: str, url: str, **more: str) -> dict[str, Any]:
    return {"name": name, "url": url, "directory": "loras", **more}


def rows_of(result: Any) -> dict[str, dict[str, Any]]:
    return {r["ref"]: r for r in result.json()["data"]["results"]}


def test_declared_urls_on_hosts_not_allowed_are_refused_without_any_request(
    cli: Cli, origin: Origin
) -> None:
    sha = origin.add_random("wf/creds.bin", 4096)
    creds = lora("creds.safetensors", origin.url("wf/creds.bin"), hash=sha, hash_type="SHA256")
    refused = [
        creds,
        lora("named.safetensors", f"http://localhost:{origin.port}/wf/creds.bin"),
        lora("evil.ckpt", "https://models.evil.example/evil.ckpt"),
        lora("lookalike.safetensors", "https://huggingface.co.evil.example/a.safetensors"),
    ]
    hub = lora("hub.safetensors", "https://cdn-lfs.huggingface.co/repo/hub.safetensors")
    hf_ref = lora("ref.safetensors", "hf:owner/repo/ref.safetensors")  # names huggingface.co
    cli.write_config(FAST_RETRIES)
    flow = declaring(*refused, hub, hf_ref)
    planned = cli("--json", "pull", "--dry-run", "--workflow", "-", input=flow)
    assert planned.code == 4
    rows = rows_of(planned)
    assert {ref: r["outcome"] for ref, r in rows.items()} == {
        "loras/creds.safetensors": "refused",
        "loras/named.safetensors": "refused",
        "loras/evil.ckpt": "refused",
        "loras/lookalike.safetensors": "refused",
        "loras/hub.safetensors": "planned",  # a subdomain of an allowed host
        "loras/ref.safetensors": "planned",
    }
    assert "127.0.0.1 is a loopback address" in rows["loras/creds.safetensors"]["reason"]
    assert "localhost is a loopback name" in rows["loras/named.safetensors"]["reason"]
    assert "--allow-host models.evil.example" in rows["loras/evil.ckpt"]["reason"]
    pulled = cli("pull", "--workflow", "-", input=declaring(*refused))
    assert pulled.code == 4 and "refused" in pulled.stderr
    assert origin.log == []  # not even a HEAD
    assert not (cli.root / "loras").exists()
    # The user's own word opens a host: for one command, or in the config.
    allowed = cli("pull", "--allow-host", "127.0.0.1", "--workflow", "-", input=declaring(creds))
    assert allowed.code == 0, allowed.stderr
    assert (cli.root / "loras" / "creds.safetensors").is_file()
    cli.write_config(FAST_RETRIES + '[comfyui]\ndownload_hosts = ["127.0.0.1"]\n')
    other = declaring(lora("other.safetensors", origin.url("wf/creds.bin")))
    assert cli("pull", "--workflow", "-", input=other).code == 0
    bad_host = cli("pull", "--allow-host", "https://x.example/", "--workflow", "-", input=other)
    assert bad_host.code == 2
    cli.write_config('[comfyui]\ndownload_hosts = ["https://huggingface.co"]\n')
    assert cli("pull", "--workflow", "-", input=other).code == 3
    # A catalog's own URLs are trusted as before: the allow-list is for what workflows declare.
    publish(cli, origin, {"listed.safetensors": 2048}, folder="loras")
    listed = declaring(lora("listed.safetensors", "https://elsewhere.example/listed.safetensors"))
    assert cli("pull", "--workflow", "-", input=listed).code == 0
    assert (cli.root / "loras" / "listed.safetensors").is_file()


@pytest.mark.parametrize(
    ("declared", "why"),
    [
        ({"hash": "abc123", "hash_type": "SHA256"}, "is not a SHA256 (64 hex digits)"),
        ({"hash": "ab" * 32, "hash_type": "sha-256"}, "hash_type 'sha-256' is not SHA256"),
        ({"hash": "ab" * 32, "hash_type": "md5"}, "hash_type 'md5' is not SHA256"),
    ],
)
def test_a_declared_hash_that_cannot_be_verified_refuses_the_model(
    cli: Cli, origin: Origin, declared: dict[str, str], why: str
) -> None:
    origin.add_random("wf/m.bin", 4096)
    flow = declaring(lora("m.safetensors", origin.url("wf/m.bin"), **declared))
    result = cli("--json", "pull", "--allow-host", "127.0.0.1", "--workflow", "-", input=flow)
    assert result.code == 4
    (row,) = result.json()["data"]["results"]
    assert row["outcome"] == "refused" and why in row["reason"]
    assert origin.log == []
    assert not (cli.root / "loras" / "m.safetensors").exists()


def test_the_hash_type_is_read_in_any_case(cli: Cli, origin: Origin) -> None:
    sha = origin.add_random("wf/m.bin", 4096)
    model = lora("m.safetensors", origin.url("wf/m.bin"), hash=sha.upper(), hash_type="sha256")
    flow = declaring(model)
    cli.write_config(FAST_RETRIES)
    result = cli("--json", "pull", "--allow-host", "127.0.0.1", "--workflow", "-", input=flow)
    assert result.code == 0, result.stderr
    assert result.json()["data"]["results"][0]["sha256"] == sha


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({"nodes": [], "definitions": []}, "'definitions' must be an object"),
        ({"nodes": [], "definitions": {"subgraphs": {}}}, "'definitions.subgraphs' must be a list"),
        ({"nodes": [], "definitions": {"subgraphs": [{"nodes": 5}]}}, "'nodes' must be a list"),
    ],
)
def test_a_workflow_of_the_wrong_shape_is_a_manifest_error(
    cli: Cli, doc: dict[str, Any], why: str
) -> None:
    result = cli("pull", "--workflow", "-", input=json.dumps(doc))
    assert result.code == 4, result.stderr
    assert why in result.stderr and "unexpected" not in result.stderr


def test_prefetch_skips_a_broken_workflow_and_refuses_hosts_not_allowed(
    cli: Cli, origin: Origin, tmp_path: Path
) -> None:
    sha = origin.add_random("wf/keep.bin", 8192)
    flows = tmp_path / "flows"
    flows.mkdir()
    keep = lora("keep.safetensors", origin.url("wf/keep.bin"), hash=sha, hash_type="SHA256")
    (flows / "a.json").write_text(declaring(keep))
    (flows / "b.json").write_text("{ not json")
    (flows / "c.json").write_text(json.dumps({"nodes": [], "definitions": []}))
    (flows / "d.json").write_text(declaring(lora("far.safetensors", "http://10.1.2.3/far.bin")))
    cli.write_config(
        f'{FAST_RETRIES}[prefetch]\nworkflows = ["{flows}/*.json"]\n'
        '[comfyui]\ndownload_hosts = ["127.0.0.1"]\n'
    )
    result = cli("prefetch")
    assert result.code == 0, result.stderr
    assert (cli.root / "loras" / "keep.safetensors").is_file()
    assert f"skipped {flows / 'b.json'}" in result.stderr
    assert f"skipped {flows / 'c.json'}" in result.stderr
    assert "10.1.2.3 is a private address" in result.stderr
    assert not (cli.root / "loras" / "far.safetensors").exists()
