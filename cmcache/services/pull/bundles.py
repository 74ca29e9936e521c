"""Bundles: one archive (zip or tar) carrying several models. It is downloaded once and
verified, then each member is extracted to staging (never past its listed size), verified
against its own sha256 and placed atomically; the archive is deleted. In a cluster whose peers
hold every missing member, the members come from them instead (``members_from_peers``), and
the archive only for those they fail to deliver. Anything the member list
does not name, absolute or ``..`` paths, links, a name twice, encryption or an unknown
compression method refuse the whole archive before anything is placed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import lzma
import os
import tarfile
import zipfile
import zlib
from dataclasses import replace
from functools import partial
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING

from cmcache.core.errors import (
    CacheError,
    CmcacheError,
    DiskFullError,
    ExitCode,
    IntegrityError,
)
from cmcache.core.files import remove_quietly
from cmcache.core.manifest.entry import Entry
from cmcache.core.states import PullOutcome
from cmcache.core.targets import Outcome, PullOptions, Target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.manifest.entry import Bundle
    from cmcache.services.cluster.node import Cluster
    from cmcache.services.download.downloader import Downloader
    from cmcache.services.download.placement import Placement

    Opener = Callable[[], IO[bytes]]

CHUNK = 8 << 20
SYMLINK = 0o120000
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# What reading a damaged archive raises (zipfile, tarfile and the decompressors under them).
UNREADABLE = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
)


def archive_target(store: ModelStore, members: list[Target]) -> Target:
    """The download of the archive that carries ``members`` (all of one bundle)."""
    bundle = members[0].entry.bundle
    assert bundle is not None
    name = f"{hashlib.sha256(bundle.url.encode()).hexdigest()[:16]}.{bundle.format}"
    entry = Entry(
        "bundles",
        name,
        (bundle.url,),
        sha256=bundle.sha256,
        size=bundle.size,
        source=members[0].entry.source,
    )
    final = store.meta_dir / "bundles" / name
    staging = store.staging_dir / f"{name}.incomplete"
    return Target(entry, final, staging, archive=True, bundle_archive=True)


def by_bundle(targets: list[Target]) -> dict[str, list[Target]]:
    """Bundle members grouped by their archive's URL."""
    groups: dict[str, list[Target]] = {}
    for target in targets:
        assert target.entry.bundle is not None
        groups.setdefault(target.entry.bundle.url, []).append(target)
    return groups


def members_from_peers(
    cluster: Cluster | None, bundles: dict[str, list[Target]], detach: bool
) -> tuple[list[Target], dict[str, list[Target]]]:
    """Split the bundles to fetch: members to take from peers, and the bundles whose archive
    the origin sends.

    A bundle's missing members come from peers only when live peers hold every one of them
    with its listed sha256: the origin serves only the whole archive, so once it must send it
    for one member, it brings them all. A detached pull takes the archive (nothing stays to
    fall back to it when a peer fails).
    """
    if cluster is None or detach:
        return [], bundles
    peered: list[Target] = []
    archived: dict[str, list[Target]] = {}
    for url, members in bundles.items():
        if all(cluster.peers(m, m.entry.sha256) for m in members):  # stops at the first unheld
            peered += members
        else:
            archived[url] = members
    return peered, archived


def unpack(
    archive: Outcome, members: list[Target], placement: Placement, *, count_use: bool = True
) -> list[Outcome]:
    """Place each member from a downloaded archive (each counted as used unless not
    ``count_use``); the archive is removed afterwards.

    Members placed before a failure stay placed and say so; a member that cannot be written
    (a full disk) fails with the disk's error, and its staging file goes.
    """
    path = archive.target.final
    bundle = members[0].entry.bundle
    assert bundle is not None
    done: dict[str, Outcome] = {}
    failure: tuple[int, str] | None = None
    try:
        _unpack(path, bundle, members, placement, archive.seconds, done, count_use)
    except IntegrityError as exc:
        failure = (int(exc.exit_code), exc.message)
    except UNREADABLE as exc:
        failure = (int(ExitCode.INTEGRITY), f"bundle {bundle.name}: cannot read the archive: {exc}")
    finally:
        remove_quietly(path)
    for target in members:
        if target.ref in done:
            continue
        if failure is None:
            done[target.ref] = _failed(target, f"bundle {bundle.name} does not hold {target.ref}")
        else:
            done[target.ref] = _failed(target, failure[1], failure[0])
    return [done[t.ref] for t in members]


