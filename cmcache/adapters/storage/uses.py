"""The use log of the index: every use (kept for the prefetch window), totals, and runs.

Part of ``Index`` (``index.py`` opens the database; this module never imports sqlite3).
A *run* is one model's uses, each less than the session gap after the one before: kept as uses
arrive. So are the *sessions* and their *launches* (``core.planning.sessions``): a forecast
reads a row per session and one per launch, not every use nor every run.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

from cmcache.core.planning.sessions import (
    Launch,
    Run,
    Session,
    burst_for,
    runs_from_uses,
    sessions_from_uses,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from contextlib import AbstractContextManager

USES_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    folder TEXT NOT NULL, filename TEXT NOT NULL,
    last_used REAL NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (folder, filename)
);
CREATE TABLE IF NOT EXISTS use_log (folder TEXT NOT NULL, filename TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS use_log_at ON use_log (at);
CREATE TABLE IF NOT EXISTS use_runs (
    folder TEXT NOT NULL, filename TEXT NOT NULL,
    first REAL NOT NULL, last REAL NOT NULL, uses INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS use_runs_model ON use_runs (folder, filename, last);
CREATE INDEX IF NOT EXISTS use_runs_last ON use_runs (last);
CREATE TABLE IF NOT EXISTS use_sessions (
    start REAL PRIMARY KEY, end REAL NOT NULL, last_first REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS use_launches (
    session REAL NOT NULL, start REAL NOT NULL, models TEXT NOT NULL, idle REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS use_launches_session ON use_launches (session);
"""
SEP = "\n"  # between the refs of a launch (a file name has no newline)
# Calls at once record their uses a few milliseconds out of order: that late, a use is taken as
# it comes (a redo can read a busy box's whole log).
LATE = 1.0
LAUNCH_COLUMNS = "(session, start, models, idle) VALUES (?, ?, ?, ?)"  # named: columns may grow


