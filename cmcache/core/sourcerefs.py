"""What users copy from model pages, as refs: Hugging Face and Civitai forms, and plain links.

Pure parsing and URL building; nothing here touches the network. The forms (SPEC §13):
``hf:OWNER/REPO[/PATH][@REV]``, Hugging Face ``blob/``, ``resolve/``, ``tree/`` and repository
page URLs; ``civitai:VERSION``, ``civitai:model/MODEL``, AIRs (``urn:air:ECO:TYPE:civitai:
MODEL@VERSION``, also without ``urn:air:``), Civitai page and download URLs; any other http(s) URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from cmcache.core.errors import UsageError

DEFAULT_HF = "https://huggingface.co"
DEFAULT_CIVITAI = "https://civitai.com"
HF_HOSTS = ("huggingface.co", "hf.co", "www.huggingface.co")
CIVITAI_HOSTS = ("civitai.com", "www.civitai.com")
# First path segments of huggingface.co that are pages, not repository owners.
_HF_RESERVED = {"api", "datasets", "spaces", "docs", "models", "organizations", "settings", "join"}
# Query keys of Civitai's download URL that pick one file of a version.
CIVITAI_SELECTORS = ("type", "format", "size", "fp")
# Query keys that carry credentials (tokens, signatures of pre-signed URLs): never kept.
_SECRET_KEYS = {
    "token", "access_token", "api_key", "apikey", "key", "auth", "sig", "signature", "expires",
    "policy", "key-pair-id", "hmac", "se", "sp", "sv", "sr", "st", "skoid", "sktid", "password",
}  # fmt: skip
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_AIR_RE = re.compile(
    r"^(?:urn:air:)?(?P<eco>[a-z0-9_.-]+):(?P<type>[a-z0-9_.-]+):civitai:(?P<model>\d+)"
    r"(?:@(?P<version>\d+))?(?::[a-z0-9_.-]+)?(?:\.[a-z0-9]+)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Endpoints:
    """Where Hugging Face and Civitai are reached (mirrors, or loopback in tests)."""

    hf: str = DEFAULT_HF
    civitai: str = DEFAULT_CIVITAI

    @property
    def hf_netloc(self) -> str:
        """The Hugging Face endpoint's ``host[:port]``: the one host its token goes to."""
        return netloc_of(self.hf)

    @property
    def civitai_netloc(self) -> str:
        """The Civitai endpoint's ``host[:port]``: the one host its token goes to."""
        return netloc_of(self.civitai)


@dataclass(frozen=True)
class HfFile:
    """One file of a Hugging Face repository."""

    repo: str  # OWNER/REPO
    path: str
    revision: str = "main"


@dataclass(frozen=True)
class HfRepo:
    """A whole Hugging Face repository, pulled as one model."""

    repo: str
    revision: str = "main"

    @property
    def name(self) -> str:
        """The repository's own name: the folder it is stored in."""
        return self.repo.split("/", 1)[1]


@dataclass(frozen=True)
class CivitaiRef:
    """A Civitai model version (or a model's newest version, when ``version`` is None)."""

    version: int | None
    model: int | None = None
    selectors: tuple[tuple[str, str], ...] = ()  # type/format/size/fp of a download URL


@dataclass(frozen=True)
class PlainUrl:
    """Any other http(s) link."""

    url: str


SourceRef: TypeAlias = "HfFile | HfRepo | CivitaiRef | PlainUrl"


