"""Prometheus metrics: the cache against its budget, lookups, downloads, prunes, syncs.

Counters live in the index (services bump them as they work); this module reads them with the
cache's state and renders the Prometheus text format through prometheus_client.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cmcache.adapters.storage.manifest_store import ManifestStore
from cmcache.core.errors import CacheError
from cmcache.core.files import write_atomic
from cmcache.services.cache.store import existing_index

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from prometheus_client.metrics_core import Metric

    from cmcache.core.settings.model import Settings


def _labels(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


class CacheCollector:
    """Reads the index and the sync record each time it is collected."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        """Every metric, read now."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            SummaryMetricFamily,
        )

        files = size = pinned = queued = 0
        counters: dict[tuple[str, str], float] = {}
        index = existing_index(self.settings)
        if index is not None:
            try:
                files, size = index.usage()
                pinned, queued = len(index.pinned()), len(index.jobs())
                counters = {(n, labels): v for n, labels, v in index.counters()}
            finally:
                index.close()
        yield GaugeMetricFamily("cmcache_managed_bytes", "Bytes of managed model files.", size)
        budget = self.settings.cache.max_size
        if budget is not None:
            yield GaugeMetricFamily("cmcache_budget_bytes", "cache.max_size.", budget)
        state = GaugeMetricFamily("cmcache_files", "Managed files by state.", labels=["state"])
        state.add_metric(["managed"], files)
        state.add_metric(["pinned"], pinned)
        state.add_metric(["queued"], queued)
        yield state
        lookups = CounterMetricFamily(
            "cmcache_lookups",
            "pull and path lookups: hit (present) or miss (downloaded).",
            labels=["command", "result"],
        )
        by_source = CounterMetricFamily(
            "cmcache_downloaded_bytes", "Bytes downloaded, by source.", labels=["source"]
        )
        for (name, text), value in counters.items():
            labels = _labels(text)
            if name == "lookups":
                lookups.add_metric([labels.get("command", ""), labels.get("result", "")], value)
            elif name == "downloaded_bytes":
                by_source.add_metric([labels.get("source", "origin")], value)
        yield lookups
        yield by_source
        yield SummaryMetricFamily(
            "cmcache_download_seconds",
            "Time from start to placed, per download.",
            count_value=int(counters.get(("downloads", ""), 0)),
            sum_value=counters.get(("download_seconds", ""), 0),
        )
        for name, doc in (
            ("download_failures", "Downloads that ended failed."),
            ("prune_removed_files", "Files prune removed."),
            ("prune_freed_bytes", "Bytes prune freed."),
        ):
            yield CounterMetricFamily(f"cmcache_{name}", doc, counters.get((name, ""), 0))
        last = ManifestStore(self.settings.paths.manifests_dir).last_sync()
        if last is not None:
            at, ok = last
            yield GaugeMetricFamily(
                "cmcache_last_sync_timestamp_seconds", "When the last sync ran.", at
            )
            yield GaugeMetricFamily(
                "cmcache_last_sync_age_seconds", "Seconds since the last sync.", time.time() - at
            )
            yield GaugeMetricFamily(
                "cmcache_last_sync_success",
                "1 if every list of the last sync came through.",
                1 if ok else 0,
            )


def render_metrics(settings: Settings, textfile: Path | None = None) -> bytes:
    """The metrics in Prometheus text format; with ``textfile``, also written there atomically
    (for node_exporter's textfile collector).

    Raises:
        CacheError: ``textfile`` is a folder or cannot be written (read-only, full, /proc).
    """
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(CacheCollector(settings))
    text = generate_latest(registry)
    if textfile is not None:
        if textfile.is_dir():
            raise CacheError(
                f"--textfile {textfile} is a folder",
                hint=f"name a file in it, e.g. {textfile / 'cmcache.prom'}",
            )
        try:
            write_atomic(textfile, text)
        except OSError as exc:
            raise CacheError(f"cannot write --textfile {textfile}: {exc.strerror or exc}") from None
    return text
