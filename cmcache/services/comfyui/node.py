"""The custom node cmcache writes into a ComfyUI install, and what the node asks of cmcache."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cmcache import __version__
from cmcache.adapters.storage.manifest_store import ManifestStore
from cmcache.adapters.storage.model_store import ModelStore
from cmcache.adapters.storage.queue_log import QUEUE_LOG
from cmcache.core.errors import UsageError
from cmcache.core.files import write_atomic
from cmcache.services.sources.catalog import DATA_DIR, load_catalog, workflow_list

if TYPE_CHECKING:
    from pathlib import Path

    from cmcache.core.settings.model import Settings

NODE_DIR = ("custom_nodes", "cmcache")
NODE_SOURCE = DATA_DIR / "comfyui_node"
# cmcache's own variables travel to the node, so it finds the same config and home.
PASSED_ENV = ("CMCACHE_HOME", "CMCACHE_CONFIG", "CMCACHE_ROOT", "CMCACHE_ARIA2_RPC")


def comfyui_path(settings: Settings) -> Path:
    """Where ComfyUI is: a code tree (``folder_paths.py``) or a base directory (``models/``
    without code: ``--base-directory``, ComfyUI Desktop's base path, a models volume).

    Raises:
        UsageError: neither ``--comfyui``, ``CMCACHE_COMFYUI`` nor ``[comfyui] path`` says, or
            the folder is neither.
    """
    path = settings.comfyui.path
    if path is None:
        raise UsageError(
            "where is ComfyUI? pass --comfyui PATH (or set CMCACHE_COMFYUI or [comfyui] path)"
        )
    if not (path / "folder_paths.py").is_file() and not (path / "models").is_dir():
        raise UsageError(
            f"{path} is not a ComfyUI install (no folder_paths.py) nor a base directory "
            "(no models/ folder)",
            hint="point --comfyui at ComfyUI's code or at what its --base-directory names",
        )
    return path


@dataclass(frozen=True)
class NodeStatus:
    """What is installed in one ComfyUI, and whether it is this cmcache's node."""

    comfyui: Path
    folder: Path
    installed: bool
    current: bool  # the node's code and recorded command match this cmcache
    version: str
    command: tuple[str, ...]


def node_files() -> dict[str, bytes]:
    """The node's files (Python, and the page's extension in ``web/``), by relative path."""
    return {
        p.relative_to(NODE_SOURCE).as_posix(): p.read_bytes()
        for p in sorted(NODE_SOURCE.rglob("*"))
        if p.is_file() and p.suffix in (".py", ".js", ".css")
    }


def node_status(settings: Settings) -> NodeStatus:
    """Read the installed node's record."""
    comfy = comfyui_path(settings)
    folder = comfy.joinpath(*NODE_DIR)
    try:
        record: dict[str, Any] = json.loads((folder / "cmcache.json").read_text())
        same = all((folder / name).read_bytes() == data for name, data in node_files().items())
    except (OSError, ValueError):
        return NodeStatus(comfy, folder, False, False, "", ())
    current = same and record.get("command") == _command()
    version = str(record.get("version", ""))
    return NodeStatus(comfy, folder, True, current, version, tuple(record.get("command", ())))


def install_node(settings: Settings) -> NodeStatus:
    """Write (or rewrite) the node into ``<ComfyUI>/custom_nodes/cmcache/``; files an older
    node had and this one has not are removed."""
    comfy = comfyui_path(settings)
    folder = comfy.joinpath(*NODE_DIR)
    record = {
        "version": __version__,
        "command": _command(),
        "comfyui": str(comfy),
        "env": {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)},
    }
    files = node_files()
    if folder.is_dir():
        for old in folder.rglob("*"):
            name = old.relative_to(folder).as_posix()
            if old.is_file() and old.suffix in (".py", ".js", ".css") and name not in files:
                old.unlink()
    write_atomic(folder / "cmcache.json", json.dumps(record, indent=1).encode())
    for name, data in files.items():
        write_atomic(folder / name, data)
    return node_status(settings)


def uninstall_node(settings: Settings) -> bool:
    """Remove the node; True if it was there."""
    folder = comfyui_path(settings).joinpath(*NODE_DIR)
    if not folder.is_dir():
        return False
    shutil.rmtree(folder)
    return True


def _command() -> list[str]:
    """How the node runs this cmcache: its own interpreter, so any environment works."""
    return [sys.executable, "-m", "cmcache"]


def node_catalog(settings: Settings) -> dict[str, Any]:
    """What the node lists: catalog file names per folder; files whose change means the
    catalog may have changed (the config, the synced lists, the list ``workflow``); and the
    queue log, whose growth means a download began or ended."""
    folders: dict[str, list[str]] = {}
    for entry in load_catalog(settings).unique_entries():
        folders.setdefault(entry.folder, []).append(entry.filename)
    stamps = [
        settings.paths.config_file,
        ManifestStore(settings.paths.manifests_dir).stamp,
        workflow_list(settings).path,
    ]
    queue_log = ModelStore(settings.cache.root).meta_dir / QUEUE_LOG
    return {"folders": folders, "stamps": [str(p) for p in stamps], "queue_log": str(queue_log)}
