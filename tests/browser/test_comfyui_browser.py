"""ComfyUI 0.7.0 with the node, in Debian's chromium driven by Playwright: the panel, declared
models that are never reported missing, Run bringing them to the server, downloads started in a
shell, cancel, the host allow-list, and a page whose cmcache is gone.

Run by `nox -s browser` (CI too). Outside CI a missing piece (the ComfyUI venv, chromium) skips;
in CI it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("CMCACHE_BROWSER_TESTS"):
    pytest.skip("browser tests run in `nox -s browser`", allow_module_level=True)

from comfy_server import (
    CHROMIUM,
    ComfyServer,
    copy_tree,
    make_base,
    start_comfyui,
    tiny_upscale_model,
    upscale_workflow,
    what_is_missing,
)
from conftest import REPO, Cli, aria2c_pids
from origin import Origin
from playwright.sync_api import Browser, Page, sync_playwright
from pulling import wait_for

MISSING = what_is_missing()
if MISSING and os.environ.get("CI"):
    raise RuntimeError(f"browser tests cannot run in CI: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")

MiB = 1 << 20
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def origins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Origin, Origin]]:
    """The allowed origin (127.0.0.1) and one outside download_hosts (127.0.0.2)."""
    where = tmp_path_factory.mktemp("origins")
    near = Origin(where / "near").start()
    far = Origin(where / "far", host="127.0.0.2").start()
    yield near, far
    near.stop()
    far.stop()


@pytest.fixture(scope="module")
def shell(
    tmp_path_factory: pytest.TempPathFactory, origins: tuple[Origin, Origin]
) -> Iterator[Cli]:
    """cmcache as a user's shell has it: the same home and ComfyUI (a base directory)."""
    near, _far = origins
    top = tmp_path_factory.mktemp("comfy")
    cli = Cli(top / "home")
    base = make_base(top / "base")
    cli.env["CMCACHE_COMFYUI"] = str(base)
    models = []
    for name, size in (("shell.safetensors", 6 * MiB), ("big.safetensors", 64 * MiB)):
        sha = near.add_random(f"files/{name}", size)
        near.fault(f"files/{name}", rate=MiB)
        models.append({"folder": "loras", "filename": name, "url": near.url(f"files/{name}"),
                       "sha256": sha, "size": size})
    listing = cli.home / "list.json"
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"schema": 1, "version": "1", "models": models}))
    cli.write_config(
        '[cache]\nmax_size = "1G"\n'
        "[download]\nretry_wait = 1\nmax_tries = 3\ntimeout = 10\nsplit = 1\n"
        '[comfyui]\ndownload_hosts = ["127.0.0.1"]\n'
        f'[[sources]]\nname = "team"\nurl = "{listing}"\n'
    )
    assert cli("sync").code == 0
    assert cli("comfyui", "install").code == 0
    yield cli
    cli("daemon", "stop", timeout=30)
    for pid in aria2c_pids(str(cli.home)):
        os.kill(pid, 9)


def comfy_env(cli: Cli) -> dict[str, str]:
    """ComfyUI's own environment: none of cmcache's variables (the node brings its own), and
    main.py's folder on sys.path as ComfyUI expects."""
    drop = ("CMCACHE_", "PYTHONSAFEPATH")
    return {k: v for k, v in cli.env.items() if not k.startswith(drop)}


@dataclass
class Servers:
    """The ComfyUI the tests share, and one whose cmcache is gone (started side by side)."""

    main: ComfyServer
    gone: ComfyServer


@pytest.fixture(scope="module")
def servers(shell: Cli, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    top = Path(shell.env["CMCACHE_COMFYUI"]).parent
    code = copy_tree(top / "ComfyUI")
    # A second base directory whose node's recorded interpreter was uninstalled since.
    elsewhere = tmp_path_factory.mktemp("gone")
    gone = Cli(elsewhere / "home")
    gone.env["CMCACHE_COMFYUI"] = str(make_base(elsewhere / "base"))
    assert gone("comfyui", "install").code == 0
    record = elsewhere / "base" / "custom_nodes" / "cmcache" / "cmcache.json"
    conf = json.loads(record.read_text())
    conf["command"] = [str(elsewhere / "uninstalled" / "python"), "-m", "cmcache"]
    record.write_text(json.dumps(conf))
    present = elsewhere / "base" / "models" / "upscale_models"
    present.mkdir(parents=True)
    (present / "here.safetensors").write_bytes(tiny_upscale_model())
    with ThreadPoolExecutor(2) as pool:
        main = pool.submit(start_comfyui, code, top / "base", comfy_env(shell), top / "log")
        other = pool.submit(
            start_comfyui, code, elsewhere / "base", comfy_env(gone), elsewhere / "log"
        )
        started = Servers(main.result(), other.result())
    yield started
    started.main.stop()
    started.gone.stop()


@pytest.fixture(scope="module")
def server(servers: Servers) -> ComfyServer:
    return servers.main


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser: Browser, server: ComfyServer) -> Iterator[Page]:
    """One page on the shared server, opened once, as a person keeps a tab open."""
    opened = browser.new_page(viewport={"width": 1280, "height": 800})
    open_comfyui(opened, server)
    yield opened
    opened.close()


