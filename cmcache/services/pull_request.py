"""What one ``pull`` asks for (refs, workflows, where links go), resolved into targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.services.pull import resolve_targets

if TYPE_CHECKING:
    from collections.abc import Callable

    from cmcache.core.settings.model import Settings
    from cmcache.core.targets import Target
    from cmcache.services.workflow import Unknown


@dataclass(frozen=True)
class PullRequest:
    """What one ``pull`` asks for."""

    refs: list[str]
    workflows: list[tuple[str, bytes]]
    folder: str | None = None
    name: str | None = None
    find: bool = False  # look for a workflow's unknown models on Civitai


def pull_request(
    settings: Settings, request: PullRequest, on_note: Callable[[str], None] | None = None
) -> tuple[list[Target], tuple[Unknown, ...]]:
    """Targets for refs and for what workflows need (unique), and the workflow models that
    nothing can supply. Unknown refs raise; unknown workflow models are reported (with
    ``find``, one Civitai has a single exact file for is pulled from there)."""
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.services.catalog import load_catalog
    from cmcache.services.sources import Sources
    from cmcache.services.workflow import plan_workflows

    catalog, store = load_catalog(settings), ModelStore(settings.cache.root)  # once for both
    sources = Sources(settings, on_note=on_note)
    try:
        targets = []
        if request.refs:
            targets = resolve_targets(
                catalog,
                store,
                request.refs,
                request.folder,
                siblings=True,
                sources=sources,
                name=request.name,
                endpoints=settings.endpoints,
            )
        unknown: tuple[Unknown, ...] = ()
        if request.workflows:
            plan = plan_workflows(catalog, store, request.workflows)
            targets += plan.targets
            unknown = plan.unknown
            if request.find and unknown:
                from cmcache.services.find import find_unknown

                found, unknown = find_unknown(sources, store, unknown)
                targets += found
    finally:
        sources.close()
    return list({t.ref: t for t in targets}.values()), unknown
