"""Civitai refs and plain links as a user pastes them, against loopback Civitai and storage."""

from __future__ import annotations

from urllib.parse import quote

from conftest import Cli
from hubs import CivitaiFile, CivitaiHub
from origin import Origin, random_bytes
from pulling import FAST_RETRIES, file_sha

NAME = "détail tweaker xl.safetensors"  # a space and a non-ASCII letter, as Civitai allows


def _publish(civitai: CivitaiHub, **kwargs: object) -> bytes:
    model = random_bytes(300_000, seed=7)
    files = [
        CivitaiFile("training data.zip", random_bytes(20_000, seed=8), type="Training Data"),
        CivitaiFile(NAME, model, primary=True),
    ]
    civitai.add(4384, 128713, files, **kwargs)  # type: ignore[arg-type]
    return model


def test_every_civitai_ref_form_pulls_the_model_and_the_token_stays_on_the_api_host(
    cli: Cli, civitai: CivitaiHub, storage: Origin
) -> None:
    model = _publish(civitai)
    cli.env["CIVITAI_API_TOKEN"] = civitai.token
    first = cli("--json", "pull", "urn:air:sdxl:lora:civitai:4384@128713")
    assert first.code == 0, first.stderr
    row = first.json()["data"]["results"][0]
    placed = cli.root / "loras" / NAME
    assert (row["ref"], row["outcome"]) == (f"loras/{NAME}", "downloaded")
    assert file_sha(placed) == row["sha256"] == file_sha_of(model)
    assert not (cli.root / "loras" / "training data.zip").exists()
    hop = [r for r in civitai.api.log if r.path.startswith("/api/download/")]
    assert hop and hop[0].headers.get("Authorization") == f"Bearer {civitai.token}"
    assert storage.log and all("Authorization" not in r.headers for r in storage.log)
    assert civitai.token not in (cli.home / "state" / "local.json").read_text()
    seen = (len(civitai.api.log), len(storage.log))
    for form in (
        "civitai:128713",
        "sdxl:lora:civitai:4384@128713",
        "https://civitai.com/models/4384/detail-tweaker-xl?modelVersionId=128713",
        "https://civitai.com/api/download/models/128713",
    ):
        again = cli("--json", "pull", form)
        assert again.json()["data"]["results"][0]["outcome"] == "cached", form
    shown = cli("--json", "show", "https://civitai.com/models/4384?modelVersionId=128713")
    assert (shown.json()["data"]["source"], shown.json()["data"]["state"]) == ("local", "cached")
    assert (len(civitai.api.log), len(storage.log)) == seen  # remembered: no request at all
    listed = cli("--json", "list", "--source", "local").json()["data"]["models"]
    assert [m["ref"] for m in listed] == [f"loras/{NAME}"]
    assert cli("path", "civitai:128713").stdout.strip() == str(placed)  # the fast path too
    lines = "# a ref file\nurn:air:sdxl:lora:civitai:4384@128713\n"
    from_file = cli("pull", "--file", "-", input=lines)
    assert from_file.code == 0 and f"cached loras/{NAME}" in from_file.stdout


