"""cmcache side by side with aria2c and curl, in one run, reported as ratios.

Run with ``nox -s bench`` (or ``python benchmarks/bench.py``). Everything runs on loopback
against tests/origin.py, a Range-capable origin that can cap each connection's speed as CDNs do.
Prints a table and writes bench.json so runs can be compared over time. Nothing here asserts a
wall time: the targets are printed beside the measurements.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # its helpers; cmcache itself is the installed one

import predict_bench
from origin import Origin
from sources_bench import rows as source_rows
from sources_bench import sources

from cmcache.adapters.aria2.daemon import find_aria2c

MiB = 1 << 20
GiB = 1 << 30
RELAY_FANOUT = 1  # the cluster run: 24 MiB/s up, 16 MiB/s origin


class Home:
    """A private CMCACHE_HOME whose catalog lists files on the origin."""

    made: ClassVar[list[Home]] = []  # every home, for their daemons to be stopped at the end

    def __init__(
        self, base: Path, origin: Origin, files: dict[str, tuple[str, int]], extra: str = ""
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="home-", dir=base))
        self.root = self.dir / "models"
        models = [
            {
                "folder": "checkpoints",
                "filename": name,
                "url": origin.url(f"f/{name}"),
                "sha256": sha,
                "size": size,
            }
            for name, (sha, size) in files.items()
        ]
        (self.dir / "list.json").write_text(json.dumps({"schema": 1, "models": models}))
        (self.dir / "config.toml").write_text(
            f'{extra}\n[[sources]]\nname = "bench"\nurl = "{self.dir / "list.json"}"\n'
        )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CMCACHE_")}
        self.env["CMCACHE_HOME"] = str(self.dir)
        Home.made.append(self)
        self.run("sync")

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cmcache", "--no-progress", *args]

    def run(self, *args: str) -> float:
        started = time.perf_counter()
        done = subprocess.run(
            self.command(*args), env=self.env, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"cmcache {' '.join(args)} failed: {done.stderr[-500:]}")
        return elapsed

    def reset(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def aria2c_direct(
    url: str, sha: str, out: Path, split: int, extra: list[str] | None = None
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            find_aria2c(),
            f"-x{split}",
            f"-s{split}",
            "-k1M",
            "--file-allocation=falloc",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--console-log-level=error",
            "--summary-interval=0",
            "--disk-cache=0",
            f"--checksum=sha-256={sha}",
            "-d",
            str(out.parent),
            "-o",
            out.name,
            *(extra or []),
            url,
        ],
        check=True,
        capture_output=True,
    )
    out.unlink()


def curl_and_hash(url: str, sha: str, out: Path) -> None:
    subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
    assert sha256_of(out) == sha
    out.unlink()


# ---------------------------------------------------------------- the measurements


def throughput(origin: Origin, base: Path, size: int, rate: int, reps: int) -> dict[str, Any]:
    sha = origin.add_random("f/through.bin", size)
    origin.fault("f/through.bin", rate=rate)
    home = Home(base, origin, {"through.bin": (sha, size)})
    url = origin.url("f/through.bin")
    scratch = base / "scratch" / "through.bin"
    cm, direct = [], []
    for _ in range(reps):
        home.reset()
        cm.append(home.run("pull", "--split", "16", "through.bin"))
        direct.append(timed(lambda: aria2c_direct(url, sha, scratch, 16)))
    scratch.parent.mkdir(parents=True, exist_ok=True)
    curl = timed(lambda: curl_and_hash(url, sha, scratch))
    return {
        "file_mib": size // MiB,
        "per_connection_mib_s": rate / MiB,
        "cmcache_s": median(cm),
        "aria2c_s": median(direct),
        "curl_s": curl,
        "vs_aria2c": median(direct) / median(cm),
        "vs_curl": curl / median(cm),
        "cmcache_mib_s": size / MiB / median(cm),
    }


def defaults(origin: Origin, base: Path, sizes: list[int], rate: int, reps: int) -> dict[str, Any]:
    """A pull with default settings (auto split) beside `aria2c -x16 -s16 -k1M --checksum`,
    run alternately so a change of load on the machine hits both; medians and each pair's
    ratio (the spread), with the load average before and after."""
    out: dict[str, Any] = {"per_connection_mib_s": rate / MiB, "sizes": []}
    for size in sizes:
        name = f"default-{size // MiB}.bin"
        sha = origin.add_random(f"f/{name}", size, seed=size)
        origin.fault(f"f/{name}", rate=rate)
        home = Home(base, origin, {name: (sha, size)})
        scratch = base / "scratch" / name
        url = origin.url(f"f/{name}")
        load_before = os.getloadavg()[0]
        cm, direct = [], []
        fixed: dict[str, list[tuple[float, float]]] = {"cmcache": [], "aria2c": []}
        for _ in range(reps):
            home.reset()
            seen, began = len(origin.log), time.monotonic()
            cm.append(home.run("pull", name))
            fixed["cmcache"].append(around_transfer(origin, seen, began))
            seen, began = len(origin.log), time.monotonic()
            direct.append(timed(lambda u=url, s=sha, o=scratch: aria2c_direct(u, s, o, 16)))
            fixed["aria2c"].append(around_transfer(origin, seen, began))
        ratios = [d / c for c, d in zip(cm, direct, strict=True)]
        out["sizes"].append(
            {
                "file_mib": size // MiB,
                "cmcache_s": median(cm),
                "aria2c_s": median(direct),
                "vs_aria2c": median(direct) / median(cm),
                "cmcache_runs_s": cm,
                "aria2c_runs_s": direct,
                "run_ratios": ratios,
                # (start → first byte, last byte → exit), medians: the costs around the transfer
                "fixed_s": {
                    side: [median([f[0] for f in runs]), median([f[1] for f in runs])]
                    for side, runs in fixed.items()
                },
                "load": [load_before, os.getloadavg()[0]],
            }
        )
    return out


def around_transfer(origin: Origin, seen: int, began: float) -> tuple[float, float]:
    """Seconds from ``began`` to the first body byte sent, and from the last one to now."""
    gets = [r for r in origin.log[seen:] if r.method == "GET" and r.sent > 1]
    return min(r.started for r in gets) - began, time.monotonic() - max(r.ended for r in gets)


def resume(origin: Origin, base: Path, size: int, rate: int, reps: int) -> dict[str, Any]:
    """Ctrl-C a default pull at 30 %, pull again: bytes the origin sends for the second pull
    against the bytes aria2's control file says are missing."""
    import signal

    from cmcache.adapters.aria2.control import read_partial

    name = "resume.bin"
    sha = origin.add_random(f"f/{name}", size, seed=5)
    home = Home(base, origin, {name: (sha, size)})
    path = f"f/{name}"
    runs = []
    for _ in range(reps):
        home.reset()
        origin.fault(path, rate=rate)
        process = subprocess.Popen(
            home.command("pull", name),
            env=home.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        start = origin.sent_so_far(path)
        while origin.sent_so_far(path) - start < 0.3 * size and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        process.wait(60)
        control = next((home.root / ".cmcache" / "staging").glob(f"*{name}*.aria2"))
        partial = read_partial(control)
        if partial is None:
            raise RuntimeError(f"unreadable control file {control}")
        seen = len(origin.log)
        seconds = home.run("pull", name)
        fetched = sum(r.sent for r in origin.log[seen:] if r.method == "GET")
        runs.append(
            {
                "missing_mib": partial.missing / MiB,
                "fetched_mib": fetched / MiB,
                "ratio": fetched / partial.missing,
                "stretches": partial.unfinished_runs,
                "resume_s": seconds,
            }
        )
    return {
        "file_mib": size // MiB,
        "per_connection_mib_s": rate / MiB,
        "runs": runs,
        "ratio": median([r["ratio"] for r in runs]),
    }


def comfyui(origin: Origin, base: Path, entries: int) -> dict[str, Any]:
    """The node's cost inside ComfyUI's real folder_paths, with and without it, one run."""
    from comfy import SHARED, make_comfyui, run_comfyui

    if not SHARED.is_dir():
        return {"skipped": f"no ComfyUI fixture at {SHARED}"}
    files = {f"c{i:05}.safetensors": ("0" * 64, 1) for i in range(entries)}
    home = Home(base, origin, files)
    comfy = make_comfyui(base / "ComfyUI")
    home.env["CMCACHE_COMFYUI"] = str(comfy)
    present = comfy / "models" / "checkpoints" / "present.safetensors"
    present.parent.mkdir(parents=True)
    present.write_bytes(b"x")
    env = {k: v for k, v in home.env.items() if not k.startswith("CMCACHE_")}
    ops: list[list[Any]] = [
        ["time_first_list", "checkpoints"],
        ["time_list", "checkpoints", 200],
        ["time_full", "checkpoints", "present.safetensors", 200],
    ]
    stock, _ = run_comfyui(comfy, ops, env)
    home.run("comfyui", "install")
    node, _ = run_comfyui(comfy, ops, env)
    return {
        "catalog_entries": entries,
        "first_list_s": node[0],
        "list_stock_ms": stock[1] * 1000,
        "list_node_ms": node[1] * 1000,
        "load_stock_ms": stock[2] * 1000,
        "load_node_ms": node[2] * 1000,
    }


def publish(origin: Origin, base: Path, total: int, files: int) -> dict[str, Any]:
    """`cmcache publish` over a folder of ``total`` bytes beside `sha256sum` on the same files
    (page cache warm for both), then a republish that reuses every hash."""
    folder = base / "publish" / "checkpoints"
    folder.mkdir(parents=True)
    block = os.urandom(64 * MiB)
    each = total // files
    paths = []
    for i in range(files):
        path = folder / f"model-{i:02}.safetensors"
        with path.open("wb") as handle:
            for at in range(0, each, len(block)):
                handle.write(bytes([i]) + block[1 : min(len(block), each - at)])
        paths.append(path)
    home = Home(base, origin, {})
    out = base / "publish-out"
    args = (
        "publish",
        str(folder.parent),
        "--base-url",
        "https://models.example/m",
        "--out",
        str(out),
    )
    first = timed(lambda: home.run(*args))
    again = timed(lambda: home.run(*args))  # nothing changed: every hash reused
    sha256sum = timed(
        lambda: subprocess.run(["sha256sum", *map(str, paths)], check=True, capture_output=True)
    )
    shutil.rmtree(folder.parent)
    return {
        "gib": total / GiB,
        "files": files,
        "publish_s": first,
        "republish_s": again,
        "sha256sum_s": sha256sum,
        "vs_sha256sum": sha256sum / first,
        "publish_mb_s": total / first / 1e6,
    }


def cluster(
    origin: Origin, base: Path, size: int, origin_rate: int, serve_rate: int, counts: list[int]
) -> dict[str, Any]:
    """N nodes on 127.0.0.2… pull one model at once through the cluster (Redis, peers), the
    origin capped at ``origin_rate`` over all connections and each `serve` at ``serve_rate``:
    the slowest node against one node alone, and the origin's bytes. Then the discrete-event
    model (swarm_sim.py) calibrated on the lone pull, at the same N, for both protocols."""
    import socket

    exe = shutil.which("redis-server")
    if exe is None:
        return {"skipped": "no redis-server"}

    def free_port(host: str) -> int:
        with socket.socket() as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])

    rport = free_port("127.0.0.1")
    redis = subprocess.Popen(
        [exe, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    servers: list[subprocess.Popen[bytes]] = []

    def model(name: str, nbytes: int) -> tuple[str, int]:
        sha = origin.add_random(f"f/{name}", nbytes, seed=len(name))
        origin.fault(f"f/{name}", total_rate=origin_rate if nbytes == size else None)
        return sha, nbytes

    def nodes(
        count: int, name: str, clustered: bool, swarm: bool = True, nbytes: int = size
    ) -> list[Home]:
        files = {name: model(name, nbytes)}
        made = []
        for i in range(count):
            host = f"127.0.0.{2 + i}"
            extra = ""
            if clustered:
                port = free_port(host)
                extra = (
                    f'[cluster]\nredis = "redis://127.0.0.1:{rport}/0"\n'
                    f'node = "{name}-{i}"\nserve = "{host}:{port}"\n'
                    f'origin_rate = "0"\nserve_rate = "{serve_rate}"\n'
                    f"swarm = {'true' if swarm else 'false'}\n"
                    # upload (serve_rate) under twice the origin's rate: a chain, each node
                    # feeding one other, keeps every copy at the origin's pace
                    f"relay_fanout = {RELAY_FANOUT}\n"
                )
            home = Home(base, origin, files, extra=extra)
            home.env["CMCACHE_CLUSTER_SECRET"] = "bench-secret"
            if clustered:
                servers.append(
                    subprocess.Popen(home.command("serve"), env=home.env, stderr=subprocess.DEVNULL)
                )
            made.append(home)
        if clustered:
            time.sleep(2.0)  # the servers' first heartbeats
        return made

    def race(homes: list[Home], name: str) -> tuple[float, int]:
        before = sum(r.sent for r in origin.requests_for(f"f/{name}", "GET"))
        started = time.perf_counter()
        runs = [subprocess.Popen(h.command("pull", name), env=h.env) for h in homes]
        for run in runs:
            run.wait()
        slowest = time.perf_counter() - started
        after = sum(r.sent for r in origin.requests_for(f"f/{name}", "GET"))
        return slowest, after - before

    def round_trip() -> float:
        import redis as redis_py

        client = redis_py.Redis(port=rport)
        client.ping()
        return timed(lambda: [client.ping() for _ in range(200)]) / 200

    out: dict[str, Any] = {
        "redis_rtt_ms": round_trip() * 1000,
        "file_mib": size // MiB,
        "origin_mib_s": origin_rate / MiB,
        "serve_rate_mib_s": serve_rate / MiB,
        "load_before": os.getloadavg()[0],
    }

    def fixed(count: int) -> float:
        """The cost of ``count`` pulls started at once on this machine, bytes aside: each
        pulls a 64 KiB file from the uncapped origin (process, daemon, probes, placing)."""
        name = f"fixed{count}.bin"
        return race(nodes(count, name, False, nbytes=64 << 10), name)[0]

    try:
        alone_home = nodes(1, "alone.bin", False)[0]
        alone = timed(lambda: alone_home.run("pull", "alone.bin"))
        out["alone_s"] = alone
        out["fixed_s"] = {1: fixed(1)}
        for count in counts:
            out["fixed_s"][count] = fixed(count)
            for protocol, swarm in (("queue", False), ("swarm", True)):
                name = f"{protocol}{count}.bin"
                load = os.getloadavg()[0]
                slowest, sent = race(nodes(count, name, True, swarm), name)
                out[f"{protocol}{count}"] = {
                    "slowest_s": slowest,
                    "vs_alone": slowest / alone,
                    "origin_x": sent / size,
                    "load": load,
                }
                for server in servers:
                    server.terminate()
                servers.clear()
    finally:
        for server in servers:
            server.terminate()
        redis.terminate()
    out["load_after"] = os.getloadavg()[0]
    out["sim"] = simulated(size, origin_rate, serve_rate, out["fixed_s"], out["redis_rtt_ms"] / 1e3)
    return out


def simulated(
    size: int, origin_rate: int, serve_rate: int, fixed: dict[int, float], rtt: float
) -> dict[str, Any]:
    """swarm_sim on the loopback setup, fed what this run measured: the cost of N pulls
    started at once (``fixed``: this machine's CPUs shared by N nodes and by whatever else
    runs), the origin's cap, `serve_rate`, a Redis round trip and this machine's sha256."""
    import swarm_sim

    data = os.urandom(size)
    hash_rate = size / timed(lambda: hashlib.sha256(data).hexdigest())

    def net(count: int) -> swarm_sim.Net:
        return swarm_sim.loopback(
            size, origin_rate, serve_rate, fixed[count], hash_rate, rtt=rtt, fanout=RELAY_FANOUT
        )

    sim: dict[str, Any] = {"hash_mib_s": hash_rate / MiB, "alone_s": swarm_sim.alone(net(1))}
    for count in (c for c in fixed if c > 1):
        for protocol in ("queue", "swarm", "ideal"):
            result = swarm_sim.simulate(net(count), count, protocol)
            sim[f"{protocol}{count}"] = {
                "slowest_s": result.slowest,
                "vs_alone": result.slowest / sim["alone_s"],
                "origin_x": result.origin_bytes / size,
            }
    return sim


def verification(origin: Origin, base: Path, size: int, rate: int) -> dict[str, Any]:
    sha = origin.add_random("f/verify.bin", size, seed=1)
    origin.fault("f/verify.bin", rate=rate)
    home = Home(base, origin, {"verify.bin": (sha, size)})
    final = home.root / "checkpoints" / "verify.bin"
    placed: list[float] = []

    def watch() -> None:
        while not final.exists():
            time.sleep(0.002)
        placed.append(time.monotonic())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    home.run("pull", "--split", "16", "verify.bin")
    watcher.join(10)
    gets = origin.requests_for("f/verify.bin", "GET")
    first, last = min(r.started for r in gets), max(r.ended for r in gets)
    overhead = placed[0] - last
    return {
        "file_mib": size // MiB,
        "download_s": last - first,
        "last_byte_to_placed_s": overhead,
        "share": overhead / (last - first),
    }


def noop(origin: Origin, base: Path, batch: int, reps: int) -> dict[str, Any]:
    files = {}
    for i in range(batch):
        data = f"model {i}".encode()
        files[f"n{i}.bin"] = (origin.add(f"f/n{i}.bin", data), len(data))
    home = Home(base, origin, files)
    folder = home.root / "checkpoints"
    folder.mkdir(parents=True)
    for i in range(batch):
        (folder / f"n{i}.bin").write_bytes(f"model {i}".encode())
    home.run("scan")
    refs = home.dir / "refs.txt"
    refs.write_text("\n".join(files))
    seen = len(origin.log)
    bare = median(
        [
            timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
            for _ in range(reps)
        ]
    )
    one = median([home.run("pull", "n0.bin") for _ in range(reps)])
    path = median([home.run("path", "n0.bin") for _ in range(reps)])
    many = median([home.run("pull", "--file", str(refs)) for _ in range(3)])
    helped = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cmcache", "--help"],
        env=home.env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    heavy = [m for m in ("aria2p", "requests", "sqlite3") if f" {m}\n" in helped]
    return {
        "python_pass_s": bare,
        "pull_one_s": one,
        "path_one_s": path,
        f"pull_{batch}_s": many,
        "one_vs_python": one / bare,
        "network_requests": len(origin.log) - seen,
        "help_imports_heavy": heavy,
    }


def batch(origin: Origin, base: Path, count: int, size: int, concurrency: int) -> dict[str, Any]:
    files = {
        f"b{i}.bin": (origin.add_random(f"f/b{i}.bin", size, seed=i), size) for i in range(count)
    }
    home = Home(base, origin, files, extra=f"[download]\nconcurrent = {concurrency}\n")
    refs = home.dir / "refs.txt"
    refs.write_text("\n".join(files))
    cm = home.run("pull", "--file", str(refs), "--split", "4")
    listing = base / "aria2-input.txt"
    out = base / "aria2-batch"
    listing.write_text(
        "".join(
            f"{origin.url(f'f/{name}')}\n  out={name}\n  checksum=sha-256={sha}\n"
            for name, (sha, _) in files.items()
        )
    )
    direct = timed(
        lambda: subprocess.run(
            [
                find_aria2c(),
                "-i",
                str(listing),
                "-j",
                str(concurrency),
                "-x4",
                "-s4",
                "-k1M",
                "--file-allocation=falloc",
                "--console-log-level=error",
                "--summary-interval=0",
                "--disk-cache=0",
                "-d",
                str(out),
            ],
            check=True,
            capture_output=True,
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    return {
        "files": count,
        "file_mib": size // MiB,
        "concurrency": concurrency,
        "cmcache_s": cm,
        "aria2c_s": direct,
        "vs_aria2c": direct / cm,
    }


def memory(origin: Origin, base: Path, size: int) -> dict[str, Any]:
    sha = origin.add_random("f/mem.bin", size, seed=2)
    home = Home(base, origin, {"mem.bin": (sha, size)})
    process = subprocess.Popen(
        home.command("pull", "mem.bin"),
        env=home.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            break
        time.sleep(0.02)
    if process.returncode != 0:
        raise RuntimeError("memory pull failed")
    return {"file_mib": size // MiB, "peak_rss_mb": peak / 1e6}


def prune_and_list(base: Path, files: int, entries: int) -> dict[str, Any]:
    from cmcache.adapters.storage.index import Index
    from cmcache.core.planning.prune import candidates, plan_prune

    index_path = base / "prune-index" / "index.sqlite3"
    index = Index(index_path)
    now = time.time()
    db = index._db  # bulk-load through the same schema; the bench is not a user of the API
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO files VALUES (?, ?, ?, NULL, 0, 0, '', '', ?, 0)",
        [("checkpoints", f"m{i}.bin", 1000 + i, now - i) for i in range(files)],
    )
    db.executemany(
        "INSERT INTO usage VALUES (?, ?, ?, 1)",
        [("checkpoints", f"m{i}.bin", now - i * 60) for i in range(files)],
    )
    db.execute("COMMIT")
    plan_s = timed(
        lambda: plan_prune(candidates(index), now=now, keep_days=7, max_size=files * 500)
    )
    listing = base / "big-list.json"
    listing.write_text(
        json.dumps(
            {
                "schema": 1,
                "models": [
                    {
                        "folder": "loras",
                        "filename": f"l{i}.safetensors",
                        "url": f"https://h/l{i}",
                        "size": 1000 + i,
                        "aliases": [f"l{i}"],
                    }
                    for i in range(entries)
                ],
            }
        )
    )
    home = base / "list-home"
    home.mkdir()
    (home / "config.toml").write_text(f'[[sources]]\nname = "big"\nurl = "{listing}"\n')
    env = {**os.environ, "CMCACHE_HOME": str(home)}
    subprocess.run(
        [sys.executable, "-m", "cmcache", "sync"], env=env, check=True, capture_output=True
    )
    list_s = median(
        [
            timed(
                lambda: subprocess.run(
                    [sys.executable, "-m", "cmcache", "--json", "list"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
            )
            for _ in range(3)
        ]
    )
    return {"prune_files": files, "prune_plan_s": plan_s, "list_entries": entries, "list_s": list_s}


def disk(base: Path, files: int) -> dict[str, Any]:
    """`cmcache du` over ``files`` files in 20 folders (a third of them managed), beside
    `du -sb` over the same tree for scale."""
    from cmcache.adapters.storage.index import Index
    from cmcache.core.settings.load import load_settings
    from cmcache.services.disk.du import disk_usage

    home = base / "disk-home"
    root = home / "models"
    index = Index(root / ".cmcache" / "index.sqlite3")
    now = time.time()
    records = []
    for i in range(files):
        path = root / f"folder{i % 20}" / f"m{i}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i % 4096))
        if i % 3 == 0:
            st = path.stat()
            records.append(
                (path.parent.name, path.name, st.st_size, st.st_mtime_ns, st.st_ino, now)
            )
    db = index._db  # bulk-load through the same schema, as for the prune plan
    db.execute("BEGIN")
    db.executemany("INSERT INTO files VALUES (?, ?, ?, NULL, ?, ?, '', '', ?, 0)", records)
    db.execute("COMMIT")
    index.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMCACHE_")}
    env["CMCACHE_HOME"] = str(home)
    command = [sys.executable, "-m", "cmcache", "--json", "du"]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    assert json.loads(done.stdout)["data"]["states"]["managed"] > 0
    cli_s = median(
        [
            timed(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
            for _ in range(5)
        ]
    )
    settings = load_settings(environ=env)
    service_s = median([timed(lambda: disk_usage(settings)) for _ in range(5)])
    du_sb_s = median(
        [
            timed(lambda: subprocess.run(["du", "-sb", str(root)], check=True, capture_output=True))
            for _ in range(5)
        ]
    )
    return {"disk_files": files, "du_s": cli_s, "du_service_s": service_s, "du_sb_s": du_sb_s}


# ---------------------------------------------------------------- report


def _off(model: dict[str, Any], measured: dict[str, Any]) -> str:
    """How far the model's ratio is from the measured one."""
    return f"{model['vs_alone'] / measured['vs_alone'] - 1:+.0%} vs measured"


def report(results: dict[str, Any]) -> None:
    t, v, n, b, m, p = (
        results.get(k, {})
        for k in ("throughput", "verification", "noop", "batch", "memory", "cache")
    )
    rows = []
    if t:
        rows += [
            (
                f"download {t['file_mib']} MiB, {t['per_connection_mib_s']:.0f} MiB/s/connection",
                f"cmcache {t['cmcache_s']:.2f}s · aria2c {t['aria2c_s']:.2f}s · "
                f"curl {t['curl_s']:.2f}s",
                "",
            ),
            ("  cmcache vs aria2c direct", f"{t['vs_aria2c']:.2f}×", "≥ 0.95×"),
            ("  cmcache vs curl", f"{t['vs_curl']:.1f}×", "≥ 10×"),
        ]
    for d in results.get("defaults", {}).get("sizes", []):
        target = "≥ 1.0×" if d["file_mib"] < 1024 else "≥ 1.2×"
        spread = ", ".join(f"{r:.2f}" for r in d.get("run_ratios", []))
        load = "–".join(f"{x:.1f}" for x in d.get("load", []))
        rows.append(
            (
                f"default pull, {d['file_mib']} MiB: cmcache vs aria2c -s16",
                f"{d['cmcache_s']:.2f}s vs {d['aria2c_s']:.2f}s = {d['vs_aria2c']:.2f}× "
                f"(runs {spread}; load {load})",
                target,
            )
        )
        f = d.get("fixed_s")
        if f:
            rows.append(
                (
                    "  start → first byte, last byte → exit",
                    f"cmcache {f['cmcache'][0]:.2f}s + {f['cmcache'][1]:.2f}s · "
                    f"aria2c {f['aria2c'][0]:.2f}s + {f['aria2c'][1]:.2f}s",
                    "",
                )
            )
    r = results.get("resume", {})
    if r:
        spread = ", ".join(f"{x['ratio']:.3f}" for x in r["runs"])
        missing = median([x["missing_mib"] for x in r["runs"]])
        rows.append(
            (
                f"resume after Ctrl-C at 30 % of {r['file_mib']} MiB: fetched / missing",
                f"{r['ratio']:.3f}× of {missing:.1f} MiB (runs {spread})",
                "≤ 1.05×",
            )
        )
    cl = results.get("cluster", {})
    if cl and "skipped" not in cl:
        rows.append(
            (
                f"cluster: {cl['file_mib']} MiB, origin {cl['origin_mib_s']:.0f} MiB/s,"
                f" serve_rate {cl['serve_rate_mib_s']:.0f} MiB/s; one node alone",
                f"{cl['alone_s']:.1f}s (load {cl['load_before']:.1f}→{cl['load_after']:.1f};"
                f" Redis {cl['redis_rtt_ms']:.2f} ms; N pulls' fixed cost"
                f" {', '.join(f'{v:.1f}s' for v in cl['fixed_s'].values())})",
                "",
            )
        )
        sim = cl["sim"]
        for count in sorted(int(k[5:]) for k in cl if k.startswith("swarm")):
            queue, swarm = cl[f"queue{count}"], cl[f"swarm{count}"]
            squeue, sswarm = sim[f"queue{count}"], sim[f"swarm{count}"]
            target = "≤ 1.15×" if count == 3 else "≤ 1.3× · ≤ 1.05×"
            rows += [
                (
                    f"  {count} nodes: wait-then-copy, slowest vs alone · origin bytes",
                    f"{queue['slowest_s']:.1f}s = {queue['vs_alone']:.2f}× ·"
                    f" {queue['origin_x']:.2f}× (load {queue['load']:.1f})",
                    "",
                ),
                (
                    f"  {count} nodes: swarm, slowest vs alone · origin bytes",
                    f"{swarm['slowest_s']:.1f}s = {swarm['vs_alone']:.2f}× ·"
                    f" {swarm['origin_x']:.2f}× (load {swarm['load']:.1f})",
                    target,
                ),
                (
                    f"  {count} nodes, model: wait-then-copy · swarm",
                    f"{squeue['vs_alone']:.2f}× ({_off(squeue, queue)})"
                    f" · {sswarm['vs_alone']:.2f}× ({_off(sswarm, swarm)})",
                    "model within ±15 %",
                ),
                (
                    f"  {count} nodes, model: a piece-aware fetcher",
                    f"{sim[f'ideal{count}']['vs_alone']:.2f}×",
                    "",
                ),
            ]
    pub = results.get("publish", {})
    if pub:
        rows.append(
            (
                f"publish {pub['gib']:.0f} GiB ({pub['files']} files) vs sha256sum",
                f"{pub['publish_s']:.1f}s vs {pub['sha256sum_s']:.1f}s = "
                f"{pub['vs_sha256sum']:.2f}× ({pub['publish_mb_s']:.0f} MB/s); "
                f"republish {pub['republish_s']:.2f}s",
                "faster than sha256sum",
            )
        )
    c = results.get("comfyui", {})
    if c and "skipped" not in c:
        rows += [
            (
                f"ComfyUI listing, {c['catalog_entries']:,} catalog entries (after the first)",
                f"{c['list_node_ms']:.1f} ms vs {c['list_stock_ms']:.1f} ms stock "
                f"(first {c['first_list_s']:.2f}s)",
                "≤ 50 ms added",
            ),
            (
                "ComfyUI load of a present model",
                f"{c['load_node_ms']:.3f} ms vs {c['load_stock_ms']:.3f} ms stock",
                "no subprocess",
            ),
        ]
    if v:
        rows.append(
            (
                f"last byte → placed, {v['file_mib']} MiB",
                f"{v['last_byte_to_placed_s']:.2f}s = {100 * v['share']:.1f}% of "
                f"{v['download_s']:.1f}s",
                "≤ 10%",
            )
        )
    if n:
        batch_key = next(k for k in n if k.startswith("pull_") and k != "pull_one_s")
        rows += [
            (
                "no-op pull (one model)",
                f"{n['pull_one_s']:.3f}s = {n['one_vs_python']:.1f}× "
                f"python -c pass ({n['python_pass_s']:.3f}s)",
                "≤ 0.2s, ≤ 3×",
            ),
            ("no-op path (one model)", f"{n['path_one_s']:.3f}s", "≤ 0.2s"),
            (f"no-op pull ({batch_key[5:-2]} models, --file)", f"{n[batch_key]:.3f}s", "≤ 1s"),
            (
                "  network requests / heavy imports in --help",
                f"{n['network_requests']} / {n['help_imports_heavy'] or 'none'}",
                "0 / none",
            ),
        ]
    if b:
        rows.append(
            (
                f"batch {b['files']} × {b['file_mib']} MiB, {b['concurrency']} at once",
                f"cmcache {b['cmcache_s']:.2f}s · aria2c -i {b['aria2c_s']:.2f}s = "
                f"{b['vs_aria2c']:.2f}×",
                "≥ 0.8×",
            )
        )
    if m:
        rows.append(
            (f"peak RSS, {m['file_mib']} MiB pull", f"{m['peak_rss_mb']:.0f} MB", "≤ 80 MB")
        )
    if results.get("sources"):
        rows += source_rows(results["sources"])
    if p:
        rows += [
            (f"prune plan over {p['prune_files']:,} files", f"{p['prune_plan_s']:.3f}s", "≤ 1s"),
            (f"list over {p['list_entries']:,} entries", f"{p['list_s']:.3f}s", "≤ 0.5s"),
        ]
    dk = results.get("disk", {})
    if dk:
        rows.append(
            (
                f"du over {dk['disk_files']:,} files",
                f"{dk['du_s']:.3f}s ({dk['du_service_s']:.3f}s without interpreter start) · "
                f"du -sb {dk['du_sb_s']:.3f}s",
                "≤ 1s",
            )
        )
    if not rows:
        return
    width = max(len(r[0]) for r in rows) + 2
    mid = max(len(r[1]) for r in rows) + 2
    print(f"{'measure':{width}}{'result':{mid}}target")
    for name, value, target in rows:
        print(f"{name:{width}}{value:{mid}}{target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Smaller files, fewer repetitions.")
    parser.add_argument("--out", default="bench.json")
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="throughput defaults resume verification noop batch memory cache comfyui publish "
        "cluster sources disk predict",
    )
    parser.add_argument(
        "--reps", type=int, default=3, metavar="N", help="Runs of each side in defaults, resume."
    )
    args = parser.parse_args()
    quick = args.quick
    base = Path(tempfile.mkdtemp(prefix="cmcache-bench-"))
    origin = Origin(base / "origin").start()
    origin.send_buffer = 4 * MiB  # throughput, not byte-exact accounting
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "quick": quick,
    }
    plan: dict[str, Callable[[], dict[str, Any]]] = {
        "throughput": lambda: throughput(
            origin, base, (64 if quick else 1024) * MiB, 8 * MiB, 1 if quick else 3
        ),
        "defaults": lambda: defaults(
            origin,
            base,
            [64 * MiB, 256 * MiB] if quick else [256 * MiB, GiB],
            8 * MiB,
            1 if quick else args.reps,
        ),
        "resume": lambda: resume(origin, base, 64 * MiB, 8 * MiB, 1 if quick else args.reps),
        "verification": lambda: verification(origin, base, (256 * MiB) if quick else GiB, 8 * MiB),
        "noop": lambda: noop(origin, base, 1000, 5 if quick else 10),
        "batch": lambda: batch(origin, base, 40 if quick else 200, 8 * MiB, 5),
        "memory": lambda: memory(origin, base, (512 * MiB) if quick else 2 * GiB),
        "cache": lambda: prune_and_list(base, 100_000, 10_000),
        "comfyui": lambda: comfyui(origin, base, 10_000),
        "cluster": lambda: cluster(origin, base, 64 * MiB, 16 * MiB, 24 * MiB, [3, 6]),
        "publish": lambda: publish(origin, base, (1 if quick else 10) * GiB, 10),
        "sources": lambda: sources(base, 2 * MiB, 3 if quick else 5),
        "disk": lambda: disk(base, 10_000),
        "predict": lambda: predict_bench.run(base),
    }
    try:
        for name, run in plan.items():
            if args.only is None or name in args.only:
                print(f"… {name}", file=sys.stderr, flush=True)
                results[name] = run()
    finally:
        for home in Home.made:  # pulls started an aria2 daemon in each
            stop = home.command("daemon", "stop")
            subprocess.run(stop, env=home.env, capture_output=True, check=False)
        origin.stop()
        shutil.rmtree(base, ignore_errors=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    report(results)
    if "predict" in results:
        predict_bench.report(results["predict"])


if __name__ == "__main__":
    main()
