"""What the page's Models panel shows: the download queue, fed without polling processes.

Idle, this costs one ``os.stat`` a second: every cmcache process appends a line to
``<root>/.cmcache/queue.log`` when a download is queued, resumed or ends (placed, failed,
cancelled, lost, with the reason). When the file grows, its new lines are read (the ends go to
the page at once) and one ``cmcache status --json --watch`` runs while anything downloads,
printing the queue at most once a second; it ends by itself a few seconds after nothing moves.
"""

import json
import logging
import os
import subprocess
import threading
import time

ENDED = ("placed", "failed", "cancelled", "lost")
_log = logging.getLogger("cmcache")


def page_download(item):
    """One download as the page gets it."""
    return {
        "id": item.get("id"),
        "ref": item.get("ref"),
        "name": str(item.get("ref", "")).rsplit("/", 1)[-1],
        "state": item.get("state"),
        "bytes": item.get("done", 0),
        "total": item.get("total", 0),
        "speed": item.get("speed", 0),
        "eta": item.get("eta"),
        "message": item.get("message", ""),
    }


def page_status(data):
    """The queue and the cache's use as the page gets them."""
    cache = data.get("cache") or {}
    return {
        "downloads": [page_download(d) for d in data.get("downloads", [])],
        "cache": {
            "managed_bytes": cache.get("managed_size", 0),
            "files": cache.get("files", 0),
            "budget": cache.get("max_size"),
        },
        "daemon": data.get("daemon"),
    }


class Feed:
    """Follows the queue log; runs the status watcher only while downloads exist."""

    POLL = 0.5  # seconds between looks at the queue log's size
    FRESH = 300.0  # a snapshot older than this is refreshed when a page asks (prune moves it)
    LATER = 5.0  # ... this long after the page asked

    def __init__(self, cli, queue_log, send):
        self.cli = cli
        self.path = queue_log
        self.send = send  # send(event, data) to every open page
        self.offset = self.size()  # ends before this are history
        self.lock = threading.Lock()
        self.started = False
        self.ready = threading.Event()
        self.watcher = None
        self.again = False  # the log moved while a watcher ran: run another after it
        self.snapshot = None
        self.updated = 0.0
        self.error = None

    def start(self):
        self.started = True
        threading.Thread(target=self._loop, name="cmcache-feed", daemon=True).start()
        self.watch()  # the first snapshot

    def current(self, timeout):
        """The latest snapshot, or {"error": why}. A stale one is refreshed a little later,
        not while the page that asked is still loading."""
        if self.snapshot is not None and time.monotonic() - self.updated > self.FRESH:
            self.updated = time.monotonic()  # one refresh, however many pages ask
            timer = threading.Timer(self.LATER, self.watch)
            timer.daemon = True
            timer.start()
        self.ready.wait(timeout)
        with self.lock:
            if self.snapshot is None:
                return {"error": self.error or "cmcache did not answer"}
            return self.snapshot

    def watch(self):
        """Run the status watcher unless one runs (then run one more after it)."""
        if not self.started:
            return
        with self.lock:
            if self.watcher is not None:
                self.again = True
                return
            self.again = False
            try:
                self.watcher = self.cli.spawn(
                    "--json", "status", "--watch", stdout=subprocess.PIPE
                )
            except Exception as exc:  # cmcache is gone: say so to the page, once
                self.error = f"cannot run cmcache: {exc}"
                self.ready.set()
                return
            watcher = self.watcher
        threading.Thread(target=self._read, args=(watcher,), daemon=True).start()

    def _read(self, watcher):
        got = False
        for line in watcher.stdout:
            try:
                data = json.loads(line)["data"]
            except (ValueError, KeyError, TypeError):
                continue
            got = True
            status = page_status(data)
            with self.lock:
                self.snapshot, self.updated, self.error = status, time.monotonic(), None
            self.ready.set()
            self.send("cmcache.progress", {**status, "ended": []})
        code = watcher.wait()
        with self.lock:
            self.watcher = None
            again = self.again
            if not got:
                self.error = f"cmcache status exited {code} without an answer"
                self.ready.set()
        if again:
            self.watch()

    def size(self):
        try:
            return os.stat(self.path).st_size if self.path else 0
        except OSError:
            return 0

    def _loop(self):
        while True:
            time.sleep(self.POLL)
            try:
                self._look()
            except Exception as exc:
                _log.warning("cmcache: following downloads: %s", exc)
                time.sleep(30)

    def _look(self):
        size = self.size()
        if size < self.offset:  # the log started over
            self.offset = 0
        if size == self.offset:
            return
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(size - self.offset)
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        ended = []
        for line in data[:complete].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") in ENDED:
                ref = str(event.get("ref", ""))
                ended.append(
                    {
                        "ref": ref,
                        "name": ref.rsplit("/", 1)[-1],
                        "state": event["event"],
                        "reason": str(event.get("reason", "")),
                    }
                )
        if ended:
            self.send("cmcache.progress", {"downloads": [], "ended": ended})
        self.watch()
