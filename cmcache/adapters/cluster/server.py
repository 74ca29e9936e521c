"""`cmcache serve`: peers fetch verified model files over HTTP with Range (aiohttp's
FileResponse: Range and sendfile), read-only, never listing anything.

A request names ``/v1/models/<folder>/<filename>`` and carries ``?sig=`` — an HMAC of that
path under the cluster secret, so the secret itself never travels and never reaches an
origin (aria2 sends one header to every URI of a download, but a query belongs to one URI).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager
    from pathlib import Path

PREFIX = "/v1/models/"
# (folder, filename) → the verified file to serve, or None; and a guard held while it is sent.
Lookup = "Callable[[str, str], Path | None]"


def signature(secret: str, folder: str, filename: str) -> str:
    """What a peer must present to fetch ``folder/filename``."""
    return hmac.new(secret.encode(), f"{folder}/{filename}".encode(), hashlib.sha256).hexdigest()


def peer_url(base: str, secret: str, folder: str, filename: str) -> str:
    """The URL of a model on a peer, signed."""
    path = f"{PREFIX}{quote(folder)}/{quote(filename)}"
    return f"{base.rstrip('/')}{path}?sig={signature(secret, folder, filename)}"


def make_app(
    secret: str,
    lookup: Callable[[str, str], Path | None],
    guard: Callable[[str, str], AbstractContextManager[None]],
) -> web.Application:
    """The peer server: one read-only route."""

    async def model(request: web.Request) -> web.StreamResponse:
        folder, filename = request.match_info["folder"], request.match_info["filename"]
        given = request.query.get("sig", "")
        if not secret or not hmac.compare_digest(given, signature(secret, folder, filename)):
            raise web.HTTPUnauthorized(text="a valid sig is required\n")
        path = lookup(folder, filename)
        if path is None:
            raise web.HTTPNotFound(text="not here\n")
        with guard(folder, filename):  # prune keeps the file while it is being sent
            response = web.FileResponse(path, chunk_size=1 << 20)
            await response.prepare(request)
            await response.write_eof()
        return response

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
    """Serve until stopped, calling ``heartbeat`` now and every ``every`` seconds."""

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
