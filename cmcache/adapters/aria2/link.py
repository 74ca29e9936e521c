"""Which aria2 to talk to: the private daemon (started on demand) or configured remote ones."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

from cmcache.adapters.aria2.client import Aria2Engine
from cmcache.adapters.aria2.daemon import PrivateDaemon
from cmcache.core.errors import CmcacheError, EngineError, RpcError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cmcache.core.settings.model import Settings


class EngineLink:
    """Engines for one command. Remote daemons are spread over, least busy first."""

    def __init__(self, settings: Settings, *, keep: bool = False) -> None:
        self.settings = settings
        self.keep = keep
        self.private = (
            None
            if settings.download.rpc
            else PrivateDaemon(settings.paths.state_dir, settings.download)
        )
        self._engines: dict[str, Aria2Engine] = {}
        self._warming: threading.Thread | None = None
        self._stopping: threading.Thread | None = None
        self.restarts = 0

    def _engine_at(self, url: str, secret: str) -> Aria2Engine:
        return Aria2Engine(url, secret, timeout=max(10.0, float(self.settings.download.timeout)))

    def _connect(self, url: str, secret: str) -> Aria2Engine:
        engine = self._engine_at(url, secret)
        self._engines[url] = engine
        return engine

    def warm_up(self) -> None:
        """Connect (starting the private daemon) in the background while URLs resolve."""
        if self._engines or self._warming is not None:
            return

        def connect() -> None:
            with contextlib.suppress(CmcacheError):  # engines() says it again, in the foreground
                self.engines()

        self._warming = threading.Thread(target=connect, name="cmcache-warm-up", daemon=True)
        self._warming.start()

    def _await_warm_up(self) -> None:
        """Let a background start finish: a daemon it starts is then known and recorded."""
        warming = self._warming
        if warming is not None and warming is not threading.current_thread():
            warming.join()
            self._warming = None

    def engines(self) -> list[Aria2Engine]:
        """Every engine, connecting (and starting the private daemon) on first use."""
        self._await_warm_up()
        self._join_release()
        if self._engines:
            return list(self._engines.values())
        if self.private is not None:
            info = self.private.ensure(keep=self.keep)
            return [self._connect(info.url, info.secret)]
        # A dead daemon or a wrong secret is found before anything is queued; with several
        # daemons the ones that answer carry on.
        secret = self.settings.download.rpc_secret
        problems: list[EngineError] = []
        for url in self.settings.download.rpc:
            engine = self._engine_at(url, secret)
            try:
                engine.version()
            except EngineError as exc:
                problems.append(exc)
                continue
            self._engines[url] = engine
        if not self._engines:
            raise problems[0]
        return list(self._engines.values())

    def attach(self) -> bool:
        """Connect without starting anything: False when the private daemon is not running."""
        if self._engines:
            return True
        if self.private is not None:
            info = self.private.info()
            if info is None:
                return False
            self._connect(info.url, info.secret)
            return True
        self.engines()
        return True

    def engine(self, url: str) -> Aria2Engine:
        """The engine at ``url`` (a job's recorded daemon), or the current private one."""
        engines = {e.url: e for e in self.engines()}
        if url in engines:
            return engines[url]
        if self.private is not None:  # the daemon was restarted on another port
            return next(iter(engines.values()))
        return self._connect(url, self.settings.download.rpc_secret)

    def least_busy(self) -> Aria2Engine:
        """Where to place a new download."""
        engines = self.engines()
        if len(engines) == 1:
            return engines[0]

        def load(engine: Aria2Engine) -> int:
            try:
                return sum(1 for t in engine.transfers() if t.status in ("active", "waiting"))
            except EngineError:
                return 1 << 30

        return min(engines, key=load)

    def recover(self) -> bool:
        """After the private daemon died: start a new one (it reloads the saved session)."""
        if self.private is None or self.restarts >= 3:
            return False
        self.restarts += 1
        self._engines.clear()
        self.engines()
        return True

    def finish(self) -> None:
        """End of a foreground command: stop a non-kept private daemon that has nothing to do.

        A command that failed before queueing anything still waits for the background start:
        else the daemon it was starting would outlive it, unseen.
        """
        self._await_warm_up()
        self._join_release()
        if self.private is None or self.keep or not self._engines:
            return
        with contextlib.suppress(EngineError):
            self.private.stop_if_last(next(iter(self._engines.values())))

    def release(self) -> None:
        """Nothing more for aria2 to fetch here: stop the daemon in the background (while the
        last files are verified) if no one else needs it. Using the link again waits for that
        and then starts a new daemon."""
        if self.private is None or self.keep or not self._engines or self._stopping:
            return
        engine = next(iter(self._engines.values()))
        self._engines.clear()
        private = self.private

        def stop() -> None:
            with contextlib.suppress(EngineError):
                private.stop_if_last(engine)

        self._stopping = threading.Thread(target=stop, name="cmcache-release", daemon=True)
        self._stopping.start()

    def _join_release(self) -> None:
        stopping = self._stopping
        if stopping is not None and stopping is not threading.current_thread():
            stopping.join()
            self._stopping = None

    def interrupt(self, gids: Iterable[tuple[str, str]]) -> None:
        """Ctrl-C: keep every download resumable and stop transferring.

        Each is paused first, so a daemon restarted from its session brings it back paused:
        the next pull then sets its segments to what is left before it runs again.
        """
        self._join_release()
        self._await_warm_up()
        for url, gid in gids:
            with contextlib.suppress(EngineError, RpcError):
                self.engine(url).pause(gid)
        if self.private is not None and not self.keep and self._engines:
            # A graceful shutdown writes the session and every control file.
            with contextlib.suppress(EngineError):
                self.private.stop_if_last(next(iter(self._engines.values())), require_idle=False)