def archive_members(
    downloader: Downloader,
    archive: Outcome,
    bundles: dict[str, list[Target]],
    opts: PullOptions,
    on_outcome: Callable[[Outcome], None] | None,
) -> list[Outcome]:
    """The outcomes of an archive's members: placed from it and announced, or (failed or
    queued) sharing its fate. The archive's fetch lock, kept past its download, goes once its
    members are announced."""
    members = bundles[archive.target.entry.urls[0]]
    if archive.outcome == PullOutcome.DOWNLOADED:
        unpacked = unpack(archive, members, downloader.placement, count_use=opts.count_use)
    else:
        unpacked = [replace(archive, target=m) for m in members]
    for member in unpacked:
        if member.outcome == PullOutcome.DOWNLOADED and downloader.cluster is not None:
            downloader.cluster.announce(member.target.ref, member.sha256 or "", member.bytes)
        if on_outcome:
            on_outcome(member)
    if downloader.cluster is not None:  # announced: nodes that waited on it take them from here
        downloader.cluster.free(archive.target.ref)
    return unpacked


def _failed(target: Target, message: str, code: int = ExitCode.INTEGRITY) -> Outcome:
    return Outcome(target, PullOutcome.FAILED, code=int(code), message=message)


def _unpack(
    path: Path,
    bundle: Bundle,
    members: list[Target],
    placement: Placement,
    seconds: float,
    done: dict[str, Outcome],
    count_use: bool,
) -> None:
    """Extract, verify and place each wanted member, recording its outcome in ``done``."""
    wanted = {t.ref: t for t in members}
    for ref, stated, open_member in _members(path, bundle):
        target = wanted.get(ref)
        if target is None:
            continue  # listed in the bundle, present already: nothing to do
        try:
            done[ref] = _place(target, stated, open_member, bundle, placement, seconds, count_use)
        except CmcacheError as exc:
            remove_quietly(target.staging)
            done[ref] = _failed(target, exc.message, exc.exit_code)


def _place(
    target: Target,
    stated: int,
    open_member: Opener,
    bundle: Bundle,
    placement: Placement,
    seconds: float,
    count_use: bool,
) -> Outcome:
    """Extract one member to staging (never more than its listed size), verify and place it.

    Raises:
        IntegrityError: the member is larger, damaged, or other bytes than listed.
        CacheError: staging or the final path cannot be written.
    """
    size = target.entry.exact_size
    assert size is not None  # every bundle member states its exact size
    where = f"{target.ref} (in bundle {bundle.name})"
    if stated != size:  # the archive's own header says so: nothing to extract
        raise IntegrityError(f"{where}: the archive holds {stated} bytes, the list says {size}")
    sha, written = _copy(open_member, target.staging, size, where)
    try:
        record = placement.commit(target, (sha, written), size, target.entry.sha256, bundle.url)
    except IntegrityError as exc:
        raise IntegrityError(f"{exc.message} (in bundle {bundle.name})") from None
    except CacheError as exc:  # the index cannot record it: nothing was placed
        raise type(exc)(f"{where}: {exc.message}", hint=exc.hint) from None
    except OSError as exc:
        raise CacheError(f"{where}: cannot place it at {target.final}: {exc.strerror}") from None
    with contextlib.suppress(CacheError):  # placed and recorded; the use time may wait
        if count_use:
            placement.index.record_use(target.entry.folder, target.entry.filename)
    return Outcome(target, PullOutcome.DOWNLOADED, record.size, seconds, sha)


