"""Parsing the three list formats, the ComfyUI-Manager mapping, and the safety rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmcache.core.errors import ManifestError
from cmcache.core.manifest.formats import detect_format, manager_location, parse_manifest

DATA = Path(__file__).parent / "data"
SHA = "a" * 64


def _parse(doc: object, fmt: str = "auto") -> tuple[list[str], list[str]]:
    parsed = parse_manifest(json.dumps(doc).encode(), list_name="t", fmt=fmt)
    return [e.ref for e in parsed.entries], list(parsed.warnings)


def test_simple_format_accepts_urls_and_objects() -> None:
    doc = {
        "checkpoints": {"a.safetensors": "https://h/a"},
        "loras": {
            "x.safetensors": {
                "url": "https://h/x",
                "sha256": SHA.upper(),
                "size": 123,
                "aliases": ["x"],
            }
        },
    }
    parsed = parse_manifest(json.dumps(doc).encode(), list_name="t")
    assert parsed.format == "simple"
    lora = parsed.entries[1]
    assert (lora.ref, lora.sha256, lora.size, lora.size_exact, lora.aliases) == (
        "loras/x.safetensors",
        SHA,
        123,
        True,
        ("x",),
    )


def test_cmcache_format_reads_every_field() -> None:
    doc = {
        "schema": 1,
        "name": "base",
        "version": "2026.11.20",
        "models": [
            {
                "folder": "checkpoints",
                "filename": "sd.safetensors",
                "url": "https://h/sd",
                "mirrors": ["https://m/sd"],
                "sha256": SHA,
                "size": 6938078334,
                "aliases": ["sdxl"],
                "tags": ["sdxl"],
                "description": "d",
            }
        ],
    }
    parsed = parse_manifest(json.dumps(doc).encode(), list_name="t")
    entry = parsed.entries[0]
    assert parsed.version == "2026.11.20"
    assert entry.urls == ("https://h/sd", "https://m/sd")
    assert entry.exact_size == 6938078334


def test_newer_schema_is_refused_with_an_upgrade_hint() -> None:
    with pytest.raises(ManifestError, match="schema 2") as info:
        _parse({"schema": 2, "models": []})
    assert "upgrade" in info.value.hint


@pytest.mark.parametrize(
    ("save_path", "type_", "folder", "filename"),
    [
        ("default", "Checkpoint", "checkpoints", "a.bin"),
        ("default", "unclip", "checkpoints", "a.bin"),
        ("default", "clip", "text_encoders", "a.bin"),
        ("default", "VAE", "vae", "a.bin"),
        ("default", "lora", "loras", "a.bin"),
        ("default", "T2I-Adapter", "controlnet", "a.bin"),
        ("default", "t2i-style", "controlnet", "a.bin"),
        ("default", "clip_vision", "clip_vision", "a.bin"),
        ("default", "gligen", "gligen", "a.bin"),
        ("default", "upscale", "upscale_models", "a.bin"),
        ("default", "embeddings", "embeddings", "a.bin"),
        ("default", "unet", "diffusion_models", "a.bin"),
        ("default", "diffusion_model", "diffusion_models", "a.bin"),
        ("default", "Ultralytics", "etc", "a.bin"),
        ("controlnet/SDXL", "controlnet", "controlnet", "SDXL/a.bin"),
        ("ipadapter", "IP-Adapter", "ipadapter", "a.bin"),
    ],
)
def test_manager_save_path_and_type_map_to_folders(
    save_path: str, type_: str, folder: str, filename: str
) -> None:
    assert manager_location(save_path, type_, "a.bin") == (folder, filename)


def test_real_manager_sample_imports_with_warnings_for_bad_entries() -> None:
    data = (DATA / "comfyui-manager-sample.json").read_bytes()
    parsed = parse_manifest(data, list_name="manager")
    assert parsed.format == "comfyui-manager"
    refs = {e.ref for e in parsed.entries}
    assert "upscale_models/ldsr/last.ckpt" in refs
    assert "embeddings/SD1.5/EasyNegative.safetensors" in refs or any(
        r.startswith("embeddings/SD1.5/") for r in refs
    )
    assert len(parsed.entries) == 17
    joined = "\n".join(parsed.warnings)
    assert "appears twice" in joined
    janus = next(e for e in parsed.entries if e.folder == "Janus-Pro")  # a whole repository
    assert (janus.filename, janus.urls) == ("Janus-Pro-1B", ("hf:deepseek-ai/Janus-Pro-1B",))
    approx = next(e for e in parsed.entries if e.folder == "vae_approx")
    assert approx.size_exact is False and approx.exact_size is None and approx.size


@pytest.mark.parametrize(
    ("folder", "filename", "why"),
    [
        ("checkpoints", "../../etc/passwd", "'..'"),
        ("checkpoints", "/etc/passwd", "absolute"),
        ("checkpoints", "C:/x.bin", "absolute"),
        ("checkpoints", "a\\b.bin", "backslash"),
        ("checkpoints", "a\x00b", "NUL"),
        ("..", "a.bin", "not a plain folder"),
        ("/abs", "a.bin", "not a plain folder"),
        (".cmcache", "index.sqlite3", "reserved"),
        ("checkpoints", "a//b", "empty"),
    ],
)
def test_unsafe_locations_are_skipped_with_a_warning_naming_list_and_entry(
    folder: str, filename: str, why: str
) -> None:
    doc = {
        "schema": 1,
        "models": [
            {"folder": folder, "filename": filename, "url": "https://h/x"},
            {"folder": "vae", "filename": "ok.bin", "url": "https://h/ok"},
        ],
    }
    refs, warnings = _parse(doc)
    assert refs == ["vae/ok.bin"]
    assert len(warnings) == 1 and "list 't', entry #1" in warnings[0] and why in warnings[0]


@pytest.mark.parametrize("url", ["ftp://h/x", "file:///etc/passwd", "javascript:alert(1)", "h/x"])
def test_non_http_urls_are_skipped(url: str) -> None:
    refs, warnings = _parse({"vae": {"a.bin": url}})
    assert refs == [] and "not http or https" in warnings[0]


def test_bad_sha256_and_missing_url_are_entry_warnings() -> None:
    refs, warnings = _parse(
        {"vae": {"a.bin": {"url": "https://h/a", "sha256": "xyz"}, "b.bin": {"sha256": SHA}}}
    )
    assert refs == []
    assert "sha256 must be 64 hex" in warnings[0] and "has no url" in warnings[1]


@pytest.mark.parametrize("doc", [[1, 2], {"x": 1}, "text", {}])
def test_unknown_shapes_are_a_manifest_error(doc: object) -> None:
    with pytest.raises(ManifestError):
        _parse(doc)


def test_invalid_json_names_the_list() -> None:
    with pytest.raises(ManifestError, match="list 'broken' is not valid JSON"):
        parse_manifest(b"{", list_name="broken")


def test_format_detection() -> None:
    assert detect_format({"schema": 1, "models": []}, "t") == "cmcache"
    assert detect_format({"models": [{"save_path": "default"}]}, "t") == "comfyui-manager"
    assert detect_format({"vae": {}}, "t") == "simple"
