"""The real ComfyUI 0.7.0 server for browser tests: its tree from ../shared/comfyui-0.7.0
($CMCACHE_COMFYUI_TREE names another; copied per session), its own venv ($CMCACHE_COMFYUI_VENV,
built by `nox -s browser`), a base directory holding models/, custom_nodes/ and user/, and a
tiny upscale model that really runs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_TREE = Path(
    os.environ.get("CMCACHE_COMFYUI_TREE")
    or Path(__file__).resolve().parents[1].parent / "shared" / "comfyui-0.7.0"
)
CHROMIUM = os.environ.get("CMCACHE_CHROMIUM", "/usr/bin/chromium")


def what_is_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    venv = os.environ.get("CMCACHE_COMFYUI_VENV", "")
    if not (SHARED_TREE / "main.py").is_file():
        return f"no ComfyUI tree at {SHARED_TREE}"
    if not venv or not (Path(venv) / "bin" / "python").is_file():
        return "no ComfyUI venv: set CMCACHE_COMFYUI_VENV or run `nox -s browser`"
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ComfyServer:
    """One running ComfyUI."""

    url: str
    base: Path
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)


def make_base(where: Path) -> Path:
    """A base directory (what --base-directory points at); the first-run dialog is off."""
    for sub in ("models", "custom_nodes", "input", "output", "user/default"):
        (where / sub).mkdir(parents=True, exist_ok=True)
    settings = {"Comfy.TutorialCompleted": True}
    (where / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))
    return where


def copy_tree(code: Path) -> Path:
    """A writable copy of ComfyUI's tree (the server writes beside its code)."""
    shutil.copytree(SHARED_TREE, code, ignore=shutil.ignore_patterns("__pycache__", ".ci"))
    for path in [code, *code.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the shared copy is read-only
    return code


def start_comfyui(code: Path, base: Path, env: dict[str, str], log: Path) -> ComfyServer:
    """Start ComfyUI from ``code`` with ``--base-directory base``; returns once it answers."""
    python = Path(os.environ["CMCACHE_COMFYUI_VENV"]) / "bin" / "python"
    port = free_port()
    command = [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)]
    # No API nodes (nothing from the internet, a quicker start); the database in memory, so
    # that two servers can share one tree.
    command += ["--base-directory", str(base), "--disable-auto-launch", "--disable-api-nodes"]
    command += ["--database-url", "sqlite:///:memory:"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    server = ComfyServer(f"http://127.0.0.1:{port}", base, process, log)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"ComfyUI exited {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(server.url + "/", timeout=5).close()
            return server
        time.sleep(0.5)
    server.stop()
    raise AssertionError(f"ComfyUI did not answer in 240 s:\n{log.read_text()[-3000:]}")


def tiny_upscale_model(pad: int = 0, seed: int = 0) -> bytes:
    """A real upscale model (RealESRGAN Compact: 4 features, scale 1) as a .safetensors file,
    ``pad`` bytes of metadata making it as large as a test needs a download to be."""
    shapes = {
        "body.0.weight": (4, 3, 3, 3), "body.0.bias": (4,), "body.1.weight": (4,),
        "body.2.weight": (4, 4, 3, 3), "body.2.bias": (4,), "body.3.weight": (4,),
        "body.4.weight": (3, 4, 3, 3), "body.4.bias": (3,),
    }
    rng = random.Random(seed)
    header: dict[str, Any] = {"__metadata__": {"pad": "x" * pad}}
    data = b""
    for name, shape in shapes.items():
        count = 1
        for dim in shape:
            count *= dim
        values = struct.pack(f"<{count}f", *(rng.uniform(-0.05, 0.05) for _ in range(count)))
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [len(data), len(data) + len(values)]}
        data += values
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + data


def upscale_workflow(model: str, declared: dict[str, Any] | None = None) -> dict[str, Any]:
    """A UI-format workflow that runs on CPU in a second: an empty image through the upscale
    model ``model`` into a preview; ``declared`` is the model's declaration, if any."""
    loader_props: dict[str, Any] = {"Node name for S&R": "UpscaleModelLoader"}
    if declared is not None:
        loader_props["models"] = [declared]

    def node(ident: int, kind: str, pos: int, widgets: list[Any], inputs: list[Any],
             outputs: list[Any], props: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "id": ident, "type": kind, "pos": [60 + 330 * pos, 120], "size": [300, 110],
            "flags": {}, "order": pos, "mode": 0, "inputs": inputs, "outputs": outputs,
            "properties": props or {"Node name for S&R": kind}, "widgets_values": widgets,
        }

    return {
        "last_node_id": 4, "last_link_id": 3,
        "nodes": [
            node(1, "EmptyImage", 0, [64, 64, 1, 0], [],
                 [{"name": "IMAGE", "type": "IMAGE", "links": [1]}]),
            node(2, "UpscaleModelLoader", 1, [model], [],
                 [{"name": "UPSCALE_MODEL", "type": "UPSCALE_MODEL", "links": [2]}], loader_props),
            node(3, "ImageUpscaleWithModel", 2, [],
                 [{"name": "upscale_model", "type": "UPSCALE_MODEL", "link": 2},
                  {"name": "image", "type": "IMAGE", "link": 1}],
                 [{"name": "IMAGE", "type": "IMAGE", "links": [3]}]),
            node(4, "PreviewImage", 3, [], [{"name": "images", "type": "IMAGE", "link": 3}], []),
        ],
        "links": [[1, 1, 0, 3, 1, "IMAGE"], [2, 2, 0, 3, 0, "UPSCALE_MODEL"],
                  [3, 3, 0, 4, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }
