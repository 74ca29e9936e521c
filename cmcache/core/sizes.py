"""Byte sizes as users write them: ``200G``, ``1.5T``, ``500MB``, ``4096``."""

from __future__ import annotations

import re

_BINARY = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_UNITS: dict[str, int] = {"B": 1}
for _p, _m in _BINARY.items():
    if _p:
        _UNITS[_p] = _m
        _UNITS[_p + "IB"] = _m
        _UNITS[_p + "B"] = 1000 ** (list(_BINARY).index(_p))
_UNITS[""] = 1

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*$")


def parse_size(value: str | int | float) -> int:
    """Parse a size; ``K/M/G/T`` and ``KiB…TiB`` are binary, ``KB/MB/GB/TB`` decimal.

    Raises:
        ValueError: the text is not a size.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"size must not be negative: {value!r}")
        return int(value)
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (examples: 200G, 1.5T, 500MB, 4096)")
    number, unit = match.groups()
    multiplier = _UNITS.get(unit.upper())
    if multiplier is None:
        raise ValueError(f"unknown size unit {unit!r} in {value!r} (use K, M, G, T, KiB…, KB…)")
    return int(float(number) * multiplier)


def format_size(n: int | None) -> str:
    """Render bytes for people, binary units (``6.5 GiB``)."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
