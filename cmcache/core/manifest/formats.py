"""Model lists in three formats (simple, cmcache, comfyui-manager) parsed into valid entries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cmcache.core.comfyui import modern_folder
from cmcache.core.errors import ManifestError
from cmcache.core.manifest.entry import Bundle, Entry
from cmcache.core.manifest.safety import location_problem, model_url_problem
from cmcache.core.names import SHA256_RE
from cmcache.core.sizes import parse_size

SUPPORTED_SCHEMA = 1
# ComfyUI-Manager names a whole Hugging Face repository by a bare OWNER/REPO url.
_BARE_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

# ComfyUI-Manager `type` → ComfyUI folder, for save_path "default".
MANAGER_TYPE_FOLDERS = {
    "checkpoint": "checkpoints",
    "checkpoints": "checkpoints",
    "unclip": "checkpoints",
    "clip": "text_encoders",
    "text_encoders": "text_encoders",
    "vae": "vae",
    "lora": "loras",
    "controlnet": "controlnet",
    "t2i-adapter": "controlnet",
    "t2i-style": "controlnet",
    "clip_vision": "clip_vision",
    "gligen": "gligen",
    "upscale": "upscale_models",
    "embedding": "embeddings",
    "embeddings": "embeddings",
    "unet": "diffusion_models",
    "diffusion_model": "diffusion_models",
}


@dataclass(frozen=True)
class ParsedList:
    """A parsed model list and what was skipped in it."""

    format: str
    version: str
    entries: tuple[Entry, ...]
    warnings: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- safety


# ---------------------------------------------------------------- parsing


def parse_manifest(
    data: bytes, *, list_name: str, fmt: str = "auto", source: str = ""
) -> ParsedList:
    """Parse one list. Structural problems raise; bad entries are skipped with a warning.

    Raises:
        ManifestError: not JSON, not a known format, or a newer schema than supported.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"list {list_name!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ManifestError(f"list {list_name!r} is nested too deeply to be a model list") from None
    if fmt == "auto":
        fmt = detect_format(doc, list_name)
    if fmt != "simple" and not isinstance(doc, dict):
        raise ManifestError(f"list {list_name!r}: expected a JSON object at the top")
    readers = {"cmcache": _read_cmcache, "simple": _read_simple, "comfyui-manager": _read_manager}
    if fmt not in readers:
        raise ManifestError(f"list {list_name!r}: unknown format {fmt!r}")
    version, raw_entries = readers[fmt](doc, list_name)
    entries: list[Entry] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for ident, build in raw_entries:
        try:
            built = build()
        except ValueError as exc:
            warnings.append(f"list {list_name!r}, entry {ident}: {exc}; skipped")
            continue
        group = [replace(e, folder=modern_folder(e.folder)) for e in _as_list(built)]
        problem = next(
            (
                p
                for e in group
                if (p := location_problem(e.folder, e.filename) or _urls_problem(e.urls))
            ),
            None,
        )
        if problem:  # a bundle stands or falls whole
            warnings.append(f"list {list_name!r}, entry {ident}: {problem}; skipped")
            continue
        for entry in group:
            if entry.ref in seen:
                warnings.append(
                    f"list {list_name!r}, entry {ident}: {entry.ref} appears twice; skipped"
                )
                continue
            seen.add(entry.ref)
            entries.append(replace(entry, source=source, list_name=list_name))
    return ParsedList(fmt, version, tuple(entries), tuple(warnings))


def _as_list(built: Entry | list[Entry]) -> list[Entry]:
    return built if isinstance(built, list) else [built]


def _urls_problem(urls: tuple[str, ...]) -> str | None:
    return next((p for u in urls if (p := model_url_problem(u))), None)


def detect_format(doc: Any, list_name: str) -> str:
    """Tell the three formats apart by their shape."""
    if isinstance(doc, dict):
        if "schema" in doc:
            return "cmcache"
        models = doc.get("models")
        if isinstance(models, list):
            first = next((m for m in models if isinstance(m, dict)), {})
            return "cmcache" if "folder" in first else "comfyui-manager"
        if doc and all(isinstance(v, dict) for v in doc.values()):
            return "simple"
    raise ManifestError(
        f"list {list_name!r} is in no known format",
        hint="expected the cmcache, simple or comfyui-manager layout (see README)",
    )


Builder = Any  # Callable[[], Entry]; typed loosely so lambdas stay readable
RawEntries = Iterator[tuple[str, Builder]]


def _read_cmcache(doc: Any, list_name: str) -> tuple[str, RawEntries]:
    schema = doc.get("schema", SUPPORTED_SCHEMA)
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ManifestError(f"list {list_name!r}: schema must be a whole number, got {schema!r}")
    if schema > SUPPORTED_SCHEMA:
        raise ManifestError(
            f"list {list_name!r} uses schema {schema}; this cmcache reads schema "
            f"{SUPPORTED_SCHEMA} at most",
            hint="upgrade cmcache (pip install -U cmcache)",
        )
    models = doc.get("models")
    if not isinstance(models, list):
        raise ManifestError(f"list {list_name!r}: 'models' must be a list")

    def entries() -> RawEntries:
        for number, item in enumerate(models, start=1):
            ident = _ident(item, number)
            if isinstance(item, dict) and "bundle" in item:
                yield ident, lambda item=item: _bundle_entries(item)
            else:
                yield ident, lambda item=item: _entry_from_object(item, None, None)

    return str(doc.get("version", "")), entries()


