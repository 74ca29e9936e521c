"""Allow ``python -m cmcache``."""

from __future__ import annotations

from cmcache.cli import main

main()
