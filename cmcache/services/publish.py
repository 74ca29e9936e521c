"""Publish a model folder as cmcache lists and a versions index, for every node to sync.

Files are hashed in parallel (hashlib releases the GIL); a hash is reused while the file's
size and mtime are those it had at the last publish. A list's version and bytes change only
when its content does, so `cmcache sync` elsewhere fetches only what changed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cmcache.adapters.storage.hashing import sha256_file
from cmcache.core.errors import CacheError, CmcacheError, UsageError
from cmcache.core.files import remove_quietly, write_atomic
from cmcache.core.manifest.safety import location_problem, url_problem
from cmcache.core.names import is_plain_name
from cmcache.core.publishing import (
    VERSIONS_INDEX,
    PublishedBundle,
    PublishedFile,
    list_document,
    md5_of,
    models_of,
)
from cmcache.core.states import ListStatus, ProgressState
from cmcache.core.targets import Progress

if TYPE_CHECKING:
    from collections.abc import Callable

HASH_CACHE = ".publish-cache.json"
REPORT_EVERY = 0.2  # seconds between progress reports while hashing
BUNDLES_LIST = "bundles"  # with --list-by folder, bundles get a list of their own
CACHE_SCHEMA = 1


@dataclass(frozen=True)
class PublishedList:
    """One list and what publishing did to it."""

    name: str
    status: ListStatus
    version: str
    files: int


@dataclass(frozen=True)
class PublishReport:
    """Every list's outcome and what the hashing cost."""

    lists: tuple[PublishedList, ...]
    hashed: int
    reused: int
    bytes_hashed: int
    seconds: float
    out: Path
    dry_run: bool
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Found:
    folder: str
    filename: str
    path: Path
    size: int
    mtime_ns: int

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.filename}"


def publish(
    directory: Path,
    base_url: str,
    out: Path,
    *,
    list_by: str = "folder",
    name: str = "models",
    bundles: dict[str, str] | None = None,
    dry_run: bool = False,
    on_progress: Callable[[list[Progress]], None] | None = None,
) -> PublishReport:
    """Write ``out/<list>.json`` and ``out/model_versions.json`` for the models in ``directory``.

    Raises:
        UsageError: a bad directory, URL, list name or file name.
        CacheError: a file cannot be read, or ``out`` cannot be written.
    """
    started = time.monotonic()
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a folder")
    problem = url_problem(base_url)
    if problem:
        raise UsageError(f"--base-url: {problem}")
    if list_by not in ("folder", "one") or not is_plain_name(name):
        raise UsageError("--list-by is folder or one; --name must match [A-Za-z0-9_.-]+")
    warnings: list[str] = []
    try:
        found = _walk(directory, out, warnings.append)
        if not dry_run:
            _check_writable(out)
        cache = _read_cache(out)
        fresh = [f for f in found if cache.get(f.key, [None, None])[:2] != [f.size, f.mtime_ns]]
        fresh_keys = {f.key for f in fresh}
        digests = {f.key: cache[f.key][2] for f in found if f.key not in fresh_keys}
        digests |= _hash_all(fresh, on_progress)
        files = [PublishedFile(f.folder, f.filename, f.size, digests[f.key]) for f in found]
        packed = _bundles(directory, out, files, bundles or {}, dry_run)
        in_bundles = {(f.folder, f.filename) for b in packed for f in b.members}
        groups: dict[str, list[PublishedFile]] = {}
        for f in files:
            if (f.folder, f.filename) not in in_bundles:
                groups.setdefault(f.folder if list_by == "folder" else name, []).append(f)
        bundle_list = BUNDLES_LIST if list_by == "folder" else name
        if packed:
            groups.setdefault(bundle_list, [])
        lists = _write_lists(out, base_url, groups, {bundle_list: packed}, dry_run)
        if not dry_run:
            entries = {f.key: [f.size, f.mtime_ns, digests[f.key]] for f in found}
            doc = {"schema": CACHE_SCHEMA, "files": entries}
            write_atomic(out / HASH_CACHE, json.dumps(doc).encode())
    except CmcacheError:
        raise
    except OSError as exc:
        where = exc.filename or out
        raise CacheError(f"publish: {where}: {exc.strerror or exc}") from None
    return PublishReport(
        tuple(lists),
        len(fresh),
        len(found) - len(fresh),
        sum(f.size for f in fresh),
        time.monotonic() - started,
        out,
        dry_run,
        tuple(warnings),
    )


