"""What cmcache was told, validated: frozen settings every service reads."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cmcache.core.hosts import DEFAULT_DOWNLOAD_HOSTS, HostPolicy, normal_host
from cmcache.core.sourcerefs import CIVITAI_HOSTS, HF_HOSTS, Endpoints

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

APP = "cmcache"
FORMATS = ("auto", "cmcache", "simple", "comfyui-manager")
# Hosts whose token comes from a well-known variable even without an [auth] table.
DEFAULT_AUTH = {"huggingface.co": "env:HF_TOKEN", "civitai.com": "env:CIVITAI_API_TOKEN"}


@dataclass(frozen=True)
class Paths:
    """Where cmcache keeps its own files."""

    config_file: Path
    state_dir: Path
    data_dir: Path

    @property
    def manifests_dir(self) -> Path:
        """Synced manifests, one folder per source."""
        return self.state_dir / "manifests"


@dataclass(frozen=True)
class CacheSettings:
    """``[cache]``."""

    root: Path
    max_size: int | None
    keep_days: float
    min_free: int | None
    policy: str  # "lru" or "cost": what prune and prefetch evict first


@dataclass(frozen=True)
class DownloadSettings:
    """``[download]``; ``split`` None means auto."""

    rpc: tuple[str, ...]
    rpc_secret: str
    aria2c: str
    concurrent: int
    split: int | None
    max_connection_per_server: int
    max_tries: int
    retry_wait: int
    timeout: int
    max_speed: int
    overall_speed: int


@dataclass(frozen=True)
class Source:
    """One ``[[sources]]`` table: a versions index or a single list."""

    name: str
    index: str | None = None
    url: str | None = None
    format: str = "auto"


@dataclass(frozen=True)
class PrefetchSettings:
    """``[prefetch]``."""

    models: tuple[str, ...]
    popular: int
    window_days: float
    workflows: tuple[str, ...]
    predict: bool
    predict_limit: int
    session_gap_minutes: float

    @property
    def session_gap(self) -> float:
        """``session_gap_minutes`` in seconds."""
        return self.session_gap_minutes * 60


@dataclass(frozen=True)
class ComfyUISettings:
    """``[comfyui]``: where ComfyUI is, the extra model path files it reads, and the hosts a
    workflow's declared models may come from."""

    path: Path | None
    extra_model_paths: tuple[Path, ...]
    download_hosts: tuple[str, ...] = DEFAULT_DOWNLOAD_HOSTS
    desktop_yaml: Path | None = None  # ComfyUI Desktop's extra_models_config.yaml

    @property
    def yaml_files(self) -> tuple[Path, ...]:
        """``<path>/extra_model_paths.yaml`` (when ComfyUI is known), the configured ones, then
        ComfyUI Desktop's (each read only when it exists)."""
        own = (self.path / "extra_model_paths.yaml",) if self.path else ()
        desktop = (self.desktop_yaml,) if self.desktop_yaml else ()
        return own + self.extra_model_paths + desktop


@dataclass(frozen=True)
class ClusterSettings:
    """``[cluster]``: nodes sharing one cache through Redis (off while ``redis`` is empty)."""

    redis: str
    node: str
    serve: str
    advertise: str
    secret: str
    origin_rate: str
    cluster_origin_rate: str
    serve_rate: int  # bytes per second `serve` may send to all peers together; 0 = no cap
    swarm: bool = True  # nodes still fetching a model are sources too, not only its holders
    relay_fanout: int = 2  # nodes each node still fetching a model feeds (the relay tree)

    @property
    def enabled(self) -> bool:
        """Whether this node is part of a cluster."""
        return bool(self.redis)

    @property
    def node_name(self) -> str:
        """This node's name: configured, else the host name."""
        import socket

        return self.node or socket.gethostname()

    def secret_value(self) -> str:
        """The shared secret, resolving ``env:NAME`` (never printed or logged)."""
        if self.secret.startswith("env:"):
            return os.environ.get(self.secret[4:], "")
        return self.secret


@dataclass(frozen=True)
class Settings:
    """Everything cmcache was told, merged and validated."""

    paths: Paths
    cache: CacheSettings
    download: DownloadSettings
    builtin_catalog: bool
    sources: tuple[Source, ...]
    auth: Mapping[str, str]
    prefetch: PrefetchSettings
    comfyui: ComfyUISettings
    cluster: ClusterSettings
    endpoints: Endpoints = field(default_factory=Endpoints)

    def download_policy(self, extra: Iterable[str] = ()) -> HostPolicy:
        """The hosts a workflow's declared URLs may use: ``[comfyui] download_hosts``, the
        hosts of the configured sources (the user chose them) and ``extra`` (``--allow-host``)."""
        sources = (_host_of(s.index or s.url or "") for s in self.sources)
        hosts = (*self.comfyui.download_hosts, *(h for h in sources if h), *extra)
        return HostPolicy(tuple(dict.fromkeys(normal_host(h) for h in hosts)))

    def token_for(self, host: str) -> str | None:
        """The token to send to exactly ``host`` (``host[:port]``), resolving ``env:NAME``.

        ``[auth]`` names a host, or a ``host:port``; the Hugging Face and Civitai endpoints get
        the token of huggingface.co and civitai.com (HF_TOKEN, CIVITAI_API_TOKEN) and no other
        host does, so a mirror or a loopback endpoint is treated as the service itself.
        """
        host = host.lower()
        auth = {**DEFAULT_AUTH, **self.auth}
        spec = self.auth.get(host)
        if spec is None and host == self.endpoints.hf_netloc:
            spec = auth.get(HF_HOSTS[0])
        if spec is None and host == self.endpoints.civitai_netloc:
            spec = auth.get(CIVITAI_HOSTS[0])
        if spec is None:  # [auth] names a host: any port of it
            spec = auth.get(re.sub(r":\d+$", "", host))
        if not spec:
            return None
        if spec.startswith("env:"):
            return os.environ.get(spec[4:]) or None
        return spec


def _host_of(url: str) -> str | None:
    """The host of a source's URL (None for a path or a file:// URL)."""
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None
