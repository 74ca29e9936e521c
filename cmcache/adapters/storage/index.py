"""The index at ``<root>/.cmcache/index.sqlite3``: managed files, uses (``uses.py``), pins,
counters and queued downloads (``jobs.py``).

This is the only module that talks to sqlite3. WAL mode and a busy timeout let several cmcache
processes share it; every write is its own short transaction. Every change to the download
queue is also appended to ``queue.log`` beside it (see ``QueueLog``), so a watcher (the ComfyUI
node) learns of downloads by looking at one file's size, without a process or a query.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple

from cmcache.adapters.storage.jobs import JOBS_SCHEMA, JobTable, insert_columns
from cmcache.adapters.storage.queue_log import QUEUE_LOG, QueueLog
from cmcache.adapters.storage.uses import USES_SCHEMA, UseLog
from cmcache.core.errors import CacheError, DiskFullError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

SCHEMA_VERSION = 6
FAILED_CHECK = -1  # a record's mtime_ns once its file failed a check: no fingerprint matches it
FULL_BELOW = 1 << 20  # "disk I/O error" with less free than this is a full disk
_MANAGED = (
    "SELECT f.folder, f.filename, f.size, coalesce(u.last_used, f.added), "
    "p.folder IS NOT NULL, j.folder IS NOT NULL, f.inode FROM files f "
    "LEFT JOIN usage u USING (folder, filename) LEFT JOIN pins p USING (folder, filename) "
    "LEFT JOIN jobs j USING (folder, filename) WHERE f.removing = 0"
)

_FILES = (  # FileRecord's fields, in order
    "SELECT folder, filename, size, sha256, mtime_ns, inode, source, url, added FROM files "
    "ORDER BY folder, filename"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    folder TEXT NOT NULL, filename TEXT NOT NULL,
    size INTEGER NOT NULL, sha256 TEXT, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT '', url TEXT NOT NULL DEFAULT '', added REAL NOT NULL,
    removing INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (folder, filename)
);
CREATE TABLE IF NOT EXISTS pins (
    folder TEXT NOT NULL, filename TEXT NOT NULL, PRIMARY KEY (folder, filename)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL, labels TEXT NOT NULL DEFAULT '', value REAL NOT NULL,
    PRIMARY KEY (name, labels)
);
CREATE TABLE IF NOT EXISTS resolutions (
    key TEXT PRIMARY KEY, value TEXT NOT NULL, at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class FileRecord:
    """A managed file as the index knows it."""

    folder: str
    filename: str
    size: int
    sha256: str | None
    mtime_ns: int
    inode: int
    source: str = ""
    url: str = ""
    added: float = 0.0

    @property
    def failed_check(self) -> bool:
        """Whether ``verify`` or `serve` found the file's bytes bad (see ``mark_failed_check``)."""
        return self.mtime_ns == FAILED_CHECK


class ManagedFile(NamedTuple):
    """A managed file with what pruning needs to know."""

    folder: str
    filename: str
    size: int
    last_used: float
    pinned: bool
    queued: bool
    inode: int  # hard links (`dedupe`) share it: their bytes count once


