"""`cmcache serve`: peers fetch verified model files over HTTP with Range (aiohttp's
FileResponse: Range and sendfile), read-only, never listing anything.

A request names ``/v1/models/<folder>/<filename>`` and carries ``?exp=<unix time>&sig=…``: an
HMAC of that path and expiry under the cluster secret, so the secret itself never travels and
never reaches an origin (aria2 sends one header to every URI of a download, but a query belongs
to one URI), and a URL read from Redis or a log stops working after ``SIGNATURE_TTL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from pathlib import Path

PREFIX = "/v1/models/"
SIGNATURE_TTL = 15 * 60  # seconds a signed peer URL works; a pull re-signs when it retries
SLICE = 8 << 20  # bytes handed to sendfile at a time: a reader that takes none is noticed


def signature(secret: str, folder: str, filename: str, expires: int) -> str:
    """What a peer must present to fetch ``folder/filename`` until ``expires`` (unix time)."""
    message = f"{folder}/{filename}\n{expires}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def peer_url(
    base: str, secret: str, folder: str, filename: str, *, ttl: float = SIGNATURE_TTL
) -> str:
    """The URL of a model on a peer, signed for ``ttl`` seconds. ``base`` is a checked
    ``scheme://host:port`` (core.peers.peer_base): the path is appended, never spliced."""
    expires = int(time.time() + ttl)
    path = f"{PREFIX}{quote(folder)}/{quote(filename)}"
    query = urlencode({"exp": expires, "sig": signature(secret, folder, filename, expires)})
    return f"{base}{path}?{query}"


def _authorized(secret: str, folder: str, filename: str, query: Any) -> bool:
    given, expires = query.get("sig", ""), query.get("exp", "")
    if not secret or not given.isascii() or not expires.isdigit():
        return False
    if int(expires) < time.time():
        return False
    want = signature(secret, folder, filename, int(expires))
    return hmac.compare_digest(given.encode(), want.encode())


class _WatchedFile(web.FileResponse):
    """A FileResponse (Range, conditional requests) that holds ``guard`` while it sends, and
    sends in slices, each within ``stall`` seconds: a reader that stops reading is cut off
    (aria2 resumes elsewhere; a stuck reader must not keep a file from being pruned).

    A peer that hangs up surfaces as ConnectionError, which aiohttp takes quietly.
    """

    def __init__(self, path: Path, stall: float, guard: AbstractContextManager[None]) -> None:
        super().__init__(path, chunk_size=1 << 20)
        self._stall = stall
        self._guard = guard

    async def _sendfile(self, request: Any, fobj: Any, offset: int, count: int) -> Any:
        with self._guard:
            writer = await web.StreamResponse.prepare(self, request)
            transport = request.transport
            loop = asyncio.get_running_loop()
            end = offset + count
            while offset < end:
                size = min(SLICE, end - offset)
                if transport is None or transport.is_closing():
                    raise ConnectionResetError("the peer hung up")
                try:
                    sent = loop.sendfile(transport, fobj, offset, size)
                    await asyncio.wait_for(sent, self._stall)
                except asyncio.TimeoutError:
                    transport.abort()
                    raise ConnectionResetError("the peer stopped reading") from None
                except RuntimeError:  # "Transport is closing": it hung up meanwhile
                    raise ConnectionResetError("the peer hung up") from None
                offset += size
            await web.StreamResponse.write_eof(self)
            return writer


def make_app(
    secret: str,
    lookup: Callable[[str, str], Path | None],
    guard: Callable[[str, str], AbstractContextManager[None]],
    *,
    stall: float = 60.0,
) -> web.Application:
    """The peer server: one read-only route. ``stall``: seconds a reader may take no data."""

    async def model(request: web.Request) -> web.StreamResponse:
        folder, filename = request.match_info["folder"], request.match_info["filename"]
        if not _authorized(secret, folder, filename, request.query):
            raise web.HTTPUnauthorized(text="a valid, unexpired sig is required\n")
        path = lookup(folder, filename)
        if path is None:
            raise web.HTTPNotFound(text="not here\n")
        # aiohttp sends it; prune keeps the file while it is being sent.
        return _WatchedFile(path, stall, guard(folder, filename))

    app = web.Application()
    app.router.add_route("GET", PREFIX + "{folder}/{filename:.+}", model)
    return app


def run(
    app: web.Application,
    host: str,
    port: int,
    heartbeat: Callable[[], None],
    every: float = 5.0,
) -> None:
    """Serve until stopped, calling ``heartbeat`` now and every ``every`` seconds.

    Raises:
        OSError: the address cannot be bound (in use, not this machine's, no permission).
    """

    async def beat(_app: web.Application) -> None:
        async def loop() -> None:
            while True:
                # In the loop's thread (the index's connection lives there); a Redis hiccup
                # must not stop serving.
                with contextlib.suppress(Exception):
                    heartbeat()
                await asyncio.sleep(every)

        _app["beat"] = asyncio.create_task(loop())

    async def stop(_app: web.Application) -> None:
        _app["beat"].cancel()

    app.on_startup.append(beat)
    app.on_cleanup.append(stop)
    web.run_app(app, host=host, port=port, print=None, access_log=None, handle_signals=True)
