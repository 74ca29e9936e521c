"""The catalog: entries in priority order, and how a ref names one of them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cmcache.core.comfyui import modern_ref
from cmcache.core.errors import RefError

if TYPE_CHECKING:
    from cmcache.core.manifest.entry import Entry


@dataclass(frozen=True)
class Catalog:
    """Entries in priority order (configured sources first, the built-in list last)."""

    entries: tuple[Entry, ...]
    warnings: tuple[str, ...] = ()
    _by_ref: dict[str, Entry] = field(default_factory=dict, repr=False, compare=False)
    _by_key: dict[str, list[Entry]] = field(default_factory=dict, repr=False, compare=False)
    _by_bundle: dict[str, list[Entry]] = field(default_factory=dict, repr=False, compare=False)

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
        """The entry whose canonical ref is exactly ``ref`` (legacy folder names accepted)."""
        return self._by_ref.get(modern_ref(ref))

    def resolve(self, ref: str) -> Entry:
        """Resolve a ref: folder/filename, alias, display name, or a unique bare filename.

        Raises:
            RefError: nothing matches (close matches are suggested) or several do.
        """
        ref = modern_ref(ref.strip())
        exact = self._by_ref.get(ref)
        if exact:
            return exact
        for key in (ref.lower(), f"file:{ref.lower()}"):
            found = self._unique(self._keys.get(key, []))
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise RefError(
                    f"{ref!r} is ambiguous: it matches {len(found)} models",
                    ref=ref,
                    candidates=tuple(e.ref for e in found[:10]),
                )
        raise RefError(f"no model matches {ref!r}", ref=ref, candidates=self.suggest(ref))

    def suggest(self, ref: str, limit: int = 5) -> tuple[str, ...]:
        """Refs a mistyped ``ref`` may mean: prefix, then substring, then spelling matches on
        refs, names, aliases and file names."""
        query = ref.strip().lower()
        words = {key: key.removeprefix("file:") for key in self._keys}
        prefix = [k for k, w in words.items() if query and w.startswith(query)]
        inside = [k for k, w in words.items() if query and query in w and k not in prefix]
        close = difflib.get_close_matches(query, list(words), n=limit, cutoff=0.6)
        refs = (self._by_ref[e.ref].ref for k in (*prefix, *inside, *close) for e in self._keys[k])
        return tuple(dict.fromkeys(refs))[:limit]

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

    def bundle_members(self, name: str) -> list[Entry]:
        """The entries of the bundle called ``name`` (empty when there is none)."""
        if not self._by_bundle:
            for entry in self.unique_entries():
                if entry.bundle is not None:
                    self._by_bundle.setdefault(entry.bundle.name, []).append(entry)
            self._by_bundle.setdefault("", [])  # built, even when no bundle exists
        return list(self._by_bundle.get(name, ())) if name else []

    def _unique(self, entries: list[Entry]) -> list[Entry]:
        """One entry per ref, always the highest-priority one (the source listed first)."""
        return [self._by_ref[ref] for ref in dict.fromkeys(e.ref for e in entries)]

    def unique_entries(self) -> list[Entry]:
        """One entry per ref, the highest-priority one."""
        return list(self._by_ref.values())
