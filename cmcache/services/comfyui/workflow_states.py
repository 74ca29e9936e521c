"""What a workflow opened in ComfyUI needs, model by model, and the list ``workflow``.

Each model a workflow names or declares gets a state: ``present`` (on disk, in root or an extra
model path), ``on-demand`` (a catalog lists it, or the workflow declares it from an allowed host:
it arrives when loaded), ``unknown`` (nothing can supply it) or ``refused`` (declared, but from a
host outside ``[comfyui] download_hosts``, or under an unsafe name or URL). Declared models that
are allowed become entries of the list ``workflow`` (source ``workflow``), so the node's
dropdowns and ComfyUI's validation accept them at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cmcache.core.errors import ManifestError
from cmcache.core.manifest.safety import location_problem
from cmcache.core.states import LocalState
from cmcache.core.urls import redact
from cmcache.core.workflow import read_workflow
from cmcache.services.comfyui.workflow import WORKFLOW_SOURCE, declaration_problem
from cmcache.services.sources.catalog import extra_paths, load_catalog, workflow_list

if TYPE_CHECKING:
    from cmcache.core.settings.model import Settings
    from cmcache.core.workflow import Declared

PRESENT, ON_DEMAND, UNKNOWN, REFUSED = "present", "on-demand", "unknown", "refused"
NOTHING_SUPPLIES = "no catalog lists it and the workflow declares no URL for it"


@dataclass(frozen=True)
class ModelState:
    """One model of a workflow and whether it can be had."""

    folder: str
    filename: str
    state: str
    reason: str = ""
    url: str = ""  # the declared URL, without credentials
    source: str = ""  # the list that supplies it

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"


@dataclass(frozen=True)
class WorkflowReport:
    """Every model of the workflows, and how many declarations the list ``workflow`` took."""

    models: tuple[ModelState, ...]
    registered: int

    @property
    def missing(self) -> tuple[ModelState, ...]:
        """Models nothing can supply."""
        return tuple(m for m in self.models if m.state in (UNKNOWN, REFUSED))


def workflow_documents(label: str, data: bytes) -> list[tuple[str, Any]]:
    """The workflows in one JSON document: a UI- or API-format workflow, or the body the page
    posts to ComfyUI's ``/prompt`` (its ``prompt`` and ``extra_data.extra_pnginfo.workflow``).

    Raises:
        ManifestError: not JSON.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"{label}: not a JSON workflow: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("prompt"), dict):
        docs = [(f"{label} (prompt)", doc["prompt"])]
        extra = doc.get("extra_data")
        info = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
        flow = info.get("workflow") if isinstance(info, dict) else None
        if isinstance(flow, dict):
            docs.append((f"{label} (workflow)", flow))
        return docs
    return [(label, doc)]


def check_workflows(
    settings: Settings, workflows: list[tuple[str, bytes]], *, register: bool = True
) -> WorkflowReport:
    """Every model the workflows name or declare, with its state; allowed declarations are
    added to the list ``workflow`` unless ``register`` is False.

    Raises:
        ManifestError: a document is not JSON or not a workflow.
    """
    wanted: dict[str, tuple[str, str, Declared | None]] = {}
    for label, data in workflows:
        for sub_label, doc in workflow_documents(label, data):
            needs = read_workflow(doc, sub_label)
            for d in needs.declared:
                wanted[f"{d.folder}/{_posix(d.name)}"] = (d.folder, _posix(d.name), d)
            for folder, name in needs.named:
                wanted.setdefault(f"{folder}/{_posix(name)}", (folder, _posix(name), None))
    catalog = load_catalog(settings)
    policy = settings.download_policy()
    present = _presence(settings, [(f, n) for f, n, _d in wanted.values()])
    states: list[ModelState] = []
    registering: list[dict[str, Any]] = []
    for ref, (folder, filename, declared) in wanted.items():
        entry = catalog.get(ref)
        here = present.get(ref, False)
        if entry is not None and (declared is None or entry.source != WORKFLOW_SOURCE):
            state = PRESENT if here else ON_DEMAND
            states.append(ModelState(folder, filename, state, source=entry.source))
            continue
        if declared is None:
            problem = location_problem(folder, filename)
            state = PRESENT if here else (REFUSED if problem else UNKNOWN)
            why = "" if here else problem or NOTHING_SUPPLIES
            states.append(ModelState(folder, filename, state, why))
            continue
        url = redact(declared.url)
        problem = declaration_problem(folder, filename, declared, policy)
        if problem:
            why = "" if here else problem.replace(declared.url, url)  # never a token shown
            states.append(ModelState(folder, filename, PRESENT if here else REFUSED, why, url))
            continue
        registering.append(_declaration(folder, filename, declared))
        state = PRESENT if here else ON_DEMAND
        states.append(ModelState(folder, filename, state, "", url, WORKFLOW_SOURCE))
    registered = workflow_list(settings).merge(registering) if register and registering else 0
    return WorkflowReport(tuple(states), registered)


def _posix(name: str) -> str:
    """Widgets saved on Windows name subfolders with a backslash."""
    return name.replace("\\", "/")


def _declaration(folder: str, filename: str, declared: Declared) -> dict[str, Any]:
    model: dict[str, Any] = {"folder": folder, "filename": filename, "url": declared.url}
    if declared.sha256:
        model["sha256"] = declared.sha256
    return model


def _presence(settings: Settings, locations: list[tuple[str, str]]) -> dict[str, bool]:
    """Which models are on disk: in root, or where an extra model path points."""
    from cmcache.adapters.storage.model_store import ModelStore

    safe = [(f, n) for f, n in locations if location_problem(f, n) is None]
    on_disk = ModelStore(settings.cache.root).states(safe)
    extra = extra_paths(settings)
    return {
        f"{f}/{n}": on_disk[f, n] == LocalState.CACHED or extra.find(f, n) is not None
        for f, n in safe
    }
