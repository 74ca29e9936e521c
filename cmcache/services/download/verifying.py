"""Hashing downloads in one worker thread: the prefix aria2 has finished while the rest still
downloads, then what is left once complete; the whole file again before a mismatch is final."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from cmcache.services.download.placement import hash_file

if TYPE_CHECKING:
    from cmcache.adapters.aria2.client import Transfer
    from cmcache.services.download.in_flight import Live


class Verifier:
    """One hashing thread for every download of a run."""

    def __init__(self, *, early: bool) -> None:
        # Hash while downloading only where aria2 writes every completed piece at once: the
        # private daemon runs with disk-cache=0; a remote one may hold pieces in memory.
        self.early = early
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cmcache-verify")

    def feed(self, live: Live, transfer: Transfer) -> None:
        """Hash what aria2 has newly finished at the start of the file."""
        upto = live.hash_due(transfer)
        if upto is not None and live.growing is not None:
            live.feeding = self._pool.submit(live.growing.advance, upto)

    def start(self, live: Live) -> None:
        """The download is complete: hash what is left (all of it without an early hash)."""
        growing = live.growing
        if growing is not None:
            live.verifying = self._pool.submit(growing.finish)
        else:
            live.verifying = self._pool.submit(hash_file, live.target.staging)

    @staticmethod
    def result(live: Live) -> tuple[str, int]:
        """(sha256, size) of the finished file."""
        assert live.verifying is not None
        sha, size = live.verifying.result()
        if live.growing is not None and live.expected_sha not in (None, sha):
            return hash_file(live.target.staging)  # read it whole before failing it
        return sha, size

    def shutdown(self) -> None:
        """Wait for the thread to finish what it was given."""
        self._pool.shutdown(wait=True)
