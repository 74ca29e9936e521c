"""Every config key once: how it is read, its default, and the comment the starter file shows."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cmcache.core.errors import ConfigError
from cmcache.core.hosts import DEFAULT_DOWNLOAD_HOSTS, host_problem, normal_host
from cmcache.core.sizes import parse_size
from cmcache.core.sourcerefs import DEFAULT_CIVITAI, DEFAULT_HF, endpoint_problem

Parser = Callable[[Any, str], Any]
POLICIES = ("lru", "cost")  # what prune and prefetch evict first
MAX_FANOUT = 16  # a relay tree wider than this is a star again: one upload shared by all
MANAGER_URL = "https://raw.githubusercontent.com/Comfy-Org/ComfyUI-Manager/main/model-list.json"
MANAGER_SOURCE = "comfyui-manager"


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: expected a whole number ≥ 0, got {value!r}")
    return value


def _fanout(value: Any, where: str) -> int:
    number = _positive_int(value, where)
    if not 1 <= number <= MAX_FANOUT:
        raise ConfigError(f"{where}: expected a whole number from 1 to {MAX_FANOUT}, got {value!r}")
    return number


def _at_least_one(value: Any, where: str) -> int:
    number = _positive_int(value, where)
    if number < 1:
        raise ConfigError(f"{where}: expected a whole number ≥ 1, got {value!r}")
    return number


def _days(value: Any, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"{where}: expected a number of days ≥ 0, got {value!r}")
    return float(value)


def _minutes(value: Any, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{where}: expected a number of minutes > 0, got {value!r}")
    return float(value)


def _policy(value: Any, where: str) -> str:
    if value not in POLICIES:
        choices = " or ".join(f'"{p}"' for p in POLICIES)
        raise ConfigError(f"{where}: expected {choices}, got {value!r}")
    return str(value)


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f'{where}: expected a size like "200G", got {value!r}')
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _optional_size(value: Any, where: str) -> int | None:
    if value in ("", None):
        return None
    return _size(value, where)


def _root(value: Any, where: str) -> str:
    text = _string(value, where)
    if not text.strip():
        raise ConfigError(f"{where}: must name a folder (leave the key out for the default)")
    return text


def _rate(value: Any, where: str) -> str:
    """A rate in the `limits` notation ("10/minute", "100 per hour"); "0" means unlimited."""
    text = _string(value, where).strip()
    if text in ("", "0"):
        return "0"
    match = re.match(r"^(\d+)\s*(?:/|per)\s*(\d*)\s*(second|minute|hour|day|month|year)s?$", text)
    if not match:
        raise ConfigError(f'{where}: expected a rate like "10/minute" or "0", got {value!r}')
    if int(match.group(1)) == 0 or (match.group(2) and int(match.group(2)) == 0):
        # "0/minute" allows nothing ever and "10/0minute" has no window: both wait forever.
        raise ConfigError(
            f'{where}: {value!r} never allows a download; use a count and window ≥ 1, or "0"'
            " for no limit"
        )
    return text


def _redis(value: Any, where: str) -> str:
    text = _string(value, where).strip()
    if text and not re.match(r"^(rediss?|unix)://", text):
        raise ConfigError(
            f"{where} (or CMCACHE_REDIS): expected a URL like redis://host:6379/0,"
            f" got {text.rsplit('@', 1)[-1]!r}"  # never a password
        )
    return text


def _listen(value: Any, where: str) -> str:
    text = _string(value, where)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f'{where}: expected HOST:PORT like "0.0.0.0:8765", got {value!r}')
    return text


def _split(value: Any, where: str) -> int | None:
    if value == "auto":
        return None
    number = _at_least_one(value, where)
    if number > 16:
        raise ConfigError(f"{where}: aria2 allows at most 16 segments, got {number}")
    return number


def _rpc(value: Any, where: str) -> tuple[str, ...]:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ConfigError(f"{where}: expected a URL or a list of URLs, got {value!r}")
    for url in urls:
        if url and not re.match(r"^(https?|wss?)://", url):
            raise ConfigError(f"{where}: {url!r} is not an http(s) or ws(s) URL")
    return tuple(u for u in urls if u)


def _endpoint(value: Any, where: str) -> str:
    text = _string(value, where).strip().rstrip("/")
    problem = endpoint_problem(text)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return text


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _host_list(value: Any, where: str) -> tuple[str, ...]:
    hosts = _string_list(value, where)
    for host in hosts:
        problem = host_problem(host)
        if problem:
            raise ConfigError(f"{where}: {host!r} {problem}")
    return tuple(normal_host(h) for h in hosts)


@dataclass(frozen=True)
class Key:
    """One config key. ``default`` None: unset unless given (the starter shows ``example``)."""

    parse: Parser
    default: Any
    comment: str = ""
    example: Any = None


KEYS: dict[str, dict[str, Key]] = {
    "cache": {
        "root": Key(
            _root,
            None,
            "ComfyUI's models/ folder (env CMCACHE_ROOT, flag --root)",
            "/srv/ComfyUI/models",
        ),
        "max_size": Key(_optional_size, "", "budget for managed files (prune, prefetch)", "200G"),
        "keep_days": Key(_days, 7, "models used within this many days are never pruned"),
        "min_free": Key(
            _optional_size, "", "keep at least this much free on root's filesystem", "20G"
        ),
        "policy": Key(
            _policy, "lru", '"lru": least recently used go first; "cost": cheapest to refetch'
        ),
    },
    "download": {
        "rpc": Key(_rpc, "", 'aria2 JSON-RPC URL (or a list); "" runs a private daemon'),
        "rpc_secret": Key(_string, "", "better: env CMCACHE_ARIA2_SECRET"),
        "aria2c": Key(_string, "", 'private daemon\'s aria2c; "" = PATH, then bundled'),
        "concurrent": Key(_at_least_one, 3, "downloads active at once"),
        "split": Key(_split, "auto", "segments per file (1-16), or auto: one per 16 MiB"),
        "max_connection_per_server": Key(_at_least_one, 16),
        "max_tries": Key(_positive_int, 5),
        "retry_wait": Key(_positive_int, 3),
        "timeout": Key(_at_least_one, 60, "seconds without data before a connection is retried"),
        "max_speed": Key(_size, "0", "per download, 0 = no cap"),
        "overall_speed": Key(_size, "0", "whole daemon, 0 = no cap"),
    },
    "catalog": {
        "builtin": Key(_boolean, True, "well-known models with aliases (sdxl, flux-dev, ...)"),
        "manager": Key(_boolean, False, "add ComfyUI-Manager's model-list.json (run sync)"),
        "manager_url": Key(_string, MANAGER_URL, "where ComfyUI-Manager's list is fetched"),
    },
    "civitai": {
        "endpoint": Key(
            _endpoint, DEFAULT_CIVITAI, "Civitai's API and downloads (env CIVITAI_ENDPOINT)"
        ),
    },
    "huggingface": {
        "endpoint": Key(_endpoint, DEFAULT_HF, "a Hugging Face mirror (env HF_ENDPOINT)"),
    },
    "comfyui": {
        "path": Key(
            _root, None, "the ComfyUI install (env CMCACHE_COMFYUI, flag --comfyui)", "/srv/ComfyUI"
        ),
        "extra_model_paths": Key(_string_list, [], "more extra_model_paths.yaml files to read"),
        "download_hosts": Key(
            _host_list,
            list(DEFAULT_DOWNLOAD_HOSTS),
            "hosts (and their subdomains) a workflow's declared models may come from",
        ),
    },
    "cluster": {
        "redis": Key(_redis, "", 'redis://host:6379/0 (env CMCACHE_REDIS); "" = no cluster'),
        "node": Key(_string, "", 'this node\'s name; "" = the host name'),
        "serve": Key(_listen, "0.0.0.0:8765", "where `cmcache serve` listens"),
        "advertise": Key(_string, "", "the URL other nodes reach `cmcache serve` at"),
        "secret": Key(_string, "env:CMCACHE_CLUSTER_SECRET", "peers must present it"),
        "origin_rate": Key(_rate, "10/minute", "origin downloads this node may start"),
        "cluster_origin_rate": Key(_rate, "0", 'the same for all nodes together; "0" = no cap'),
        "serve_rate": Key(_size, "0", 'upload cap of `cmcache serve` per second; "0" = none'),
        "swarm": Key(
            _boolean, True, "copy from nodes still fetching a model too (false: only placed copies)"
        ),
        "relay_fanout": Key(
            _fanout, 2, "nodes each node feeds while it fetches (1 when upload < 2× the origin)"
        ),
    },
    "prefetch": {
        "models": Key(_string_list, [], 'refs to keep present, e.g. ["sdxl"]'),
        "popular": Key(_positive_int, 0, "also keep the N most-used models present"),
        "window_days": Key(_days, 30, "how far back `popular` counts uses"),
        "workflows": Key(_string_list, [], "workflow files (globs) whose models stay present"),
        "predict": Key(_boolean, False, "also fetch the models the use log predicts (`predict`)"),
        "predict_limit": Key(
            _positive_int,
            3,
            "at most this many predicted workflows (their leads' companions come too)",
        ),
        "session_gap_minutes": Key(_minutes, 30, "a silence this long ends a session of uses"),
    },
}
# Tables of their own shape, validated in load.py.
FREE_TABLES = ("sources", "auth")
SOURCE_KEYS = ("name", "index", "url", "format")

DEFAULTS: dict[str, dict[str, Any]] = {
    section: {name: key.default for name, key in keys.items() if key.default is not None}
    for section, keys in KEYS.items()
}


def known_keys() -> str:
    """Every settable key, for hints."""
    return ", ".join(f"{s}.{k}" for s, keys in KEYS.items() for k in keys) + ", auth.<host>"
