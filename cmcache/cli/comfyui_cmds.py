"""``comfyui install|uninstall|status``: the thin node inside ComfyUI (and what it asks)."""

from __future__ import annotations

from cmcache.cli.app import app, state
from cmcache.cli.help import HumanTyper

comfyui_app = HumanTyper(help="The cmcache node inside ComfyUI.", no_args_is_help=True)
app.add_typer(comfyui_app, name="comfyui")


def _render(verb: str) -> None:
    from cmcache.services.comfyui.node import install_node, node_status

    st = state()
    settings = st.settings()
    status = install_node(settings) if verb == "install" else node_status(settings)
    if not status.installed:
        st.out.line(f"not installed in {status.comfyui}")
    else:
        match = "matches this cmcache" if status.current else "differs from this cmcache"
        st.out.line(f"installed in {status.folder} ({status.version}, {match})")
    if status.installed and not status.current:
        st.out.info("run `cmcache comfyui install` to bring it up to date")
    st.out.finish(
        {
            "comfyui": str(status.comfyui),
            "folder": str(status.folder),
            "installed": status.installed,
            "current": status.current,
            "version": status.version,
            "command": list(status.command),
        }
    )


@comfyui_app.command("install")
def comfyui_install() -> None:
    """Write the node into <ComfyUI>/custom_nodes/cmcache (again, to update it)."""
    _render("install")


@comfyui_app.command("status")
def comfyui_status() -> None:
    """Say whether the node is installed and matches this cmcache."""
    _render("status")


@comfyui_app.command("uninstall")
def comfyui_uninstall() -> None:
    """Remove the node from ComfyUI."""
    from cmcache.services.comfyui.node import uninstall_node

    st = state()
    removed = uninstall_node(st.settings())
    st.out.line("removed" if removed else "not installed")
    st.out.finish({"removed": removed})


@comfyui_app.command("catalog", hidden=True)
def comfyui_catalog() -> None:
    """Catalog file names per folder, for the node (JSON with --json)."""
    from cmcache.services.comfyui.node import node_catalog

    st = state()
    data = node_catalog(st.settings())
    for folder, names in sorted(data["folders"].items()):
        for name in names:
            st.out.line(f"{folder}/{name}")
    st.out.finish(data)
