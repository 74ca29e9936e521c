"""What a ComfyUI workflow needs: the model files its loaders name and the models it declares.

Both formats are read. The UI format has ``nodes[]`` (also inside
``definitions.subgraphs[].nodes``), each node's ``properties.models`` and the root ``models``;
loader nodes name files in ``widgets_values``. The API format maps ids to ``class_type`` and
``inputs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmcache.core.comfyui import modern_folder
from cmcache.core.errors import ManifestError
from cmcache.core.names import SHA256_RE

# Loader node → (input name, model folder, position among its widgets in the UI format).
LOADERS: dict[str, tuple[tuple[str, str, int], ...]] = {
    "CheckpointLoaderSimple": (("ckpt_name", "checkpoints", 0),),
    "LoraLoader": (("lora_name", "loras", 0),),
    "LoraLoaderModelOnly": (("lora_name", "loras", 0),),
    "VAELoader": (("vae_name", "vae", 0),),
    "UNETLoader": (("unet_name", "diffusion_models", 0),),
    "CLIPLoader": (("clip_name", "text_encoders", 0),),
    "DualCLIPLoader": (("clip_name1", "text_encoders", 0), ("clip_name2", "text_encoders", 1)),
    "TripleCLIPLoader": (
        ("clip_name1", "text_encoders", 0),
        ("clip_name2", "text_encoders", 1),
        ("clip_name3", "text_encoders", 2),
    ),
    "ControlNetLoader": (("control_net_name", "controlnet", 0),),
    "UpscaleModelLoader": (("model_name", "upscale_models", 0),),
    "CLIPVisionLoader": (("clip_name", "clip_vision", 0),),
}


@dataclass(frozen=True)
class Declared:
    """A model a workflow declares: where it goes and where to fetch it."""

    folder: str
    name: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class Needs:
    """Everything one workflow needs: files its loaders name, models it declares."""

    named: tuple[tuple[str, str], ...]  # (folder, file name), in order of appearance
    declared: tuple[Declared, ...]


def read_workflow(doc: Any, label: str) -> Needs:
    """The models a workflow (UI or API format) needs.

    Raises:
        ManifestError: the document is neither format.
    """
    if not isinstance(doc, dict):
        raise ManifestError(f"{label}: a workflow is a JSON object")
    named: list[tuple[str, str]] = []
    declared: list[Declared] = []
    if isinstance(doc.get("nodes"), list):
        _read_declared(doc.get("models"), declared)
        subgraphs = (doc.get("definitions") or {}).get("subgraphs") or []
        graphs = [doc, *(g for g in subgraphs if isinstance(g, dict))]
        for graph in graphs:
            for node in graph.get("nodes") or []:
                if isinstance(node, dict):
                    _read_ui_node(node, named, declared)
    elif doc and all(isinstance(n, dict) and "class_type" in n for n in doc.values()):
        for node in doc.values():
            inputs = node.get("inputs") or {}
            for input_name, folder, _at in LOADERS.get(str(node.get("class_type")), ()):
                value = inputs.get(input_name) if isinstance(inputs, dict) else None
                if isinstance(value, str) and value:
                    named.append((folder, value))
    else:
        raise ManifestError(
            f"{label}: not a ComfyUI workflow (no 'nodes' list, no API-format nodes)",
            hint="save the workflow from ComfyUI (Save, or Export (API))",
        )
    unique_named = tuple(dict.fromkeys(named))
    unique_declared = tuple({(d.folder, d.name): d for d in declared}.values())
    return Needs(unique_named, unique_declared)


def _read_ui_node(node: dict[str, Any], named: list[tuple[str, str]], out: list[Declared]) -> None:
    properties = node.get("properties")
    if isinstance(properties, dict):
        _read_declared(properties.get("models"), out)
    widgets = node.get("widgets_values")
    for input_name, folder, at in LOADERS.get(str(node.get("type")), ()):
        value = None
        if isinstance(widgets, list) and at < len(widgets):
            value = widgets[at]
        elif isinstance(widgets, dict):
            value = widgets.get(input_name)
        if isinstance(value, str) and value:
            named.append((folder, value))


def _read_declared(models: Any, out: list[Declared]) -> None:
    if not isinstance(models, list):
        return
    for model in models:
        if not isinstance(model, dict):
            continue
        name, url, directory = model.get("name"), model.get("url"), model.get("directory")
        if not (isinstance(name, str) and isinstance(url, str) and isinstance(directory, str)):
            continue
        digest = model.get("hash")
        sha = None
        if str(model.get("hash_type", "")).upper() == "SHA256" and isinstance(digest, str):
            sha = digest.lower() if SHA256_RE.match(digest) else None
        out.append(Declared(modern_folder(directory), name, url, sha))
