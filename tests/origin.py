"""A Range-capable HTTP origin on loopback with fault knobs and a request log.

Python's ``http.server`` ignores Range, which makes aria2 fail resumes with error 8; this one
answers single-range requests with 206 and can be told to misbehave per path.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 256 * 1024


@dataclass
class Faults:
    """How one path misbehaves. Counters count down as requests arrive."""

    fail_first: int = 0  # answer the first N requests with fail_status
    fail_status: int = 503
    fail_methods: tuple[str, ...] = ("GET", "HEAD")
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drop_times: int = 0  # ... for this many responses
    corrupt: bool = False  # flip one byte in the middle of what is served
    no_range: bool = False  # ignore Range, always 200 with the whole body
    redirect: str | None = None  # answer 302 to this URL ...
    redirect_methods: tuple[str, ...] = ("GET", "HEAD")  # ... for these methods
    rate: int | None = None  # bytes per second per connection
    total_rate: int | None = None  # bytes per second over all connections to this path
    require_token: str | None = None  # 401 unless "Authorization: Bearer <token>"
    headers: dict[str, str] = field(default_factory=dict)
    head_length: bool = True  # False: HEAD and a 0-0 probe do not tell the size


@dataclass
class Request:
    """One request as the origin saw it."""

    method: str
    path: str
    headers: dict[str, str]
    status: int
    sent: int
    started: float
    ended: float
    query: str = ""


@dataclass
class Answer:
    """What a router answers instead of a file: status, headers, body."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


# A router sees (method, path, query, headers) and answers, or returns None to serve a file.
Router = Callable[[str, str, str, dict[str, str]], "Answer | None"]


