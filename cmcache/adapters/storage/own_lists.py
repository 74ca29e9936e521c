"""Lists cmcache writes itself, in its own format: ``<state>/<name>.json``.

The list ``workflow`` holds the models that workflows opened in ComfyUI declared: they become
on-demand catalog entries (source ``workflow``). Read-modify-write happens under a lock, so two
pages posting workflows at once both land.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from cmcache.adapters.storage.locks import FileLock
from cmcache.core.files import write_atomic

if TYPE_CHECKING:
    from pathlib import Path

SCHEMA = 1


class OwnList:
    """One list file in cmcache's format (``{"schema", "name", "version", "models"}``)."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name = name
        self.path = folder / f"{name}.json"
        self._lock = FileLock(folder / f".{name}.lock")

    def read(self) -> bytes | None:
        """The list's bytes, or None when it does not exist (or cannot be read)."""
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def merge(self, models: list[dict[str, Any]]) -> int:
        """Add or replace models (by folder and filename); returns how many changed."""
        with self._lock:
            try:
                doc = json.loads(self.read() or b"{}")
                present = [m for m in doc.get("models", []) if isinstance(m, dict)]
            except (ValueError, AttributeError):
                present = []  # a damaged list is rebuilt from what arrives
            by_ref = {f"{m.get('folder')}/{m.get('filename')}": m for m in present}
            changed = 0
            for model in models:
                key = f"{model['folder']}/{model['filename']}"
                if by_ref.get(key) != model:
                    by_ref[key] = model
                    changed += 1
            if changed:
                out = {
                    "schema": SCHEMA,
                    "name": self.name,
                    "version": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "models": sorted(by_ref.values(), key=lambda m: (m["folder"], m["filename"])),
                }
                write_atomic(self.path, json.dumps(out, indent=1).encode(), mode=0o600)
            return changed
