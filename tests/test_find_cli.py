"""Models a workflow names: declared Hugging Face URLs fetched from the endpoint, and files
nobody declares found on Civitai (`find`, `pull --workflow --find`)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import comfyui_workflow_templates_json
from conftest import Cli
from hubs import CivitaiFile, CivitaiHub, HfHub
from origin import random_bytes
from pulling import FAST_RETRIES, file_sha
from test_workflows import declared_models

TEMPLATES = Path(comfyui_workflow_templates_json.__file__).parent / "templates"
LORA = "detail_tweaker_xl.safetensors"


def _lora_workflow(cli: Cli, name: str = LORA) -> Path:
    doc = {
        "nodes": [
            {"id": 1, "type": "LoraLoader", "widgets_values": [name, 1.0, 1.0]},
        ],
        "links": [],
    }
    path = cli.home / "wf.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_a_real_templates_huggingface_urls_are_fetched_from_the_endpoint(
    cli: Cli, hf: HfHub
) -> None:
    cli.write_config(FAST_RETRIES)
    template = TEMPLATES / "3d_hunyuan3d-v2.1.json"
    doc = json.loads(template.read_text())
    expected = {}
    for number, model in enumerate(declared_models(doc)):
        owner, repo, _resolve, revision, *path = unquote(urlsplit(model["url"]).path)[1:].split("/")
        sha = hf.add(f"{owner}/{repo}", "/".join(path), random_bytes(40_000, seed=number),
                     revision=revision)
        if model.get("hash"):
            model["hash"], model["hash_type"] = sha, "SHA256"
        expected[f"{model['directory']}/{model['name']}"] = sha
    flow = cli.home / "template.json"
    flow.write_text(json.dumps(doc))
    result = cli("--json", "pull", "--workflow", str(flow))
    assert result.code == 0, result.stderr
    assert {ref: file_sha(cli.root / ref) for ref in expected} == expected
    assert any("/resolve/" in r.path for r in hf.api.log)


def test_find_lists_exact_files_and_pull_find_takes_the_single_one(
    cli: Cli, civitai: CivitaiHub
) -> None:
    cli.write_config(FAST_RETRIES)
    model = random_bytes(80_000, seed=1)
    civitai.add(4384, 128713, [CivitaiFile(LORA, model, primary=True),
                               CivitaiFile("training.zip", b"z" * 900, type="Training Data")])
    civitai.add(5000, 5001, [CivitaiFile("detail_tweaker_xl_v2.safetensors", b"v" * 900,
                                         primary=True)], model_name="Detail Tweaker XL v2")
    found = cli("--json", "find", LORA)
    assert found.code == 0, found.stderr
    (candidate,) = found.json()["data"]["candidates"]
    assert candidate["ref"] == "civitai:128713" and candidate["sha256"] == file_sha_of(model)
    assert candidate["page"].endswith("/models/4384?modelVersionId=128713")
    flow = _lora_workflow(cli)
    unknown = cli("--json", "pull", "--workflow", str(flow))
    assert unknown.code == 4
    result = cli("--json", "pull", "--workflow", str(flow), "--find")
    assert result.code == 0, result.stderr
    assert file_sha(cli.root / "loras" / LORA) == file_sha_of(model)
    local = cli("--json", "list", "--source", "local").json()["data"]["models"]
    assert [m["ref"] for m in local] == [f"loras/{LORA}"]


def file_sha_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_several_candidates_are_listed_and_the_model_stays_unknown(
    cli: Cli, civitai: CivitaiHub
) -> None:
    civitai.add(1, 11, [CivitaiFile(LORA, b"a" * 700, primary=True)])
    civitai.add(2, 21, [CivitaiFile(LORA, b"b" * 700, primary=True)])
    result = cli("--json", "pull", "--workflow", str(_lora_workflow(cli)), "--find")
    assert result.code == 4
    (row,) = result.json()["data"]["results"]
    assert row["outcome"] == "unknown" and len(row["candidates"]) == 2
    assert "civitai:11" in result.stderr and "civitai:21" in result.stderr
    assert not (cli.root / "loras" / LORA).exists()
    none = cli("find", "nothing_like_it.safetensors")
    assert none.code == 4 and "no file named" in none.stderr


def test_a_declared_hash_is_looked_up_by_hash(cli: Cli, civitai: CivitaiHub) -> None:
    data = random_bytes(5_000, seed=2)
    civitai.add(3, 31, [CivitaiFile("renamed.safetensors", data, primary=True)],
                model_name="Something Else")
    sha = file_sha_of(data)
    found = cli("--json", "find", "renamed.safetensors", "--hash", sha)
    assert [c["ref"] for c in found.json()["data"]["candidates"]] == ["civitai:31"]
    assert any("/by-hash/" in r.path for r in civitai.api.log)
    assert cli("find", "x.safetensors", "--hash", "nothex").code == 2
