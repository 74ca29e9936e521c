"""Resolve what ComfyUI workflows need into pull targets; report what nothing can supply."""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.core.errors import ManifestError
from cmcache.core.manifest.entry import Entry
from cmcache.core.manifest.safety import location_problem, model_url_problem
from cmcache.core.states import PullOutcome
from cmcache.core.urls import redact
from cmcache.core.workflow import Declared, Needs, read_workflow

if TYPE_CHECKING:
    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.catalog import Catalog
    from cmcache.core.hosts import HostPolicy
    from cmcache.core.settings.model import Settings
    from cmcache.core.targets import Target

WORKFLOW_SOURCE = "workflow"


@dataclass(frozen=True)
class Unknown:
    """A model a workflow names that no catalog and no declaration can supply; ``refused``
    when the workflow declares it but cmcache will not fetch it (a host not allowed, an unsafe
    name, a hash it cannot verify)."""

    workflow: str
    folder: str
    filename: str
    reason: str
    sha256: str | None = None  # the workflow's declared hash, when it gives one
    candidates: tuple[str, ...] = ()  # what `--find` found when it is not one file
    refused: bool = False

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"

    @property
    def outcome(self) -> PullOutcome:
        """``unknown`` or ``refused``."""
        return PullOutcome.REFUSED if self.refused else PullOutcome.UNKNOWN


@dataclass(frozen=True)
class WorkflowPlan:
    """The targets that workflows need, and what cannot be supplied."""

    targets: tuple[Target, ...]
    unknown: tuple[Unknown, ...]


def workflow_files(settings: Settings) -> list[Path]:
    """The files ``[prefetch] workflows`` matches (patterns relative to the config's folder)."""
    base = settings.paths.config_file.parent
    files: list[Path] = []
    for pattern in settings.prefetch.workflows:
        expanded = Path(pattern).expanduser()
        pattern_path = expanded if expanded.is_absolute() else base / expanded
        found = sorted(glob.glob(str(pattern_path)))  # noqa: PTH207 - a user's absolute glob
        files += [Path(f) for f in found]
    return files


def plan_workflows(
    catalog: Catalog, store: ModelStore, workflows: list[tuple[str, bytes]], *, policy: HostPolicy
) -> WorkflowPlan:
    """Targets for every model the workflows (label, JSON bytes) name or declare. A declared
    model no catalog lists is fetched from its URL only when ``policy`` allows the URL's host.

    Raises:
        ManifestError: a workflow is not JSON or not a workflow.
    """
    entries: dict[str, Entry] = {}
    unknown: dict[str, Unknown] = {}
    for label, data in workflows:
        needs = read_workflow_bytes(label, data)
        declared = {(d.folder, _posix(d.name)): d for d in needs.declared}
        for d in needs.declared:
            _take(catalog, policy, label, d.folder, d.name, d, entries, unknown)
        for folder, name in needs.named:
            found = declared.get((folder, _posix(name)))
            _take(catalog, policy, label, folder, name, found, entries, unknown)
    targets = tuple(store.target(e) for e in entries.values())
    return WorkflowPlan(targets, tuple(u for ref, u in unknown.items() if ref not in entries))


def read_workflow_bytes(label: str, data: bytes) -> Needs:
    """What one workflow file needs.

    Raises:
        ManifestError: it is not JSON or not a workflow.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{label}: not a JSON workflow: {exc}") from None
    return read_workflow(doc, label)


def _posix(name: str) -> str:
    """Widgets saved on Windows name subfolders with a backslash."""
    return name.replace("\\", "/")


def declaration_problem(
    folder: str, filename: str, declared: Declared, policy: HostPolicy
) -> str | None:
    """Why a workflow's declaration of ``folder/filename`` is not fetched (None: it may be): an
    unsafe place, a URL that is no model link, a host not allowed, an untrustworthy hash."""
    return (
        location_problem(folder, filename)
        or model_url_problem(declared.url)
        or policy.refusal(declared.url)
        or declared.problem
    )


def _take(
    catalog: Catalog,
    policy: HostPolicy,
    label: str,
    folder: str,
    name: str,
    declared: Declared | None,
    entries: dict[str, Entry],
    unknown: dict[str, Unknown],
) -> None:
    """Add the catalog entry for ``folder/name``, else the workflow's own declaration."""
    filename = _posix(name)
    ref = f"{folder}/{filename}"
    if ref in entries:
        return
    entry = catalog.get(ref)
    if entry is None and declared is not None:
        problem = declaration_problem(folder, filename, declared, policy)
        if problem:
            reason = problem if problem.startswith("refused") else f"refused: {problem}"
            reason = reason.replace(declared.url, redact(declared.url))
            unknown[ref] = Unknown(
                label, folder, filename, reason, declared.sha256, refused=True
            )
            return
        entry = Entry(
            folder, filename, (declared.url,), sha256=declared.sha256, source=WORKFLOW_SOURCE
        )
    if entry is None:
        reason = "no catalog lists it and the workflow declares no URL for it"
        unknown.setdefault(ref, Unknown(label, folder, filename, reason))
        return
    entries[ref] = entry
