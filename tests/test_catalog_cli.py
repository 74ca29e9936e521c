"""Browsing the catalog: the built-in list works with no config; refs resolve or explain."""

from __future__ import annotations

import json

from conftest import Cli


def test_builtin_sdxl_alias_resolves_with_no_config(cli: Cli) -> None:
    result = cli("--json", "show", "sdxl")
    assert result.code == 0, result.stderr
    data = result.json()["data"]
    assert data["ref"] == "checkpoints/sd_xl_base_1.0.safetensors"
    assert data["state"] == "missing"
    assert data["path"] == str(cli.root / "checkpoints/sd_xl_base_1.0.safetensors")


def test_refs_resolve_by_path_alias_name_and_bare_filename(cli: Cli) -> None:
    for ref in ("vae/sdxl_vae.safetensors", "SDXL-VAE", "sdxl vae", "sdxl_vae.safetensors"):
        result = cli("--json", "show", ref)
        assert result.code == 0, (ref, result.stderr)
        assert result.json()["data"]["ref"] == "vae/sdxl_vae.safetensors"


def test_unknown_ref_exits_4_with_close_matches(cli: Cli) -> None:
    result = cli("show", "sdxl-vea")
    assert result.code == 4
    assert "no model matches 'sdxl-vea'" in result.stderr
    assert "vae/sdxl_vae.safetensors" in result.stderr


def test_ambiguous_ref_lists_candidates(cli: Cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    simple = tmp_path / "l.json"
    simple.write_text(
        json.dumps(
            {"loras": {"x.safetensors": "https://h/1"}, "vae": {"x.safetensors": "https://h/2"}}
        )
    )
    cli.write_config(f'[[sources]]\nname = "s"\nurl = "{simple}"\n')
    assert cli("sync").code == 0
    result = cli("--json", "show", "x.safetensors")
    assert result.code == 4
    error = result.json()["errors"][0]
    assert error["ref"] == "x.safetensors" and "ambiguous" in error["message"]
    assert "loras/x.safetensors" in result.stderr and "vae/x.safetensors" in result.stderr


def test_list_filters_and_states(cli: Cli) -> None:
    target = cli.root / "vae" / "sdxl_vae.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")  # put there by hand: present, but nothing proves it is the model
    assert cli("--json", "list", "--cached").json()["data"]["models"] == []
    vaes = cli("--json", "list", "--folder", "vae", "--missing").json()["data"]["models"]
    states = {m["ref"]: m["state"] for m in vaes}
    assert states == {"vae/ae.safetensors": "missing", "vae/sdxl_vae.safetensors": "unverified"}
    plain = cli("list", "--folder", "vae")
    assert plain.code == 0 and "vae/ae.safetensors\tmissing" in plain.stdout


def test_cached_and_missing_together_is_a_usage_error(cli: Cli) -> None:
    result = cli("--json", "list", "--cached", "--missing")
    assert result.code == 2 and result.json()["status"] == "error"


def test_search_matches_every_word(cli: Cli) -> None:
    refs = [m["ref"] for m in cli("--json", "search", "flux vae").json()["data"]["models"]]
    assert refs == ["vae/ae.safetensors"]
    assert cli("--json", "search", "nothing-like-this").json()["data"]["models"] == []


def test_builtin_catalog_can_be_switched_off(cli: Cli) -> None:
    cli.write_config("[catalog]\nbuiltin = false\n")
    assert cli("show", "sdxl").code == 4


def test_every_command_speaks_json(cli: Cli) -> None:
    for args in (
        ["list"],
        ["search", "sdxl"],
        ["show", "sdxl"],
        ["config", "path"],
        ["config", "show"],
        ["sync"],
    ):
        result = cli("--json", *args)
        doc = json.loads(result.stdout)
        assert set(doc) == {"command", "status", "exit_code", "data", "errors"}, args
        assert doc["command"] == args[0] and doc["exit_code"] == result.code


def test_unknown_option_is_a_usage_error(cli: Cli) -> None:
    result = cli("list", "--colour")
    assert result.code == 2 and "--colour" in result.stderr