class Index(UseLog, JobTable):
    """Open (creating or migrating) the index of one model root."""

    def __init__(
        self,
        path: Path,
        *,
        use_log_days: float = 30.0,
        session_gap: float = 1800.0,
        readonly: bool = False,
        why_readonly: str = "",
    ) -> None:
        self.path = path
        self.use_log_days = use_log_days
        self.session_gap = session_gap
        self.readonly = readonly
        # What a write it cannot take is told.
        self.why_readonly = why_readonly or f"the model root {path.parent.parent} is read-only"
        self.queue_log = QueueLog(path.parent / QUEUE_LOG)
        try:
            if readonly:
                self._db = _connect_readonly(path)
                return
            if not writable(path):
                raise CacheError(
                    f"the model root is read-only: cannot write {path}",
                    hint="list, show, search, status and `path` of present models still work",
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():  # it names every model used: only its owner reads it
                os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._open()
        except sqlite3.DatabaseError as exc:
            if _disk_full(path, exc):
                raise _full(path) from None
            raise CacheError(
                f"index {path} is unusable: {exc}",
                hint=f"keep a copy of it; `sqlite3 {path} .recover` salvages what it can",
            ) from None
        except CacheError:
            raise
        except OSError as exc:
            raise CacheError(f"cannot open index {path}: {exc.strerror or exc}") from None

    def _open(self) -> None:
        # Two processes creating a fresh index at once can meet SQLITE_BUSY where no busy
        # handler applies (switching to WAL); a short retry settles it.
        for attempt in range(5):
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._migrate()
                return
            except sqlite3.OperationalError as exc:
                if attempt == 4 or ("locked" not in str(exc) and "busy" not in str(exc)):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise _write_error(self.path, exc) from None

    def _migrate(self) -> None:
        # Idempotent; commits on its own.
        self._db.executescript(_SCHEMA + JOBS_SCHEMA + USES_SCHEMA)
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise CacheError(
                    f"index {self.path} has schema {version}; this cmcache knows {SCHEMA_VERSION}",
                    hint="upgrade cmcache",
                )
            # 3 adds the counters table, 4 the resolutions table, 5 the runs of uses: the
            # scripts above create them.
            if version == 1:  # 2 remembers the origin's validators of each download
                for column in ("etag", "last_modified"):
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            # 6 keeps how long nothing was in use before each launch (some indexes of schema 5
            # have no launches table, and got one with the column from the script above).
            launch_columns = {row[1] for row in db.execute("PRAGMA table_info(use_launches)")}
            if "idle" not in launch_columns:
                db.execute("ALTER TABLE use_launches ADD COLUMN idle REAL NOT NULL DEFAULT 0")
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            if self._run_gap(db) != self.session_gap:  # new, migrated, or the gap was changed
                self._rebuild_runs(db)

    # ------------------------------------------------------------ files

    def record_file(self, record: FileRecord) -> None:
        """Remember a placed, verified file."""
        row = {**asdict(record), "added": record.added or time.time()}
        with self._tx() as db:
            db.execute(f"INSERT OR REPLACE INTO files {insert_columns(FileRecord)}", row)

    def get_file(self, folder: str, filename: str) -> FileRecord | None:
        """The record of one managed file."""
        row = self._db.execute(
            "SELECT * FROM files WHERE folder = ? AND filename = ?", (folder, filename)
        ).fetchone()
        return _file(row) if row else None

    def files(self) -> list[FileRecord]:
        """Every managed file."""
        cursor = self._db.cursor()
        cursor.row_factory = None  # plain tuples: this runs over every file of large caches
        return [FileRecord(*row) for row in cursor.execute(_FILES)]

    def forget_file(self, folder: str, filename: str) -> None:
        """Drop a file's record (after it is gone)."""
        with self._tx() as db:
            db.execute("DELETE FROM files WHERE folder = ? AND filename = ?", (folder, filename))

    def mark_failed_check(self, folder: str, filename: str) -> None:
        """The file's bytes failed verification: its record stops vouching for it (``pull``
        fetches it again, ``serve`` refuses it, ``prune`` may remove it)."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET mtime_ns = ? WHERE folder = ? AND filename = ?",
                (FAILED_CHECK, folder, filename),
            )

    def mark_removing(self, folder: str, filename: str) -> None:
        """Say a removal is about to happen, so a crash mid-way is finished on the next run."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET removing = 1 WHERE folder = ? AND filename = ?",
                (folder, filename),
            )

    def removing(self) -> list[FileRecord]:
        """Files whose removal was started and not confirmed."""
        rows = self._db.execute("SELECT * FROM files WHERE removing = 1")
        return [_file(r) for r in rows]

    def managed(self) -> list[ManagedFile]:
        """Every managed file with what pruning weighs: last use, pin, a queued download.

        Plain tuples, not rows: this runs over every file of large caches.
        """
        cursor = self._db.cursor()
        cursor.row_factory = None
        return [ManagedFile(*row) for row in cursor.execute(_MANAGED)]

    def managed_file(self, folder: str, filename: str) -> ManagedFile | None:
        """One managed file with its protection facts, as they are now."""
        row = self._db.execute(
            f"{_MANAGED} AND f.folder = ? AND f.filename = ?", (folder, filename)
        ).fetchone()
        return ManagedFile(*row) if row else None

    def urls(self) -> dict[str, str]:
        """Each managed file's ref (``folder/filename``) and the URL it was downloaded from."""
        rows = self._db.execute("SELECT folder || '/' || filename, url FROM files")
        return {str(r[0]): str(r[1]) for r in rows}

    def usage(self) -> tuple[int, int]:
        """(number of managed files, their bytes), counted by the database; hard links of one
        inode count their bytes once (inode 0: not known, counted on its own)."""
        row = self._db.execute(
            "SELECT (SELECT count(*) FROM files) AS n, coalesce(sum(size), 0) AS b FROM ("
            "SELECT size FROM files WHERE inode = 0 UNION ALL "
            "SELECT size FROM files WHERE inode != 0 GROUP BY inode, size)"
        ).fetchone()
        return int(row["n"]), int(row["b"])

    def last_uses(self) -> dict[tuple[str, str], float]:
        """(folder, filename) → the last recorded use, for every model ever used."""
        rows = self._db.execute("SELECT folder, filename, last_used FROM usage")
        return {(r["folder"], r["filename"]): float(r["last_used"]) for r in rows}

    # ------------------------------------------------------------ pins

    def pin(self, folder: str, filename: str) -> None:
        """Protect a model from pruning."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO pins VALUES (?, ?)", (folder, filename))

    def unpin(self, folder: str, filename: str) -> None:
        """Let a model be pruned again."""
        with self._tx() as db:
            db.execute("DELETE FROM pins WHERE folder = ? AND filename = ?", (folder, filename))

    def pinned(self) -> set[tuple[str, str]]:
        """Every pinned (folder, filename)."""
        return {(r["folder"], r["filename"]) for r in self._db.execute("SELECT * FROM pins")}

    # ------------------------------------------------------------ counters

    def bump(self, name: str, labels: str = "", by: float = 1.0) -> None:
        """Add ``by`` to a counter (what `cmcache metrics` reports)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT (name, labels) DO UPDATE "
                "SET value = value + excluded.value",
                (name, labels, by),
            )

    def counters(self) -> list[tuple[str, str, float]]:
        """Every counter: (name, labels, value)."""
        rows = self._db.execute("SELECT name, labels, value FROM counters ORDER BY name, labels")
        return [(r["name"], r["labels"], float(r["value"])) for r in rows]

    # ------------------------------------------------------------ resolutions

    def resolution(self, key: str) -> str | None:
        """What a source said about ``key`` (a Civitai version's files), as it was kept."""
        row = self._db.execute("SELECT value FROM resolutions WHERE key = ?", (key,)).fetchone()
        return str(row["value"]) if row else None

    def keep_resolution(self, key: str, value: str) -> None:
        """Keep what a source said about ``key``: it never changes (a version's files)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO resolutions VALUES (?, ?, ?)", (key, value, time.time())
            )

def _write_error(path: Path, exc: sqlite3.OperationalError) -> CacheError:
    """Say why a write to the index failed, with the next step that fits."""
    text = str(exc).lower()
    if _disk_full(path, exc):
        return _full(path)
    if "readonly" in text or "read-only" in text:
        return CacheError(f"index {path} is read-only", hint="check the model root's permissions")
    if "locked" in text or "busy" in text:
        return CacheError(f"index {path} is busy: {exc}", hint="another cmcache holds it; retry")
    return CacheError(f"index {path}: {exc}")


def _disk_full(path: Path, exc: sqlite3.DatabaseError) -> bool:
    """Whether sqlite failed for want of space: it says "database or disk is full", or only
    "disk I/O error" when its shared-memory file cannot grow on a full disk."""
    text = str(exc).lower()
    if "full" in text:
        return True
    if "disk i/o" not in text:
        return False
    try:
        return shutil.disk_usage(path.parent).free < FULL_BELOW
    except OSError:
        return False


def _full(path: Path) -> DiskFullError:
    return DiskFullError(
        f"the disk is full: index {path} cannot be written",
        hint="free space (`cmcache prune`, or other files on that disk), then run it again",
    )


def writable(path: Path) -> bool:
    """Whether the index (or, before it exists, its folder) can be written."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if path.exists() and not os.access(path, os.W_OK):
        return False
    return os.access(folder if not path.parent.exists() else path.parent, os.W_OK)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open for reading only; on a read-only filesystem a WAL index needs ``immutable``."""
    for query in ("mode=ro", "immutable=1"):
        db = sqlite3.connect(f"{path.as_uri()}?{query}", uri=True, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("SELECT count(*) FROM meta").fetchone()
        except sqlite3.OperationalError:
            db.close()
            continue
        return db
    raise CacheError(f"cannot read index {path}", hint="check its permissions")


def _file(row: Any) -> FileRecord:
    return FileRecord(**{f.name: row[f.name] for f in fields(FileRecord)})