def open_comfyui(page: Page, server: ComfyServer) -> float:
    """Load ComfyUI as a person does; returns the seconds it took."""
    started = time.monotonic()
    page.goto(server.url + "/", wait_until="networkidle", timeout=120_000)
    page.wait_for_function("() => window.app && window.app.graph", timeout=60_000)
    return time.monotonic() - started


def load_workflow(page: Page, workflow: dict[str, Any]) -> None:
    """Load a workflow as a drag and drop would."""
    page.evaluate("wf => window.app.loadGraphData(wf)", workflow)


def row(ref: str) -> str:
    return f'#cmcache-panel [data-cmcache-ref="{ref}"]'


def wait_for_percent(page: Page, ref: str, timeout: float = 60) -> str:
    """Wait until the panel's row for ``ref`` shows a percentage below 100; returns it."""
    page.wait_for_function(
        "sel => /^([0-9]|[1-9][0-9])%$/.test(document.querySelector(sel)"
        "?.querySelector('.cmcache-pct')?.textContent || '')",
        arg=row(ref),
        timeout=timeout * 1000,
    )
    return page.inner_text(row(ref) + " .cmcache-pct")


def press_run(page: Page, server: ComfyServer) -> set[str]:
    """Press Run; returns the prompts the history held before."""
    before = set(server.get("/history"))
    with page.expect_response(lambda r: r.url.endswith("/prompt")) as posted:
        page.get_by_role("button", name="Run", exact=True).first.click()
    assert posted.value.status in (200, 400), posted.value.text()
    return before