def _members(path: Path, bundle: Bundle) -> Iterator[tuple[str, int, Opener]]:
    """(ref, size its header states, opener) of each listed member, after checking every entry
    of the archive.

    Raises:
        IntegrityError: an entry is unsafe (absolute, ``..``, a link), not in the list, named
            twice, encrypted, or packed with a method cmcache cannot read.
    """
    listed = set(bundle.members)
    parents = {str(p) for ref in listed for p in PurePosixPath(ref).parents} - {"."}
    seen: set[str] = set()
    if bundle.format == "zip":
        with zipfile.ZipFile(path) as archive:
            files = []
            for info in archive.infolist():
                name = _checked(info.filename, bundle)
                if (info.external_attr >> 16) & 0o170000 == SYMLINK:
                    raise _refused(bundle, info.filename, "is a symbolic link")
                _once(name, seen, bundle)
                if info.is_dir():
                    _only_parent(name, parents, bundle)
                    continue
                _listed(name, listed, bundle)
                if info.flag_bits & 0x1:
                    raise _refused(bundle, info.filename, "is encrypted")
                if info.compress_type not in ZIP_METHODS:
                    why = f"uses compression method {info.compress_type}, which cmcache cannot read"
                    raise _refused(bundle, info.filename, why)
                files.append((name, info))
            for name, info in files:
                yield name, info.file_size, partial(archive.open, info)
        return
    with tarfile.open(path, "r:*") as archive:
        entries = []
        for member in archive.getmembers():
            name = _checked(member.name, bundle)
            _once(name, seen, bundle)
            if member.isdir():
                _only_parent(name, parents, bundle)
                continue
            if not member.isfile():
                raise _refused(bundle, member.name, "is a link or a device, not a file")
            _listed(name, listed, bundle)
            entries.append((name, member))
        for name, member in entries:
            yield name, member.size, partial(_tar_stream, archive, member)


def _tar_stream(archive: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    extracted = archive.extractfile(member)
    assert extracted is not None  # a regular file, checked above
    return extracted


def _once(name: str, seen: set[str], bundle: Bundle) -> None:
    """Two entries of one name: which one counts would depend on the reader."""
    if name in seen:
        raise _refused(bundle, name, "appears twice in the archive")
    seen.add(name)


def _checked(name: str, bundle: Bundle) -> str:
    """The member's path, refused when absolute, with ``..``, a backslash or a drive."""
    clean = name.rstrip("/")
    parts = PurePosixPath(clean).parts
    if (
        not clean
        or clean.startswith("/")
        or "\\" in clean
        or (len(clean) > 1 and clean[1] == ":")
        or any(p in ("..", ".") for p in parts)
    ):
        raise _refused(bundle, name, "leaves the model root")
    return clean


def _only_parent(name: str, parents: set[str], bundle: Bundle) -> None:
    if name not in parents:
        raise _refused(bundle, name, "is a folder no member needs")


def _listed(name: str, listed: set[str], bundle: Bundle) -> None:
    if name not in listed:
        raise _refused(bundle, name, "is not in the bundle's member list")


def _refused(bundle: Bundle, name: str, why: str) -> IntegrityError:
    return IntegrityError(f"bundle {bundle.name}: refused: {name!r} {why}")


def _copy(open_member: Opener, staging: Path, limit: int, where: str) -> tuple[str, int]:
    """Write a member to its staging file, stopping past ``limit`` bytes (an archive bomb
    fills no disk); (sha256, size) of what was written. The staging file goes on any failure.

    Raises:
        IntegrityError: the member holds more than ``limit`` bytes, or its data is damaged.
        DiskFullError: the disk is full.
        CacheError: the staging file cannot be written otherwise.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        with staging.open("wb") as out:
            try:
                with open_member() as stream:
                    while chunk := stream.read(min(CHUNK, limit + 1 - size)):
                        size += len(chunk)
                        if size > limit:
                            raise IntegrityError(
                                f"{where}: holds more than the {limit} bytes listed"
                            )
                        digest.update(chunk)
                        _write(out, chunk, staging, where)
            except CmcacheError:
                raise
            except UNREADABLE as exc:
                raise IntegrityError(f"{where}: the archive's data is damaged: {exc}") from None
            out.flush()
            os.fsync(out.fileno())
    except CmcacheError:
        remove_quietly(staging)
        raise
    except OSError as exc:
        remove_quietly(staging)
        raise _write_error(exc, staging, where) from None
    except BaseException:
        remove_quietly(staging)
        raise
    return digest.hexdigest(), size


def _write(out: IO[bytes], chunk: bytes, staging: Path, where: str) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise _write_error(exc, staging, where) from None


def _write_error(exc: OSError, staging: Path, where: str) -> CacheError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"{where}: the disk is full: cannot write {staging}",
            hint="free space (`cmcache prune`), then pull again",
        )
    return CacheError(f"{where}: cannot write {staging}: {exc.strerror or exc}")
