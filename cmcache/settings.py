"""Configuration: defaults ← TOML file ← environment ← flags, validated into frozen dataclasses."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcache.errors import ConfigError
from cmcache.sizes import parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

APP = "cmcache"
FORMATS = ("auto", "cmcache", "simple", "comfyui-manager")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
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
    max_size: int | None = None
    keep_days: float = 7.0
    min_free: int | None = None


@dataclass(frozen=True)
class DownloadSettings:
    """``[download]``; ``split`` None means auto."""

    rpc: tuple[str, ...] = ()
    rpc_secret: str = ""
    aria2c: str = ""
    concurrent: int = 3
    split: int | None = None
    max_connection_per_server: int = 16
    max_tries: int = 5
    retry_wait: int = 3
    timeout: int = 60
    max_speed: int = 0
    overall_speed: int = 0


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

    models: tuple[str, ...] = ()
    popular: int = 0
    window_days: float = 30.0


@dataclass(frozen=True)
class Settings:
    """Everything cmcache was told, merged and validated."""

    paths: Paths
    cache: CacheSettings
    download: DownloadSettings = field(default_factory=DownloadSettings)
    builtin_catalog: bool = True
    sources: tuple[Source, ...] = ()
    auth: Mapping[str, str] = field(default_factory=dict)
    prefetch: PrefetchSettings = field(default_factory=PrefetchSettings)

    def token_for(self, host: str) -> str | None:
        """The token to send to exactly ``host``, resolving ``env:NAME`` references."""
        spec = {**DEFAULT_AUTH, **self.auth}.get(host.lower())
        if not spec:
            return None
        if spec.startswith("env:"):
            return os.environ.get(spec[4:]) or None
        return spec


# ---------------------------------------------------------------- paths


def resolve_paths(
    config_flag: Path | None = None, environ: Mapping[str, str] | None = None
) -> Paths:
    """Locate config, state and data dirs from ``--config``, env and platformdirs."""
    environ = os.environ if environ is None else environ
    home = environ.get("CMCACHE_HOME")
    if home:
        base = Path(home).expanduser()
        config_file, state_dir, data_dir = base / "config.toml", base / "state", base
    else:
        import platformdirs

        config_file = Path(platformdirs.user_config_dir(APP)) / "config.toml"
        state_dir = Path(platformdirs.user_state_dir(APP))
        data_dir = Path(platformdirs.user_data_dir(APP))
    named = config_flag or (Path(v) if (v := environ.get("CMCACHE_CONFIG")) else None)
    if named is not None:
        config_file = named.expanduser()
    return Paths(config_file=config_file, state_dir=state_dir, data_dir=data_dir)


# ---------------------------------------------------------------- value parsers


def _where(path: str, key: str) -> str:
    return f"{key} in {path}"


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


def _at_least_one(value: Any, where: str) -> int:
    number = _positive_int(value, where)
    if number < 1:
        raise ConfigError(f"{where}: expected a whole number ≥ 1, got {value!r}")
    return number


def _days(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{where}: expected a number of days ≥ 0, got {value!r}")
    return float(value)


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


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


Parser = Callable[[Any, str], Any]
_SCHEMA: dict[str, dict[str, Parser]] = {
    "cache": {
        "root": _string,
        "max_size": _optional_size,
        "keep_days": _days,
        "min_free": _optional_size,
    },
    "download": {
        "rpc": _rpc,
        "rpc_secret": _string,
        "aria2c": _string,
        "concurrent": _at_least_one,
        "split": _split,
        "max_connection_per_server": _at_least_one,
        "max_tries": _positive_int,
        "retry_wait": _positive_int,
        "timeout": _at_least_one,
        "max_speed": _size,
        "overall_speed": _size,
    },
    "catalog": {"builtin": _boolean},
    "prefetch": {"models": _string_list, "popular": _positive_int, "window_days": _days},
}
_SOURCE_KEYS = {"name", "index", "url", "format"}


# ---------------------------------------------------------------- loading


def read_config_file(path: Path, *, required: bool = False) -> dict[str, Any]:
    """Parse the TOML file; a missing optional file is an empty config."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(
                f"config file {path} does not exist", hint="create it with `cmcache config init`"
            ) from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    return doc


def _check_sections(raw: Mapping[str, Any], origin: str) -> None:
    for section, body in raw.items():
        if section in ("sources", "auth"):
            continue
        if section not in _SCHEMA:
            raise ConfigError(f"unknown section [{section}] in {origin}")
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] in {origin} must be a table")
        for key in body:
            if key not in _SCHEMA[section]:
                known = ", ".join(sorted(_SCHEMA[section]))
                raise ConfigError(
                    f"unknown key {section}.{key} in {origin}", hint=f"known keys: {known}"
                )


def _parse_sources(value: Any, origin: str) -> tuple[Source, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"sources in {origin} must be an array of tables ([[sources]])")
    sources: list[Source] = []
    for number, table in enumerate(value, start=1):
        where = f"[[sources]] #{number} in {origin}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(table) - _SOURCE_KEYS
        if unknown:
            raise ConfigError(f"unknown key sources.{sorted(unknown)[0]} in {where}")
        name = table.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
            raise ConfigError(f"{where}: name must match [A-Za-z0-9_.-]+, got {name!r}")
        index, url = table.get("index"), table.get("url")
        if (index is None) == (url is None):
            raise ConfigError(f"{where} ({name}): give exactly one of index or url")
        location = _string(index if index is not None else url, f"{where} ({name})")
        fmt = _string(table.get("format", "auto"), f"{where} ({name}) format")
        if fmt not in FORMATS:
            raise ConfigError(f"{where} ({name}): format must be one of {', '.join(FORMATS)}")
        if any(s.name == name for s in sources):
            raise ConfigError(f"{where}: source name {name!r} is used twice")
        sources.append(
            Source(
                name=name,
                index=location if index is not None else None,
                url=location if url is not None else None,
                format=fmt,
            )
        )
    return tuple(sources)