class UseLog:
    """Uses: recorded by `pull`, `path` and `touch`; read by prefetch, prune and `predict`."""

    _db: Any
    use_log_days: float
    session_gap: float  # seconds: what splits the use log into sessions

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def record_use(self, folder: str, filename: str, at: float | None = None) -> None:
        """Count one use now (file atime is not trusted).

        The totals live in ``usage``; per-use rows (for "most used lately") are kept only for
        ``use_log_days``, so the log does not grow with every call forever. Each use also
        extends its model's latest run (uses less than ``session_gap`` apart), or starts one,
        and the latest session and its launches: prediction reads a row per session and one per
        launch (eviction the runs), instead of every use.
        """
        at = time.time() if at is None else at
        row = {"folder": folder, "filename": filename, "at": at, "gap": self.session_gap}
        cutoff = at - self.use_log_days * 86400
        with self._tx() as db:
            db.execute(
                "INSERT INTO usage VALUES (?, ?, ?, 1) ON CONFLICT (folder, filename) DO UPDATE "
                "SET last_used = max(last_used, excluded.last_used), count = count + 1",
                (folder, filename, at),
            )
            db.execute("INSERT INTO use_log VALUES (?, ?, ?)", (folder, filename, at))
            db.execute("DELETE FROM use_log WHERE at < ?", (cutoff,))
            extended = db.execute(
                "UPDATE use_runs SET first = min(first, :at), last = max(last, :at), "
                "uses = uses + 1 WHERE rowid = (SELECT rowid FROM use_runs WHERE folder = :folder "
                "AND filename = :filename AND last > :at - :gap AND first < :at + :gap "
                "ORDER BY last DESC LIMIT 1)",
                row,
            ).rowcount
            if not extended:
                db.execute("INSERT INTO use_runs VALUES (:folder, :filename, :at, :at, 1)", row)
            self._summarise(db, f"{folder}/{filename}", at, began=not extended)
            db.execute("DELETE FROM use_runs WHERE last < ?", (cutoff,))
            db.execute(
                "DELETE FROM use_launches WHERE session IN "
                "(SELECT start FROM use_sessions WHERE end < ?)",
                (cutoff,),
            )
            db.execute("DELETE FROM use_sessions WHERE end < ?", (cutoff,))

    def _summarise(self, db: Any, ref: str, at: float, *, began: bool) -> None:
        """Extend the latest session by a use at ``at``; a use that ``began`` a run joins the
        session's latest launch, or starts a launch or a session."""
        latest = db.execute(
            "SELECT start, end, last_first FROM use_sessions ORDER BY start DESC LIMIT 1"
        ).fetchone()
        if latest is not None and at < latest[1] - LATE:  # out of order: redo from where it falls
            self._summarise_log(db, at)
            return
        idle = self.session_gap if latest is None else max(0.0, at - latest[1])
        if idle >= self.session_gap:
            db.execute("INSERT INTO use_sessions VALUES (?, ?, ?)", (at, at, at))
            db.execute(f"INSERT INTO use_launches {LAUNCH_COLUMNS}", (at, at, ref, idle))
            return
        session = latest[0]
        if began and at - latest[2] < burst_for(self.session_gap):
            db.execute(
                "UPDATE use_launches SET models = models || ? || ? WHERE rowid = (SELECT rowid "
                "FROM use_launches WHERE session = ? ORDER BY start DESC, rowid DESC LIMIT 1)",
                (SEP, ref, session),
            )
        elif began:
            db.execute(f"INSERT INTO use_launches {LAUNCH_COLUMNS}", (session, at, ref, idle))
        db.execute(
            "UPDATE use_sessions SET end = max(end, ?), last_first = ? WHERE start = ?",
            (at, at if began else latest[2], session),
        )

    def sessions(self) -> list[Session]:
        """Every session of uses within the log's window, earliest first, with its launches."""
        cursor = self._db.cursor()
        cursor.row_factory = None
        if self._run_gap(cursor) != self.session_gap:  # a read-only index of another gap
            return sessions_from_uses(self._uses_from_log(cursor), self.session_gap)
        launches: dict[float, list[Launch]] = {}
        rows = cursor.execute(
            "SELECT session, start, models, idle FROM use_launches ORDER BY rowid"
        )
        for session, start, refs, idle in rows:  # a model begins a launch once: no repeats
            models = tuple(refs.split(SEP))
            launches.setdefault(session, []).append(Launch(start, models, models[0], idle))
        out = []
        for start, end in cursor.execute("SELECT start, end FROM use_sessions ORDER BY start"):
            found = launches.get(start)
            if found:
                found.sort(key=_start)
                out.append(Session(start, end, tuple(found)))
        return out

    def claim_launch(self, since: float) -> float | None:
        """The start of a workflow begun (a launch) at ``since`` or later that no call before
        claimed, now claimed; else None. What `touch --prefetch` prefetches for, once per
        launch."""
        with self._tx() as db:
            (latest,) = db.execute(  # in the latest session: both tables are indexed by it
                "SELECT max(start) FROM use_launches "
                "WHERE session = (SELECT max(start) FROM use_sessions)"
            ).fetchone()
            if latest is None or latest < since:
                return None
            row = db.execute("SELECT value FROM meta WHERE key = 'launch_claimed'").fetchone()
            try:
                claimed = float(row[0]) if row is not None else None
            except ValueError:  # not ours to trust: as good as no claim
                claimed = None
            if claimed is not None and claimed >= latest:
                return None
            db.execute("INSERT OR REPLACE INTO meta VALUES ('launch_claimed', ?)", (repr(latest),))
            return float(latest)

    def release_launch(self, start: float) -> None:
        """Give back the claim on the launch at ``start`` (its prefetch did not run)."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM meta WHERE key = 'launch_claimed' AND value = ?", (repr(start),)
            )

    def runs(self) -> list[Run]:
        """Every run of uses within the log's window, earliest first.

        A read-only index built with another session gap has its runs recomputed here from the
        log (it cannot store them).
        """
        cursor = self._db.cursor()
        cursor.row_factory = None
        if self._run_gap(cursor) != self.session_gap:
            return self._runs_from_log(cursor)
        # Runs arrive in table order, which is nearly their order of first use: sorting them
        # here (stable: ties stay in the order they were recorded) beats asking SQL to.
        return self._stored_runs(cursor)

    def _stored_runs(self, db: Any) -> list[Run]:
        rows = db.execute("SELECT folder || '/' || filename, first, last, uses FROM use_runs")
        runs = list(map(Run._make, rows))
        runs.sort(key=_first)
        return runs

    def _run_gap(self, db: Any) -> float | None:
        # Runs, sessions and launches were made with this gap (an index without it, or with
        # another, has them rebuilt from the log when opened for writing). The key is new with
        # schema 6: older indexes, whose launches have no idle time, have them rebuilt too.
        row = db.execute("SELECT value FROM meta WHERE key = 'use_summary_gap'").fetchone()
        return float(row[0]) if row else None

    def _uses_from_log(self, db: Any, since: float | None = None) -> Iterator[tuple[str, float]]:
        """The log's uses in time order (from ``since`` on), read as they are consumed."""
        rows = db.execute(
            "SELECT folder || '/' || filename, at FROM use_log WHERE at >= ? ORDER BY at, rowid",
            (-math.inf if since is None else since,),
        )
        for ref, at in rows:
            yield str(ref), float(at)

    def _runs_from_log(self, db: Any) -> list[Run]:
        return runs_from_uses(self._uses_from_log(db), self.session_gap)

    def _rebuild_runs(self, db: Any) -> None:
        """Recompute every run from the log (inside the caller's transaction)."""
        runs = self._runs_from_log(db)
        db.execute("DELETE FROM use_runs")
        db.executemany(
            "INSERT INTO use_runs VALUES (?, ?, ?, ?, ?)",
            ((*r.ref.split("/", 1), r.first, r.last, r.uses) for r in runs),
        )
        self._summarise_log(db)
        db.execute("DELETE FROM meta WHERE key = 'use_gap'")  # schema 5's
        db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('use_summary_gap', ?)", (repr(self.session_gap),)
        )

    def _summarise_log(self, db: Any, since: float | None = None) -> None:
        """Recompute the sessions and launches from the log and the runs (inside the caller's
        transaction): all of them, or from the session a late use at ``since`` falls in (a
        session begins after a silence of the gap, which a later use cannot fill)."""
        start = None
        if since is not None:
            start = db.execute(
                "SELECT max(start) FROM use_sessions WHERE start <= ?", (since,)
            ).fetchone()[0]
        before = None
        if start is None:
            db.execute("DELETE FROM use_sessions")
            db.execute("DELETE FROM use_launches")
        else:
            db.execute("DELETE FROM use_launches WHERE session >= ?", (start,))
            db.execute("DELETE FROM use_sessions WHERE start >= ?", (start,))
            before = db.execute("SELECT max(at) FROM use_log WHERE at < ?", (start,)).fetchone()[0]
        rows = db.execute(
            "SELECT first FROM use_runs WHERE first >= ? ORDER BY first",
            (-math.inf if start is None else start,),
        )
        firsts = [row[0] for row in rows]
        uses = self._uses_from_log(db, start)
        for session in sessions_from_uses(uses, self.session_gap, before):
            # The session's latest first use: a run that began at or before its end.
            last_first = firsts[bisect_right(firsts, session.end) - 1]
            db.execute(
                "INSERT INTO use_sessions VALUES (?, ?, ?)",
                (session.start, session.end, last_first),
            )
            db.executemany(
                f"INSERT INTO use_launches {LAUNCH_COLUMNS}",
                (
                    (session.start, launch.start, SEP.join(launch.models), launch.idle)
                    for launch in session.launches
                ),
            )

    def use_log_size(self) -> int:
        """Per-use rows kept."""
        return int(self._db.execute("SELECT count(*) FROM use_log").fetchone()[0])

    def most_used(self, since: float, limit: int) -> list[tuple[str, str, int]]:
        """The ``limit`` most-used models since ``since``: (folder, filename, uses)."""
        rows = self._db.execute(
            "SELECT folder, filename, count(*) AS n, max(at) AS last FROM use_log WHERE at >= ? "
            "GROUP BY folder, filename ORDER BY n DESC, last DESC LIMIT ?",
            (since, limit),
        )
        return [(r["folder"], r["filename"], int(r["n"])) for r in rows]


def _first(run: Run) -> float:
    return run.first


def _start(launch: Launch) -> float:
    return launch.start
