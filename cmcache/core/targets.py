"""What a pull works on (targets, options) and reports (outcomes, progress). No engine imports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from cmcache.core.manifest.entry import Entry
    from cmcache.core.states import ProgressState, PullOutcome


@dataclass(frozen=True)
class Target:
    """One model to bring to its final path."""

    entry: Entry
    final: Path
    staging: Path
    archive: bool = False  # a bundle's archive: verified and kept for unpacking, not managed
    # A bundle's archive (not a repository's file, also an ``archive``): in a cluster one node at
    # a time fetches it from its origin; the others take its members from that node.
    bundle_archive: bool = False

    @property
    def ref(self) -> str:
        """The model's canonical ref."""
        return self.entry.ref

    @property
    def control(self) -> Path:
        """aria2's control file beside the staging file."""
        return control_file(self.staging)


@dataclass(frozen=True)
class PullOptions:
    """How to download."""

    priority: int = 0
    concurrent: int | None = None
    split: int | None = None
    max_speed: int = 0
    detach: bool = False
    force: bool = False  # download even when a verified copy is in place
    count_use: bool = True  # False for prefetch: a model fetched ahead is not used yet


@dataclass(frozen=True)
class Outcome:
    """What happened to one target."""

    target: Target
    outcome: PullOutcome
    bytes: int = 0
    seconds: float = 0.0
    sha256: str | None = None
    code: int = 0
    message: str = ""
    external: Path | None = None  # found in an extra model path (not managed, not under root)
    via: str = "origin"  # where the bytes came from: origin or peer

    @property
    def path(self) -> Path:
        """Where the model is (or will be)."""
        return self.external or self.target.final


@dataclass(frozen=True)
class Progress:
    """A moment in one download, for progress bars."""

    ref: str
    state: ProgressState
    done: int
    total: int
    speed: int


def _ignore(_value: object) -> None:
    return None


@dataclass(frozen=True)
class PullHooks:
    """How a pull reports as it goes; the CLI wires these to the terminal."""

    on_progress: Callable[[list[Progress]], None] = _ignore
    on_note: Callable[[str], None] = _ignore
    on_outcome: Callable[[Outcome], None] = _ignore


def control_file(staging: Path) -> Path:
    """aria2's control file for a download into ``staging``: there until the last byte is."""
    return staging.with_name(staging.name + ".aria2")
