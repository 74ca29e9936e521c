"""What resolving a ref costs: ``pull civitai:…`` and ``pull hf:…`` beside the same file pulled
by a direct URL, on loopback (APIs on 127.0.0.1, storage on 127.0.0.2), time to placed.

Each run uses a fresh home and root, so nothing is remembered: the Civitai run asks the API and
follows the signed redirect, the Hugging Face run makes its HEAD and follows the CDN redirect,
and the direct run probes its URL for the file name. A file of a few MiB keeps the download
itself short, so the difference is what the ref costs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hubs import CivitaiFile, CivitaiHub, HfHub
from origin import Origin, random_bytes

MiB = 1 << 20


def _pull(base: Path, env: dict[str, str], *args: str) -> float:
    home = Path(tempfile.mkdtemp(prefix="src-home-", dir=base))
    run_env = {**env, "CMCACHE_HOME": str(home)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cmcache", "--no-progress", "pull", *args],
        env=run_env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    stop = [sys.executable, "-m", "cmcache", "daemon", "stop"]
    subprocess.run(stop, env=run_env, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cmcache pull {' '.join(args)} failed: {done.stderr[-500:]}")
    if not list((home / "models" / "loras").glob("*.safetensors")):
        raise RuntimeError(f"cmcache pull {' '.join(args)} placed nothing")
    shutil.rmtree(home, ignore_errors=True)
    return elapsed


def sources(base: Path, size: int, reps: int) -> dict[str, Any]:
    """Median seconds to placed for each way of naming one model, and the difference."""
    storage = Origin(base / "src-storage", host="127.0.0.2").start()
    storage.send_buffer = 4 * MiB
    civitai_api = Origin(base / "src-civitai").start()
    hub_api = Origin(base / "src-hub").start()
    try:
        civitai, hub = CivitaiHub(civitai_api, storage), HfHub(hub_api, storage)
        data = random_bytes(size, seed=11)
        civitai.add(4384, 128713, [CivitaiFile("model.safetensors", data, primary=True)])
        hub.add("org/repo", "model.safetensors", data)
        storage.add("direct/model.safetensors", data)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCACHE_")}
        env |= {"CIVITAI_ENDPOINT": civitai.endpoint, "HF_ENDPOINT": hub.endpoint}
        ways = {
            "direct": ("--folder", "loras", storage.url("direct/model.safetensors")),
            "civitai": ("civitai:128713",),
            "hf": ("--folder", "loras", "hf:org/repo/model.safetensors"),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(reps):  # interleaved: a slow moment hurts every way alike
            for name, args in ways.items():
                times[name].append(_pull(base, env, *args))
    finally:
        for server in (storage, civitai_api, hub_api):
            server.stop()
    med = {name: statistics.median(values) for name, values in times.items()}
    return {
        "file_mib": size / MiB,
        "reps": reps,
        "direct_s": med["direct"],
        "civitai_s": med["civitai"],
        "hf_s": med["hf"],
        "civitai_extra_ms": (med["civitai"] - med["direct"]) * 1000,
        "hf_extra_ms": (med["hf"] - med["direct"]) * 1000,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The report's lines for this measurement."""
    direct = result["direct_s"]
    return [
        (
            f"pull civitai:… vs direct URL, {result['file_mib']:.0f} MiB, to placed",
            f"{result['civitai_s']:.2f}s vs {direct:.2f}s = {result['civitai_extra_ms']:+.0f} ms",
            "≤ +150 ms",
        ),
        (
            f"pull hf:… vs direct URL, {result['file_mib']:.0f} MiB, to placed",
            f"{result['hf_s']:.2f}s vs {direct:.2f}s = {result['hf_extra_ms']:+.0f} ms",
            "≤ +150 ms",
        ),
    ]
