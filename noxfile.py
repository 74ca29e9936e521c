"""Development sessions: tests, lint, typecheck, browser, completions, bench."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
# uv makes each session's venv in seconds (pip took minutes on a loaded 2-core machine); plain
# venv + pip where uv is not installed (`pip install 'nox[uv]'` brings it).
nox.options.default_venv_backend = "uv|venv"
# uv skips byte-compiling by default (pip does it); where PYTHONDONTWRITEBYTECODE is set, every
# cmcache process would then compile its imports from source: twice the suite's CPU, measured.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
SHELLS = ("bash", "zsh", "fish")


def install_project(session: nox.Session, *groups: str) -> None:
    """A plain (not editable) install of the package, as users get it, plus dependency groups.

    Tests import the installed copy, never the checkout (tests/conftest.py checks it), so a file
    missing from the package fails them.
    """
    extras = [pkg for group in groups for pkg in nox.project.dependency_groups(PYPROJECT, group)]
    session.install("--force-reinstall", "--no-deps", ".")
    session.install(".", *extras)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against a real aria2c and a loopback origin."""
    install_project(session, "test")
    # Most tests wait on rate-limited loopback origins, not the CPU: four workers fill 2 cores.
    # Several tests race real processes against timers; on a loaded 2-core machine one may
    # lose a race, so a failure is run once more before it counts (pytest reports each rerun).
    session.run("pytest", "-n", "4", "--reruns", "1", *session.posargs)


# ComfyUI 0.7.0 for the browser tests: the tree and its pinned environment, beside the checkout.
COMFYUI_TREE = Path(
    os.environ.get("CMCACHE_COMFYUI_TREE")
    or Path(__file__).resolve().parent.parent / "shared" / "comfyui-0.7.0"
)


def comfyui_venv(session: nox.Session) -> Path | None:
    """ComfyUI's own venv (its requirements-lock.txt, about 6.7 GB), built once per lock file in
    the user's cache and reused while complete; $CMCACHE_COMFYUI_VENV names one instead."""
    named = os.environ.get("CMCACHE_COMFYUI_VENV")
    if named:
        return Path(named)
    lock = COMFYUI_TREE / "requirements-lock.txt"
    if not lock.is_file():
        return None  # the tests say what is missing (and fail in CI)
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = cache / "cmcache" / f"comfyui-venv-{digest}"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time: `ci` starts `nox -s comfyui_venv_build` beside the tests, and the
    # browser session waits here for it rather than building a second copy.
    with (venv.parent / f"{venv.name}.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if not (venv / "complete").is_file():
            build_comfyui_venv(session, lock, venv)
    session.log(f"ComfyUI's venv: {venv}")
    return venv


def build_comfyui_venv(session: nox.Session, lock: Path, venv: Path) -> None:
    """Install ComfyUI's lock into a new venv at `venv`, marked complete only at the end."""
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv:  # parallel downloads: about 1.5 min for the lock's 6.7 GB instead of 2 or more
        session.run(uv, "venv", "--quiet", str(venv), external=True)
        install = [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
        session.run(*install, "-r", str(lock), external=True)
    else:
        session.run("python3", "-m", "venv", str(venv), external=True)
        # The lock pins every version; a machine-wide pip constraint must not move them.
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(lock)]
        session.run(*pip, external=True, env={"PIP_CONSTRAINT": os.devnull})
    (venv / "complete").write_text("")
    session.log(f"ComfyUI's venv installed in {time.monotonic() - started:.0f} s")


@nox.session(venv_backend="none", default=False)
def comfyui_venv_build(session: nox.Session) -> None:
    """Build ComfyUI's venv for the browser tests ahead of them (`ci` runs it beside the rest)."""
    comfyui_venv(session)


@nox.session(venv_backend="none", default=False)
def ci(session: nox.Session) -> None:
    """What CI runs: lint, typecheck, tests and browser, while ComfyUI's venv (about 6.7 GB,
    when not cached) downloads beside them; `browser` waits for it on its file lock."""
    log = Path(".nox", "comfyui-venv.log")
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        subprocess.Popen(
            [sys.executable, "-m", "nox", "-s", "comfyui_venv_build"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    session.log(f"building ComfyUI's venv in the background (log: {log})")
    for name in ("lint", "typecheck", "tests", "browser"):
        session.notify(name)


@nox.session(default=False)
def browser(session: nox.Session) -> None:
    """ComfyUI 0.7.0 with the node, driven in Debian's chromium through Playwright."""
    install_project(session, "test", "browser")
    venv = comfyui_venv(session)
    env = {"CMCACHE_BROWSER_TESTS": "1", "CMCACHE_COMFYUI_VENV": str(venv) if venv else ""}
    session.run("pytest", "tests/browser", *session.posargs, env=env)


@nox.session(default=False)
def page_costs(session: nox.Session) -> None:
    """What the node and its extension cost ComfyUI: page load, idle CPU (page_costs.json)."""
    install_project(session, "test", "browser")
    venv = comfyui_venv(session)
    env = {"CMCACHE_COMFYUI_VENV": str(venv) if venv else ""}
    session.run("python", "benchmarks/comfyui_page.py", *session.posargs, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff, and the layer contracts (import-linter) over the installed package."""
    install_project(session, "lint")
    session.run("ruff", "check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    install_project(session, "typecheck")
    session.run("mypy")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks beside aria2c and curl; writes bench.json (`-- --quick` for a taste)."""
    install_project(session, "bench")
    session.run("python", "benchmarks/bench.py", *session.posargs)


# Typer takes the shell named after --show-completion only when it is told not to detect the
# one it runs under (else every file is the detected shell's script).
NAMED_SHELL = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}


@nox.session(default=False)
def completions(session: nox.Session) -> None:
    """Regenerate completions/ from the app (a test fails when they drift)."""
    install_project(session)
    for shell in SHELLS:
        script = session.run(
            "cmcache", "--show-completion", shell, silent=True, env=NAMED_SHELL
        )
        assert isinstance(script, str)
        Path("completions", f"cmcache.{shell}").write_text(script)