def _read_simple(doc: Any, list_name: str) -> tuple[str, RawEntries]:
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise ManifestError(f"list {list_name!r}: the simple format maps folder → filename → URL")

    def entries() -> RawEntries:
        for folder, files in doc.items():
            for filename, spec in files.items():
                ident = f"{folder}/{filename}"
                if isinstance(spec, str):
                    yield (
                        ident,
                        lambda f=folder, n=filename, u=spec: _entry_from_object({"url": u}, f, n),
                    )
                else:
                    yield ident, lambda f=folder, n=filename, s=spec: _entry_from_object(s, f, n)

    return "", entries()


def _read_manager(doc: Any, list_name: str) -> tuple[str, RawEntries]:
    models = doc.get("models")
    if not isinstance(models, list):
        raise ManifestError(f"list {list_name!r}: 'models' must be a list")

    def entries() -> RawEntries:
        for number, item in enumerate(models, start=1):
            yield _ident(item, number), lambda item=item: _entry_from_manager(item)

    return str(doc.get("version", "")), entries()


def _ident(item: Any, number: int) -> str:
    if isinstance(item, dict):
        label = item.get("name") or item.get("filename")
        if isinstance(label, str) and label:
            return f"#{number} ({label!r})"
    return f"#{number}"


def _text(obj: Mapping[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def _texts(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings")
    return tuple(value)


def _size_of(value: Any) -> tuple[int | None, bool]:
    """Integers are exact byte counts; strings ("6.46GB") are display sizes, approximate."""
    if value is None or value == "":
        return None, True
    if isinstance(value, bool):
        raise ValueError(f"size must be bytes or a size like '6.5GB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return value, True
    if isinstance(value, str | float):
        return parse_size(value), False
    raise ValueError(f"size must be bytes or a size like '6.5GB', got {value!r}")


def _sha256_of(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not SHA256_RE.match(value):
        raise ValueError(f"sha256 must be 64 hex digits, got {value!r}")
    return value.lower()


def _entry_from_object(obj: Any, folder: str | None, filename: str | None) -> Entry:
    if not isinstance(obj, dict):
        raise ValueError("must be an object or a URL string")
    folder = folder if folder is not None else _text(obj, "folder")
    filename = filename if filename is not None else _text(obj, "filename")
    url = _text(obj, "url")
    if not url:
        raise ValueError("has no url")
    size, exact = _size_of(obj.get("size"))
    return Entry(
        folder=folder,
        filename=filename,
        urls=(url, *_texts(obj, "mirrors")),
        sha256=_sha256_of(obj.get("sha256")),
        size=size,
        size_exact=exact,
        name=_text(obj, "name"),
        aliases=_texts(obj, "aliases"),
        tags=_texts(obj, "tags"),
        description=_text(obj, "description"),
    )


def _bundle_entries(obj: dict[str, Any]) -> list[Entry]:
    """The members of a bundle entry, each an Entry that knows its archive."""
    name, url = _text(obj, "bundle"), _text(obj, "url")
    sha = _sha256_of(obj.get("sha256"))
    if not name or not url or sha is None:
        raise ValueError("a bundle needs a name (bundle), a url and a sha256")
    fmt = _text(obj, "format") or ("zip" if url.lower().split("?")[0].endswith(".zip") else "tar")
    if fmt not in ("zip", "tar"):
        raise ValueError(f"bundle format must be zip or tar, got {fmt!r}")
    size, exact = _size_of(obj.get("size"))
    members = obj.get("members")
    if not isinstance(members, list) or not members:
        raise ValueError("a bundle needs a non-empty members list")
    entries = []
    for member in members:
        if not isinstance(member, dict):
            raise ValueError("each bundle member must be an object")
        member_sha, (member_size, member_exact) = member.get("sha256"), _size_of(member.get("size"))
        if _sha256_of(member_sha) is None or member_size is None or not member_exact:
            raise ValueError("each bundle member needs its sha256 and exact size")
        entries.append(
            Entry(
                folder=_text(member, "folder"),
                filename=_text(member, "filename"),
                urls=(url,),
                sha256=_sha256_of(member_sha),
                size=member_size,
                description=_text(obj, "description"),
                tags=("bundle", name),
            )
        )
    refs = tuple(f"{modern_folder(e.folder)}/{e.filename}" for e in entries)
    bundle = Bundle(name, url, sha, size if exact else None, fmt, refs)
    return [replace(e, bundle=bundle) for e in entries]


def manager_location(save_path: str, model_type: str, filename: str) -> tuple[str, str]:
    """Map ComfyUI-Manager's save_path/type to (folder, filename) under root."""
    if save_path.strip() in ("", "default"):
        return MANAGER_TYPE_FOLDERS.get(model_type.strip().lower(), "etc"), filename
    head, _, rest = save_path.strip().strip("/").partition("/")
    return head, f"{rest}/{filename}" if rest else filename


def _entry_from_manager(obj: Any) -> Entry:
    if not isinstance(obj, dict):
        raise ValueError("must be an object")
    filename = _text(obj, "filename")
    url = _text(obj, "url")
    if not url:
        raise ValueError("has no url")
    if _BARE_REPO_RE.match(url):  # a whole Hugging Face repository, kept in a folder of its name
        filename, url = url.rsplit("/", 1)[1], f"hf:{url}"
    folder, path = manager_location(
        _text(obj, "save_path", "default"), _text(obj, "type"), filename
    )
    size, exact = _size_of(obj.get("size"))
    tags = tuple(t for t in (_text(obj, "base"), _text(obj, "type")) if t)
    return Entry(
        folder=folder,
        filename=path,
        urls=(url,),
        sha256=_sha256_of(obj.get("sha256")),
        size=size,
        size_exact=exact,
        name=_text(obj, "name"),
        tags=tags,
        description=_text(obj, "description"),
    )
