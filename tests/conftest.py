"""Fixtures: a private CMCACHE_HOME, a loopback origin, and the CLI run as a user runs it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hubs import CivitaiHub, HfHub
from origin import Origin

if TYPE_CHECKING:
    from clustering import Node, RedisServer

REPO = Path(__file__).resolve().parent.parent
_LEAKY = (
    "CMCACHE_",
    "COMFYUI_MANAGER_",
    "HF_TOKEN",
    "HF_ENDPOINT",
    "CIVITAI_API_TOKEN",
    "CIVITAI_ENDPOINT",
    "NO_COLOR",
)


@dataclass
class Result:
    """What one cmcache invocation did."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """Run ``python -m cmcache`` with a private home, as a user would from a shell."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.parent.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY)}
        self.env["CMCACHE_HOME"] = str(home)
        self.env["COLUMNS"] = "200"
        # `python -m` puts the working directory first on sys.path: keep the checkout off it.
        self.env["PYTHONSAFEPATH"] = "1"

    @property
    def root(self) -> Path:
        return Path(self.env.get("CMCACHE_ROOT", self.home / "models"))

    @property
    def config(self) -> Path:
        return self.home / "config.toml"

    def write_config(self, text: str) -> None:
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cmcache", *args],
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **{"cwd": self.home.parent, **kwargs},
        )

    def __call__(self, *args: str, input: str | None = None, timeout: float = 120) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "cmcache", *args],
            env=self.env,
            check=False,
            input=input,
            text=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.home.parent,
        )
        return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path / "home")
    yield runner
    runner("daemon", "stop", timeout=30)
    for pid in aria2c_pids(str(runner.home)):  # a daemon a test killed cmcache around
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def aria2c_pids(marker: str) -> list[int]:
    """PIDs of aria2c processes whose command line mentions ``marker``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (proc / "stat").read_text().split()
        except OSError:
            continue
        if "aria2c" in cmdline and marker in cmdline and stat[2] != "Z":
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    server = Origin(tmp_path / "origin").start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (cluster tests)."""
    from clustering import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Origin]:
    """A signed-storage or CDN host on another address: tokens must never reach it."""
    server = Origin(tmp_path / "storage", host="127.0.0.2").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def nodes(tmp_path: Path, origin: Origin, redis_url: str) -> Iterator[list[Node]]:
    """Three cluster nodes on 127.0.0.2-4, each with its own home (not yet configured)."""
    from clustering import SECRET, Node, free_port

    made = []
    for i, host in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.4"), start=1):
        cli = Cli(tmp_path / f"node{i}")
        cli.env["CMCACHE_CLUSTER_SECRET"] = SECRET
        made.append(Node(cli, host, free_port(host)))
    yield made
    for node in made:
        node.stop(signal.SIGKILL)
        node.cli("daemon", "stop")


@pytest.fixture
def civitai(cli: Cli, tmp_path: Path, storage: Origin) -> Iterator[CivitaiHub]:
    """A Civitai-like API on 127.0.0.1 (CIVITAI_ENDPOINT) redirecting to ``storage``."""
    api = Origin(tmp_path / "civitai", host="127.0.0.1").start()
    hub = CivitaiHub(api, storage)
    cli.env["CIVITAI_ENDPOINT"] = hub.endpoint
    yield hub
    api.stop()


@pytest.fixture
def hf(cli: Cli, tmp_path: Path, storage: Origin) -> Iterator[HfHub]:
    """A Hugging Face-like Hub on 127.0.0.1 (HF_ENDPOINT) with its CDN at ``storage``."""
    api = Origin(tmp_path / "hub", host="127.0.0.1").start()
    hub = HfHub(api, storage)
    cli.env["HF_ENDPOINT"] = hub.endpoint
    yield hub
    api.stop()