def file_sha_of(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_newest_version_type_and_format_pick_the_file_and_the_folder(
    cli: Cli, civitai: CivitaiHub
) -> None:
    civitai.add(10, 100, [CivitaiFile("old.safetensors", b"o" * 1000, primary=True)],
                model_name="Juggernaut", model_type="Checkpoint")
    newest = random_bytes(50_000, seed=3)
    pickled = random_bytes(40_000, seed=4)
    civitai.add(
        10,
        101,
        [CivitaiFile("new.safetensors", newest, primary=True),
         CivitaiFile("new.pt", pickled, format="PickleTensor")],
        model_name="Juggernaut",
        model_type="Checkpoint",
    )
    assert cli("pull", "civitai:model/10").code == 0
    assert file_sha(cli.root / "checkpoints" / "new.safetensors") == file_sha_of(newest)
    link = "https://civitai.com/api/download/models/101?type=Model&format=PickleTensor"
    assert cli("pull", link).code == 0
    assert file_sha(cli.root / "checkpoints" / "new.pt") == file_sha_of(pickled)
    assert not (cli.root / "checkpoints" / "old.safetensors").exists()


def test_a_wrong_civitai_hash_places_nothing_and_remembers_nothing(
    cli: Cli, civitai: CivitaiHub
) -> None:
    civitai.add(5, 50, [CivitaiFile("bad.safetensors", b"x" * 5000, primary=True,
                                    sha256="ab" * 32)])
    result = cli("--json", "pull", "civitai:50")
    assert result.code == 7, result.stderr
    assert "sha256 mismatch" in result.json()["errors"][0]["message"]
    assert not (cli.root / "loras" / "bad.safetensors").exists()
    assert not (cli.home / "state" / "local.json").exists()


def test_a_login_only_file_needs_a_token_and_says_so(
    cli: Cli, civitai: CivitaiHub, storage: Origin
) -> None:
    _publish(civitai, gated=True)
    denied = cli("pull", "civitai:128713")
    assert denied.code == 6
    assert "Civitai needs an API token for this file: set CIVITAI_API_TOKEN" in denied.stderr
    assert not storage.log and not (cli.root / "loras" / NAME).exists()
    cli.env["CIVITAI_API_TOKEN"] = civitai.token
    assert cli("pull", "civitai:128713").code == 0


def test_a_type_without_a_folder_needs_one(cli: Cli, civitai: CivitaiHub) -> None:
    civitai.add(6, 60, [CivitaiFile("flow.safetensors", b"w" * 2000, primary=True)],
                model_type="Workflows")
    refused = cli("pull", "civitai:60")
    assert refused.code == 2 and "'Workflows'" in refused.stderr and "--folder" in refused.stderr
    assert cli("pull", "--folder", "etc", "civitai:60").code == 0
    assert (cli.root / "etc" / "flow.safetensors").is_file()


def test_a_resolution_is_kept_in_the_index_and_forget_keeps_or_deletes_the_file(
    cli: Cli, civitai: CivitaiHub
) -> None:
    _publish(civitai)
    assert cli("pull", "civitai:128713").code == 0
    placed = cli.root / "loras" / NAME
    forgot = cli("forget", "civitai:128713")
    assert forgot.code == 0 and placed.is_file()
    assert cli("--json", "list", "--source", "local").json()["data"]["models"] == []
    asked = len([r for r in civitai.api.log if "/model-versions/" in r.path])
    again = cli("--json", "pull", "civitai:128713")  # resolved from the index: no API call
    assert again.json()["data"]["results"][0]["outcome"] == "cached"
    assert len([r for r in civitai.api.log if "/model-versions/" in r.path]) == asked
    deleted = cli("--json", "forget", "--delete", NAME)
    assert deleted.code == 0 and deleted.json()["data"]["forgotten"][0]["deleted"] is True
    assert not placed.exists()
    assert cli("forget", "civitai:128713").code == 4  # nothing left to forget


def test_a_plain_link_is_named_by_its_content_disposition(cli: Cli, origin: Origin) -> None:
    cli.write_config(FAST_RETRIES)
    origin.add_random("api/download/models/135867", 200_000)
    header = "attachment; filename=\"detail.safetensors\"; filename*=UTF-8''" + quote(NAME)
    origin.fault("api/download/models/135867", headers={"Content-Disposition": header})
    link = origin.url("api/download/models/135867?type=Model&format=SafeTensor")
    result = cli("--json", "pull", "--folder", "loras", link)
    assert result.code == 0, result.stderr
    assert (cli.root / "loras" / NAME).is_file()
    seen = len(origin.log)
    assert cli("--json", "pull", "--folder", "loras", link).json()["data"]["results"][0][
        "outcome"
    ] == "cached"
    assert len(origin.log) == seen


def test_a_signed_redirect_names_the_file_and_an_unsafe_name_is_refused(
    cli: Cli, origin: Origin, storage: Origin
) -> None:
    cli.write_config(FAST_RETRIES)
    storage.add_random("blob/1", 100_000)
    named = quote('attachment; filename="my lora.safetensors"', safe="")
    signed = f"blob/1?X-Amz-Signature=s&response-content-disposition={named}"
    origin.fault("dl/1", redirect=storage.url(signed))
    assert cli("pull", "--folder", "loras", origin.url("dl/1")).code == 0
    assert (cli.root / "loras" / "my lora.safetensors").is_file()
    evil = quote('attachment; filename="../../evil.safetensors"', safe="")
    origin.fault("dl/2", redirect=storage.url(f"blob/1?response-content-disposition={evil}"))
    refused = cli("pull", "--folder", "loras", origin.url("dl/2"))
    assert refused.code == 4 and "--name" in refused.stderr
    assert not list(cli.root.rglob("evil*"))
    origin.add_random("files/135867", 10_000)
    bare = cli("pull", "--folder", "loras", origin.url("files/135867"))
    assert bare.code == 0 and "ComfyUI will not list it" in bare.stderr
    named_by_flag = cli("pull", "--folder", "loras", "--name", "x.safetensors", origin.url("dl/2"))
    assert named_by_flag.code == 0 and (cli.root / "loras" / "x.safetensors").is_file()
