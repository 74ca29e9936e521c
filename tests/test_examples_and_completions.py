"""Every example file loads; completion scripts match the app and complete commands."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from conftest import Cli

from cmcache.core.manifest.formats import parse_manifest
from cmcache.core.settings.load import load_settings

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"


def test_example_config_is_valid(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"CMCACHE_HOME": str(tmp_path)}, config_flag=EXAMPLES / "config.toml"
    )
    assert settings.cache.max_size == 200 << 30
    assert [s.name for s in settings.sources] == ["team", "manager"]


@pytest.mark.parametrize("name", ["base_models.json", "loras.json", "model-list.json"])
def test_example_lists_parse_cleanly(name: str) -> None:
    parsed = parse_manifest((EXAMPLES / "lists" / name).read_bytes(), list_name=name)
    assert parsed.entries
    if name != "model-list.json":  # the real catalog sample keeps its real flaws
        assert parsed.warnings == ()


def test_example_versions_index_md5s_match_the_lists() -> None:
    index = json.loads((EXAMPLES / "lists" / "model_versions.json").read_text())
    for spec in index.values():
        body = (EXAMPLES / "lists" / spec["url"]).read_bytes()
        assert hashlib.md5(body).hexdigest() == spec["md5"]


def test_example_config_syncs_from_local_paths(cli: Cli) -> None:
    cli.env["CMCACHE_CONFIG"] = str(EXAMPLES / "config.toml")
    cli.env["CMCACHE_ROOT"] = str(cli.home / "models")
    result = cli("--json", "sync")
    assert result.code == 0, result.stdout + result.stderr
    statuses = {(r["source"], r["list"]): r["status"] for r in result.json()["data"]["lists"]}
    assert statuses == {
        ("team", "base_models"): "added",
        ("team", "loras"): "added",
        ("manager", "manager"): "added",
    }
    assert cli("show", "juggernaut").code == 0


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_example_cluster_nodes_are_valid(node: str, tmp_path: Path) -> None:
    import yaml

    config = EXAMPLES / "cluster" / f"{node}.toml"
    settings = load_settings(environ={"CMCACHE_HOME": str(tmp_path)}, config_flag=config)
    assert settings.cluster.node_name == node
    assert settings.cluster.advertise == f"http://{node}:8765"
    compose = yaml.safe_load((EXAMPLES / "cluster" / "docker-compose.yml").read_text())
    assert {"redis", "node1", "node2"} <= set(compose["services"])


def test_example_extra_model_paths_reads_as_comfyui_reads_it() -> None:
    from cmcache.core.comfyui import load_extra_paths

    extra = load_extra_paths((EXAMPLES / "comfyui" / "extra_model_paths.yaml",))
    assert extra.folders["checkpoints"] == [
        Path("/mnt/models/checkpoints"),
        Path("/mnt/models/sdxl"),
    ]
    assert extra.folders["diffusion_models"] == [Path("/mnt/models/diffusion_models")]


@pytest.mark.parametrize("script", ["ci-image.sh", "comfyui/start-gpu-box.sh"])
def test_example_scripts_are_valid_bash(script: str) -> None:
    subprocess.run(["bash", "-n", str(EXAMPLES / script)], check=True)


def test_cron_lines_have_five_time_fields() -> None:
    lines = [
        ln
        for ln in (EXAMPLES / "prefetch.cron").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines
    for line in lines:
        fields = line.split()
        assert len(fields) > 5 and "cmcache" in " ".join(fields[5:])


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_have_not_drifted(cli: Cli, shell: str) -> None:
    cli.env["_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"] = "1"  # as `nox -s completions`
    generated = cli("--show-completion", shell)
    assert generated.code == 0
    committed = (ROOT / "completions" / f"cmcache.{shell}").read_text()
    assert generated.stdout == committed, "run `nox -s completions`"


def test_bash_completion_completes_commands(cli: Cli) -> None:
    cli.env.update(
        {"COMP_WORDS": "cmcache sy", "COMP_CWORD": "1", "_CMCACHE_COMPLETE": "complete_bash"}
    )
    assert cli().stdout.split() == ["sync"]


def test_systemd_units_run_cmcache_prefetch() -> None:
    import configparser

    service = configparser.ConfigParser(strict=False)
    service.read(EXAMPLES / "cmcache-prefetch.service")
    assert "prefetch" in service["Service"]["ExecStart"]
    timer = configparser.ConfigParser(strict=False)
    timer.read(EXAMPLES / "cmcache-prefetch.timer")
    assert timer["Timer"]["OnCalendar"]
