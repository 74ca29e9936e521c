"""Plain results shared by the pull services and the CLI (no engine imports: they stay light)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from cmcache.manifest import Entry


@dataclass(frozen=True)
class Target:
    """One model to bring to its final path."""

    entry: Entry
    final: Path
    staging: Path

    @property
    def control(self) -> Path:
        """aria2's control file beside the staging file."""
        return self.staging.with_name(self.staging.name + ".aria2")


@dataclass(frozen=True)
class PullOptions:
    """How to download."""

    priority: int = 0
    concurrent: int | None = None
    split: int | None = None
    max_speed: int = 0
    detach: bool = False
    force: bool = False  # download even when a verified copy is in place


@dataclass(frozen=True)
class Outcome:
    """What happened to one target."""

    target: Target
    outcome: str  # downloaded | cached | queued | failed
    bytes: int = 0
    seconds: float = 0.0
    sha256: str | None = None
    code: int = 0
    message: str = ""


@dataclass(frozen=True)
class Progress:
    """A moment in one download, for progress bars."""

    ref: str
    state: str  # waiting | downloading | paused | verifying | done | failed | locked
    done: int
    total: int
    speed: int
