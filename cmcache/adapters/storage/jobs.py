"""Queued downloads in the index: a job per download handed to aria2 and not yet placed.

Part of ``Index`` (``index.py`` opens the database; this module never imports sqlite3). Every
change is appended to the queue log too, for watchers that read one file's size.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from cmcache.adapters.storage.queue_log import QueueLog

JOBS_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    gid TEXT NOT NULL, rpc TEXT NOT NULL, folder TEXT NOT NULL, filename TEXT NOT NULL,
    staging TEXT NOT NULL, priority INTEGER NOT NULL, seq INTEGER NOT NULL,
    sha256 TEXT, size INTEGER, source TEXT NOT NULL DEFAULT '', url TEXT NOT NULL DEFAULT '',
    preempted INTEGER NOT NULL DEFAULT 0, owner_pid INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, etag TEXT NOT NULL DEFAULT '', last_modified TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (folder, filename)
);
"""


@dataclass(frozen=True)
class Job:
    """A download handed to aria2 and not yet placed."""

    gid: str
    rpc: str
    folder: str
    filename: str
    staging: str
    priority: int
    seq: int
    sha256: str | None
    size: int | None
    source: str = ""
    url: str = ""
    preempted: bool = False
    owner_pid: int = 0
    created: float = 0.0
    etag: str = ""  # the origin's validators when the download started: a resume of
    last_modified: str = ""  # changed bytes would mix two versions

    @property
    def ref(self) -> str:
        """``folder/filename``."""
        return f"{self.folder}/{self.filename}"


class JobTable:
    """Jobs: added when aria2 takes a download, dropped when it is placed, fails or goes."""

    _db: Any
    queue_log: QueueLog

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def add_job(self, job: Job) -> None:
        """Remember a download handed to aria2 (replacing an older one for the same target)."""
        row = {**asdict(job), "created": job.created or time.time()}
        with self._tx() as db:
            db.execute(f"INSERT OR REPLACE INTO jobs {insert_columns(Job)}", row)
        self.queue_log.append(job.ref, "queued")

    def next_seq(self) -> int:
        """A number that orders jobs by arrival."""
        row = self._db.execute("SELECT coalesce(max(seq), 0) + 1 AS n FROM jobs").fetchone()
        return int(row["n"])

    def jobs(self) -> list[Job]:
        """Every known job, highest priority first, then by arrival."""
        rows = self._db.execute("SELECT * FROM jobs ORDER BY priority DESC, seq")
        return [_job(r) for r in rows]

    def job_for(self, folder: str, filename: str) -> Job | None:
        """The job of one target."""
        row = self._db.execute(
            "SELECT * FROM jobs WHERE folder = ? AND filename = ?", (folder, filename)
        ).fetchone()
        return _job(row) if row else None

    def set_preempted(self, gid: str, preempted: bool) -> None:
        """Mark a job paused by a higher-priority one (or released)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET preempted = ? WHERE gid = ?", (int(preempted), gid))
        if not preempted:
            self.queue_log.append("", "resumed")

    def forget_job(self, folder: str, filename: str, *, ended: str = "", reason: str = "") -> None:
        """Drop a job; ``ended`` (placed, failed, cancelled, lost) and ``reason`` go to the
        queue log for whoever shows the queue."""
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE folder = ? AND filename = ?", (folder, filename))
        if ended:
            self.queue_log.append(f"{folder}/{filename}", ended, reason)


def insert_columns(kind: type[Any]) -> str:
    """``(a, b) VALUES (:a, :b)`` for a record's fields, in the table's own names."""
    names = [f.name for f in fields(kind)]
    return f"({', '.join(names)}) VALUES ({', '.join(':' + n for n in names)})"


def _job(row: Any) -> Job:
    job = Job(**{f.name: row[f.name] for f in fields(Job)})
    return job if isinstance(job.preempted, bool) else replace(job, preempted=bool(job.preempted))
