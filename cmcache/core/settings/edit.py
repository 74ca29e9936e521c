"""Showing and changing the config: the starter file, masking secrets, setting one key."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from cmcache.core.errors import ConfigError
from cmcache.core.settings.load import merge
from cmcache.core.settings.schema import KEYS, known_keys
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MASK = "********"
_TABLES_HELP = """
# A versions index: many lists, each with its MD5; only changed lists are fetched.
# [[sources]]
# name = "team"
# index = "https://models.example.com/model_versions.json"

# A single list in any supported format (cmcache, simple, comfyui-manager).
# [[sources]]
# name = "manager"
# url = "https://example.com/model-list.json"
# format = "auto"

# Tokens are sent only to exactly this host, never to a redirect target elsewhere.
# [auth]
# "huggingface.co" = "env:HF_TOKEN"
# "civitai.com" = "env:CIVITAI_API_TOKEN"
"""


def _toml_value(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]


def starter_config() -> str:
    """The commented config `config init` writes: every key with its default."""
    lines = [
        "# cmcache configuration. Every key is optional; the values shown are the defaults.",
        "# Sizes: 200G, 1.5T, 500M, 4096 (K/M/G/T and KiB… binary, KB/MB/GB/TB decimal).",
    ]
    for section, keys in KEYS.items():
        lines += ["", f"[{section}]"]
        for name, key in keys.items():
            unset = key.default is None or key.default == ""
            if unset and key.example is not None:
                text = f"# {name} = {_toml_value(key.example)}"
            else:
                text = f"{name} = {_toml_value(key.default)}"
            lines.append(f"{text:<32} # {key.comment}" if key.comment else text)
        if section == "catalog":
            lines.append(_TABLES_HELP.rstrip())
    return "\n".join(lines) + "\n"


def masked(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to print: the RPC secret, literal tokens and URL credentials are masked."""
    out = merge(raw, {})
    if out.get("download", {}).get("rpc_secret"):
        out["download"]["rpc_secret"] = MASK
    rpc = out.get("download", {}).get("rpc")
    if isinstance(rpc, str) and rpc:
        out["download"]["rpc"] = redact(rpc)
    elif isinstance(rpc, list):
        out["download"]["rpc"] = [redact(u) if isinstance(u, str) else u for u in rpc]
    cluster = out.get("cluster", {})
    if cluster.get("secret") and not str(cluster["secret"]).startswith("env:"):
        cluster["secret"] = MASK
    if cluster.get("redis"):
        cluster["redis"] = redact(str(cluster["redis"]))
    if isinstance(out.get("sources"), list):
        out["sources"] = [
            {
                k: redact(v) if k in ("index", "url") and isinstance(v, str) else v
                for k, v in s.items()
            }
            if isinstance(s, dict)
            else s
            for s in out["sources"]
        ]
    if isinstance(out.get("auth"), dict):
        out["auth"] = {
            host: tok if str(tok).startswith("env:") else MASK for host, tok in out["auth"].items()
        }
    return out


def _redact_source(source: Any) -> Any:
    if not isinstance(source, dict):
        return source
    return {
        k: redact(v) if k in ("index", "url") and isinstance(v, str) else v
        for k, v in source.items()
    }


def parse_assignment(key: str, text: str) -> tuple[str, str, Any]:
    """(section, name, value) for ``config set KEY VALUE``; VALUE is TOML, else a string."""
    section, _, name = key.partition(".")
    if not name or ("." in name and section != "auth"):
        raise ConfigError(f"key {key!r} must look like section.key (e.g. cache.max_size)")
    if section != "auth" and name not in KEYS.get(section, {}):
        raise ConfigError(f"unknown key {key!r}", hint=f"known keys: {known_keys()}")
    try:
        value: Any = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return section, name, value


def set_value(raw: dict[str, Any], key: str, text: str) -> dict[str, Any]:
    """Return ``raw`` with dotted ``key`` set to ``text`` read as a TOML value (else a string)."""
    section, name, value = parse_assignment(key, text)
    return merge(raw, {section: {name: value}})


def set_in_document(document: str, key: str, text: str) -> str:
    """The config file's text with one key set, its comments and layout kept."""
    import tomlkit

    section, name, value = parse_assignment(key, text)
    doc = tomlkit.parse(document)
    table = doc.get(section)
    if table is None:
        table = tomlkit.table()
        doc[section] = table
    table[name] = value
    return tomlkit.dumps(doc)
