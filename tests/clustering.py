"""Helpers for cluster tests: a real redis-server, nodes on 127.0.0.2-4 each with its own home,
root and `cmcache serve`, one origin on 127.0.0.1 counting bytes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Cli
from origin import Origin
from pulling import FAST_RETRIES, publish, wait_for

MiB = 1 << 20
SECRET = "cluster-secret-123"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A private redis-server without persistence, which a test may restart."""

    def __init__(self, folder: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        self.exe, self.folder, self.port = exe, folder, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.folder)]
        self.process = subprocess.Popen([self.exe, *args], stdout=subprocess.DEVNULL)
        wait_for(self._pings, what="redis-server")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def _pings(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False


@dataclass
class Node:
    cli: Cli
    host: str
    port: int
    server: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.stop()  # a second start must not leave the first `serve` running after the test
        self.server = self.cli.popen("serve")
        wait_for(self._up, timeout=30, what=f"cmcache serve on {self.host}")

    def _up(self) -> bool:
        assert self.server is not None
        if self.server.poll() is not None:
            raise AssertionError(f"serve exited: {self.server.communicate()}")
        try:
            requests.get(f"{self.url}/v1/models/x/y", timeout=1)
        except requests.RequestException:
            return False
        status = self.cli("--json", "cluster", "status")
        return status.code == 0 and self.host in str(status.json()["data"]["nodes"])

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop `serve`; returns what it wrote on stderr."""
        if self.server is None:
            return ""
        if self.server.poll() is None:
            self.server.send_signal(sig)
        _out, err = self.server.communicate(timeout=20)
        return err


def join(
    nodes: list[Node],
    origin: Origin,
    redis_url: str,
    sizes: dict[str, int],
    *,
    rate: int | None = None,
    serve: bool = True,
    sha: bool = True,
    extra: str = "",
) -> dict[str, str]:
    digests: dict[str, str] = {}
    for node in nodes:
        cluster = (
            f'[cluster]\nredis = "{redis_url}"\nnode = "{node.host}"\n'
            f'serve = "{node.host}:{node.port}"\norigin_rate = "100/minute"\n{extra}'
        )
        digests = publish(node.cli, origin, sizes, sha=sha, extra_config=FAST_RETRIES + cluster)
        if serve:
            node.start()
    if rate is not None:
        for name in sizes:
            origin.fault(f"files/{name}", rate=rate)
    return digests


def origin_bytes(origin: Origin, name: str) -> int:
    return sum(r.sent for r in origin.requests_for(f"files/{name}", "GET"))


def fake_holder(redis: Any, name: str, url: str, ref: str, sha: str, size: int) -> None:
    """Write a node and its holding into Redis as a `serve` would (it lives 60 s)."""
    body = {"url": url, "models": 1, "bytes": size, "seen": time.time(), "instance": name}
    redis.set(f"cmcache:node:{name}", json.dumps(body), ex=60)
    redis.hset(f"cmcache:holders:{ref}", name, json.dumps({"sha256": sha, "size": size}))


def rot(path: Path) -> None:
    """Flip bytes in the middle of a file, keeping its size, inode and mtime (bit rot)."""
    before = path.stat()
    with path.open("r+b") as handle:
        handle.seek(before.st_size // 2)
        chunk = handle.read(16)
        handle.seek(before.st_size // 2)
        handle.write(bytes(b ^ 0xFF for b in chunk))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
