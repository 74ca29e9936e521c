"""The file name a server gives a download: ``Content-Disposition``, else the signed URL's
``response-content-disposition``, else the URL's last path segment (SPEC §13)."""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

# What ComfyUI lists in its model folders (folder_paths.supported_pt_extensions and GGUF).
MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx")


def has_model_extension(name: str) -> bool:
    """Whether ComfyUI lists a file of this name."""
    return name.lower().endswith(MODEL_EXTENSIONS)


def disposition_filename(header: str) -> str | None:
    """The file name a ``Content-Disposition`` value gives: ``filename*`` (RFC 6266/5987,
    percent-encoded with its charset) before ``filename``; None when it names none."""
    params = _params(header)
    extended = params.get("filename*")
    if extended:
        charset, _, rest = extended.partition("'")
        _lang, _, encoded = rest.partition("'")
        try:
            name = unquote(encoded, encoding=charset or "utf-8", errors="strict")
        except (LookupError, UnicodeDecodeError):
            name = ""
        if name:
            return name
    plain = params.get("filename")
    return _as_utf8(plain) if plain else None


def _params(header: str) -> dict[str, str]:
    """``name=value`` parameters of a header, quoted strings unescaped; names lower-case."""
    out: dict[str, str] = {}
    i, n = 0, len(header)
    while i < n:
        j = header.find("=", i)
        semi = header.find(";", i)
        if j < 0:
            break
        if 0 <= semi < j:  # a bare token such as "attachment"
            i = semi + 1
            continue
        key = header[i:j].strip().lower()
        i = j + 1
        while i < n and header[i] == " ":
            i += 1
        if i < n and header[i] == '"':
            value, i = _quoted(header, i + 1)
            semi = header.find(";", i)
            i = n if semi < 0 else semi + 1
        else:
            end = header.find(";", i)
            end = n if end < 0 else end
            value, i = header[i:end].strip(), end + 1
        out.setdefault(key, value)
    return out


def _quoted(text: str, i: int) -> tuple[str, int]:
    chars: list[str] = []
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(chars), i + 1
        chars.append(char)
        i += 1
    return "".join(chars), i


def _as_utf8(value: str) -> str:
    """HTTP headers arrive decoded as Latin-1; a server that sent UTF-8 bytes meant UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def url_filename(url: str) -> str | None:
    """The name a (redirected, signed) URL gives: its ``response-content-disposition``
    parameter, else its last path segment, percent-decoded."""
    parts = urlsplit(url)
    for key, value in parse_qsl(parts.query):
        if key.lower() == "response-content-disposition":
            named = disposition_filename(value)
            if named:
                return named
    last = parts.path.rsplit("/", 1)[-1]
    return unquote(last) or None


def plain_name_problem(name: str) -> str | None:
    """Why a name a server gave cannot be a file name (it must not make folders)."""
    if "/" in name or "\\" in name:
        return f"{name!r} is not a plain file name"
    return None