def _check_writable(out: Path) -> None:
    """Fail before hashing (which may take minutes) when ``out`` cannot take files.

    Raises:
        CacheError: it cannot be created or written to.
    """
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise CacheError(
            f"cannot write to {out}: {exc.strerror or exc}", hint="--out names a writable folder"
        ) from None


def _walk(directory: Path, out: Path, warn: Callable[[str], None]) -> list[_Found]:
    """``<folder>/<file>`` under ``directory`` (subfolders kept). Hidden names, what
    publishing itself writes (``out``, or ``DIR/bundles`` when ``out`` is ``DIR``) and links
    to folders are skipped; a link whose target leaves ``directory`` is skipped with a warning,
    a link to a file inside it is published under its own name."""
    top = directory.resolve()
    written = out.resolve()
    skip = {written / "bundles"} if written == top else {written}
    found = []
    for folder in sorted(top.iterdir()):
        if folder.name.startswith(".") or folder in skip or not folder.is_dir():
            continue
        if folder.is_symlink():
            _outside(folder, top, directory, warn)  # a link inside DIR: its files are there
            continue
        for here, dirnames, filenames in os.walk(folder):
            base = Path(here)
            for sub in list(dirnames):
                path = base / sub
                if sub.startswith(".") or path in skip or path.is_symlink():
                    dirnames.remove(sub)
                    if path.is_symlink():
                        _outside(path, top, directory, warn)
            for filename in filenames:
                path = base / filename
                hidden = filename.startswith(".")
                if hidden or (path.is_symlink() and _outside(path, top, directory, warn)):
                    continue
                if path.is_file():  # not a broken link, a pipe or a socket
                    found.append(_found(folder, path))
    return sorted(found, key=lambda f: (f.folder, f.filename.split("/")))


def _outside(link: Path, top: Path, directory: Path, warn: Callable[[str], None]) -> bool:
    """Whether a link leads out of the published folder (then it is named in a warning)."""
    target = link.resolve()
    if target == top or top in target.parents:
        return False
    shown = directory / link.relative_to(top)
    warn(f"skipped {shown}: a symbolic link to {target}, outside {directory}")
    return True


def _found(folder: Path, path: Path) -> _Found:
    filename = path.relative_to(folder).as_posix()
    problem = location_problem(folder.name, filename)
    if problem:
        raise UsageError(f"cannot publish {folder.name}/{filename}: {problem}")
    st = path.stat()
    return _Found(folder.name, filename, path, st.st_size, st.st_mtime_ns)


