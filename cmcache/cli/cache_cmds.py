"""``path``, ``touch``, ``pin``, ``unpin``, ``verify`` and ``scan``: the local cache."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cmcache.cli.app import app, state
from cmcache.cli.common import pull_targets
from cmcache.cli.output import error_item
from cmcache.errors import DownloadError, ExitCode

RefsArg = Annotated[list[str], typer.Argument(help="Models: ref, alias, name or filename.")]


def _targets(refs: list[str]) -> tuple[Any, Any, Any, list[Any]]:
    from cmcache.catalog import load_catalog
    from cmcache.cli.common import open_cache
    from cmcache.pull import resolve_targets

    settings = state().settings()
    store, index = open_cache(settings)
    catalog = load_catalog(settings)
    return store, index, catalog, resolve_targets(catalog, store, refs)


@app.command()
def path(
    ref: Annotated[str, typer.Argument(help="The model.")],
    no_download: Annotated[
        bool, typer.Option("--no-download", help="Fail instead of downloading.")
    ] = False,
) -> None:
    """Print a model's local path, downloading it first if missing; records a use."""
    from cmcache.engine.scheduler import PRIORITIES
    from cmcache.results import PullOptions

    st = state()
    settings = st.settings()
    store, index, _catalog, (target,) = _targets([ref])
    report = pull_targets(
        settings,
        store,
        index,
        [target],
        st.out,
        PullOptions(priority=PRIORITIES["high"]),
        dry_run=no_download,
        show_outcomes=False,  # stdout carries the path alone
    )
    (outcome,) = report.outcomes
    if outcome.outcome == "planned":
        raise DownloadError(
            f"{target.entry.ref} is not present (--no-download)",
            ref=ref,
            hint=f"cmcache pull {target.entry.ref}",
        )
    if outcome.outcome == "failed":  # the progress reporter has printed why
        st.out.finish(
            {"path": str(target.final)},
            exit_code=outcome.code,
            errors=[error_item(ref, outcome.code, outcome.message)],
        )
        return
    st.out.line(str(target.final))
    st.out.finish({"ref": target.entry.ref, "path": str(target.final), "outcome": outcome.outcome})


@app.command()
def touch(refs: RefsArg) -> None:
    """Record a use of models without downloading them."""
    st = state()
    _store, index, _catalog, targets = _targets(refs)
    for target in targets:
        index.record_use(target.entry.folder, target.entry.filename)
        st.out.line(f"touched {target.entry.ref}")
    st.out.finish({"touched": [t.entry.ref for t in targets]})


def _pin(refs: list[str], pin_it: bool) -> None:
    st = state()
    _store, index, _catalog, targets = _targets(refs)
    for target in targets:
        if pin_it:
            index.pin(target.entry.folder, target.entry.filename)
        else:
            index.unpin(target.entry.folder, target.entry.filename)
        st.out.line(f"{'pinned' if pin_it else 'unpinned'} {target.entry.ref}")
    st.out.finish({"pinned" if pin_it else "unpinned": [t.entry.ref for t in targets]})


@app.command()
def pin(refs: RefsArg) -> None:
    """Protect models from pruning."""
    _pin(refs, True)


@app.command()
def unpin(refs: RefsArg) -> None:
    """Let models be pruned again."""
    _pin(refs, False)


@app.command()
def verify(
    refs: Annotated[list[str] | None, typer.Argument(help="Models (default: all managed).")] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Download bad or missing ones again.")] = False,
) -> None:
    """Re-hash managed files against their manifests."""
    from cmcache.catalog import load_catalog
    from cmcache.cli.common import open_cache
    from cmcache.pull import resolve_targets
    from cmcache.results import PullOptions
    from cmcache.upkeep import verify_files

    st = state()
    settings = st.settings()
    store, index = open_cache(settings)
    catalog = load_catalog(settings)
    keys = None
    if refs:
        keys = [(t.entry.folder, t.entry.filename) for t in resolve_targets(catalog, store, refs)]
    checked = verify_files(index, store, catalog, keys)
    for c in checked:
        st.out.line(f"{c.status} {c.ref}")
    bad = [c for c in checked if c.status != "ok"]
    fixed: list[str] = []
    if fix and bad:
        targets = resolve_targets(catalog, store, [c.ref for c in bad if catalog.get(c.ref)])
        report = pull_targets(settings, store, index, targets, st.out, PullOptions(), force=True)
        fixed = [o.target.entry.ref for o in report.outcomes if o.outcome == "downloaded"]
    left = [c for c in bad if c.ref not in fixed]
    errors = [error_item(c.ref, ExitCode.INTEGRITY, f"{c.ref}: {c.status}") for c in left]
    summary = f"verified {len(checked)}: {len(checked) - len(bad)} ok, {len(bad)} bad or missing"
    st.out.info(summary + (f", {len(fixed)} fixed" if fix else ""))
    st.out.finish(
        {
            "checked": [
                {"ref": c.ref, "status": c.status, "expected": c.expected, "actual": c.actual}
                for c in checked
            ],
            "fixed": fixed,
        },
        errors=errors,
        exit_code=ExitCode.INTEGRITY if left else 0,
        partial=bool(fixed),
    )


@app.command()
def scan() -> None:
    """Adopt files already under root that match catalog entries."""
    from cmcache.catalog import load_catalog
    from cmcache.cli.common import open_cache
    from cmcache.upkeep import scan as run_scan

    st = state()
    settings = st.settings()
    store, index = open_cache(settings)
    found = run_scan(index, store, load_catalog(settings))
    for item in found:
        if item.adopted:
            st.out.line(f"adopted {item.ref}")
        else:
            st.out.warn(f"{item.ref}: not adopted: {item.reason}")
    adopted = [f.ref for f in found if f.adopted]
    st.out.info(f"adopted {len(adopted)} files")
    st.out.finish(
        {
            "adopted": adopted,
            "skipped": [{"ref": f.ref, "reason": f.reason} for f in found if not f.adopted],
        }
    )
