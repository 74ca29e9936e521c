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


def sources(base: Path, size: int, reps: int, batch: int = 5) -> dict[str, Any]:
    """Median seconds to placed for each way of naming one model, and for ``batch`` models in
    one pull (refs are resolved one after another; the downloads run side by side)."""
    storage = Origin(base / "src-storage", host="127.0.0.2").start()
    storage.send_buffer = 4 * MiB
    civitai_api = Origin(base / "src-civitai").start()
    hub_api = Origin(base / "src-hub").start()
    try:
        civitai, hub = CivitaiHub(civitai_api, storage), HfHub(hub_api, storage)
        for n in range(batch):
            data = random_bytes(size, seed=11 + n)
            name = f"model{n}.safetensors"
            civitai.add(4384 + n, 128713 + n, [CivitaiFile(name, data, primary=True)])
            hub.add("org/repo", name, data)
            storage.add(f"direct/{name}", data)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CMCACHE_")}
        env |= {"CIVITAI_ENDPOINT": civitai.endpoint, "HF_ENDPOINT": hub.endpoint}
        names = [f"model{n}.safetensors" for n in range(batch)]
        refs = {
            "direct": [storage.url(f"direct/{n}") for n in names],
            "civitai": [f"civitai:{128713 + n}" for n in range(batch)],
            "hf": [f"hf:org/repo/{n}" for n in names],
        }
        flags = {"direct": ["--folder", "loras"], "civitai": [], "hf": ["--folder", "loras"]}
        one: dict[str, list[float]] = {way: [] for way in refs}
        many: dict[str, list[float]] = {way: [] for way in refs}
        for _ in range(reps):  # interleaved: a slow moment hurts every way alike
            for way, given in refs.items():
                one[way].append(_pull(base, env, *flags[way], given[0]))
                many[way].append(_pull(base, env, *flags[way], *given))
    finally:
        for server in (storage, civitai_api, hub_api):
            server.stop()
    med = {name: statistics.median(values) for name, values in one.items()}
    per = {name: statistics.median(values) for name, values in many.items()}
    return {
        "file_mib": size / MiB,
        "reps": reps,
        "batch": batch,
        "direct_s": med["direct"],
        "civitai_s": med["civitai"],
        "hf_s": med["hf"],
        "civitai_extra_ms": (med["civitai"] - med["direct"]) * 1000,
        "hf_extra_ms": (med["hf"] - med["direct"]) * 1000,
        "batch_direct_s": per["direct"],
        "batch_civitai_s": per["civitai"],
        "batch_hf_s": per["hf"],
        "civitai_extra_ms_per_model": (per["civitai"] - per["direct"]) * 1000 / batch,
        "hf_extra_ms_per_model": (per["hf"] - per["direct"]) * 1000 / batch,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The report's lines for this measurement."""
    direct, batch = result["direct_s"], result["batch"]
    out = []
    for way, label in (("civitai", "civitai:…"), ("hf", "hf:…")):
        out += [
            (
                f"pull {label} vs direct URL, {result['file_mib']:.0f} MiB, to placed",
                f"{result[f'{way}_s']:.2f}s vs {direct:.2f}s = "
                f"{result[f'{way}_extra_ms']:+.0f} ms",
                "≤ +150 ms",
            ),
            (
                f"  {batch} models in one pull, per model",
                f"{result[f'batch_{way}_s']:.2f}s vs {result['batch_direct_s']:.2f}s = "
                f"{result[f'{way}_extra_ms_per_model']:+.0f} ms",
                "≤ +150 ms",
            ),
        ]
    return out
