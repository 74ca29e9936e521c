"""What users copy from model pages, read as refs; file names servers give; Civitai's file pick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmcache.core.errors import UsageError
from cmcache.core.filenames import disposition_filename, has_model_extension, url_filename
from cmcache.core.hubs import CivitaiFile, CivitaiVersion, civitai_folder
from cmcache.core.manifest.formats import parse_manifest
from cmcache.core.sourcerefs import (
    CivitaiRef,
    Endpoints,
    HfFile,
    HfRepo,
    PlainUrl,
    canonical,
    parse_source_ref,
    to_endpoint,
    without_secrets,
)

LOOP = Endpoints("http://127.0.0.1:9001", "http://127.0.0.1:9002")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("civitai:128713", CivitaiRef(128713)),
        ("civitai:model/4384", CivitaiRef(None, 4384)),
        ("urn:air:sdxl:lora:civitai:4384@128713", CivitaiRef(128713, 4384)),
        ("sdxl:lora:civitai:4384@128713", CivitaiRef(128713, 4384)),
        ("urn:air:sdxl:lora:civitai:4384", CivitaiRef(None, 4384)),
        (
            "https://civitai.com/models/4384/detail-tweaker-xl?modelVersionId=128713",
            CivitaiRef(128713, 4384),
        ),
        ("https://civitai.com/models/4384", CivitaiRef(None, 4384)),
        (
            "https://civitai.com/api/download/models/135867?type=Model&format=SafeTensor",
            CivitaiRef(135867, None, (("format", "SafeTensor"), ("type", "Model"))),
        ),
        ("http://127.0.0.1:9002/api/download/models/7", CivitaiRef(7)),
        ("hf:org/repo/sub/f.safetensors", HfFile("org/repo", "sub/f.safetensors")),
        ("hf:org/repo/f.safetensors@v2", HfFile("org/repo", "f.safetensors", "v2")),
        ("hf:org/repo", HfRepo("org/repo")),
        ("hf:org/repo@refs/pr/1", HfRepo("org/repo", "refs/pr/1")),
        (
            "https://huggingface.co/org/repo/blob/main/a%20b.safetensors",
            HfFile("org/repo", "a b.safetensors"),
        ),
        (
            "https://huggingface.co/org/repo/resolve/abc/x.gguf?download=true",
            HfFile("org/repo", "x.gguf", "abc"),
        ),
        ("https://huggingface.co/org/repo", HfRepo("org/repo")),
        ("https://huggingface.co/org/repo/tree/dev", HfRepo("org/repo", "dev")),
        ("http://127.0.0.1:9001/org/repo/resolve/main/x.bin", HfFile("org/repo", "x.bin")),
        ("https://huggingface.co/datasets/o/r/resolve/main/x", PlainUrl(
            "https://huggingface.co/datasets/o/r/resolve/main/x")),
        ("https://example.com/a.safetensors", PlainUrl("https://example.com/a.safetensors")),
        ("sdxl", None),
        ("loras/x.safetensors", None),
    ],
)
def test_every_ref_form_names_its_model(text: str, expected: object) -> None:
    assert parse_source_ref(text, LOOP) == expected


@pytest.mark.parametrize("text", ["hf:onlyowner", "hf:o/r/../x", "civitai:abc", "hf:o/r@"])
def test_malformed_refs_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_source_ref(text, LOOP)


def test_every_form_of_one_model_has_one_canonical_spelling() -> None:
    forms = [
        "civitai:128713",
        "urn:air:sdxl:lora:civitai:4384@128713",
        "https://civitai.com/models/4384/slug?modelVersionId=128713",
        "https://civitai.com/api/download/models/128713",
    ]
    assert {canonical(parse_source_ref(f, LOOP) or PlainUrl(f)) for f in forms} == {
        "civitai:128713"
    }
    hf = ["hf:o/r/x.bin", "https://huggingface.co/o/r/blob/main/x.bin", "hf:o/r/x.bin@main"]
    assert {canonical(parse_source_ref(f, LOOP) or PlainUrl(f)) for f in hf} == {"hf:o/r/x.bin"}


def test_credentials_are_dropped_from_remembered_links() -> None:
    url = "https://u:p@cdn.example/a.bin?token=s3cret&X-Amz-Signature=x&v=2#frag"
    assert without_secrets(url) == "https://cdn.example/a.bin?v=2"


def test_service_urls_go_to_their_endpoints() -> None:
    assert to_endpoint("https://huggingface.co/o/r/blob/main/x.bin", LOOP) == (
        "http://127.0.0.1:9001/o/r/resolve/main/x.bin"
    )
    assert to_endpoint("https://civitai.com/api/download/models/5?type=Model", LOOP) == (
        "http://127.0.0.1:9002/api/download/models/5?type=Model"
    )
    assert to_endpoint("https://example.com/x", LOOP) == "https://example.com/x"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="detail_tweaker_xl.safetensors"', "detail_tweaker_xl.safetensors"),
        (
            "attachment; filename=\"fallback.bin\"; filename*=UTF-8''d%C3%A9tail%20xl.safetensors",
            "détail xl.safetensors",
        ),
        ('attachment; filename="with \\"quote\\".pt"', 'with "quote".pt'),
        ("attachment; filename=plain.ckpt", "plain.ckpt"),
        ("attachment", None),
        ('attachment; filename="caf\xc3\xa9.gguf"', "café.gguf"),  # raw UTF-8, read as Latin-1
    ],
)
def test_content_disposition_names_the_file(header: str, name: str | None) -> None:
    assert disposition_filename(header) == name


def test_a_signed_redirect_names_the_file_in_its_query() -> None:
    signed = (
        "https://store.example/blob/9f?X-Amz-Signature=abc&response-content-disposition="
        "attachment%3B%20filename%3D%22my%20lora.safetensors%22"
    )
    assert url_filename(signed) == "my lora.safetensors"
    assert url_filename("https://h/a/b%20c.pt?x=1") == "b c.pt"
    assert has_model_extension("x.SafeTensors") and not has_model_extension("135867")


def _file(name: str, kind: str, primary: bool = False, fmt: str = "SafeTensor") -> CivitaiFile:
    return CivitaiFile(name, 1.0, None, f"https://civitai.com/{name}", primary, kind, fmt)


def test_civitai_picks_the_primary_model_file_not_the_training_data() -> None:
    version = CivitaiVersion(
        1,
        2,
        "v1",
        "m",
        "LORA",
        (
            _file("data.zip", "Training Data"),
            _file("model.safetensors", "Model", primary=True),
            _file("model.pt", "Model", fmt="PickleTensor"),
        ),
    )
    asks = ((), (("format", "PickleTensor"),), (("type", "Training Data"),))
    picks = [version.pick(s) for s in asks]
    assert [p.name if p else None for p in picks] == ["model.safetensors", "model.pt", "data.zip"]
    assert version.pick((("type", "VAE"),)) is None
    assert civitai_folder("LoCon") == "loras" and civitai_folder("Workflows") is None


def test_manager_bare_repositories_become_whole_repository_entries() -> None:
    doc = {
        "models": [
            {
                "name": "deepseek-ai/Janus-Pro-7B",
                "type": "Janus-Pro",
                "base": "Janus-Pro",
                "save_path": "Janus-Pro",
                "description": "",
                "reference": "https://huggingface.co/deepseek-ai/Janus-Pro-7B",
                "filename": "<huggingface>",
                "url": "deepseek-ai/Janus-Pro-7B",
                "size": "14.85GB",
            }
        ]
    }
    parsed = parse_manifest(json.dumps(doc).encode(), list_name="m")
    assert not parsed.warnings
    (entry,) = parsed.entries
    assert (entry.ref, entry.urls) == ("Janus-Pro/Janus-Pro-7B", ("hf:deepseek-ai/Janus-Pro-7B",))


def test_a_malformed_link_is_left_for_the_url_check() -> None:
    assert parse_source_ref("http://[::1/x.bin", LOOP) == PlainUrl("http://[::1/x.bin")


def test_the_host_a_user_sees_is_the_one_an_allow_list_checks() -> None:
    from cmcache.core.sourcerefs import visible_host

    assert visible_host("hf:org/repo/x.safetensors") == "huggingface.co"
    assert visible_host("urn:air:sdxl:lora:civitai:1@2") == "civitai.com"
    assert visible_host("civitai:2") == "civitai.com"
    assert visible_host("https://HuggingFace.co:443/o/r/resolve/main/x") == "huggingface.co"


def test_tokens_go_by_host_and_port_and_endpoints_get_their_services_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cmcache.core.settings.load import load_settings

    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    monkeypatch.setenv("CIVITAI_API_TOKEN", "civ-secret")
    environ = {
        "CMCACHE_HOME": str(tmp_path),
        "HF_ENDPOINT": "http://127.0.0.1:9001",
        "CIVITAI_ENDPOINT": "http://127.0.0.1:9002/",
    }
    (tmp_path / "config.toml").write_text('[auth]\n"127.0.0.3" = "literal"\n')
    settings = load_settings(environ=environ)
    assert settings.token_for("127.0.0.1:9001") == "hf-secret"
    assert settings.token_for("127.0.0.1:9002") == "civ-secret"
    assert settings.token_for("127.0.0.1:9003") is None
    assert settings.token_for("127.0.0.2:9001") is None
    assert settings.token_for("127.0.0.3:8080") == "literal"
    assert settings.endpoints.civitai == "http://127.0.0.1:9002"
