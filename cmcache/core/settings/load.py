"""Loading settings: defaults ← TOML file ← environment ← flags, validated into frozen data."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmcache.core.comfyui import DESKTOP_YAML, desktop_config_dir, load_extra_paths
from cmcache.core.errors import ConfigError
from cmcache.core.names import is_plain_name
from cmcache.core.settings.model import (
    APP,
    FORMATS,
    CacheSettings,
    ClusterSettings,
    ComfyUISettings,
    DownloadSettings,
    Paths,
    PrefetchSettings,
    Settings,
    Source,
)
from cmcache.core.settings.schema import (
    DEFAULTS,
    FREE_TABLES,
    KEYS,
    MANAGER_SOURCE,
    SOURCE_KEYS,
)
from cmcache.core.sourcerefs import Endpoints

if TYPE_CHECKING:
    from collections.abc import Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


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
    return parse_toml(text, str(path))


def parse_toml(text: str, origin: str) -> dict[str, Any]:
    """Parse config text; a syntax error names ``origin``, line and column."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: TOML syntax error: {exc}") from None


def _check_sections(raw: Mapping[str, Any], origin: str) -> None:
    for section, body in raw.items():
        if section in FREE_TABLES:
            continue
        if section not in KEYS:
            raise ConfigError(f"unknown section [{section}] in {origin}")
        if not isinstance(body, dict):
            raise ConfigError(f"[{section}] in {origin} must be a table")
        for key in body:
            if key not in KEYS[section]:
                known = ", ".join(sorted(KEYS[section]))
                raise ConfigError(
                    f"unknown key {section}.{key} in {origin}", hint=f"known keys: {known}"
                )


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _parse_sources(value: Any, origin: str) -> tuple[Source, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"sources in {origin} must be an array of tables ([[sources]])")
    sources: list[Source] = []
    for number, table in enumerate(value, start=1):
        where = f"[[sources]] #{number} in {origin}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table")
        unknown = set(table) - set(SOURCE_KEYS)
        if unknown:
            raise ConfigError(f"unknown key sources.{sorted(unknown)[0]} in {where}")
        name = table.get("name")
        if not isinstance(name, str) or not is_plain_name(name):
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
    return {host.lower(): _string(tok, f"auth.{host} in {origin}") for host, tok in value.items()}


def validate(raw: Mapping[str, Any], origin: str, paths: Paths) -> Settings:
    """Turn a merged raw mapping into Settings, naming the first bad key and its origin."""
    _check_sections(raw, origin)

    def section(name: str) -> dict[str, Any]:
        given = raw.get(name, {})
        body = {**DEFAULTS[name], **given}
        return {
            key: KEYS[name][key].parse(val, f"{name}.{key} in {origin}" if key in given else key)
            for key, val in body.items()
        }

    comfyui = section("comfyui")
    comfy_path = Path(comfyui["path"]).expanduser().absolute() if "path" in comfyui else None
    here = paths.config_file.parent
    extra = tuple((here / Path(f).expanduser()).absolute() for f in comfyui["extra_model_paths"])
    desktop = desktop_config_dir(os.environ, sys.platform)
    comfy = ComfyUISettings(
        comfy_path, extra, comfyui["download_hosts"], desktop / DESKTOP_YAML if desktop else None
    )
    cache = section("cache")
    if "root" in cache:
        root = Path(cache.pop("root")).expanduser()
    elif base := _download_base(comfy):  # ComfyUI-Manager's download_model_base
        root = base
    elif comfy_path is not None:  # ComfyUI's own models/ folder
        root = comfy_path / "models"
    else:
        root = paths.data_dir / "models"
    catalog = section("catalog")
    sources = _parse_sources(raw["sources"], origin) if "sources" in raw else ()
    if catalog["manager"]:  # ComfyUI-Manager's own list, synced like any configured source
        if any(s.name == MANAGER_SOURCE for s in sources):
            raise ConfigError(
                f"catalog.manager in {origin}: a configured source is already named "
                f"{MANAGER_SOURCE!r}; rename it or set catalog.manager = false"
            )
        url = catalog["manager_url"]
        sources += (Source(MANAGER_SOURCE, url=url, format="comfyui-manager"),)
    return Settings(
        paths=paths,
        cache=CacheSettings(root=root.absolute(), **cache),
        download=DownloadSettings(**section("download")),
        builtin_catalog=catalog["builtin"],
        sources=sources,
        auth=_parse_auth(raw["auth"], origin) if "auth" in raw else {},
        prefetch=PrefetchSettings(**section("prefetch")),
        comfyui=comfy,
        cluster=ClusterSettings(**section("cluster")),
        endpoints=Endpoints(section("huggingface")["endpoint"], section("civitai")["endpoint"]),
    )


def _download_base(comfy: ComfyUISettings) -> Path | None:
    """Where ComfyUI-Manager puts new models, if an extra-paths file that exists says so."""
    files = tuple(f for f in comfy.yaml_files if f.is_file())
    return load_extra_paths(files).download_base if files else None


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The config values the environment sets."""
    out: dict[str, dict[str, Any]] = {}
    if environ.get("CMCACHE_ROOT"):
        out.setdefault("cache", {})["root"] = environ["CMCACHE_ROOT"]
    if environ.get("CMCACHE_REDIS"):
        out.setdefault("cluster", {})["redis"] = environ["CMCACHE_REDIS"]
    for variable, section in (("HF_ENDPOINT", "huggingface"), ("CIVITAI_ENDPOINT", "civitai")):
        if environ.get(variable):
            out.setdefault(section, {})["endpoint"] = environ[variable]
    if environ.get("CMCACHE_COMFYUI"):
        out.setdefault("comfyui", {})["path"] = environ["CMCACHE_COMFYUI"]
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
    comfyui_flag: Path | None = None,
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
    if comfyui_flag is not None:
        layered = merge(layered, {"comfyui": {"path": str(comfyui_flag)}})
    return paths, layered


def load_settings(
    *,
    config_flag: Path | None = None,
    root_flag: Path | None = None,
    comfyui_flag: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load settings the way every command does: defaults ← file ← env ← flags."""
    paths, layered = layered_config(
        config_flag=config_flag, root_flag=root_flag, comfyui_flag=comfyui_flag, environ=environ
    )
    return validate(layered, f"{paths.config_file} (with environment and flags)", paths)
