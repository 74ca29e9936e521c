"""The aria2 JSON-RPC client: the only module that talks to aria2p. aria2 types stop here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from cmcache.core.errors import EngineError, RpcError
from cmcache.core.pieces import Pieces
from cmcache.core.states import TransferStatus
from cmcache.core.urls import redact

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

_KEYS = [
    "gid",
    "status",
    "totalLength",
    "completedLength",
    "downloadSpeed",
    "errorCode",
    "errorMessage",
    "files",
    "dir",
    "bitfield",
    "pieceLength",
]
T = TypeVar("T")


@dataclass(frozen=True)
class Transfer:
    """One download as aria2 reports it."""

    gid: str
    status: TransferStatus
    total: int
    completed: int
    speed: int
    error_code: str
    error_message: str
    path: str
    final_prefix: int = 0  # bytes from the start in pieces aria2 has completed: they stay

    @property
    def done(self) -> bool:
        """Finished, successfully or not."""
        return self.status.done


class Aria2Engine:
    """A connection to one aria2 JSON-RPC endpoint."""

    def __init__(self, url: str, secret: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineError(f"aria2 RPC URL {redact(url)!r} must be http(s)://host:port/jsonrpc")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.url = url
        import aria2p  # here, not at the top: with loguru and requests it costs ~0.3 s of
        # CPU, and a command that finds no daemon (`daemon stop`, `status`) never needs it

        self._client = aria2p.Client(
            host=f"{parts.scheme}://{parts.hostname}", port=port, secret=secret, timeout=timeout
        )

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        import aria2p  # already loaded by __init__, as requests is
        import requests

        try:
            return fn(*args)
        except (requests.ConnectionError, requests.Timeout):
            raise EngineError(
                f"aria2 at {redact(self.url)} is unreachable",
                hint="check download.rpc, or leave it empty to run a private daemon",
            ) from None
        except aria2p.ClientException as exc:
            if "Unauthorized" in str(exc.message):
                raise EngineError(
                    f"aria2 at {redact(self.url)} refused the RPC secret",
                    hint="set CMCACHE_ARIA2_SECRET (or download.rpc_secret) to the daemon's secret",
                ) from None
            raise RpcError(
                f"aria2 refused {getattr(fn, '__name__', 'a call')}: {exc.message}"
            ) from None
        except ValueError as exc:  # a non-JSON answer: not an aria2 endpoint
            raise EngineError(f"{redact(self.url)} does not answer like aria2: {exc}") from None

    def version(self) -> str:
        """aria2's version; the cheapest proof that URL and secret are right."""
        answer: Any = self._call(self._client.get_version)
        return str(answer.get("version", "?")) if isinstance(answer, dict) else str(answer)

    def add(
        self, uris: Sequence[str], options: Mapping[str, str], position: int | None = None
    ) -> str:
        """Queue a download; option values must be strings (aria2 ignores others)."""
        clean = {k: str(v) for k, v in options.items()}
        # aria2 writes URIs and options to a line-based session file: a newline inside one
        # would become an option of its own there (e.g. another dir or out).
        for name, text in (*(("a URI", u) for u in uris), *clean.items()):
            if any(ord(c) < 32 or ord(c) == 127 for c in text):  # never echo it: may be a token
                raise RpcError(f"refusing to hand aria2 {name} holding a control character")
        return str(self._call(self._client.add_uri, list(uris), clean, position))

    def tell(self, gids: Sequence[str]) -> dict[str, Transfer | None]:
        """The state of several downloads in one round trip (None: unknown to aria2)."""
        if not gids:
            return {}
        calls = [(self._client.TELL_STATUS, [gid, _KEYS]) for gid in gids]
        answers: Any = self._call(self._client.multicall2, calls)
        out: dict[str, Transfer | None] = {}
        for gid, answer in zip(gids, answers, strict=True):
            out[gid] = _transfer(answer[0]) if isinstance(answer, list) else None
        return out

    def pieces(self, gid: str) -> tuple[TransferStatus, Pieces | None]:
        """A download's state and finished pieces (None until aria2 knows its size)."""
        keys = ["status", "bitfield", "pieceLength", "totalLength"]
        raw: Any = self._call(self._client.tell_status, gid, keys)
        status = TransferStatus(str(raw.get("status", "error")))
        total = int(raw.get("totalLength", 0) or 0)
        length = int(raw.get("pieceLength", 0) or 0)
        if status is TransferStatus.COMPLETE:  # aria2 drops the bitfield once it is whole
            return status, Pieces(b"\xff", total, total) if total > 0 else None
        return status, Pieces.parse(str(raw.get("bitfield", "") or ""), length, total)

    def transfers(self) -> list[Transfer]:
        """Every download aria2 holds: active, waiting, then stopped."""
        calls = [
            (self._client.TELL_ACTIVE, [_KEYS]),
            (self._client.TELL_WAITING, [0, 1000, _KEYS]),
            (self._client.TELL_STOPPED, [0, 1000, _KEYS]),
        ]
        answers: Any = self._call(self._client.multicall2, calls)
        return [_transfer(item) for answer in answers for item in answer[0]]

    def pause(self, gid: str) -> None:
        """Stop a download now, keeping its progress (it leaves the waiting queue)."""
        self._call(self._client.force_pause, gid)

    def unpause(self, gid: str) -> None:
        """Put a paused download back in the waiting queue."""
        self._call(self._client.unpause, gid)

    def change(self, gid: str, options: Mapping[str, str]) -> None:
        """Change a waiting or paused download's options (an active one would restart)."""
        self._call(self._client.change_option, gid, {k: str(v) for k, v in options.items()})

    def add_uris(self, gid: str, uris: Sequence[str]) -> None:
        """Give a download more sources; an active one opens connections to them at once
        (up to its ``split``)."""
        for text in uris:
            if any(ord(c) < 32 or ord(c) == 127 for c in text):
                raise RpcError("refusing to hand aria2 a URI holding a control character")
        self._call(self._client.change_uri, gid, 1, [], list(uris))

    def move(self, gid: str, position: int) -> None:
        """Move a waiting download to ``position`` in the waiting queue."""
        self._call(self._client.change_position, gid, position, "POS_SET")

    def remove(self, gid: str) -> None:
        """Stop and forget a download. aria2 leaves its files: the caller deletes them."""
        self._call(self._client.force_remove, gid)

    def forget_result(self, gid: str) -> None:
        """Drop a stopped download from aria2's memory."""
        self._call(self._client.remove_download_result, gid)

    def set_global(self, options: Mapping[str, str]) -> None:
        """Change daemon-wide options at run time (e.g. max-concurrent-downloads)."""
        self._call(self._client.change_global_option, {k: str(v) for k, v in options.items()})

    def global_option(self, name: str) -> str:
        """One daemon-wide option."""
        answer: Any = self._call(self._client.get_global_option)
        return str(answer.get(name, ""))

    def save_session(self) -> None:
        """Write the session file now."""
        self._call(self._client.save_session)

    def shutdown(self) -> None:
        """Ask the daemon to exit, saving its session and control files."""
        self._call(self._client.shutdown)


def _transfer(raw: Mapping[str, Any]) -> Transfer:
    files = raw.get("files") or [{}]
    return Transfer(
        gid=str(raw.get("gid", "")),
        status=TransferStatus(str(raw.get("status", "error"))),
        total=int(raw.get("totalLength", 0) or 0),
        completed=int(raw.get("completedLength", 0) or 0),
        speed=int(raw.get("downloadSpeed", 0) or 0),
        error_code=str(raw.get("errorCode", "") or ""),
        error_message=str(raw.get("errorMessage", "") or ""),
        path=str(files[0].get("path", "")),
        final_prefix=_final_prefix(raw),
    )


def _final_prefix(raw: Mapping[str, Any]) -> int:
    """Bytes of the leading run of completed pieces (``bitfield``: highest bit is piece 0)."""
    bits, piece = str(raw.get("bitfield", "") or ""), int(raw.get("pieceLength", 0) or 0)
    pieces = 0
    for digit in bits:
        value = int(digit, 16)
        leading = 0
        while leading < 4 and value & (8 >> leading):
            leading += 1
        pieces += leading
        if leading < 4:
            break
    total = int(raw.get("totalLength", 0) or 0)
    return min(total, pieces * piece)
