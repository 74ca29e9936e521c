"""What the node and its page extension cost ComfyUI 0.7.0 (`nox -s page_costs`).

Two servers from one tree, side by side: one with the node installed, one without. The page is
loaded in Debian's chromium alternately from each (a fresh browser context every time, so
nothing is cached), timing `goto` until ComfyUI's graph exists and the network is idle. Then,
with a page open on each and nothing downloading, the CPU time of each server and everything it
started is sampled over a window, and every process the node starts in it is counted.

Needs what the browser tests need: CMCACHE_COMFYUI_VENV, ../shared/comfyui-0.7.0 (or
CMCACHE_COMFYUI_TREE) and /usr/bin/chromium. Prints a table and writes page_costs.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from comfy_server import (
    CHROMIUM,
    ComfyServer,
    copy_tree,
    make_base,
    start_comfyui,
    what_is_missing,
)
from conftest import Cli
from playwright.sync_api import Browser, sync_playwright

TICKS = os.sysconf("SC_CLK_TCK")


def tree_of(pid: int) -> set[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        found.add(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pids: set[int]) -> float:
    """User + system time of the live processes, and of their reaped children."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


EXTRA = """() => performance.getEntriesByType("resource")
  .filter((e) => e.name.includes("cmcache"))
  .map((e) => ({
    name: e.name.replace(location.origin, ""), ms: e.duration, bytes: e.encodedBodySize
  }))"""


def load_once(browser: Browser, server: ComfyServer, extra: list[Any] | None = None) -> float:
    """One cold page load (a fresh context); ``extra`` gets the requests cmcache added."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    started = time.monotonic()
    page.goto(server.url + "/", wait_until="networkidle", timeout=120_000)
    page.wait_for_function("() => window.app && window.app.graph", timeout=60_000)
    took = time.monotonic() - started
    if extra is not None:
        extra.append(page.evaluate(EXTRA))
    context.close()
    return took


def idle_cost(browser: Browser, server: ComfyServer, seconds: float) -> dict[str, Any]:
    """CPU of the server's process tree over ``seconds`` with a page open and nothing to do."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(server.url + "/", wait_until="networkidle", timeout=120_000)
    time.sleep(30)  # the page's own start-up work (and the node's answer to it) settles
    before_pids = tree_of(server.process.pid)
    before = cpu_seconds(before_pids)
    started = time.monotonic()
    seen: dict[int, str] = {}
    while time.monotonic() - started < seconds:
        for pid in tree_of(server.process.pid) - before_pids - set(seen):
            try:
                seen[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                seen[pid] = "?"
        time.sleep(0.2)
    spent = cpu_seconds(tree_of(server.process.pid)) - before
    context.close()
    return {
        "cpu_percent_of_one_core": round(100 * spent / seconds, 3),
        "processes_started": len(seen),
        "commands": sorted(seen.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=7, help="page loads per server")
    parser.add_argument("--idle", type=float, default=120.0, help="seconds of idle sampling")
    args = parser.parse_args()
    missing = what_is_missing()
    if missing:
        sys.exit(f"cannot measure: {missing}")
    top = Path(tempfile.mkdtemp(prefix="cmcache-page-"))
    code = copy_tree(top / "ComfyUI")
    cli = Cli(top / "home")
    with_node = make_base(top / "with")
    cli.env["CMCACHE_COMFYUI"] = str(with_node)
    assert cli("comfyui", "install").code == 0
    without = make_base(top / "without")
    env = {k: v for k, v in cli.env.items() if not k.startswith(("CMCACHE_", "PYTHONSAFEPATH"))}
    servers = {
        "with the node": start_comfyui(code, with_node, env, top / "with.log"),
        "without": start_comfyui(code, without, env, top / "without.log"),
    }
    results: dict[str, Any] = {}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for server in servers.values():
                load_once(browser, server)  # warm the OS caches once
            loads: dict[str, list[float]] = {name: [] for name in servers}
            added: list[Any] = []
            for turn in range(args.loads):
                order = list(servers.items())
                for name, server in order if turn % 2 else order[::-1]:
                    loads[name].append(load_once(browser, server, added))
            results["requests_added"] = added[-1]
            for name, server in servers.items():
                results[name] = {
                    "page_load_median_s": round(statistics.median(loads[name]), 3),
                    "page_loads_s": [round(v, 3) for v in loads[name]],
                    **idle_cost(browser, server, args.idle),
                }
            browser.close()
    finally:
        for server in servers.values():
            server.stop()
        cli("daemon", "stop")
    a, b = results["with the node"], results["without"]
    results["page_load_ratio"] = round(a["page_load_median_s"] / b["page_load_median_s"], 3)
    results["load_average"] = os.getloadavg()
    for name in servers:
        r = results[name]
        print(f"{name:14} page load {r['page_load_median_s']:.2f} s (median of {args.loads}), "
              f"idle CPU {r['cpu_percent_of_one_core']:.2f} % of a core, "
              f"{r['processes_started']} processes started in {args.idle:.0f} s")
    print(f"page load with / without: {results['page_load_ratio']:.3f}")
    for request in results["requests_added"]:
        print(f"  added: {request['name']} {request['bytes']} B, {request['ms']:.0f} ms")
    Path("page_costs.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