class Origin:
    """Serve files from a folder; ``add`` registers content, ``faults`` sets misbehaviour."""

    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.faults: dict[str, Faults] = {}
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self.in_flight: dict[str, int] = {}
        self.max_files_in_flight = 0
        self.send_buffer = 256 * 1024
        self.live_sent: dict[str, int] = {}
        self.free_at: dict[str, float] = {}  # when a path's total_rate lets the next chunk go
        self.flight_log: list[tuple[float, str, int]] = []  # (time, path, +1/-1)
        self.router: Router | None = None  # an API in front of the files (tests/hubs.py)
        handler = _make_handler(self)
        self.server = ThreadingHTTPServer((host, 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Origin:
        """Begin serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        """The URL of ``path`` on this origin."""
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def add(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; returns its sha256."""
        target = self.folder / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    def add_random(self, path: str, size: int, seed: int = 0) -> str:
        """Serve ``size`` pseudo-random bytes at ``path``; returns their sha256."""
        target = self.folder / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        block = hashlib.sha256(f"{path}:{seed}".encode()).digest() * (1 << 15)  # 1 MiB
        with target.open("wb") as handle:
            left = size
            counter = 0
            while left > 0:
                piece = bytes([counter % 251]) + block[1 : min(len(block), left)]
                piece = piece[: min(len(block), left)]
                handle.write(piece)
                digest.update(piece)
                left -= len(piece)
                counter += 1
        return digest.hexdigest()

    def fault(self, path: str, **knobs: Any) -> Faults:
        """Set the faults of ``path`` (replacing earlier ones)."""
        faults = Faults(**knobs)
        self.faults["/" + path.lstrip("/")] = faults
        return faults

    def requests_for(self, path: str, method: str | None = None) -> list[Request]:
        """Logged requests of one path."""
        path = "/" + path.lstrip("/")
        return [r for r in self.log if r.path == path and (method is None or r.method == method)]

    def sent_so_far(self, path: str) -> int:
        """Body bytes sent for ``path`` so far, including requests still running."""
        with self.lock:
            return self.live_sent.get("/" + path.lstrip("/"), 0)

    def bytes_sent(self, path: str) -> int:
        """Body bytes sent for ``path`` over all requests."""
        return sum(r.sent for r in self.requests_for(path))

    def peak_files(self, grace: float = 0.05) -> int:
        """Most distinct files being sent at once, each body's last ``grace`` seconds ignored.

        A client closing a connection is noticed one chunk late; the grace keeps that
        latency from counting as concurrency.
        """
        events: list[tuple[float, int, str]] = []
        for r in self.log:
            if r.method == "GET" and r.sent and r.ended - grace > r.started:
                events += [(r.started, 1, r.path), (r.ended - grace, -1, r.path)]
        active: dict[str, int] = {}
        peak = 0
        for _, delta, path in sorted(events, key=lambda e: (e[0], e[1])):
            active[path] = active.get(path, 0) + delta
            peak = max(peak, sum(1 for n in active.values() if n > 0))
        return peak

    def _enter(self, path: str) -> None:
        with self.lock:
            self.in_flight[path] = self.in_flight.get(path, 0) + 1
            self.flight_log.append((time.monotonic(), path, 1))
            files = sum(1 for n in self.in_flight.values() if n > 0)
            self.max_files_in_flight = max(self.max_files_in_flight, files)

    def _leave(self, path: str) -> None:
        with self.lock:
            self.in_flight[path] -= 1
            self.flight_log.append((time.monotonic(), path, -1))


def _make_handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # A small send buffer keeps "bytes sent" close to "bytes the client took".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, origin.send_buffer)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _record(self, status: int, sent: int, started: float) -> None:
            path, _, query = self.path.partition("?")
            with origin.lock:
                origin.log.append(
                    Request(
                        self.command,
                        path,
                        dict(self.headers),
                        status,
                        sent,
                        started,
                        time.monotonic(),
                        query,
                    )
                )

        def _routed(self, started: float) -> bool:
            if origin.router is None:
                return False
            path, _, query = self.path.partition("?")
            answer = origin.router(self.command, path, query, dict(self.headers))
            if answer is None:
                return False
            self.send_response(answer.status)
            for key, value in answer.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)
            self._record(answer.status, 0, started)
            return True

        def _simple(
            self, status: int, started: float, headers: dict[str, str] | None = None
        ) -> None:
            body = f"{status}\n".encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self._record(status, 0, started)

        def _serve(self, body: bool) -> None:
            started = time.monotonic()
            if self._routed(started):
                return
            path = self.path.split("?")[0]
            faults = origin.faults.get(path, Faults())
            with origin.lock:
                failing = faults.fail_first > 0 and self.command in faults.fail_methods
                if failing:
                    faults.fail_first -= 1
            if failing:
                self._simple(faults.fail_status, started)
                return
            if faults.redirect and self.command in faults.redirect_methods:
                self._simple(302, started, {"Location": faults.redirect})
                return
            token = faults.require_token
            if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                self._simple(401, started)
                return
            target = origin.folder / path.lstrip("/")
            if not target.is_file():
                self._simple(404, started)
                return
            size = target.stat().st_size
            etag = f'"{int(target.stat().st_mtime_ns)}-{size}"'
            last_modified = email.utils.formatdate(target.stat().st_mtime, usegmt=True)
            if self.headers.get("If-None-Match") == etag:
                self._simple(304, started, {"ETag": etag})
                return
            start, end = 0, size - 1
            status = HTTPStatus.OK
            wanted = self.headers.get("Range")
            if wanted and not faults.no_range:
                match = _RANGE_RE.match(wanted.strip())
                if match and (match.group(1) or match.group(2)):
                    if match.group(1):
                        start = int(match.group(1))
                        end = int(match.group(2)) if match.group(2) else size - 1
                    else:
                        start = max(0, size - int(match.group(2)))
                    end = min(end, size - 1)
                    if start >= size or start > end:
                        self._simple(416, started, {"Content-Range": f"bytes */{size}"})
                        return
                    status = HTTPStatus.PARTIAL_CONTENT
            length = end - start + 1
            self.send_response(status)
            if body or faults.head_length:
                self.send_header("Content-Length", str(length))
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            if not faults.no_range:
                self.send_header("Accept-Ranges", "bytes")
            if status == HTTPStatus.PARTIAL_CONTENT:
                # Without head_length a one-byte probe learns nothing of the total either.
                probe = (start, end) == (0, 0) and not faults.head_length
                self.send_header("Content-Range", f"bytes {start}-{end}/{'*' if probe else size}")
            for key, value in faults.headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not body:
                self._record(int(status), 0, started)
                return
            drop_at: int | None = None
            with origin.lock:
                if faults.drop_after is not None and faults.drop_times > 0:
                    faults.drop_times -= 1
                    drop_at = faults.drop_after
            origin._enter(path)
            sent = 0
            try:
                sent = self._send_body(target, start, length, faults, drop_at, size)
            finally:
                origin._leave(path)
                self._record(int(status), sent, started)

        def _client_gone(self) -> bool:
            # A client that closed its end makes the socket readable with EOF: stop sending,
            # so "in flight" means what the client still wants.
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            try:
                return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
            except OSError:
                return True

        def _send_body(
            self,
            target: Path,
            start: int,
            length: int,
            faults: Faults,
            drop_at: int | None,
            size: int,
        ) -> int:
            sent = 0
            middle = size // 2
            window_start = time.monotonic()
            slowest = min(r for r in (faults.rate, faults.total_rate, 1 << 62) if r)
            chunk = CHUNK if slowest == 1 << 62 else max(16 * 1024, min(CHUNK, slowest // 50))
            with target.open("rb") as handle:
                handle.seek(start)
                while sent < length:
                    if self._client_gone():
                        self.close_connection = True
                        return sent
                    piece = handle.read(min(chunk, length - sent))
                    if not piece:
                        break
                    if faults.corrupt and start + sent <= middle < start + sent + len(piece):
                        at = middle - (start + sent)
                        piece = piece[:at] + bytes([piece[at] ^ 0xFF]) + piece[at + 1 :]
                    if drop_at is not None and sent + len(piece) >= drop_at:
                        piece = piece[: max(0, drop_at - sent)]
                        try:
                            self.wfile.write(piece)
                            self.wfile.flush()
                        except OSError:
                            pass
                        sent += len(piece)
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(socket.SHUT_RDWR)
                        return sent
                    try:
                        self.wfile.write(piece)
                    except OSError:
                        self.close_connection = True
                        return sent
                    sent += len(piece)
                    with origin.lock:
                        origin.live_sent[self.path] = origin.live_sent.get(self.path, 0) + len(
                            piece
                        )
                    if faults.total_rate:  # every connection books its turn on one clock
                        with origin.lock:
                            now = time.monotonic()
                            turn = max(now, origin.free_at.get(self.path, 0.0))
                            origin.free_at[self.path] = turn + len(piece) / faults.total_rate
                        if turn > now:
                            time.sleep(turn - now)
                    if faults.rate and sent < length:
                        due = window_start + sent / faults.rate
                        delay = due - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
            return sent

    return Handler


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes for tests."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


if __name__ == "__main__":  # pragma: no cover - a manual helper
    folder = Path(os.environ.get("ORIGIN_DIR", "/tmp/cmcache-origin"))
    server = Origin(folder).start()
    print(f"serving {folder} at http://127.0.0.1:{server.port}/")
    threading.Event().wait()
