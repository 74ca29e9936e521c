"""``<root>/.cmcache/queue.log``: one JSON line per change to the download queue.

``{"at": seconds, "ref": "folder/filename", "event": "queued|resumed|placed|failed|cancelled|
lost", "reason": "…"}``. Appended by every cmcache process that changes the queue; read by the
ComfyUI node, which notices a new download (or the end of one, with its reason) by the file's
size alone. A feed, not a record: it starts over past ``MAX_BYTES``, and a lost line costs only
a late notice.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

MAX_BYTES = 256 * 1024
QUEUE_LOG = "queue.log"  # in <root>/.cmcache


class QueueLog:
    """Append-only lines, each written with one ``write`` on an ``O_APPEND`` descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, ref: str, event: str, reason: str = "") -> None:
        """Add one line; never fails the change it reports (a full or read-only disk)."""
        doc = {"at": round(time.time(), 3), "ref": ref, "event": event, "reason": reason}
        line = json.dumps(doc)
        with contextlib.suppress(OSError):
            if self.path.stat().st_size > MAX_BYTES:  # start over; readers see it shrink
                os.truncate(self.path, 0)
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
