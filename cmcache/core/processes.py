"""Whether a process is alive, on POSIX and Windows."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie child of ours counts as gone)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - os.kill(pid, 0) would send CTRL_C_EVENT
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def command_line(pid: int) -> list[str] | None:
    """The arguments of process ``pid``; None where /proc does not tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None if not Path("/proc/self").exists() else []
    return raw.decode(errors="replace").split("\0")


def processes_with(argument: str) -> list[int]:
    """Live processes that have ``argument`` on their command line (none without /proc)."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                args = command_line(int(entry.name))
                if args and argument in args and process_alive(int(entry.name)):
                    found.append(int(entry.name))
    return found


def crash_point(name: str) -> None:
    """Die here at once, as a power cut would, when ``CMCACHE_CRASH_AT`` names this point.

    Tests use it to kill cmcache between two steps of a crash-safe sequence (a real SIGKILL:
    no cleanup, no finally blocks) and then check that nothing was lost.
    """
    if os.environ.get("CMCACHE_CRASH_AT") == name:  # pragma: no cover - the process dies
        import signal

        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
