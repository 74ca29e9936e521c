"""Development sessions: tests, lint, typecheck, completions, bench."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
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


@nox.session(default=False)
def completions(session: nox.Session) -> None:
    """Regenerate completions/ from the app (a test fails when they drift)."""
    install_project(session)
    for shell in SHELLS:
        script = session.run("cmcache", "--show-completion", shell, silent=True)
        assert isinstance(script, str)
        Path("completions", f"cmcache.{shell}").write_text(script)
