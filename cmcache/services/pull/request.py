"""What one ``pull`` asks for (refs, workflows, where links go), resolved into targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmcache.core.errors import UsageError
from cmcache.core.hosts import host_problem
from cmcache.services.pull.run import resolve_targets

if TYPE_CHECKING:
    from collections.abc import Callable

    from cmcache.core.settings.model import Settings
    from cmcache.core.targets import Target
    from cmcache.services.comfyui.workflow import Unknown


@dataclass(frozen=True)
class PullRequest:
    """What one ``pull`` asks for."""

    refs: list[str]
    workflows: list[tuple[str, bytes]]
    folder: str | None = None
    name: str | None = None
    find: bool = False  # look for a workflow's unknown models on Civitai
    allow_hosts: tuple[str, ...] = ()  # more hosts a workflow's declared URLs may use


def pull_request(
    settings: Settings, request: PullRequest, on_note: Callable[[str], None] | None = None
) -> tuple[list[Target], tuple[Unknown, ...]]:
    """Targets for refs and for what workflows need (unique), and the workflow models that
    nothing can supply or that are refused (a declared URL whose host is not allowed, an
    unsafe name, a hash that cannot be verified). Unknown refs raise; unknown workflow models
    are reported (with ``find``, one Civitai has a single exact file for is pulled from there).

    Raises:
        RefError: unknown or ambiguous refs.
        UsageError: a link without a folder, or an allowed host that is not a host name.
        ManifestError: a workflow is not JSON or not a workflow.
    """
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.services.comfyui.workflow import plan_workflows
    from cmcache.services.sources.catalog import load_catalog
    from cmcache.services.sources.refs import Sources

    for host in request.allow_hosts:
        problem = host_problem(host)
        if problem:
            raise UsageError(f"--allow-host {host!r} {problem}")
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
            policy = settings.download_policy(request.allow_hosts)
            plan = plan_workflows(catalog, store, request.workflows, policy=policy)
            targets += plan.targets
            unknown = plan.unknown
            refused = tuple(u for u in unknown if u.refused)
            if request.find and len(refused) < len(unknown):  # refused ones stay refused
                from cmcache.services.sources.find import find_unknown

                found, unknown = find_unknown(
                    sources, store, tuple(u for u in unknown if not u.refused)
                )
                targets += found
                unknown += refused
    finally:
        sources.close()
    return list({t.ref: t for t in targets}.values()), unknown
