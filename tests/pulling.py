"""Helpers for pull tests: publish models on the origin and point a cmcache home at them."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Cli
from origin import Origin

FAST_RETRIES = "[download]\nretry_wait = 1\nmax_tries = 5\ntimeout = 10\n"


def publish(
    cli: Cli,
    origin: Origin,
    sizes: dict[str, int],
    *,
    sha: bool = True,
    exact_size: bool = True,
    extra_config: str = FAST_RETRIES,
    folder: str = "checkpoints",
) -> dict[str, str]:
    """Serve random files, list them in a synced manifest; returns name → sha256."""
    digests: dict[str, str] = {}
    models = []
    for name, size in sizes.items():
        digests[name] = origin.add_random(f"files/{name}", size, seed=len(digests))
        model: dict[str, object] = {
            "folder": folder,
            "filename": name,
            "url": origin.url(f"files/{name}"),
        }
        if sha:
            model["sha256"] = digests[name]
        if exact_size:
            model["size"] = size
        models.append(model)
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"schema": 1, "version": "1", "models": models}))
    cli.write_config(f'{extra_config}\n[[sources]]\nname = "test"\nurl = "{listing}"\n')
    result = cli("sync")
    assert result.code == 0, result.stdout + result.stderr
    return digests


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
