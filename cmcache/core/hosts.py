"""Which hosts a workflow's declared URLs may be fetched from (``[comfyui] download_hosts``).

A workflow is input from whoever wrote it (or whoever can post to ComfyUI): the models it
declares are fetched only from hosts the user allowed. Catalog URLs are not checked here: the
user chose those lists.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cmcache.core.sourcerefs import visible_host

DEFAULT_DOWNLOAD_HOSTS = ("huggingface.co", "civitai.com")
_LOCAL_NAMES = ("localhost", "localhost.localdomain")


def normal_host(host: str) -> str:
    """A host as compared: lower case, no brackets around IPv6, no trailing dot."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def host_problem(text: str) -> str | None:
    """Why ``text`` is not a bare host name or IP address (as the allow-list takes them)."""
    host = normal_host(text)
    if not host:
        return "is empty"
    if _ip(host) is not None:
        return None
    if "://" in text or "/" in text:
        return "is a URL; give the host alone (huggingface.co)"
    if ":" in host:
        return "has a port; give the host alone (any port of an allowed host is allowed)"
    if any(c.isspace() or c in "@?#\\" for c in host):
        return "is not a host name"
    return None


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _local_kind(host: str) -> str | None:
    """"a loopback address" and the like for hosts that reach this machine or its network."""
    if host in _LOCAL_NAMES or host.endswith(".localhost"):
        return "a loopback name"
    address = _ip(host)
    if address is None:
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private or address.is_reserved or address.is_unspecified:
        return "a private address"
    return "an IP address"


@dataclass(frozen=True)
class HostPolicy:
    """The hosts a workflow's declared URLs may use: each allowed name and its subdomains;
    an IP address or a loopback name only when allowed exactly as written."""

    allowed: tuple[str, ...] = DEFAULT_DOWNLOAD_HOSTS

    def host_refusal(self, host: str) -> str | None:
        """Why a declared URL on ``host`` (as the workflow wrote it, before any endpoint
        rewriting) may not be fetched, or None when it may."""
        host = normal_host(host)
        allowed = {normal_host(a) for a in self.allowed}
        if host in allowed:
            return None
        local = _local_kind(host)
        if local is None and any(host.endswith(f".{a}") for a in allowed if _ip(a) is None):
            return None
        shown = ", ".join(self.allowed) or "none"
        what = f"{host} is {local}" if local else f"{host} is not an allowed host"
        return (
            f"refused: {what} (allowed: {shown}); allow it with [comfyui] download_hosts "
            f"or pull --allow-host {host}"
        )

    def refusal(self, url: str) -> str | None:
        """Why a workflow's declared ``url`` (a link, or an ``hf:``/Civitai ref, which name
        huggingface.co and civitai.com whatever endpoint serves them) may not be fetched, or
        None when it may."""
        if "\\" in url:  # parsers disagree on which host such a URL names
            return "refused: the URL contains a backslash"
        host = visible_host(url)
        if not host:
            return "refused: the URL names no host"
        return self.host_refusal(host)
