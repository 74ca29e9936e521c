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

from cmcache.core.pieces import CHECKING, GONE, Growing

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from pathlib import Path

PREFIX = "/v1/models/"
HOLD = 5.0  # seconds a request for a piece not yet here is held (peers give up after 10 s)
POLL = 0.1  # seconds between looks at a download in progress
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


class UploadCap:
    """``serve_rate``: bytes per second all transfers together may send (0 = no cap).

    Each slice books its share of the link in the order asked (first come, first served) and
    is sent when its turn starts, so the rate holds over any second, whatever the number of
    readers; the burst is one slice.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._free_at = 0.0

    @property
    def slice(self) -> int:
        """Bytes sent per turn: an eighth of a second's worth (64 KiB to ``SLICE``)."""
        return SLICE if not self.rate else max(64 << 10, min(SLICE, self.rate // 8))

    async def take(self, size: int) -> None:
        """Wait until ``size`` more bytes may go."""
        if not self.rate:
            return
        now = time.monotonic()
        start = max(now, self._free_at)
        self._free_at = start + size / self.rate
        if start > now:
            await asyncio.sleep(start - now)


class _WatchedFile(web.FileResponse):
    """A FileResponse (Range, conditional requests) that holds ``guard`` while it sends, and
    sends in slices, each within ``stall`` seconds: a reader that stops reading is cut off
    (aria2 resumes elsewhere; a stuck reader must not keep a file from being pruned).

    A peer that hangs up surfaces as ConnectionError, which aiohttp takes quietly.
    """

    def __init__(
        self, path: Path, stall: float, guard: AbstractContextManager[None], cap: UploadCap
    ) -> None:
        super().__init__(path, chunk_size=1 << 20)
        self._stall = stall
        self._guard = guard
        self._cap = cap

    async def _sendfile(self, request: Any, fobj: Any, offset: int, count: int) -> Any:
        with self._guard:
            writer = await web.StreamResponse.prepare(self, request)
            transport = request.transport
            loop = asyncio.get_running_loop()
            end = offset + count
            while offset < end:
                size = min(self._cap.slice, end - offset)
                await self._cap.take(size)
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


def _span(request: web.Request, size: int) -> tuple[int, int]:
    """[start, stop) of the Range asked for (the whole file without one).

    Raises:
        web.HTTPRequestRangeNotSatisfiable: a Range that is malformed or outside the file.
    """
    try:
        wanted = request.http_range
    except ValueError:
        wanted = slice(-1, 0)
    start = wanted.start or 0
    start = max(0, size + start) if start < 0 else start
    stop = size if wanted.stop is None else min(wanted.stop, size)
    if not 0 <= start < stop:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{size}"})
    return start, stop


class _Arrivals:
    """Where the bytes of a download in progress are read from, and how far they are ready:
    the staging file while aria2 writes it, the placed file once it passed its check."""

    def __init__(self, source: Growing, placed: Callable[[], Path | None], hold: float) -> None:
        self.source, self.placed, self.hold = source, placed, hold
        self.path = source.path

    async def ready(self, offset: int, stop: int) -> int:
        """The end of what may be sent from ``offset``, waiting up to ``hold`` for it;
        ``offset`` (or less) when nothing may be."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold
        while True:
            end = await loop.run_in_executor(None, self.source.ready_until, offset)
            if end == CHECKING:  # every byte is in: read on, from the checked file once placed
                final = self.placed()
                if final is not None:
                    self.path = final
                return stop
            if end == GONE or end > offset:
                return end
            if loop.time() >= deadline:
                return offset
            await asyncio.sleep(POLL)

    def read(self, offset: int, count: int) -> bytes:
        """``count`` bytes at ``offset``: from the staging file, or the placed one once the
        staging file was moved into place; b"" once it is gone (it failed its check)."""
        for _attempt in range(2):
            try:
                with self.path.open("rb") as handle:
                    handle.seek(offset)
                    return handle.read(count)
            except FileNotFoundError:
                final = self.placed()
                if final is None or final == self.path:
                    return b""
                self.path = final
        return b""


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _send_growing(
    request: web.Request,
    arrivals: _Arrivals,
    guard: AbstractContextManager[None],
    cap: UploadCap,
    stall: float,
) -> web.StreamResponse:
    """Send a Range of a download in progress, piece by piece as aria2 finishes them; a piece
    that does not come within the hold is 503 before the answer starts and a cut connection
    after (the reader goes on elsewhere). Once the last byte is in, the rest goes at once,
    from the staging file until the checked file is placed (a reader's own check judges it,
    as it judges the pieces before); a download that failed its check is never read again.
    A reader that takes nothing for ``stall`` seconds is cut off."""
    size = arrivals.source.size
    start, stop = _span(request, size)
    end = await arrivals.ready(start, stop)
    if end <= start:
        raise web.HTTPServiceUnavailable(
            text="that piece is not here yet\n", headers={"Retry-After": "1"}
        )
    ranged = "Range" in request.headers
    response = web.StreamResponse(status=206 if ranged else 200)
    response.content_type = "application/octet-stream"
    response.content_length = stop - start
    response.headers["Accept-Ranges"] = "bytes"
    if ranged:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    offset = start
    with guard:
        await response.prepare(request)
        while offset < stop:
            if end <= offset:
                end = await arrivals.ready(offset, stop)
                if end <= offset:  # too late, or the download failed: cut, never send
                    _cut(request)
                    return response
            count = min(cap.slice, 1 << 20, end - offset, stop - offset)
            await cap.take(count)
            data = arrivals.read(offset, count)
            try:
                if len(data) != count:
                    raise asyncio.TimeoutError
                await asyncio.wait_for(response.write(data), stall)
            except asyncio.TimeoutError:
                _cut(request)
                return response
            offset += count
        await response.write_eof()
    return response


def make_app(
    secret: str,
    lookup: Callable[[str, str], Path | None],
    guard: Callable[[str, str], AbstractContextManager[None]],
    *,
    stall: float = 60.0,
    rate: int = 0,
    growing: Callable[[str, str], Growing | None] | None = None,
    hold: float = HOLD,
) -> web.Application:
    """The peer server: one read-only route. ``stall``: seconds a reader may take no data;
    ``rate``: bytes per second all readers together get (0 = no cap); ``growing``: a download
    in progress to serve finished pieces of, when no placed file is there; ``hold``: seconds
    a request waits for a piece that is not there yet (then 503, or the connection is cut)."""
    cap = UploadCap(rate)

    async def model(request: web.Request) -> web.StreamResponse:
        folder, filename = request.match_info["folder"], request.match_info["filename"]
        if not _authorized(secret, folder, filename, request.query):
            raise web.HTTPUnauthorized(text="a valid, unexpired sig is required\n")
        path = lookup(folder, filename)
        partial = growing(folder, filename) if path is None and growing is not None else None
        if partial is not None:
            arrivals = _Arrivals(partial, lambda: lookup(folder, filename), hold)
            return await _send_growing(request, arrivals, guard(folder, filename), cap, stall)
        if path is None:
            raise web.HTTPNotFound(text="not here\n")
        # aiohttp sends it; prune keeps the file while it is being sent.
        return _WatchedFile(path, stall, guard(folder, filename), cap)

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