def netloc_of(url: str) -> str:
    """``host[:port]`` of a URL, lower-case, without a default port or userinfo."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6, bracketed as in a URL
        host = f"[{host}]"
    if port is None or (parts.scheme, port) in (("http", 80), ("https", 443)):
        return host
    return f"{host}:{port}"


def visible_host(url: str) -> str:
    """The host a user sees in a model URL, before any endpoint takes its place: for
    ``hf:`` refs huggingface.co, for ``civitai:`` refs and AIRs civitai.com. What an
    allow-list of download hosts is checked against."""
    low = url.strip().lower()
    if low.startswith("hf:"):
        return HF_HOSTS[0]
    if low.startswith(("civitai:", "urn:air:")) or _AIR_RE.match(low):
        return CIVITAI_HOSTS[0]
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def looks_like_source_ref(text: str) -> bool:
    """Whether ``text`` is a link or a Hugging Face / Civitai ref rather than a catalog name."""
    low = text.strip().lower()
    if low.startswith(("http://", "https://", "hf:", "civitai:", "urn:air:")):
        return True
    return bool(_AIR_RE.match(low))


def parse_source_ref(text: str, endpoints: Endpoints) -> SourceRef | None:
    """The source a ref names, or None when it is a catalog name.

    Raises:
        UsageError: it has a source's prefix but not a valid form of it.
    """
    text = text.strip()
    low = text.lower()
    if low.startswith("hf:"):
        return _hf_short(text[3:], text)
    if low.startswith("civitai:"):
        return _civitai_short(text[8:], text)
    air = _AIR_RE.match(text)
    if air:
        version = air.group("version")
        return CivitaiRef(int(version) if version else None, int(air.group("model")))
    if low.startswith(("http://", "https://")):
        return _from_url(text, endpoints)
    return None


def _hf_short(body: str, text: str) -> HfFile | HfRepo:
    revision = "main"
    if "@" in body:
        body, revision = body.rsplit("@", 1)
    parts = body.strip("/").split("/")
    problem = _hf_problem(parts, revision)
    if problem:
        raise UsageError(f"{text!r}: {problem}", hint="hf:OWNER/REPO/PATH[@REV] or hf:OWNER/REPO")
    repo, path = "/".join(parts[:2]), "/".join(parts[2:])
    return HfFile(repo, path, revision) if path else HfRepo(repo, revision)


def _hf_problem(parts: list[str], revision: str) -> str | None:
    if len(parts) < 2 or not all(_REPO_PART.match(p) for p in parts[:2]):
        return "not a Hugging Face repository (OWNER/REPO)"
    if any(p in ("", ".", "..") for p in parts[2:]):
        return "the file path has an empty, '.' or '..' segment"
    if not revision or any(c.isspace() for c in revision):
        return "the revision after '@' is empty or has white space"
    return None


def _civitai_short(body: str, text: str) -> CivitaiRef:
    body, _, query = body.partition("?")
    if body.startswith("model/") and body[6:].isdigit():
        return CivitaiRef(None, int(body[6:]))
    if not body.isdigit():
        raise UsageError(
            f"{text!r} is not a Civitai ref", hint="civitai:VERSION or civitai:model/MODEL"
        )
    return CivitaiRef(int(body), None, _selectors(query))


def _selectors(query: str) -> tuple[tuple[str, str], ...]:
    pairs = parse_qsl(query, keep_blank_values=False)
    return tuple(sorted((k, v) for k, v in pairs if k in CIVITAI_SELECTORS))


def _segments(url: str, prefix: str = "") -> list[str]:
    path = urlsplit(url).path
    if prefix and path.startswith(prefix):
        path = path[len(prefix) :]
    return [s for s in path.split("/") if s]


def _from_url(url: str, endpoints: Endpoints) -> SourceRef:
    try:
        query = urlsplit(url).query
    except ValueError:  # malformed: url_problem says why when it is used
        return PlainUrl(url)
    host = netloc_of(url)
    if host in (*CIVITAI_HOSTS, endpoints.civitai_netloc):
        segs = _segments(url, _prefix(endpoints.civitai, host))
        if len(segs) == 4 and segs[:3] == ["api", "download", "models"] and segs[3].isdigit():
            return CivitaiRef(int(segs[3]), None, _selectors(query))
        if len(segs) >= 2 and segs[0] == "models" and segs[1].isdigit():
            wanted = dict(parse_qsl(query)).get("modelVersionId", "")
            return CivitaiRef(int(wanted) if wanted.isdigit() else None, int(segs[1]))
    if host in (*HF_HOSTS, endpoints.hf_netloc):
        segs = _segments(url, _prefix(endpoints.hf, host))
        found = _hf_url(segs, bool(query) and "download=" not in query)
        if found is not None:
            return found
    return PlainUrl(url)


def _prefix(endpoint: str, host: str) -> str:
    """The path an endpoint (a mirror under a path) puts before the service's own paths."""
    return urlsplit(endpoint).path.rstrip("/") if netloc_of(endpoint) == host else ""


