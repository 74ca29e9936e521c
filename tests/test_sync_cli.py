"""`cmcache sync` against a real loopback origin: only changed lists travel, bad ones never land."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import Cli
from origin import Origin


def _list(version: str, *models: tuple[str, str]) -> bytes:
    doc = {
        "schema": 1,
        "name": "base",
        "version": version,
        "models": [
            {
                "folder": f,
                "filename": n,
                "url": f"https://models.example/{n}",
                "aliases": [n.split(".")[0]],
            }
            for f, n in models
        ],
    }
    return json.dumps(doc).encode()


def _publish(
    origin: Origin, lists: dict[str, bytes], md5_override: dict[str, str] | None = None
) -> None:
    index = {}
    for name, body in lists.items():
        origin.add(f"lists/{name}.json", body)
        md5 = (md5_override or {}).get(name) or hashlib.md5(body).hexdigest()
        index[name] = {
            "url": f"lists/{name}.json",
            "md5": md5,
            "version": json.loads(body)["version"],
        }
    origin.add("model_versions.json", json.dumps(index).encode())


def _config(cli: Cli, origin: Origin) -> None:
    cli.write_config(f'[[sources]]\nname = "team"\nindex = "{origin.url("model_versions.json")}"\n')


def test_first_sync_adds_lists_and_models_become_listable(cli: Cli, origin: Origin) -> None:
    _publish(
        origin,
        {
            "base": _list("1", ("checkpoints", "a.safetensors")),
            "loras": _list("7", ("loras", "l.safetensors")),
        },
    )
    _config(cli, origin)
    result = cli("--json", "sync")
    assert result.code == 0, result.stderr
    doc = result.json()
    assert doc["command"] == "sync" and doc["status"] == "ok"
    assert {
        (r["list"], r["status"], r["new_version"], r["entries"]) for r in doc["data"]["lists"]
    } == {("base", "added", "1", 1), ("loras", "added", "7", 1)}
    listed = cli("--json", "list", "--source", "team").json()["data"]["models"]
    assert {m["ref"] for m in listed} == {"checkpoints/a.safetensors", "loras/l.safetensors"}
    assert cli("--json", "show", "l").json()["data"]["ref"] == "loras/l.safetensors"


def test_unchanged_lists_are_not_downloaded_again(cli: Cli, origin: Origin) -> None:
    _publish(
        origin,
        {
            "base": _list("1", ("checkpoints", "a.safetensors")),
            "loras": _list("1", ("loras", "l.safetensors")),
        },
    )
    _config(cli, origin)
    assert cli("sync").code == 0
    _publish(
        origin,
        {
            "base": _list("2", ("checkpoints", "a.safetensors"), ("vae", "v.safetensors")),
            "loras": _list("1", ("loras", "l.safetensors")),
        },
    )
    result = cli("sync")
    assert result.code == 0, result.stderr
    assert "team/base: updated 1 → 2 (2 models)" in result.stdout
    assert "team/loras: unchanged 1" in result.stdout
    assert len(origin.requests_for("lists/loras.json", "GET")) == 1  # only the first sync
    assert len(origin.requests_for("lists/base.json", "GET")) == 2


def test_md5_mismatch_fails_the_list_and_keeps_the_old_copy(cli: Cli, origin: Origin) -> None:
    _publish(origin, {"base": _list("1", ("checkpoints", "a.safetensors"))})
    _config(cli, origin)
    assert cli("sync").code == 0
    _publish(origin, {"base": _list("2", ("checkpoints", "b.safetensors"))}, {"base": "0" * 32})
    result = cli("--json", "sync")
    assert result.code == 4
    doc = result.json()
    assert doc["status"] == "error" and doc["errors"][0]["code"] == 4
    assert "MD5 mismatch" in doc["errors"][0]["message"]
    refs = {m["ref"] for m in cli("--json", "list", "--source", "team").json()["data"]["models"]}
    assert refs == {"checkpoints/a.safetensors"}


def test_unparsable_list_with_right_md5_keeps_the_old_copy(cli: Cli, origin: Origin) -> None:
    _publish(origin, {"base": _list("1", ("checkpoints", "a.safetensors"))})
    _config(cli, origin)
    assert cli("sync").code == 0
    broken = b'{"schema": 9, "version": "2", "models": []}'
    _publish(origin, {"base": broken})
    result = cli("sync")
    assert result.code == 4 and "schema 9" in result.stdout + result.stderr
    assert cli("show", "a").code == 0


def test_lists_gone_from_the_index_are_dropped(cli: Cli, origin: Origin) -> None:
    _publish(
        origin,
        {
            "base": _list("1", ("checkpoints", "a.safetensors")),
            "old": _list("1", ("vae", "o.safetensors")),
        },
    )
    _config(cli, origin)
    assert cli("sync").code == 0
    _publish(origin, {"base": _list("1", ("checkpoints", "a.safetensors"))})
    result = cli("--json", "sync")
    statuses = {r["list"]: r["status"] for r in result.json()["data"]["lists"]}
    assert statuses == {"base": "unchanged", "old": "removed"}
    assert cli("show", "vae/o.safetensors").code == 4


def test_check_changes_nothing_and_exits_1_when_something_would_change(
    cli: Cli, origin: Origin
) -> None:
    _publish(origin, {"base": _list("1", ("checkpoints", "a.safetensors"))})
    _config(cli, origin)
    result = cli("sync", "--check")
    assert result.code == 1 and "would be team/base: added" in result.stdout
    assert origin.requests_for("lists/base.json") == []
    assert cli("show", "a").code == 4  # nothing was stored
    assert cli("sync").code == 0
    assert cli("sync", "--check").code == 0


def test_unsafe_entries_warn_and_strict_makes_them_fatal(cli: Cli, origin: Origin) -> None:
    body = _list("1", ("checkpoints", "a.safetensors"), ("checkpoints", "../../evil.sh"))
    _publish(origin, {"base": body})
    _config(cli, origin)
    strict = cli("sync", "--strict")
    assert strict.code == 4 and "'..'" in strict.stdout + strict.stderr
    assert cli("show", "a").code == 4
    lenient = cli("sync")
    assert lenient.code == 0
    assert "list 'base', entry #2" in lenient.stderr and "skipped" in lenient.stderr
    assert cli("show", "a").code == 0


def test_unreachable_index_is_reported_and_old_lists_stay(cli: Cli, origin: Origin) -> None:
    _publish(origin, {"base": _list("1", ("checkpoints", "a.safetensors"))})
    _config(cli, origin)
    assert cli("sync").code == 0
    origin.fault("model_versions.json", fail_first=99, fail_status=404)
    result = cli("sync")
    assert result.code == 4 and "HTTP 404" in result.stdout
    assert cli("show", "a").code == 0


def test_transient_errors_are_retried(cli: Cli, origin: Origin) -> None:
    _publish(origin, {"base": _list("1", ("checkpoints", "a.safetensors"))})
    _config(cli, origin)
    origin.fault("lists/base.json", fail_first=2, fail_status=503)
    assert cli("sync").code == 0
    assert len(origin.requests_for("lists/base.json")) == 3


def test_url_source_uses_conditional_requests(cli: Cli, origin: Origin) -> None:
    origin.add(
        "model-list.json",
        Path(__file__).parent.joinpath("data/comfyui-manager-sample.json").read_bytes(),
    )
    cli.write_config(f'[[sources]]\nname = "manager"\nurl = "{origin.url("model-list.json")}"\n')
    first = cli("--json", "sync")
    assert first.code == 0
    assert first.json()["data"]["lists"][0]["status"] == "added"
    second = cli("--json", "sync")
    assert second.json()["data"]["lists"][0]["status"] == "unchanged"
    last = origin.requests_for("model-list.json")[-1]
    assert last.status == 304 and "If-None-Match" in last.headers
    assert cli("show", "upscale_models/ldsr/last.ckpt").code == 0


def test_local_path_and_file_url_sources(cli: Cli, tmp_path: Path) -> None:
    lists = tmp_path / "published"
    lists.mkdir()
    body = _list("3", ("vae", "v.safetensors"))
    (lists / "base.json").write_bytes(body)
    index = {"base": {"url": "base.json", "md5": hashlib.md5(body).hexdigest(), "version": "3"}}
    (lists / "model_versions.json").write_text(json.dumps(index))
    simple = tmp_path / "simple.json"
    simple.write_text(json.dumps({"loras": {"s.safetensors": "https://h/s"}}))
    cli.write_config(
        f'[[sources]]\nname = "local"\nindex = "{lists / "model_versions.json"}"\n'
        f'[[sources]]\nname = "file"\nurl = "{simple.as_uri()}"\n'
    )
    result = cli("sync")
    assert result.code == 0, result.stdout + result.stderr
    assert cli("show", "vae/v.safetensors").code == 0
    assert cli("show", "s.safetensors").code == 0


def test_unknown_source_name_is_a_usage_error(cli: Cli) -> None:
    result = cli("sync", "nope")
    assert result.code == 2 and "unknown source 'nope'" in result.stderr
