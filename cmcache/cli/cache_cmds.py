"""``path``, ``touch``, ``pin`` and ``unpin``: using the local cache."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from cmcache.cli.app import app, state
from cmcache.cli.common import pull_with_progress
from cmcache.cli.output import error_item
from cmcache.core.errors import CmcacheError, DownloadError

RefsArg = Annotated[
    list[str], typer.Argument(metavar="REF…", help="Models: ref, alias, name or filename.")
]


@app.command()
def path(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The model (a ref, link or hf: ref).")],
    no_download: Annotated[
        bool, typer.Option("--no-download", help="Fail instead of downloading.")
    ] = False,
    folder: Annotated[
        str | None,
        typer.Option("--folder", metavar="FOLDER", help="Folder for a link or an hf: ref."),
    ] = None,
) -> None:
    """Print a model's local path, downloading it first if missing; records a use."""
    from cmcache.core.planning.queue import PRIORITIES
    from cmcache.core.states import PullOutcome
    from cmcache.core.targets import PullOptions
    from cmcache.services.cache.store import open_cache_for_reading
    from cmcache.services.pull.run import resolve_refs

    st = state()
    settings = st.settings()
    # A bundle member brings its archive (all members; only to look, the member alone will do);
    # a link or a ref not remembered asks its source.
    targets = resolve_refs(
        settings, [ref], folder, siblings=not no_download, on_note=st.out.warn
    )
    target = targets[0]
    with open_cache_for_reading(settings) as cache:
        report = pull_with_progress(
            settings,
            cache,
            targets,
            st.out,
            PullOptions(priority=PRIORITIES["high"]),
            dry_run=no_download,
            show_outcomes=False,  # stdout carries the path alone
            lookup="path",
        )
    outcome = report.outcomes[0]
    if outcome.outcome == PullOutcome.PLANNED:
        raise DownloadError(
            f"{target.ref} is not present (--no-download)",
            ref=ref,
            hint=f"cmcache pull {target.ref}",
        )
    if outcome.outcome == PullOutcome.FAILED:  # the progress reporter has printed why
        st.out.finish(
            {"path": str(target.final)},
            exit_code=outcome.code,
            errors=[error_item(ref, outcome.code, outcome.message)],
        )
        return
    st.out.line(str(outcome.path))
    st.out.finish({"ref": target.ref, "path": str(outcome.path), "outcome": str(outcome.outcome)})


@app.command()
def touch(
    refs: RefsArg,
    prefetch: Annotated[
        bool,
        typer.Option(
            "--prefetch",
            help="Then, with [prefetch] predict = true, once per workflow begun just now (by"
            " these uses or a pull just before): prefetch, which fetches what it makes likely"
            " next.",
        ),
    ] = False,
) -> None:
    """Record a use of models (downloading nothing, unless --prefetch finds work begun)."""
    from cmcache.cli.prefetch_cmd import Done, prefetch_now
    from cmcache.services.cache.usage import release_launch, touch_models

    st = state()
    settings = st.settings()
    claim = prefetch and settings.prefetch.predict
    touched, began = touch_models(settings, refs, claim=claim)
    for ref in touched:
        st.out.line(f"touched {ref}")
    if not prefetch:
        st.out.finish({"touched": touched})
        return
    if began is None:  # no workflow begun just now, or prediction off: nothing new to plan
        st.out.finish({"touched": touched, "prefetch": None})
        return
    try:
        done = prefetch_now(st, dry_run=False)
    except CmcacheError as exc:  # it could not start (no engine, a bad catalog)
        st.out.error(exc.message, exc.hint)
        error = error_item(exc.ref, exc.exit_code, exc.message)
        done = Done({}, [error], exc.exit_code, ran=False)
    if not done.ran:  # the launch's next batch may try again
        with contextlib.suppress(CmcacheError):
            release_launch(settings, began)
    st.out.finish(
        {"touched": touched, "prefetch": done.data or None},
        errors=done.errors,
        exit_code=done.exit_code,
        partial=True,  # the uses are recorded whatever the prefetch did
    )


def _pin(refs: list[str], pin_it: bool) -> None:
    from cmcache.services.cache.usage import pin_models

    st = state()
    done = pin_models(st.settings(), refs, pin=pin_it)
    verb = "pinned" if pin_it else "unpinned"
    for ref in done:
        st.out.line(f"{verb} {ref}")
    st.out.finish({verb: done})


@app.command()
def pin(refs: RefsArg) -> None:
    """Protect models from pruning."""
    _pin(refs, True)


@app.command()
def unpin(refs: RefsArg) -> None:
    """Let models be pruned again."""
    _pin(refs, False)