def _hf_url(segs: list[str], queried: bool) -> HfFile | HfRepo | None:
    if len(segs) < 2 or segs[0] in _HF_RESERVED or not all(_REPO_PART.match(s) for s in segs[:2]):
        return None
    repo = f"{segs[0]}/{segs[1]}"
    if len(segs) >= 5 and segs[2] in ("blob", "resolve"):
        path = [unquote(s) for s in segs[4:]]
        if any(p in (".", "..") for p in path):
            return None
        return HfFile(repo, "/".join(path), unquote(segs[3]))
    if len(segs) == 2 and not queried:
        return HfRepo(repo)
    if len(segs) == 4 and segs[2] == "tree":
        return HfRepo(repo, unquote(segs[3]))
    return None


def canonical(ref: SourceRef) -> str:
    """One spelling for every form of the same model: how the local list remembers it."""
    if isinstance(ref, HfFile):
        return f"hf:{ref.repo}/{ref.path}" + _at(ref.revision)
    if isinstance(ref, HfRepo):
        return f"hf:{ref.repo}" + _at(ref.revision)
    if isinstance(ref, CivitaiRef):
        if ref.version is None:
            return f"civitai:model/{ref.model}"
        query = urlencode(ref.selectors)
        return f"civitai:{ref.version}" + (f"?{query}" if query else "")
    return without_secrets(ref.url)


def _at(revision: str) -> str:
    return "" if revision == "main" else f"@{revision}"


def without_secrets(url: str) -> str:
    """``url`` without userinfo, fragment and query keys that carry credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _SECRET_KEYS and not k.lower().startswith(("x-amz-", "x-goog-"))
    ]
    return urlunsplit((parts.scheme, host, parts.path, urlencode(kept), ""))


# ---------------------------------------------------------------- URLs of the services


def hf_resolve_url(endpoint: str, ref: HfFile) -> str:
    """Where a Hugging Face file is downloaded from."""
    revision = quote(ref.revision, safe="")
    return f"{endpoint}/{ref.repo}/resolve/{revision}/{quote(ref.path)}"


def hf_tree_url(endpoint: str, ref: HfRepo) -> str:
    """The tree API listing every file of a repository."""
    return f"{endpoint}/api/models/{ref.repo}/tree/{quote(ref.revision, safe='')}?recursive=true"


def hf_page(endpoint: str, repo: str) -> str:
    """A repository's page, where a gated model's license is accepted."""
    return f"{endpoint}/{repo}"


def civitai_api(endpoint: str, path: str) -> str:
    """A Civitai REST API URL (``model-versions/1``, ``models?query=…``)."""
    return f"{endpoint}/api/v1/{path}"


def civitai_page(endpoint: str, model: int, version: int) -> str:
    """A model version's page."""
    return f"{endpoint}/models/{model}?modelVersionId={version}"


def to_endpoint(url: str, endpoints: Endpoints) -> str:
    """Where ``url`` is fetched from: huggingface.co and civitai.com URLs go to their
    endpoints (mirrors, tests), and a Hugging Face ``blob/`` page becomes its ``resolve/``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    host = netloc_of(url)
    if host in HF_HOSTS or host == endpoints.hf_netloc:
        segs = _segments(url, _prefix(endpoints.hf, host))
        if len(segs) >= 5 and segs[2] == "blob" and segs[0] not in _HF_RESERVED:
            segs[2] = "resolve"
        if host in HF_HOSTS or segs[2:3] == ["resolve"]:
            return _rebase(endpoints.hf, "/".join(segs), parts.query)
    if host in CIVITAI_HOSTS:
        return _rebase(endpoints.civitai, parts.path.lstrip("/"), parts.query)
    return url


def _rebase(endpoint: str, path: str, query: str) -> str:
    return f"{endpoint}/{path}" + (f"?{query}" if query else "")


def endpoint_problem(url: str) -> str | None:
    """Why ``url`` cannot be a service endpoint, or None."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL with a host"
    if parts.query or parts.fragment or "@" in parts.netloc:
        return f"{url!r} must not carry a query, a fragment or credentials"
    return None
