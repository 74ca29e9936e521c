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
    """A model a workflow declares: where it goes and where to fetch it. ``problem`` says why
    its declaration cannot be trusted (a hash that is not a SHA256): it is never fetched."""

    folder: str
    name: str
    url: str
    sha256: str | None
    problem: str | None = None


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
        for graph in [doc, *_subgraphs(doc, label)]:
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


def _subgraphs(doc: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """The subgraphs of a UI-format workflow (``definitions.subgraphs``).

    Raises:
        ManifestError: ``definitions``, ``subgraphs`` or a subgraph's ``nodes`` has the wrong
            shape.
    """
    definitions = doc.get("definitions")
    if definitions is None:
        return []
    if not isinstance(definitions, dict):
        raise ManifestError(f"{label}: 'definitions' must be an object, got {_kind(definitions)}")
    subgraphs = definitions.get("subgraphs")
    if subgraphs is None:
        return []
    if not isinstance(subgraphs, list):
        raise ManifestError(
            f"{label}: 'definitions.subgraphs' must be a list, got {_kind(subgraphs)}"
        )
    graphs = [g for g in subgraphs if isinstance(g, dict)]
    for number, graph in enumerate(graphs, start=1):
        if not isinstance(graph.get("nodes") or [], list):
            raise ManifestError(f"{label}: subgraph #{number}: 'nodes' must be a list")
    return graphs


def _kind(value: Any) -> str:
    names = {list: "a list", str: "a string", dict: "an object"}
    return next((n for t, n in names.items() if isinstance(value, t)), repr(value))


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
        sha, problem = _declared_sha256(model.get("hash"), model.get("hash_type"))
        out.append(Declared(modern_folder(directory), name, url, sha, problem))


def _declared_sha256(digest: Any, kind: Any) -> tuple[str | None, str | None]:
    """(sha256, problem) of a declaration's ``hash``/``hash_type``. ComfyUI writes
    ``hash_type: "SHA256"`` (any case is read); a hash without a type is read as SHA256. A
    hash that cannot be verified is a problem, never silently dropped."""
    if digest is None or digest == "":
        return None, None
    if kind not in (None, "") and (not isinstance(kind, str) or kind.upper() != "SHA256"):
        return None, f"its hash_type {kind!r} is not SHA256, the one cmcache verifies"
    if not isinstance(digest, str) or not SHA256_RE.match(digest):
        return None, f"its hash {digest!r} is not a SHA256 (64 hex digits)"
    return digest.lower(), None