def finished(server: ComfyServer, before: set[str], timeout: float = 180) -> dict[str, Any]:
    """The history entry of the prompt queued after ``before``, once it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key, entry in server.get("/history").items():
            if key not in before and entry.get("status", {}).get("completed") is not None:
                return dict(entry)
        time.sleep(0.5)
    raise AssertionError(f"the prompt did not finish:\n{server.log.read_text()[-3000:]}")


def test_the_page_loads_with_the_panel(page: Page, server: ComfyServer) -> None:
    page.wait_for_selector("#cmcache-panel", state="attached")
    page.wait_for_function(
        "() => /of|no budget/.test(document.querySelector('#cmcache-panel .cmcache-cache')"
        "?.textContent || '')"
    )
    assert page.locator("#cmcache-notice").count() == 0
    status = server.get("/cmcache/status")
    assert status["downloads"] == [] and "managed_bytes" in status["cache"]


def test_a_model_nothing_can_supply_is_listed_with_why(page: Page) -> None:
    load_workflow(page, upscale_workflow("nowhere.safetensors"))  # declares nothing
    item = '#cmcache-panel [data-cmcache-missing="upscale_models/nowhere.safetensors"]'
    page.wait_for_selector(item)
    assert "no catalog lists it" in page.inner_text(item)
    nothing_lacking = {"nodes": [], "links": [], "groups": [], "config": {}, "extra": {},
                       "version": 0.4, "last_node_id": 0, "last_link_id": 0}
    load_workflow(page, nothing_lacking)
    page.wait_for_selector(item, state="detached")


def test_a_declared_model_is_not_missing_and_run_brings_it_verified(
    page: Page, server: ComfyServer, shell: Cli, origins: tuple[Origin, Origin]
) -> None:
    near, _far = origins
    data = tiny_upscale_model(pad=8 * MiB)
    sha = near.add("wf/tiny-up.bin", data)
    near.fault("wf/tiny-up.bin", rate=MiB)
    declared = {"name": "tiny-up.safetensors", "url": near.url("wf/tiny-up.bin"),
                "directory": "upscale_models", "hash": sha, "hash_type": "SHA256"}
    load_workflow(page, upscale_workflow("tiny-up.safetensors", declared))
    time.sleep(2)  # the page's own missing-model check runs after the load
    body = page.inner_text("body")
    assert "is missing" not in body and "issues found" not in body
    assert near.requests_for("wf/tiny-up.bin") == []  # on demand: nothing fetched yet
    ref = "upscale_models/tiny-up.safetensors"
    before = press_run(page, server)
    shown = wait_for_percent(page, ref)
    page.locator("#cmcache-panel").screenshot(path=str(DOCS / "panel.png"))
    final = server.base / "models" / "upscale_models" / "tiny-up.safetensors"
    wait_for(final.is_file, timeout=120, what="the model on the server")
    assert hashlib.sha256(final.read_bytes()).hexdigest() == sha
    page.wait_for_function(
        "sel => document.querySelector(sel)?.dataset.state === 'placed'", arg=row(ref)
    )
    history = finished(server, before)
    assert history["status"]["status_str"] == "success", history["status"]
    assert shown.endswith("%")


def test_a_pull_in_a_shell_shows_in_the_panel(page: Page, server: ComfyServer, shell: Cli) -> None:
    pulling = shell.popen("pull", "shell.safetensors")
    try:
        wait_for_percent(page, "loras/shell.safetensors")
        assert pulling.wait(timeout=60) == 0
    finally:
        if pulling.poll() is None:
            pulling.kill()
    page.wait_for_function(
        "sel => document.querySelector(sel)?.dataset.state === 'placed'",
        arg=row("loras/shell.safetensors"),
    )


def test_cancel_from_the_panel_removes_the_partial_file(
    page: Page, server: ComfyServer, shell: Cli
) -> None:
    pulling = shell.popen("pull", "big.safetensors")
    try:
        ref = "loras/big.safetensors"
        wait_for_percent(page, ref)
        staging = server.base / "models" / ".cmcache" / "staging"
        assert [p for p in staging.iterdir() if "big.safetensors" in p.name]
        page.locator(row(ref) + " .cmcache-cancel").click()
        assert pulling.wait(timeout=60) == 6  # the shell's pull says it was cancelled
    finally:
        if pulling.poll() is None:
            pulling.kill()
    assert not [p for p in staging.iterdir() if "big.safetensors" in p.name]
    assert not (server.base / "models" / "loras" / "big.safetensors").exists()
    wait_for(lambda: server.get("/cmcache/status")["downloads"] == [], timeout=15, what="it gone")
    page.wait_for_selector(row(ref), state="detached", timeout=15_000)  # the panel lets it go


def test_a_host_outside_download_hosts_is_refused_and_never_asked(
    page: Page, server: ComfyServer, origins: tuple[Origin, Origin]
) -> None:
    _near, far = origins
    far.add("wf/far.bin", tiny_upscale_model())
    declared = {"name": "far-up.safetensors", "url": far.url("wf/far.bin"),
                "directory": "upscale_models"}
    load_workflow(page, upscale_workflow("far-up.safetensors", declared))
    item = '#cmcache-panel [data-cmcache-missing="upscale_models/far-up.safetensors"]'
    page.wait_for_selector(item)
    assert "refused: 127.0.0.2 is a loopback address" in page.inner_text(item)
    page.get_by_text("far-up.safetensors is missing").first.wait_for()  # ComfyUI says so too
    page.locator("#cmcache-panel").screenshot(path=str(DOCS / "panel-unavailable.png"))
    press_run(page, server)  # ComfyUI refuses the prompt: the value is not in its list
    time.sleep(3)
    assert far.log == []
    assert not (server.base / "models" / "upscale_models" / "far-up.safetensors").exists()


def children(pid: int) -> set[int]:
    """Processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.add(int(entry.name))
    return found


def test_an_open_page_with_nothing_downloading_starts_no_process(
    page: Page, server: ComfyServer
) -> None:
    pid = server.process.pid
    wait_for(lambda: not children(pid), timeout=60, what="the last watcher to end")
    started: set[int] = set()
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        started |= children(pid)
        time.sleep(0.05)
    assert started == set()
    assert page.locator("#cmcache-panel").count() == 1


def test_without_cmcache_one_notice_and_comfyui_still_runs(
    browser: Browser, servers: Servers
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        open_comfyui(page, servers.gone)
        page.wait_for_selector("#cmcache-notice")
        load_workflow(page, upscale_workflow("here.safetensors"))
        load_workflow(page, upscale_workflow("here.safetensors"))
        time.sleep(1)
        assert page.locator("#cmcache-notice").count() == 1
        assert page.locator("#cmcache-panel").count() == 0
        assert "cmcache is not working" in page.inner_text("#cmcache-notice")
        history = finished(servers.gone, press_run(page, servers.gone))
        assert history["status"]["status_str"] == "success", history["status"]
    finally:
        page.close()
