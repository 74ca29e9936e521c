"""One error hierarchy; each class carries its exit code (README, "Exit codes") and a hint."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes, as scripts rely on them."""

    OK = 0
    UNEXPECTED = 1
    USAGE = 2
    CONFIG = 3
    MANIFEST = 4
    ENGINE = 5
    DOWNLOAD = 6
    INTEGRITY = 7
    CACHE = 8
    INTERRUPTED = 130


def worst_exit_code(codes: list[int]) -> int:
    """One exit code for several failures: disk, then integrity, engine, manifest, download."""
    for code in (ExitCode.CACHE, ExitCode.INTEGRITY, ExitCode.ENGINE, ExitCode.MANIFEST):
        if code in codes:
            return int(code)
    return int(ExitCode.DOWNLOAD) if codes else 0


class CmcacheError(Exception):
    """Base of every error cmcache reports to a user."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(self, message: str, *, hint: str = "", ref: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.ref = ref


class UsageError(CmcacheError, ValueError):
    """A flag or argument is wrong or missing."""

    exit_code = ExitCode.USAGE


class ConfigError(CmcacheError, ValueError):
    """The config file or an override is invalid."""

    exit_code = ExitCode.CONFIG


class ManifestError(CmcacheError, ValueError):
    """A manifest could not be fetched, verified or parsed."""

    exit_code = ExitCode.MANIFEST


class RefError(CmcacheError, LookupError):
    """A ref names no entry, or several."""

    exit_code = ExitCode.MANIFEST

    def __init__(self, message: str, *, ref: str, candidates: tuple[str, ...] = ()) -> None:
        hint = ""
        if candidates:
            hint = "candidates: " + ", ".join(candidates)
        super().__init__(message, hint=hint, ref=ref)
        self.candidates = candidates


class EngineError(CmcacheError, ConnectionError):
    """The aria2 daemon is unreachable, refuses our secret, or cannot be started."""

    exit_code = ExitCode.ENGINE


class ClusterUnavailable(EngineError):
    """Redis, which the cluster shares its state through, does not answer."""


class DownloadError(CmcacheError):
    """A download failed."""

    exit_code = ExitCode.DOWNLOAD


class RpcError(DownloadError):
    """aria2 refused one call (unknown GID, bad option); the daemon itself is fine."""


class IntegrityError(CmcacheError):
    """Downloaded or stored bytes do not match the expected hash or size."""

    exit_code = ExitCode.INTEGRITY


class UnverifiedError(IntegrityError):
    """A file's identity cannot be proven: no hash or size is known to compare it with."""


class CacheError(CmcacheError, OSError):
    """The cache on disk cannot be used: no space, locked, index damaged."""

    exit_code = ExitCode.CACHE


class DiskFullError(CacheError):
    """No space is left where cmcache must write."""


class Interrupted(CmcacheError):
    """Ctrl-C: what was under way stays resumable."""

    exit_code = ExitCode.INTERRUPTED
