"""Prediction from the use log, and what evicting a file is expected to cost.

`cmcache predict`, prefetch (``[prefetch] predict``) and the "cost" policy of prune and prefetch
all read the same forecast: ``core.planning.predict`` over the runs of uses the index keeps.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cmcache.core.planning.predict import forecast_sessions, in_time
from cmcache.core.planning.prune import CostOrder, cost_order
from cmcache.services.cache.store import existing_index

if TYPE_CHECKING:
    from cmcache.adapters.storage.index import Index
    from cmcache.core.planning.predict import Forecast, Prediction
    from cmcache.core.settings.model import Settings


def read_forecast(
    settings: Settings, index: Index, now: float | None = None, *, planning: bool = False
) -> Forecast:
    """Every model of the use log scored as of ``now`` (from the sessions the index keeps;
    the runs of uses are read only if eviction asks for chances): for the next launch, or
    with ``planning`` (prefetch, eviction) for the next one prefetch can still be in time
    for (``in_time``)."""
    now = time.time() if now is None else now
    gap = settings.prefetch.session_gap
    ahead = in_time(gap) if planning else 0.0
    return forecast_sessions(index.sessions(), now=now, gap=gap, runs=index.runs, ahead=ahead)


def predict_models(settings: Settings, limit: int | None) -> list[Prediction]:
    """The models most likely needed next, best first (none without an index)."""
    index = existing_index(settings)
    if index is None:
        return []
    try:
        return read_forecast(settings, index).ranked(limit)
    finally:
        index.close()


def throughputs(index: Index) -> dict[str, float]:
    """Bytes per second measured per source host over the downloads from it."""
    sums: dict[str, list[float]] = {}
    for name, labels, value in index.counters():
        if name in ("source_bytes", "source_seconds"):
            host = labels.removeprefix("host=")
            sums.setdefault(host, [0.0, 0.0])[name == "source_seconds"] += value
    return {host: b / s for host, (b, s) in sums.items() if host and b > 0 and s > 0}


def cost_order_for(index: Index, seen: Forecast) -> CostOrder:
    """Expected re-download time of each managed file: its chance of use from ``seen``, its
    size over the throughput measured for the host it came from."""
    hosts = {ref: urlsplit(url).hostname or "" for ref, url in index.urls().items()}
    return cost_order(seen.chances(), hosts, throughputs(index))
