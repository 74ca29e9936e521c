"""Loopback services shaped like Civitai and the Hugging Face Hub, from their documented answers.

Each API runs as a router in front of an ``Origin`` on 127.0.0.1; downloads redirect to a
signed storage or CDN ``Origin`` on 127.0.0.2, as the real services do, so the request logs of
the two hosts show which one received a token.

Civitai (its REST API reference): ``/api/v1/model-versions/ID``, ``/api/v1/models/ID`` (versions
newest first), ``/api/v1/models?query=…``, ``/api/v1/model-versions/by-hash/HASH``; files carry
``name``, ``sizeKB``, ``type``, ``metadata``, ``hashes.SHA256`` (upper case), ``primary`` and a
``downloadUrl`` on civitai.com, which answers 307 to a signed URL whose
``response-content-disposition`` names the file, or 401 when a login is needed.

Hugging Face (huggingface_hub's file_download.py and the tree API): ``HEAD/GET /OWNER/REPO/
resolve/REV/PATH`` answers an LFS file with 302 to its CDN and ``X-Linked-Etag``/``X-Linked-Size``,
a small git file with 200 itself; a gated repository answers 401 with ``X-Error-Code: GatedRepo``;
``/api/models/OWNER/REPO/tree/REV?recursive=true`` lists files in pages joined by ``Link``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from origin import Answer, Origin


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Answer:
    body = json.dumps(doc).encode()
    return Answer(status, {"Content-Type": "application/json", **(headers or {})}, body)


@dataclass
class CivitaiFile:
    """A file to publish in a Civitai version."""

    name: str
    data: bytes
    type: str = "Model"
    format: str = "SafeTensor"
    primary: bool = False
    sha256: str | None = None  # what the API claims (defaults to the real one)


@dataclass
class _Version:
    id: int
    model_id: int
    name: str
    files: list[dict[str, Any]]
    keys: list[str]  # storage path of each file
    gated: bool


class CivitaiHub:
    """A Civitai-like API on ``api`` whose downloads redirect to ``storage``."""

    def __init__(self, api: Origin, storage: Origin, token: str = "civ-token") -> None:
        self.api, self.storage, self.token = api, storage, token
        self.models: dict[int, dict[str, Any]] = {}
        self.versions: dict[int, _Version] = {}
        api.router = self.route

    @property
    def endpoint(self) -> str:
        return f"http://{self.api.host}:{self.api.port}"

    def add(
        self,
        model_id: int,
        version_id: int,
        files: list[CivitaiFile],
        *,
        model_name: str = "Detail Tweaker XL",
        model_type: str = "LORA",
        version_name: str = "v1.0",
        gated: bool = False,
    ) -> None:
        """Publish a version (newest of its model when added last)."""
        docs, keys = [], []
        for number, f in enumerate(files):
            key = f"civitai/{version_id}/{number}.bin"
            real = self.storage.add(key, f.data)
            query = f"type={quote(f.type)}&format={quote(f.format)}"
            docs.append(
                {
                    "id": version_id * 10 + number,
                    "name": f.name,
                    "sizeKB": len(f.data) / 1024,
                    "type": f.type,
                    "pickleScanResult": "Success",
                    "metadata": {"format": f.format, "size": "pruned", "fp": "fp16"},
                    "hashes": {"AutoV2": (f.sha256 or real)[:10].upper(),
                               "SHA256": (f.sha256 or real).upper()},
                    "primary": f.primary,
                    "downloadUrl": f"https://civitai.com/api/download/models/{version_id}?{query}",
                }
            )
            keys.append(key)
        model = self.models.setdefault(
            model_id, {"id": model_id, "name": model_name, "type": model_type, "versions": []}
        )
        model["versions"].insert(0, version_id)
        self.versions[version_id] = _Version(version_id, model_id, version_name, docs, keys, gated)

    def _version_doc(self, v: _Version, inside_model: bool = False) -> dict[str, Any]:
        model = self.models[v.model_id]
        doc: dict[str, Any] = {
            "id": v.id,
            "modelId": v.model_id,
            "name": v.name,
            "air": f"urn:air:sdxl:lora:civitai:{v.model_id}@{v.id}",
            "files": v.files,
            "downloadUrl": f"https://civitai.com/api/download/models/{v.id}",
        }
        if not inside_model:
            doc["model"] = {"name": model["name"], "type": model["type"], "nsfw": False}
        return doc

    def _model_doc(self, model: dict[str, Any]) -> dict[str, Any]:
        versions = [self._version_doc(self.versions[v], True) for v in model["versions"]]
        return {"id": model["id"], "name": model["name"], "type": model["type"],
                "modelVersions": versions}

    def route(self, method: str, path: str, query: str, headers: dict[str, str]) -> Answer | None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        args = dict(parse_qsl(query))
        versions_api = parts[:3] == ["api", "v1", "model-versions"]
        if versions_api and len(parts) == 5 and parts[3] == "by-hash":
            for v in self.versions.values():
                if any(f["hashes"]["SHA256"] == parts[4].upper() for f in v.files):
                    return _json(200, self._version_doc(v))
            return _json(404, {"error": "Model not found"})
        if versions_api and len(parts) == 4:
            found = self.versions.get(int(parts[3])) if parts[3].isdigit() else None
            return _json(200, self._version_doc(found)) if found else _json(404, {"error": "nf"})
        if parts[:3] == ["api", "v1", "models"] and len(parts) == 4:
            model = self.models.get(int(parts[3])) if parts[3].isdigit() else None
            return _json(200, self._model_doc(model)) if model else _json(404, {"error": "nf"})
        if parts == ["api", "v1", "models"]:
            words = args.get("query", "").lower().split()
            items = [self._model_doc(m) for m in self.models.values()
                     if all(w in m["name"].lower() for w in words)]
            return _json(200, {"items": items, "metadata": {"totalItems": len(items)}})
        if parts[:3] == ["api", "download", "models"] and len(parts) == 4:
            return self._download(int(parts[3]), args, headers)
        return _json(404, {"error": "no route"})

    def _download(self, version_id: int, args: dict[str, str], headers: dict[str, str]) -> Answer:
        v = self.versions.get(version_id)
        if v is None:
            return _json(404, {"error": "nf"})
        if v.gated and headers.get("Authorization") != f"Bearer {self.token}":
            return _json(401, {"error": "Unauthorized", "message": "log in to download"})
        chosen = None
        for number, f in enumerate(v.files):
            wanted = (args.get("type", f["type"]), args.get("format", f["metadata"]["format"]))
            if (f["type"], f["metadata"]["format"]) == wanted and (args or f["primary"]):
                chosen = number
                break
        if chosen is None:
            return _json(404, {"error": "no such file"})
        name = v.files[chosen]["name"]
        disposition = quote(f"attachment; filename=\"{name}\"", safe="")
        signed = "X-Amz-Signature=deadbeef&X-Amz-Expires=3600"
        signed += f"&response-content-disposition={disposition}"
        return Answer(307, {"Location": self.storage.url(v.keys[chosen]) + "?" + signed})


@dataclass
class _HfFile:
    size: int
    sha256: str
    lfs: bool


@dataclass
class _HfRepo:
    files: dict[str, dict[str, _HfFile]] = field(default_factory=dict)  # revision → path → file
    gated: bool = False


class HfHub:
    """A Hugging Face-like Hub on ``api`` whose LFS files redirect to ``cdn``."""

    page_size = 2  # small pages: every listing of a few files spans several

    def __init__(self, api: Origin, cdn: Origin, token: str = "hf-token") -> None:
        self.api, self.cdn, self.token = api, cdn, token
        self.repos: dict[str, _HfRepo] = {}
        api.router = self.route

    @property
    def endpoint(self) -> str:
        return f"http://{self.api.host}:{self.api.port}"

    def add(
        self, repo: str, path: str, data: bytes, *, lfs: bool = True, revision: str = "main"
    ) -> str:
        """Publish a file; returns its sha256."""
        sha = hashlib.sha256(data).hexdigest()
        if lfs:
            self.cdn.add(f"lfs/{sha}", data)
        else:  # served by the Hub itself, with Range, at the path aria2 asks for
            self.api.add(f"{repo}/resolve/{revision}/{quote(path)}", data)
        files = self.repos.setdefault(repo, _HfRepo()).files.setdefault(revision, {})
        files[path] = _HfFile(len(data), sha, lfs)
        return sha

    def gate(self, repo: str) -> None:
        self.repos.setdefault(repo, _HfRepo()).gated = True

    def _allowed(self, repo: _HfRepo, headers: dict[str, str]) -> bool:
        return not repo.gated or headers.get("Authorization") == f"Bearer {self.token}"

    def route(self, method: str, path: str, query: str, headers: dict[str, str]) -> Answer | None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            return self._tree(f"{parts[2]}/{parts[3]}", parts[5], dict(parse_qsl(query)), headers)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), headers)
        return None

    def _denied(self) -> Answer:
        return _json(401, {"error": "Access to this model is restricted"},
                     {"X-Error-Code": "GatedRepo", "X-Error-Message": "restricted"})

    def _resolve(
        self, name: str, revision: str, path: str, headers: dict[str, str]
    ) -> Answer | None:
        repo = self.repos.get(name)
        if repo is None:
            return _json(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if not self._allowed(repo, headers):
            return self._denied()
        files = repo.files.get(revision)
        if files is None:
            return _json(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
        f = files.get(path)
        if f is None:
            return _json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        if not f.lfs:
            return None  # the origin serves it, with Range
        location = self.cdn.url(f"lfs/{f.sha256}") + "?X-Amz-Signature=cafe&Expires=9999"
        return Answer(
            302,
            {
                "Location": location,
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(f.size),
                "ETag": f'"{f.sha256}"',
                "X-Repo-Commit": "0" * 40,
            },
        )

    def _tree(
        self, name: str, revision: str, args: dict[str, str], headers: dict[str, str]
    ) -> Answer:
        repo = self.repos.get(name)
        if repo is None:
            return _json(401, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if not self._allowed(repo, headers):
            return self._denied()
        files = repo.files.get(revision, {})
        entries: list[dict[str, Any]] = []
        for path in sorted(files):
            f = files[path]
            item: dict[str, Any] = {"type": "file", "oid": f.sha256[:40], "size": f.size,
                                    "path": path}
            if f.lfs:
                item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries.append(item)
            folder = path.rsplit("/", 1)[0] if "/" in path else None
            if folder and all(e["path"] != folder for e in entries):
                entries.insert(-1, {"type": "directory", "oid": "1" * 40, "size": 0,
                                    "path": folder})
        start = int(args.get("cursor", "0"))
        page = entries[start : start + self.page_size]
        out_headers = {}
        if start + self.page_size < len(entries):
            nxt = f"{self.endpoint}/api/models/{name}/tree/{revision}?recursive=true&cursor="
            out_headers["Link"] = f'<{nxt}{start + self.page_size}>; rel="next"'
        return _json(200, page, out_headers)