def _read_cache(out: Path) -> dict[str, list[Any]]:
    try:
        doc = json.loads((out / HASH_CACHE).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("schema") != CACHE_SCHEMA:
        return {}  # a cache of another shape is only a cache: hash again
    files = doc.get("files")
    return files if isinstance(files, dict) else {}


def _hash_all(
    files: list[_Found], on_progress: Callable[[list[Progress]], None] | None
) -> dict[str, str]:
    """sha256 of each file, in parallel; progress as one item for all the files, reported at
    most every REPORT_EVERY seconds (a report per file over every file grew as N²)."""
    total = sum(f.size for f in files)
    done = [0]
    label = f"{len(files)} file{'' if len(files) == 1 else 's'}"
    reported = [0.0]

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if on_progress is not None and (force or now - reported[0] >= REPORT_EVERY):
            reported[0] = now
            on_progress([Progress(label, ProgressState.VERIFYING, done[0], total, 0)])

    def one(f: _Found) -> tuple[str, str]:
        def seen(n: int) -> None:
            done[0] += n  # one int, updated under the GIL; exactness is not needed for a bar

        return f.key, sha256_file(f.path, seen)

    workers = max(1, min(len(files), os.cpu_count() or 1))
    results: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cmcache-hash") as pool:
        for key, sha in pool.map(one, files):
            results[key] = sha
            report()
    if files:
        report(force=True)
    return results


def _bundles(
    directory: Path, out: Path, files: list[PublishedFile], specs: dict[str, str], dry_run: bool
) -> list[PublishedBundle]:
    """Pack the files each ``NAME=GLOB`` matches into ``out/bundles/NAME.zip`` (stored, not
    compressed: weights do not shrink). An archive whose members did not change is kept."""
    packed = []
    for bundle_name, pattern in sorted(specs.items()):
        if not is_plain_name(bundle_name):
            raise UsageError(f"--bundle {bundle_name}: a name must match [A-Za-z0-9_.-]+")
        members = tuple(f for f in files if fnmatch.fnmatch(f"{f.folder}/{f.filename}", pattern))
        if not members:
            raise UsageError(f"--bundle {bundle_name}={pattern}: no file matches")
        archive = out / "bundles" / f"{bundle_name}.zip"
        record = out / "bundles" / f"{bundle_name}.members.json"
        content = [[f.folder, f.filename, f.sha256] for f in members]
        kept = _kept_archive(archive, record, content)
        if kept is not None:  # same members: the archive and its hash from last time
            sha, size = kept
        elif dry_run:
            sha, size = "0" * 64, sum(f.size for f in members)
        else:
            sha, size = _zip(directory, members, archive)
            doc = {"members": content, "sha256": sha, "size": size}
            write_atomic(record, json.dumps(doc).encode())
        packed.append(PublishedBundle(bundle_name, sha, size, members))
    return packed


def _kept_archive(archive: Path, record: Path, content: list[list[str]]) -> tuple[str, int] | None:
    """(sha256, size) of an archive built earlier from exactly these members, if still there."""
    try:
        doc = json.loads(record.read_bytes())
        kept = doc["members"] == content and archive.stat().st_size == doc["size"]
        return (str(doc["sha256"]), int(doc["size"])) if kept else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _zip(directory: Path, members: tuple[PublishedFile, ...], archive: Path) -> tuple[str, int]:
    """Write a stored zip of ``members`` atomically; its (sha256, size)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for f in members:
            info = zipfile.ZipInfo(f"{f.folder}/{f.filename}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with (
                (directory / f.folder / f.filename).open("rb") as src,
                zf.open(info, "w", force_zip64=True) as dst,
            ):
                shutil.copyfileobj(src, dst, 8 << 20)
    partial.replace(archive)
    return sha256_file(archive), archive.stat().st_size


def _write_lists(
    out: Path,
    base_url: str,
    groups: dict[str, list[PublishedFile]],
    bundles: dict[str, list[PublishedBundle]],
    dry_run: bool,
) -> list[PublishedList]:
    index_path = out / VERSIONS_INDEX
    try:
        old_index: dict[str, Any] = json.loads(index_path.read_bytes())
    except (OSError, ValueError):
        old_index = {}
    stamp = time.strftime("%Y.%m.%d.%H%M%S", time.gmtime())
    index: dict[str, dict[str, str]] = {}
    outcomes: list[PublishedList] = []
    for list_name, files in sorted(groups.items()):
        path = out / f"{list_name}.json"
        old = path.read_bytes() if path.is_file() else None
        old_version = str(old_index.get(list_name, {}).get("version", ""))
        packed = bundles.get(list_name, [])
        candidate = list_document(list_name, old_version, base_url, files, packed)
        if old is not None and list_name in old_index and models_of(old) == models_of(candidate):
            body, status, version = old, ListStatus.UNCHANGED, old_version
        else:
            version = stamp
            body = list_document(list_name, version, base_url, files, packed)
            status = ListStatus.UPDATED if list_name in old_index else ListStatus.ADDED
            if not dry_run:
                write_atomic(path, body)
        index[list_name] = {"url": path.name, "md5": md5_of(body), "version": version}
        count = len(files) + sum(len(b.members) for b in packed)
        outcomes.append(PublishedList(list_name, status, version, count))
    for list_name in sorted(set(old_index) - set(groups)):
        outcomes.append(PublishedList(list_name, ListStatus.REMOVED, "", 0))
        if not dry_run:
            remove_quietly(out / f"{list_name}.json")
    body = (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()
    unchanged = index_path.is_file() and index_path.read_bytes() == body
    if not dry_run and not unchanged:  # lists first, then the index that names their MD5s
        write_atomic(index_path, body)
    return outcomes
