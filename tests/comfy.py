"""A ComfyUI install for tests: ComfyUI 0.7.0's real folder_paths.py (from ../shared/comfyui, or
CMCACHE_TEST_COMFYUI), loaded with the node the way ComfyUI loads custom nodes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "comfyui"

# What ComfyUI's main.py and nodes.load_custom_node do, reduced to the parts the node meets.
DRIVER = r"""
import importlib.util, json, logging, os, sys, time
root = sys.argv[1]
sys.path.insert(0, root)
os.chdir(root)
sys.argv = ["main.py"]
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
import folder_paths
if os.path.exists(os.path.join(root, "extra_model_paths.yaml")):
    from utils.extra_config import load_extra_path_config
    load_extra_path_config(os.path.join(root, "extra_model_paths.yaml"))
if os.environ.get("FAKE_SERVER"):
    import server  # a stand-in exposing PromptServer.instance.add_on_prompt_handler
path = os.path.join(root, "custom_nodes", "cmcache", "__init__.py")
if os.path.exists(path):
    spec = importlib.util.spec_from_file_location("cmcache", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cmcache"] = module
    spec.loader.exec_module(module)
    assert module.NODE_CLASS_MAPPINGS is not None
out = []
for line in sys.stdin:
    op = json.loads(line)
    if op[0] == "list":
        out.append(folder_paths.get_filename_list(op[1]))
    elif op[0] == "full":
        out.append(folder_paths.get_full_path(op[1], op[2]))
    elif op[0] == "raise":
        try:
            out.append(folder_paths.get_full_path_or_raise(op[1], op[2]))
        except FileNotFoundError as exc:
            out.append(f"FileNotFoundError: {exc}")
    elif op[0] == "time_list":
        folder_paths.get_filename_list(op[1])
        started = time.perf_counter()
        for _ in range(op[2]):
            folder_paths.get_filename_list(op[1])
        out.append((time.perf_counter() - started) / op[2])
    elif op[0] == "time_full":
        started = time.perf_counter()
        for _ in range(op[3]):
            folder_paths.get_full_path(op[1], op[2])
        out.append((time.perf_counter() - started) / op[3])
    elif op[0] == "time_first_list":
        started = time.perf_counter()
        folder_paths.get_filename_list(op[1])
        out.append(time.perf_counter() - started)
    elif op[0] == "prompt":
        import server
        body = {"prompt": op[1]}
        for handler in server.PromptServer.instance.handlers:
            body = handler(body)
        out.append(body is not None)
    elif op[0] == "sleep":
        time.sleep(op[1])
        out.append(None)
print(json.dumps(out))
"""

FAKE_SERVER = """
class PromptServer:
    instance = None

    def __init__(self):
        self.handlers = []
        PromptServer.instance = self

    def add_on_prompt_handler(self, handler):
        self.handlers.append(handler)


PromptServer()
"""


def make_comfyui(where: Path) -> Path:
    """A ComfyUI root with the real folder_paths and its imports, and an empty models/."""
    source = Path(os.environ.get("CMCACHE_TEST_COMFYUI", SHARED))
    shutil.copytree(source, where, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [where, *where.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # the shared copy is read-only
    (where / "models").mkdir(exist_ok=True)
    (where / "custom_nodes").mkdir(exist_ok=True)
    (where / "driver.py").write_text(DRIVER)
    (where / "server.py").write_text(FAKE_SERVER)
    return where


def run_comfyui(
    where: Path, ops: list[list[Any]], env: dict[str, str], timeout: float = 120
) -> tuple[list[Any], str]:
    """Start a Python process as ComfyUI does, load the node, run ``ops``; (results, log)."""
    lines = "".join(json.dumps(op) + "\n" for op in ops)
    done = subprocess.run(
        [sys.executable, str(where / "driver.py"), str(where)],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results: list[Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return results, done.stderr
