"""Bundles: one archive (zip or tar) carrying several models. It is downloaded once and
verified, then each member is extracted to staging, verified against its own sha256 and
placed atomically; the archive is deleted. Anything the member list does not name, absolute
or ``..`` paths and links refuse the whole archive."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tarfile
import zipfile
import zlib
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING

from cmcache.core.errors import CacheError, DiskFullError, ExitCode, IntegrityError
from cmcache.core.files import remove_quietly
from cmcache.core.manifest.entry import Entry
from cmcache.core.states import PullOutcome
from cmcache.core.targets import Outcome, Target

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from cmcache.adapters.storage.model_store import ModelStore
    from cmcache.core.manifest.entry import Bundle
    from cmcache.services.placement import Placement

CHUNK = 8 << 20
SYMLINK = 0o120000


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
    return Target(entry, final, store.staging_dir / f"{name}.incomplete", archive=True)


def by_bundle(targets: list[Target]) -> dict[str, list[Target]]:
    """Bundle members grouped by their archive's URL."""
    groups: dict[str, list[Target]] = {}
    for target in targets:
        assert target.entry.bundle is not None
        groups.setdefault(target.entry.bundle.url, []).append(target)
    return groups


def unpack(archive: Outcome, members: list[Target], placement: Placement) -> list[Outcome]:
    """Place each member from a downloaded archive; the archive is removed afterwards.

    Members placed before a failure stay placed and say so; a member that cannot be written
    (a full disk) fails with the disk's error, and its staging file goes.
    """
    path = archive.target.final
    bundle = members[0].entry.bundle
    assert bundle is not None
    done: dict[str, Outcome] = {}
    failure: tuple[int, str] | None = None
    try:
        _unpack(path, bundle, members, placement, archive.seconds, done)
    except IntegrityError as exc:
        failure = (int(exc.exit_code), exc.message)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, zlib.error) as exc:
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


def _failed(target: Target, message: str, code: int = ExitCode.INTEGRITY) -> Outcome:
    return Outcome(target, PullOutcome.FAILED, code=int(code), message=message)


def _unpack(
    path: Path,
    bundle: Bundle,
    members: list[Target],
    placement: Placement,
    seconds: float,
    done: dict[str, Outcome],
) -> None:
    """Extract, verify and place each wanted member, recording its outcome in ``done``."""
    wanted = {t.ref: t for t in members}
    for ref, stream in _members(path, bundle):
        target = wanted.get(ref)
        if target is None:
            continue  # listed in the bundle, present already: nothing to do
        try:
            sha, size = _copy(stream, target.staging)
            record = placement.commit(
                target, (sha, size), target.entry.exact_size, target.entry.sha256, bundle.url
            )
        except (IntegrityError, CacheError) as exc:
            remove_quietly(target.staging)
            text = exc.message if isinstance(exc, IntegrityError) else f"{ref}: {exc.message}"
            done[ref] = _failed(target, f"{text} (in bundle {bundle.name})", exc.exit_code)
            continue
        with contextlib.suppress(CacheError):  # placed and recorded; the use time may wait
            placement.index.record_use(target.entry.folder, target.entry.filename)
        done[ref] = Outcome(target, PullOutcome.DOWNLOADED, record.size, seconds, sha)


def _members(path: Path, bundle: Bundle) -> Iterator[tuple[str, IO[bytes]]]:
    """(ref, stream) of each listed member, after checking every entry of the archive.

    Raises:
        IntegrityError: an entry is unsafe (absolute, ``..``, a link) or not in the list.
    """
    listed = set(bundle.members)
    parents = {str(p) for ref in listed for p in PurePosixPath(ref).parents} - {"."}
    if bundle.format == "zip":
        with zipfile.ZipFile(path) as archive:
            files = []
            for info in archive.infolist():
                name = _checked(info.filename, bundle)
                if (info.external_attr >> 16) & 0o170000 == SYMLINK:
                    raise _refused(bundle, info.filename, "is a symbolic link")
                if info.is_dir():
                    _only_parent(name, parents, bundle)
                    continue
                _listed(name, listed, bundle)
                files.append(info)
            for info in files:
                with archive.open(info) as stream:
                    yield info.filename.rstrip("/"), stream
        return
    with tarfile.open(path, "r:*") as archive:
        entries = []
        for member in archive.getmembers():
            name = _checked(member.name, bundle)
            if member.isdir():
                _only_parent(name, parents, bundle)
                continue
            if not member.isfile():
                raise _refused(bundle, member.name, "is a link or a device, not a file")
            _listed(name, listed, bundle)
            entries.append(member)
        for member in entries:
            extracted = archive.extractfile(member)
            assert extracted is not None  # a regular file, checked above
            with extracted:
                yield member.name, extracted


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


def _copy(stream: IO[bytes], staging: Path) -> tuple[str, int]:
    """Write a member to its staging file; (sha256, size) of what was written.

    Raises:
        CacheError: the staging file cannot be written (a full disk); it is removed.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        staging.parent.mkdir(parents=True, exist_ok=True)
        with staging.open("wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        remove_quietly(staging)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"the disk is full: cannot write {staging}",
                hint="free space (`cmcache prune`), then pull again",
            ) from None
        raise
    except BaseException:
        remove_quietly(staging)
        raise
    return digest.hexdigest(), size
