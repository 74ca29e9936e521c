"""Development sessions: tests, lint, typecheck, completions, bench."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True

PYPROJECT = nox.project.load_toml("pyproject.toml")
SHELLS = ("bash", "zsh", "fish")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against a real aria2c and a loopback origin."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting rules."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks beside aria2c and curl; writes bench.json (`-- --quick` for a taste)."""
    session.install("-e", ".")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(default=False)
def completions(session: nox.Session) -> None:
    """Regenerate completions/ from the app (a test fails when they drift)."""
    session.install("-e", ".")
    for shell in SHELLS:
        script = session.run("cmcache", "--show-completion", shell, silent=True)
        assert isinstance(script, str)
        Path("completions", f"cmcache.{shell}").write_text(script)
