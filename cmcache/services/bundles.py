"""Bundles: one archive (zip or tar) carrying several models. It is downloaded once and
verified, then each member is extracted to staging, verified against its own sha256 and
placed atomically; the archive is deleted. Anything the member list does not name, absolute
or ``..`` paths and links refuse the whole archive."""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING

from cmcache.core.errors import IntegrityError
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
    """Place each member from a downloaded archive; the archive is removed afterwards."""
    path = archive.target.final
    bundle = members[0].entry.bundle
    assert bundle is not None
    try:
        return _unpack(path, bundle, members, placement, archive.seconds)
    except IntegrityError as exc:
        return [_failed(t, exc.message) for t in members]
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
        return [
            _failed(t, f"bundle {bundle.name}: cannot read the archive: {exc}") for t in members
        ]
    finally:
        remove_quietly(path)


def _failed(target: Target, message: str) -> Outcome:
    return Outcome(target, PullOutcome.FAILED, code=7, message=message)


def _unpack(
    path: Path, bundle: Bundle, members: list[Target], placement: Placement, seconds: float
) -> list[Outcome]:
    wanted = {t.ref: t for t in members}
    outcomes = []
    for ref, stream in _members(path, bundle):
        target = wanted.get(ref)
        if target is None:
            continue  # listed in the bundle, present already: nothing to do
        sha, size = _copy(stream, target.staging)
        try:
            record = placement.commit(
                target, (sha, size), target.entry.exact_size, target.entry.sha256, bundle.url
            )
        except IntegrityError as exc:
            remove_quietly(target.staging)
            outcomes.append(_failed(target, f"{exc.message} (in bundle {bundle.name})"))
            continue
        placement.index.record_use(target.entry.folder, target.entry.filename)
        outcomes.append(Outcome(target, PullOutcome.DOWNLOADED, record.size, seconds, sha))
    missing = set(wanted) - {o.target.ref for o in outcomes}
    outcomes += [_failed(wanted[r], f"bundle {bundle.name} does not hold {r}") for r in missing]
    return outcomes


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
    """Write a member to its staging file; (sha256, size) of what was written."""
    digest = hashlib.sha256()
    size = 0
    staging.parent.mkdir(parents=True, exist_ok=True)
    with staging.open("wb") as out:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size
