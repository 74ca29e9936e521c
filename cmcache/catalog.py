"""The catalog: every entry of the synced lists and the built-in list, and ref resolution."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.errors import ManifestError, RefError
from cmcache.manifest import Entry, parse_manifest
from cmcache.manifest_store import ManifestStore

if TYPE_CHECKING:
    from cmcache.settings import Settings

BUILTIN_SOURCE = "builtin"


@dataclass(frozen=True)
class Catalog:
    """Entries in priority order (configured sources first, the built-in list last)."""

    entries: tuple[Entry, ...]
    warnings: tuple[str, ...] = ()
    _by_ref: dict[str, Entry] = field(default_factory=dict, repr=False, compare=False)
    _by_key: dict[str, list[Entry]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            self._by_ref.setdefault(entry.ref, entry)

    @property
    def _keys(self) -> dict[str, list[Entry]]:
        """Lower-cased refs, names, aliases and file names; built on the first lookup by name."""
        if not self._by_key:
            for entry in self.entries:
                keys = {entry.ref.lower(), entry.name.lower(), *(a.lower() for a in entry.aliases)}
                base = entry.filename.rsplit("/", 1)[-1].lower()
                keys |= {f"file:{base}", f"file:{entry.filename.lower()}"}
                for key in keys - {""}:
                    self._by_key.setdefault(key, []).append(entry)
        return self._by_key

    def get(self, ref: str) -> Entry | None:
        """The entry whose canonical ref is exactly ``ref``."""
        return self._by_ref.get(ref)

    def resolve(self, ref: str) -> Entry:
        """Resolve a ref: folder/filename, alias, display name, or a unique bare filename.

        Raises:
            RefError: nothing matches (close matches are suggested) or several do.
        """
        ref = ref.strip()
        exact = self._by_ref.get(ref)
        if exact:
            return exact
        for key in (ref.lower(), f"file:{ref.lower()}"):
            found = _unique(self._keys.get(key, []))
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise RefError(
                    f"{ref!r} is ambiguous: it matches {len(found)} models",
                    ref=ref,
                    candidates=tuple(e.ref for e in found[:10]),
                )
        close = difflib.get_close_matches(
            ref.lower(), [k for k in self._keys if not k.startswith("file:")], n=5, cutoff=0.6
        )
        suggestions = tuple(dict.fromkeys(self._keys[k][0].ref for k in close))
        raise RefError(f"no model matches {ref!r}", ref=ref, candidates=suggestions)

    def search(self, query: str) -> list[Entry]:
        """Entries whose ref, name, aliases, tags or description contain every word of query."""
        words = query.lower().split()
        hits = []
        for entry in self.unique_entries():
            text = " ".join(
                (entry.ref, entry.name, *entry.aliases, *entry.tags, entry.description)
            ).lower()
            if all(w in text for w in words):
                hits.append(entry)
        return hits

    def unique_entries(self) -> list[Entry]:
        """One entry per ref, the highest-priority one."""
        return list(self._by_ref.values())


def _unique(entries: list[Entry]) -> list[Entry]:
    return list({e.ref: e for e in entries}.values())


def builtin_bytes() -> bytes:
    """The list shipped inside cmcache."""
    # A plain path, not importlib.resources: this runs on every no-op `path` call.
    return (Path(__file__).parent / "data" / "builtin.json").read_bytes()


def load_catalog(settings: Settings) -> Catalog:
    """Read every synced list of the configured sources, then the built-in one."""
    store = ManifestStore(settings.paths.manifests_dir)
    entries: list[Entry] = []
    warnings: list[str] = []
    for source in settings.sources:
        for name, record in store.records(source.name).items():
            saved = store.read_entries(source.name, name, record.md5)
            if saved is not None:
                entries.extend(saved)
                continue
            data = store.read(source.name, name)  # stored by an older cmcache: parse again
            if data is None:
                warnings.append(f"list {name!r} of source {source.name!r} is missing; run sync")
                continue
            try:
                parsed = parse_manifest(data, list_name=name, fmt=record.format, source=source.name)
            except ManifestError as exc:
                warnings.append(exc.message)
                continue
            entries.extend(parsed.entries)
    if settings.builtin_catalog:
        parsed = parse_manifest(builtin_bytes(), list_name=BUILTIN_SOURCE, source=BUILTIN_SOURCE)
        entries.extend(parsed.entries)
    return Catalog(tuple(entries), tuple(warnings))
