"""Global options may come after the command too (``cmcache list --json``).

Typer accepts an app callback's options only before the command, so ``main()`` moves the
global ones found after it to the front before parsing. ``--`` ends the search.
"""

from __future__ import annotations

# Global options and whether each takes a value.
GLOBAL_OPTIONS = {
    "--config": True,
    "--root": True,
    "--comfyui": True,
    "--json": False,
    "-q": False,
    "--quiet": False,
    "-v": False,
    "--verbose": False,
    "--no-progress": False,
}


def _global(arg: str) -> tuple[bool, bool]:
    """(is a global option, its value is the next argument)."""
    name, eq, _value = arg.partition("=")
    if name not in GLOBAL_OPTIONS:
        return False, False
    return True, GLOBAL_OPTIONS[name] and not eq


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with every global option (and its value) moved before the command."""
    front: list[str] = []
    at = 0
    while at < len(args):  # globals already in front, and the command
        is_global, takes_value = _global(args[at])
        if not is_global:
            break
        front.extend(args[at : at + 1 + takes_value])
        at += 1 + takes_value
    rest = args[at:]
    if not rest:
        return args
    command, tail = [rest[0]], rest[1:]
    hoisted: list[str] = []
    kept: list[str] = []
    at = 0
    while at < len(tail):
        arg = tail[at]
        if arg == "--":
            kept.extend(tail[at:])
            break
        is_global, takes_value = _global(arg)
        if is_global:
            hoisted.extend(tail[at : at + 1 + takes_value])
            at += 1 + takes_value
            continue
        kept.append(arg)
        at += 1
    return front + hoisted + command + kept


def split_leading_globals(args: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    """The global options in front of the command, and the rest."""
    found: dict[str, str | bool] = {}
    at = 0
    while at < len(args):
        name, eq, value = args[at].partition("=")
        is_global, takes_value = _global(args[at])
        if not is_global:
            break
        if takes_value:
            if at + 1 >= len(args):
                break
            found[name] = args[at + 1]
            at += 2
            continue
        found[name] = value if eq else True
        at += 1
    return found, args[at:]