def _parse_auth(value: Any, origin: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"[auth] in {origin} must be a table of host = token")
    auth: dict[str, str] = {}
    for host, token in value.items():
        auth[host.lower()] = _string(token, f"auth.{host} in {origin}")
    return auth


def validate(raw: Mapping[str, Any], origin: str, paths: Paths) -> Settings:
    """Turn a merged raw mapping into Settings, naming the first bad key and its origin."""
    _check_sections(raw, origin)

    def section(name: str) -> dict[str, Any]:
        body = raw.get(name, {})
        return {
            key: _SCHEMA[name][key](val, _where(origin, f"{name}.{key}"))
            for key, val in body.items()
        }

    cache = section("cache")
    root = Path(cache.pop("root")).expanduser() if "root" in cache else paths.data_dir / "models"
    download = section("download")
    catalog = section("catalog")
    prefetch = section("prefetch")
    return Settings(
        paths=paths,
        cache=CacheSettings(root=root.absolute(), **cache),
        download=DownloadSettings(**download),
        builtin_catalog=catalog.get("builtin", True),
        sources=_parse_sources(raw["sources"], origin) if "sources" in raw else (),
        auth=_parse_auth(raw["auth"], origin) if "auth" in raw else {},
        prefetch=PrefetchSettings(**prefetch),
    )


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The config values the environment sets (SPEC §3)."""
    out: dict[str, dict[str, Any]] = {}
    if environ.get("CMCACHE_ROOT"):
        out.setdefault("cache", {})["root"] = environ["CMCACHE_ROOT"]
    rpc = environ.get("CMCACHE_ARIA2_RPC") or environ.get("COMFYUI_MANAGER_ARIA2_SERVER")
    if rpc:
        urls = [u.strip() for u in rpc.split(",") if u.strip()]
        out.setdefault("download", {})["rpc"] = [_jsonrpc_url(u) for u in urls]
    secret = environ.get("CMCACHE_ARIA2_SECRET") or environ.get("COMFYUI_MANAGER_ARIA2_SECRET")
    if secret:
        out.setdefault("download", {})["rpc_secret"] = secret
    return out


def _jsonrpc_url(url: str) -> str:
    # ComfyUI-Manager's variable names the server (http://host:6800) without the path.
    return url if url.rstrip("/").endswith("/jsonrpc") else url.rstrip("/") + "/jsonrpc"


def merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two raw configs section by section; ``top`` wins."""
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def layered_config(
    *,
    config_flag: Path | None = None,
    root_flag: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Paths, dict[str, Any]]:
    """The raw config as every command sees it: file ← env ← flags (defaults not filled in)."""
    environ = os.environ if environ is None else environ
    paths = resolve_paths(config_flag, environ)
    explicit = config_flag is not None or bool(environ.get("CMCACHE_CONFIG"))
    raw = read_config_file(paths.config_file, required=explicit)
    validate(raw, str(paths.config_file), paths)  # errors in the file name the file alone
    layered = merge(raw, env_overrides(environ))
    if root_flag is not None:
        layered = merge(layered, {"cache": {"root": str(root_flag)}})
    return paths, layered


def load_settings(
    *,
    config_flag: Path | None = None,
    root_flag: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load settings the way every command does: defaults ← file ← env ← flags."""
    paths, layered = layered_config(config_flag=config_flag, root_flag=root_flag, environ=environ)
    return validate(layered, f"{paths.config_file} (with environment and flags)", paths)


DEFAULTS: dict[str, dict[str, Any]] = {
    "cache": {"max_size": "", "keep_days": 7, "min_free": ""},
    "download": {
        "rpc": "",
        "rpc_secret": "",
        "aria2c": "",
        "concurrent": 3,
        "split": "auto",
        "max_connection_per_server": 16,
        "max_tries": 5,
        "retry_wait": 3,
        "timeout": 60,
        "max_speed": "0",
        "overall_speed": "0",
    },
    "catalog": {"builtin": True},
    "prefetch": {"models": [], "popular": 0, "window_days": 30},
}
MASK = "********"


def masked(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to print: the RPC secret and literal tokens are masked."""
    out = merge(raw, {})
    if out.get("download", {}).get("rpc_secret"):
        out["download"]["rpc_secret"] = MASK
    if isinstance(out.get("auth"), dict):
        out["auth"] = {
            host: tok if str(tok).startswith("env:") else MASK for host, tok in out["auth"].items()
        }
    return out


def set_value(raw: dict[str, Any], key: str, text: str) -> dict[str, Any]:
    """Return ``raw`` with dotted ``key`` set to ``text`` read as a TOML value (else a string)."""
    section, _, name = key.partition(".")
    if not name or ("." in name and section != "auth"):
        raise ConfigError(f"key {key!r} must look like section.key (e.g. cache.max_size)")
    if section != "auth" and name not in _SCHEMA.get(section, {}):
        known = ", ".join(f"{s}.{k}" for s, keys in _SCHEMA.items() for k in keys)
        raise ConfigError(f"unknown key {key!r}", hint=f"known keys: {known}, auth.<host>")
    try:
        value: Any = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return merge(raw, {section: {name: value}})
