"""cmcache inside ComfyUI: catalog models in the dropdowns, downloaded on first load.

Written by ``cmcache comfyui install``. It talks to cmcache only through cmcache's command line
(the command recorded in cmcache.json beside this file), so ComfyUI's Python needs nothing
installed. Whatever goes wrong here, ComfyUI keeps its stock behaviour: one log line, no error.
With ComfyUI's server it also serves the page (``server_side.py``, the extension in ``web/``).
"""

import json
import logging
import os
import subprocess
import threading
import time

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./web"

_HERE = os.path.dirname(os.path.abspath(__file__))
_log = logging.getLogger("cmcache")
_warned = set()


def _warn_once(what, exc):
    if what not in _warned:
        _warned.add(what)
        _log.warning("cmcache: %s: %s (ComfyUI carries on as usual)", what, exc)


class _Cli:
    """cmcache's command line, as recorded at install time."""

    def __init__(self, conf):
        self.command = [*conf["command"], "--comfyui", conf["comfyui"]]
        self.env = {**os.environ, **conf.get("env", {})}

    def run(self, *args, timeout=None, data=None):
        return subprocess.run(
            [*self.command, *args],
            env=self.env,
            capture_output=True,
            input=data,
            text=True,
            timeout=timeout,
            stdin=None if data is not None else subprocess.DEVNULL,
            check=False,
        )

    def json(self, *args, timeout=120, data=None):
        """Run with --json; the envelope, whatever the exit code (it says what went wrong)."""
        done = self.run("--json", *args, timeout=timeout, data=data)
        try:
            return json.loads(done.stdout)
        except ValueError:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"cmcache {args[0]} exited {done.returncode}: {reason}") from None

    def spawn(self, *args, data="", stdout=subprocess.DEVNULL, reap=False):
        """A background cmcache command; with ``reap``, a thread waits for it (no zombie)."""
        process = subprocess.Popen(
            [*self.command, *args],
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        process.stdin.write(data)
        process.stdin.close()
        if reap:
            threading.Thread(target=process.wait, daemon=True).start()
        return process


class _Catalog:
    """Catalog file names per folder, read once and again only when the synced lists change."""

    CHECK_EVERY = 1.0  # seconds between looks at the stamps
    RETRY_AFTER = 30.0  # after a failure, stock behaviour for this long

    def __init__(self, cli):
        self.cli = cli
        self.folders = {}
        self.stamps = []
        self.queue_log = None
        self.signature = None
        self.next_check = 0.0
        self.lock = threading.Lock()

    def _signature(self):
        return tuple(os.stat(p).st_mtime_ns if os.path.exists(p) else 0 for p in self.stamps)

    def names(self, folder):
        now = time.monotonic()
        if now >= self.next_check:
            with self.lock:
                if now >= self.next_check:
                    self._refresh(now)
        return self.folders.get(folder, frozenset())

    def refresh_now(self):
        """Look at the stamps now."""
        with self.lock:
            self._refresh(time.monotonic())

    def add(self, models):
        """Names the list ``workflow`` just took ({"folder", "filename"}): known at once, and
        the stamps they changed count as seen, so no second process reads them back."""
        with self.lock:
            for model in models:
                names = self.folders.get(model["folder"], frozenset())
                self.folders[model["folder"]] = names | {model["filename"]}
            if self.stamps:
                self.signature = self._signature()

    def _refresh(self, now):
        self.next_check = now + self.CHECK_EVERY
        if self.signature is not None and self._signature() == self.signature:
            return
        try:
            data = self.cli.json("comfyui", "catalog", timeout=120)["data"]
        except Exception as exc:
            self.next_check = now + self.RETRY_AFTER
            raise RuntimeError(f"cannot read the catalog: {exc}") from None
        self.folders = {f: frozenset(names) for f, names in data["folders"].items()}
        self.stamps = data["stamps"]
        self.queue_log = data.get("queue_log")
        self.signature = self._signature()


class _Uses:
    """Uses of present models, recorded in one background `cmcache touch` per few seconds.

    A batch is recorded by `touch --prefetch` when none such is still at work: if it began a
    workflow and `[prefetch] predict` is on, cmcache goes on to fetch what comes next, which
    takes as long as the downloads do (a thread reaps it). Meanwhile batches are recorded by a
    plain `touch`."""

    def __init__(self, cli):
        self.cli = cli
        self.pending = {}  # in the order loaded: the first model leads the workflow's launch
        self.lock = threading.Lock()
        self.timer = None
        self.prefetching = None

    def add(self, ref):
        with self.lock:
            self.pending.setdefault(ref, None)
            if self.timer is None:
                self.timer = threading.Timer(2.0, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self):
        with self.lock:
            refs, self.pending, self.timer = list(self.pending), {}, None
        if refs:
            try:
                with self.lock:
                    idle = self.prefetching is None or self.prefetching.poll() is not None
                    if idle:
                        self.prefetching = self.cli.spawn(
                            "-q", "touch", "--prefetch", *refs, reap=True
                        )
                if not idle:
                    self.cli.run("-q", "touch", *refs, timeout=120)
            except Exception as exc:
                _warn_once("recording uses", exc)


def _install():
    import folder_paths

    with open(os.path.join(_HERE, "cmcache.json"), encoding="utf-8") as handle:
        cli = _Cli(json.load(handle))
    catalog, uses = _Catalog(cli), _Uses(cli)
    stock_list, stock_full = folder_paths.get_filename_list, folder_paths.get_full_path

    def get_filename_list(folder_name):
        names = stock_list(folder_name)
        try:
            extra = catalog.names(folder_paths.map_legacy(folder_name))
        except Exception as exc:
            _warn_once("listing models", exc)
            return names
        if extra and not extra.issubset(names):
            return sorted(set(names) | extra)
        return names

    def get_full_path(folder_name, filename):
        path = stock_full(folder_name, filename)
        folder = folder_paths.map_legacy(folder_name)
        try:
            known = filename in catalog.names(folder)
        except Exception as exc:
            _warn_once("looking up a model", exc)
            return path
        ref = f"{folder}/{filename}"
        if path is not None:
            if known:
                uses.add(ref)
            return path
        if not known:
            return None
        try:
            done = cli.run("-q", "path", ref)
        except Exception as exc:
            _warn_once(f"fetching {ref}", exc)
            return None
        fetched = done.stdout.strip()
        if done.returncode == 0 and os.path.isfile(fetched):
            return fetched
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        _log.warning("cmcache: could not fetch %s: %s", ref, reason)
        return None

    folder_paths.get_filename_list = get_filename_list
    folder_paths.get_full_path = get_full_path
    try:
        import server

        instance = server.PromptServer.instance
    except Exception:
        return  # no server: ComfyUI is used as a library
    from .server_side import serve

    serve(instance, cli, catalog, folder_paths, _warn_once)


try:
    _install()
except Exception as _exc:
    _warn_once("not active", _exc)
